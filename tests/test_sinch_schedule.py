"""Scheduled Sinch batches: `send_at` rows wait in the database and go out on time, on whichever
node is running then; a cancelled batch sends nothing; `expire_at` fails what was not sent in
time, and it is never sent later."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from gateway.app import CONNECTORS, DISPATCHER
from gateway.db.models import Message
from gateway.keys import SESSIONS
from gateway.services.accounts import NewCredentials
from smpp.simulator import SimulatorConfig, SmscSimulator
from tests.conftest import Gateway, gateway_config, start_gateway, wait_for
from tests.peers.simulator_peer import SimulatorPeer

A, B = "+818012345671", "+818012345672"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def send(
    http: aiohttp.ClientSession, gw: Gateway, creds: NewCredentials, **fields: Any
) -> dict[str, Any]:
    url = f"{gw.base_url}/xms/v1/{creds.account.sid}/batches"
    body = {"from": "SHOP", "body": "Doors open", **fields}
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {creds.auth_token}"}) as r:
        assert r.status == 201, await r.text()
        return dict(await r.json())


async def statuses(gw: Gateway) -> dict[str, tuple[str, int | None]]:
    return {r[0]: (r[1], r[2]) for r in await gw.sql("SELECT recipient, status, fail_code FROM messages")}


async def submitted(sim_smsc: Any) -> Counter[str]:
    return Counter("+" + s.destination_addr for s in await sim_smsc.submits())


async def test_sent_at_send_at_and_not_before(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    creds = await gateway.account()
    at = datetime.now(UTC) + timedelta(seconds=2)
    await send(http, gateway, creds, to=[A, B], send_at=iso(at))
    await asyncio.sleep(1)
    assert await submitted(sim_smsc) == Counter()
    assert {s for s, _ in (await statuses(gateway)).values()} == {"QUEUED"}

    async def both() -> bool:
        return await submitted(sim_smsc) == Counter({A: 1, B: 1})

    await wait_for(both)
    assert datetime.now(UTC) >= at


async def test_a_scheduled_batch_survives_a_restart(
    clean_db: str, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    """Accepted by one gateway, which stops before send_at; the next one to run sends it."""
    first = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port))
    creds = await first.account()
    at = datetime.now(UTC) + timedelta(seconds=2)
    await send(http, first, creds, to=[A, B], send_at=iso(at))
    cancelled = await send(http, first, creds, to=[B], body="Never", send_at=iso(at))
    async with http.delete(
        f"{first.base_url}/xms/v1/{creds.account.sid}/batches/{cancelled['id']}",
        headers={"Authorization": f"Bearer {creds.auth_token}"},
    ) as r:
        assert r.status == 200
    await first.runner.cleanup()
    await asyncio.sleep(2.5)  # send_at passes while no gateway runs
    assert await submitted(sim_smsc) == Counter()

    second = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port))
    try:

        async def delivered() -> bool:
            rows = await second.sql("SELECT status FROM messages WHERE body = 'Doors open'")
            return [r[0] for r in rows] == ["DELIVERED", "DELIVERED"]

        await wait_for(delivered)
        await asyncio.sleep(0.5)
        assert await submitted(sim_smsc) == Counter({A: 1, B: 1})  # the cancelled one never
        assert {s.short_message for s in await sim_smsc.submits()} == {b"Doors open"}
    finally:
        await second.runner.cleanup()


async def test_two_nodes_send_each_scheduled_recipient_once(
    clean_db: str, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    if not clean_db.startswith("postgresql"):
        pytest.skip("several nodes need PostgreSQL")
    nodes = [
        await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port, dispatcher__node_id=n))
        for n in ("node-a", "node-b")
    ]
    try:
        creds = await nodes[0].account()
        recipients = [f"+8180{i:08d}" for i in range(200)]
        await send(
            http, nodes[0], creds, to=recipients, send_at=iso(datetime.now(UTC) + timedelta(seconds=1.5))
        )

        async def all_sent() -> bool:
            return sum((await submitted(sim_smsc)).values()) >= 200

        await wait_for(all_sent, timeout=30)
        await asyncio.sleep(1)
        assert await submitted(sim_smsc) == Counter({r: 1 for r in recipients})
    finally:
        for gw in nodes:
            await gw.runner.cleanup()


async def test_what_is_not_sent_by_expire_at_fails_and_is_never_sent(
    clean_db: str, http: aiohttp.ClientSession
) -> None:
    """No SMSC to bind to until after expire_at: the recipients fail as Expired (406), and once
    an SMSC is there they are still not sent."""
    # The SMSC's port stays bound (not listening: connections are refused) until the simulator
    # takes it; a port merely picked free was once taken meanwhile as another test's local port.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    gw = await start_gateway(gateway_config(clean_db, "127.0.0.1", port))
    smsc: SimulatorPeer | None = None
    try:
        creds = await gw.account()
        expire = datetime.now(UTC) + timedelta(seconds=1.5)
        batch = await send(http, gw, creds, to=[A, B], expire_at=iso(expire))
        assert batch["expire_at"] == iso(expire)

        async def expired() -> bool:
            return await statuses(gw) == {A: ("FAIL", 406), B: ("FAIL", 406)}

        await wait_for(expired)
        assert datetime.now(UTC) >= expire
        simulator = SmscSimulator(
            SimulatorConfig(port=port, dlr_delay=0.0, fail_prefix=None, summary_interval=0)
        )
        reserved.close()
        await simulator.start()
        smsc = SimulatorPeer(simulator)

        async def bound() -> bool:
            return gw.app[CONNECTORS]["default"].bound

        await wait_for(bound, timeout=40)
        await asyncio.sleep(1)
        assert await submitted(smsc) == Counter()
    finally:
        reserved.close()
        await gw.runner.cleanup()
        if smsc is not None:
            await smsc.stop()


async def test_an_expired_row_is_not_claimed_even_before_the_sweep(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    creds = await gateway.account()
    batch = await send(http, gateway, creds, to=[A], send_at=iso(datetime.now(UTC) + timedelta(hours=1)))
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with gateway.app[SESSIONS].begin() as s:
        await s.execute(update(Message).values(next_attempt_at=past, expire_at=past))
    assert await gateway.app[DISPATCHER].claim() == []
    await wait_for(lambda: _eq(statuses(gateway), {A: ("FAIL", 406)}))
    assert await submitted(sim_smsc) == Counter() and batch["id"]


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
