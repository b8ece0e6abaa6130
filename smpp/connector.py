"""One SMSC connector: several binds to the same SMSC, used as one.

A connector keeps `binds` sessions up: transceivers, or transmitters plus one receiver when
the SMSC wants separate binds. Each message goes to the bound transmitting bind with the
fewest submits in progress, so the binds' windows add up; all of them share one `pace` (the
connector's sending-rate cap). Receipts and MO arrive on whichever bind the SMSC picks and go
to the one `events`, which knows the connector they came from.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

from smpp.client import Pace, SmppClient, SmppClientConfig
from smpp.types import NotBound, SmppEvents, SubmitRequest, SubmitResult


class Connector:
    def __init__(
        self,
        id: str,
        config: SmppClientConfig,
        events: SmppEvents,
        *,
        binds: int = 1,
        separate_receiver: bool = False,
        pace: Pace | None = None,
    ) -> None:
        if binds < 1:
            raise ValueError("a connector needs at least one bind")
        self.id = id
        mode = "transmitter" if separate_receiver else "transceiver"
        self.transmitters = [
            SmppClient(replace(config, bind_mode=mode, name=f"{id}#{n}"), events, pace)
            for n in range(1, binds + 1)
        ]
        self.clients = list(self.transmitters)
        if separate_receiver:
            self.clients.append(SmppClient(replace(config, bind_mode="receiver", name=f"{id}#rx"), events))
        self._turn = itertools.count()

    @property
    def bound(self) -> bool:
        """A message could go out now: some transmitting bind is up."""
        return any(c.can_submit for c in self.transmitters)

    @property
    def bound_binds(self) -> int:
        return sum(c.bound for c in self.clients)

    async def run(self) -> None:
        await asyncio.gather(*(c.run() for c in self.clients))

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.clients))

    async def wait_bound(self, timeout: float) -> bool:
        """Until every bind is up (False if one is not within `timeout`)."""
        results = await asyncio.gather(*(c.wait_bound(timeout) for c in self.clients))
        return all(results)

    async def submit(self, req: SubmitRequest, *, fail_fast: bool = False) -> SubmitResult:
        """SmppClient.submit over the least busy bound bind; NotBound when none is up."""
        ready = [c for c in self.transmitters if c.can_submit]
        if not ready:
            raise NotBound(f"connector {self.id}: no bound session")
        # Ties go round the binds, so an idle connector spreads its first messages too.
        start = next(self._turn) % len(ready)
        rotated = ready[start:] + ready[:start]
        client = min(rotated, key=lambda c: c.submitting)
        return await client.submit(req, fail_fast=fail_fast)
