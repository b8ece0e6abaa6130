"""End to end over SMPP against both SMSC peers (our simulator and the npm `smpp` server):
bursts through drops, throttling, decimal/hex id receipts, and queued messages surviving restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.keys import CONFIG
from smpp.encoding import decode_short_message
from tests.conftest import Gateway, gateway_config, start_gateway, wait_for

JP = "+818012345678"


@pytest.fixture(params=["sim_smsc", "node_smsc"])
def peer(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


@pytest_asyncio.fixture
async def gw(clean_db: str, peer: Any) -> AsyncIterator[Gateway]:
    g = await start_gateway(gateway_config(clean_db, peer.host, peer.port))
    yield g
    await g.runner.cleanup()


async def post_many(
    http: aiohttp.ClientSession, gw: Gateway, creds: Any, n: int, prefix: str = "m"
) -> list[str]:
    async def one(i: int) -> str:
        async with http.post(
            f"{gw.base_url}/sms/messages/",
            data={"message": f"{prefix}-{i}", "recipient": JP, "sender": "DEMO"},
            headers=gw.auth(creds),
        ) as r:
            assert r.status == 201, await r.text()
            msgid: str = (await r.json())[0]["msgid"]
            return msgid

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def statuses(gw: Gateway) -> Counter[str]:
    return Counter(r[0] for r in await gw.sql("SELECT status FROM messages"))


async def all_delivered(gw: Gateway, n: int, timeout: float = 30) -> None:
    async def done() -> bool:
        return (await statuses(gw)) == Counter({"DELIVERED": n})

    try:
        await wait_for(done, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"statuses: {await statuses(gw)}") from None


def bodies(submits: list[Any]) -> Counter[str]:
    return Counter(decode_short_message(s.data_coding, s.esm_class, s.short_message).text for s in submits)


async def test_burst_survives_smsc_drop(gw: Gateway, http: aiohttp.ClientSession, peer: Any) -> None:
    creds = await gw.account()
    await peer.configure(drop_after=25)
    n = 120
    await post_many(http, gw, creds, n)
    await all_delivered(gw, n)
    got = bodies(await peer.submits())
    assert set(got) == {f"m-{i}" for i in range(n)}  # nothing lost
    duplicates = sum(c - 1 for c in got.values())
    # Only submits in flight when the link dropped may be sent twice: at most one window.
    assert duplicates <= gw.app[CONFIG].smpp.window
    assert await peer.bind_count() >= 2


async def test_throttling_backs_off_without_failures(
    gw: Gateway, http: aiohttp.ClientSession, peer: Any
) -> None:
    creds = await gw.account()
    await peer.configure(throttle_next=15)
    await post_many(http, gw, creds, 30)
    await all_delivered(gw, 30)
    assert len(await peer.submits()) == 30


@pytest.mark.parametrize(("id_format", "dlr_id_format"), [("hex", "dec"), ("dec", "hex"), ("dec", "dec")])
async def test_receipts_match_across_id_formats(
    gw: Gateway, http: aiohttp.ClientSession, peer: Any, id_format: str, dlr_id_format: str
) -> None:
    await peer.configure(id_format=id_format, dlr_id_format=dlr_id_format, dlr_mode="text")
    creds = await gw.account()
    await post_many(http, gw, creds, 5)
    await all_delivered(gw, 5)


async def test_receipts_arriving_late(gw: Gateway, http: aiohttp.ClientSession, peer: Any) -> None:
    # Long enough that the ten posts are answered before any receipt, even on a busy machine
    # (300 ms was not, under load).
    await peer.configure(dlr_delay_ms=2000, dlr_mode="tlv")
    creds = await gw.account()
    await post_many(http, gw, creds, 10)
    assert (await statuses(gw))["DELIVERED"] == 0
    await all_delivered(gw, 10)


async def test_queued_messages_survive_a_gateway_restart(
    clean_db: str, sim_smsc: Any, http: aiohttp.ClientSession
) -> None:
    await sim_smsc.configure(reject_binds=True)
    cfg = gateway_config(clean_db, sim_smsc.host, sim_smsc.port)
    first = await start_gateway(cfg)
    creds = await first.account()
    await post_many(http, first, creds, 10)
    await asyncio.sleep(0.5)
    assert await statuses(first) == Counter({"QUEUED": 10})
    await first.runner.cleanup()

    await sim_smsc.configure()  # binds allowed again
    second = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port))
    try:
        await all_delivered(second, 10)
        assert set(bodies(await sim_smsc.submits())) == {f"m-{i}" for i in range(10)}
    finally:
        await second.runner.cleanup()
