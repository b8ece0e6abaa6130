"""SmscPeer over our own SMSC simulator, in-process on an ephemeral port.

Registered as a pytest plugin (tests/conftest.py), so the `sim_smsc` fixture is
available everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from smpp.simulator import SimulatorConfig, SmscSimulator
from smpp.simulator_model import AcceptedSubmit
from tests.peers.base import ReceivedSubmit


def _received(submit: AcceptedSubmit) -> ReceivedSubmit:
    return ReceivedSubmit(
        source_addr=submit.source_addr,
        source_addr_ton=submit.source_addr_ton,
        destination_addr=submit.destination_addr,
        data_coding=submit.data_coding,
        esm_class=submit.esm_class,
        registered_delivery=submit.registered_delivery,
        short_message=submit.short_message,
        message_id=submit.message_id,
    )


class SimulatorPeer:
    """The simulator seen through the SmscPeer protocol (tests/peers/base.py)."""

    def __init__(self, simulator: SmscSimulator) -> None:
        config = simulator.config
        if config.password is None:
            raise ValueError("SmscPeer needs fixed credentials")
        self.simulator = simulator  # for assertions the shared protocol has no word for
        self.host = config.host
        self.port = simulator.port
        self.system_id = config.system_id
        self.password = config.password

    @classmethod
    async def start(cls) -> SimulatorPeer:
        # Start from exactly the state configure() resets to, as every SmscPeer must:
        # immediate receipts, and no UNDELIV-by-prefix, which the other peers do not have.
        simulator = SmscSimulator(
            SimulatorConfig(port=0, dlr_delay=0.0, fail_prefix=None, summary_interval=0)
        )
        await simulator.start()
        return cls(simulator)

    async def stop(self) -> None:
        await self.simulator.stop()

    async def submits(self) -> list[ReceivedSubmit]:
        return [_received(s) for s in self.simulator.submits]

    async def configure(
        self,
        *,
        throttle_next: int = 0,
        drop_after: int | None = None,
        dlr_mode: str = "both",
        id_format: str = "hex",
        dlr_id_format: str | None = None,
        dlr_stat: str = "DELIVRD",
        dlr_delay_ms: int = 0,
        reject_binds: bool = False,
        respond_delay_ms: int = 0,
    ) -> None:
        self.simulator.configure(
            throttle_next=throttle_next,
            drop_after=drop_after,
            dlr_mode=dlr_mode,
            id_format=id_format,
            dlr_id_format=dlr_id_format,
            dlr_stat=dlr_stat,
            dlr_delay_ms=dlr_delay_ms,
            reject_binds=reject_binds,
            respond_delay_ms=respond_delay_ms,
        )

    async def bind_count(self) -> int:
        return self.simulator.bind_count

    async def inject_mo(
        self,
        source: str,
        destination: str,
        short_message: bytes,
        data_coding: int = 0,
        esm_class: int = 0,
    ) -> None:
        await self.simulator.inject_mo(source, destination, short_message, data_coding, esm_class)


@pytest_asyncio.fixture
async def sim_smsc() -> AsyncIterator[SimulatorPeer]:
    peer = await SimulatorPeer.start()
    try:
        yield peer
    finally:
        await peer.stop()
