"""Who may place calls through FastAGI: only the allowed peers (voice.fastagi_allowed_peers) and,
with voice.fastagi_secret, only AGI URLs carrying the key. A refused connection leaves no call
record and no action_url request, for inbound (din) and outbound scripts alike; the refusals
are logged once per interval, not once each."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.app import FASTAGI
from gateway.config import ConfigError
from tests.conftest import Gateway, gateway_config, start_gateway
from tests.peers.asterisk_agi import CallScenario, CallTranscript, fastagi_call
from tests.test_voice_calls import DIN, ActionServer, action_server, records, subscribe  # noqa: F401

KEY = "k7Qz-3v9Lr2WmX8pT5sYb1Nc"

StartGateway = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def start(clean_db: str, sim_smsc: Any) -> AsyncIterator[StartGateway]:
    """start(**overrides): a gateway on the fresh database with those config overrides."""
    started: list[Gateway] = []

    async def go(**overrides: Any) -> Gateway:
        gw = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port, **overrides))
        started.append(gw)
        return gw

    yield go
    for gw in started:
        await gw.runner.cleanup()


async def call(gw: Gateway, script: str = "din", **kw: Any) -> CallTranscript:
    scenario = CallScenario(script=script, args=kw.pop("args", ()))
    return await fastagi_call("127.0.0.1", gw.app[FASTAGI].port, scenario, timeout=10, **kw)


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_a_peer_not_on_the_allow_list_is_closed_before_anything_happens(
    start: StartGateway,
    action_server: ActionServer,  # noqa: F811
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    gw = await start(voice__fastagi_allowed_peers="127.0.0.1/32")
    din = await subscribe(gw, http, f"{action_server.base_url}/actions")
    for script in ("din", "outbound"):
        for _ in range(3):
            t = await call(gw, script, local_host="127.0.0.2", args=["0" * 32])
            assert t.exchanges == [] and t.ended_by in ("reset", "bridge"), t
    assert action_server.requests == []
    # The allowed address still places calls, and only its call is on record.
    t = await call(gw)
    assert t.verbs[0] == "ANSWER"
    assert len(await records(gw, http, din.creds)) == 1
    assert len(action_server.requests) == 1
    # Six refusals, one log line (the next one comes after the report interval).
    assert len(lines(caplog, "not an allowed peer")) == 1
    assert "127.0.0.2" in lines(caplog, "not an allowed peer")[0]


async def test_with_a_secret_only_urls_carrying_the_key_get_through(
    start: StartGateway,
    action_server: ActionServer,  # noqa: F811
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    gw = await start(voice__fastagi_secret=KEY)
    din = await subscribe(gw, http, f"{action_server.base_url}/actions")
    refused = [
        "din",
        "din?key=",
        "din?key=wrong",
        f"din?key={KEY.upper()}",
        f"din?key={KEY[:-1]}",
        f"din?key={KEY}x",
        f"din?key={KEY}&key={KEY}",
        "din?x=1&key=wrong",
        f"din?KEY={KEY}",
        "outbound",
        "outbound?key=wrong",
    ]
    for script in refused:
        t = await call(gw, script, args=["0" * 32])
        assert t.exchanges == [] and t.ended_by in ("bridge", "reset"), script
    assert action_server.requests == []
    # The right key: the call flow runs, and the key never reaches it nor the log.
    t = await call(gw, f"din?key={KEY}")
    assert t.verbs[0] == "ANSWER"
    assert len(await records(gw, http, din.creds)) == 1
    assert len(action_server.requests) == 1 and KEY not in str(action_server.requests)
    # An outbound script with the key reaches the outbound router (off here: it hangs up).
    t = await call(gw, f"outbound?key={KEY}", args=["0" * 32])
    assert t.verbs == ["HANGUP"]
    assert len(await records(gw, http, din.creds)) == 1
    assert len(lines(caplog, "without the right key")) == 1
    assert not [r for r in caplog.records if KEY in r.getMessage()]


async def test_the_default_allows_loopback_only_and_bad_lists_are_config_errors(start: StartGateway) -> None:
    gw = await start()
    assert (await call(gw)).exchanges  # 127.0.0.1 is in the default 127.0.0.1/8,::1
    for bad in ("", "not-an-address", "127.0.0.1/33"):
        with pytest.raises(ConfigError, match="fastagi_allowed_peers"):
            await start(voice__fastagi_allowed_peers=bad)
