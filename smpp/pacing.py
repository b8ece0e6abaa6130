"""A sending-rate cap for one process: submit_sm spaced evenly at `rate` per second.

Each take() reserves the next free slot on the timeline and sleeps until it comes, so waiters
go in turn without a polling loop, and the rate holds in every second, not only on average:
an SMSC that counts submits per second sees at most `rate` (plus `burst` - 1 after a pause).
"""

from __future__ import annotations

import asyncio
import math


class TokenBucket:
    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be above 0 and burst at least 1")
        self._interval = 1.0 / rate
        # How far behind the clock the next slot may be: the unused slots of an idle spell
        # that may go at once.
        self._slack = (burst - 1) * self._interval
        self._next = -math.inf

    async def take(self) -> None:
        now = asyncio.get_running_loop().time()
        at = max(self._next, now - self._slack)
        self._next = at + self._interval
        if at > now:
            await asyncio.sleep(at - now)
