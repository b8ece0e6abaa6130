"""A hostile SMSC flooding deliver_sm without waiting for the answers: the gateway handles at
most smpp.max_inbound_in_flight at once (the rest wait unread in the socket, the SMSC's window
is the back-pressure), the API keeps answering throughout, and every MO is stored exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from gateway.app import CONNECTORS
from smpp.encoding import encode_gsm7
from tests.conftest import Gateway, gateway_config, start_gateway, wait_for

BOUND = 25
FLOOD = 3000
SENDER = "819011112222"
SIN = "81312345678"


@pytest_asyncio.fixture
async def gateway(clean_db: str, sim_smsc: Any) -> AsyncIterator[Gateway]:
    gw = await start_gateway(
        gateway_config(clean_db, sim_smsc.host, sim_smsc.port, smpp__max_inbound_in_flight=BOUND)
    )
    assert await gw.app[CONNECTORS]["default"].wait_bound(10)
    yield gw
    await gw.runner.cleanup()


async def test_a_deliver_sm_flood_is_held_back_at_the_bound(gateway: Gateway, sim_smsc: Any) -> None:
    [client] = gateway.app[CONNECTORS]["default"].clients
    in_flight: list[int] = []
    healthz_answers = 0
    flooding = True

    async def watch() -> None:
        while flooding:
            in_flight.append(client.inbound_in_flight)
            await asyncio.sleep(0.005)

    async def probe_api(http: aiohttp.ClientSession) -> None:
        nonlocal healthz_answers
        while flooding:
            async with http.get(f"{gateway.base_url}/healthz") as r:
                assert r.status == 200
            healthz_answers += 1
            await asyncio.sleep(0.1)

    async def stored() -> bool:
        [(n,)] = await gateway.sql("SELECT count(*) FROM inbound_messages")
        return bool(n == FLOOD)

    # The API keeps answering during the flood; how fast is bench/sms_in.py's to measure (a busy
    # machine made a 1 s bound here, and a 5 s client timeout, fail for nothing).
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        watcher = asyncio.create_task(watch())
        prober = asyncio.create_task(probe_api(http))
        # As fast as the socket takes them, no deliver_sm_resp awaited.
        for i in range(FLOOD):
            await sim_smsc.inject_mo(SENDER, SIN, encode_gsm7(f"flood {i}"), data_coding=0)
        try:
            await wait_for(stored, timeout=180, interval=0.2)
        finally:
            flooding = False
            await asyncio.gather(watcher, prober)

    assert max(in_flight) > 0  # the watcher saw the flood being handled
    assert max(in_flight) <= BOUND and client.inbound_peak <= BOUND, (max(in_flight), client.inbound_peak)
    assert healthz_answers > 0
    bodies = await gateway.sql("SELECT body FROM inbound_messages")
    assert sorted(b for (b,) in bodies) == sorted(f"flood {i}" for i in range(FLOOD))  # once each
    sim = sim_smsc.simulator
    await wait_for(lambda: _async(sim.stats.mo_delivered == FLOOD))
    assert sim.stats.delivery_errors == 0 and sim.bind_count == 1  # no redelivery, no reconnect


async def _async(value: bool) -> bool:
    return value
