"""Outbound calls as the app wires them from configuration (voice.ami_*): the xoxzo-cloudpy
client places a TTS call, the AMI stand-in originates it and, like the dialplan's
`gateway-outbound` context, runs AGI against the gateway's own FastAGI server. Also what the
configuration must hold for the app to start, and the call limits across two nodes."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from xoxzo.cloudpy import XoxzoClient

from gateway.app import FASTAGI, create_app
from gateway.config import Config, ConfigError
from gateway.http.routes_outbound import OUTBOUND
from gateway.keys import SESSIONS
from gateway.services.dialing import update_rights
from tests.conftest import ami_gateway_config, start_gateway, wait_for
from tests.peers.ami_server import AmiServer, Plan
from tests.test_outbound_calls import hold_din


async def test_tts_call_through_the_configured_ami(clean_db: str, sim_smsc: Any) -> None:
    ami = AmiServer(secret="s3cret")
    await ami.start()
    cfg = ami_gateway_config(clean_db, sim_smsc, ami)
    gw = await start_gateway(cfg)
    try:
        ami.agi_port = gw.app[FASTAGI].port
        creds = await gw.account()
        await hold_din(gw, creds, "+81312345678")
        client = XoxzoClient(sid=creds.account.sid, auth_token=creds.auth_token, api_host=gw.base_url)

        async def placed() -> Any:
            res = await asyncio.to_thread(
                client.call_tts_playback, "+81312345678", "+819012345678", "Hello from the gateway", "en"
            )
            return res if res.errors != 503 else None  # the AMI login may still be under way

        res = await wait_for(placed)
        assert res.errors is None, res.message
        callid = res.messages[0]["callid"]
        [call] = await ami.finished_calls(1)
        assert call.transcript.verbs[:2] == ["ANSWER", "STREAM FILE"] and call.transcript.missing == []

        async def completed() -> Any:
            st = await asyncio.to_thread(client.get_simple_playback_status, callid)
            return st.message if st.message.get("status") == "COMPLETED" else None

        status = await wait_for(completed)
        assert status["direction"] == "outbound" and status["cost"] == 12.0
    finally:
        await gw.runner.cleanup()
        await ami.close()


@pytest.mark.parametrize(
    ("prices", "problem"),
    [
        (None, "voice.outbound_prices is empty"),  # the default
        ({}, "voice.outbound_prices is empty"),
        ({"": 0.0}, "every price in voice.outbound_prices is 0"),  # the old default: calls free
        ({"": 0.0, "81": 0}, "every price in voice.outbound_prices is 0"),
        ({"": -1.0, "81": 3.0}, "voice.outbound_prices has a negative price"),
    ],
)
def test_ami_without_a_price_table_refuses_to_start(prices: dict[str, float] | None, problem: str) -> None:
    cfg = Config()
    cfg.voice.ami_enabled = True
    if prices is not None:
        cfg.voice.outbound_prices = prices
    with pytest.raises(ConfigError, match=re.escape(f"voice.ami_enabled is true but {problem}")):
        create_app(cfg)
    cfg.voice.ami_enabled = False  # no outbound calls: nothing to bill
    create_app(cfg)
    cfg.voice.ami_enabled, cfg.voice.outbound_prices = True, {"81": 3.0}
    create_app(cfg)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("outbound_allow_prefixes", "+81,81x", "prefix"),
        ("transfer_allow_prefixes", "+81,+", "prefix"),
        ("deny_number_types", "PREMIUM_RATE,EXPENSIVE", "EXPENSIVE"),
        ("outbound_max_concurrent", -1, "outbound_max_concurrent"),
    ],
)
def test_bad_dialing_settings_refuse_to_start(key: str, value: object, needle: str) -> None:
    cfg = Config()
    setattr(cfg.voice, key, value)
    with pytest.raises(ConfigError, match=needle):
        create_app(cfg)


async def test_call_limits_hold_across_two_nodes(clean_db: str, sim_smsc: Any) -> None:
    """Two gateway nodes on one PostgreSQL database: the account's concurrent-call limit is
    counted in the calls table under its row lock, so 8 simultaneous requests spread over both
    nodes place exactly as many calls as the limit. (The global limit is 1; the account's own
    3 widens it.)"""
    if clean_db.startswith("sqlite"):
        pytest.skip("several nodes share PostgreSQL; SQLite is a single-node database")
    ami = AmiServer(secret="s3cret")
    await ami.start()
    nodes = []
    try:
        for _ in range(2):
            cfg = ami_gateway_config(clean_db, sim_smsc, ami, voice__outbound_max_concurrent=1)
            nodes.append(await start_gateway(cfg))
        ami.plan(*(Plan(outcome="silent") for _ in range(8)))  # every call stays open
        creds = await nodes[0].account()
        await hold_din(nodes[0], creds, "+81312345678")
        await update_rights(nodes[0].app[SESSIONS], creds.account.sid, {"outbound_max_concurrent": 3})
        for gw in nodes:

            async def connected(gw: Any = gw) -> bool:
                return bool(gw.app[OUTBOUND].ami.connected)

            await wait_for(connected)
        fields = {
            "caller": "+81312345678",
            "recipient": "+819012345678",
            "tts_message": "Hi",
            "tts_lang": "en",
        }
        async with aiohttp.ClientSession() as http:

            async def post(i: int) -> int:
                gw = nodes[i % 2]
                async with http.post(
                    f"{gw.base_url}/voice/simple/playbacks/", data=fields, headers=gw.auth(creds)
                ) as r:
                    return r.status

            statuses = await asyncio.gather(*(post(i) for i in range(8)))
        assert sorted(statuses) == [201] * 3 + [429] * 5, statuses
        assert len(ami.named("Originate")) == 3
        assert len(await nodes[0].sql("SELECT id FROM calls")) == 3
    finally:
        for gw in nodes:
            await gw.runner.cleanup()
        await ami.close()


async def test_a_destination_without_a_price_is_refused(clean_db: str, sim_smsc: Any) -> None:
    """The operator widened an account to +44 but priced only +81: a GB call would be billed
    0, so it is refused like any other destination the account may not call."""
    ami = AmiServer(secret="s3cret")
    await ami.start()
    cfg = ami_gateway_config(clean_db, sim_smsc, ami, voice__outbound_prices={"81": 3.0})
    gw = await start_gateway(cfg)
    try:
        creds = await gw.account()
        await hold_din(gw, creds, "+81312345678")
        await update_rights(gw.app[SESSIONS], creds.account.sid, {"outbound_allow_prefixes": "+81,+44"})

        async def connected() -> bool:
            return bool(gw.app[OUTBOUND].ami.connected)

        await wait_for(connected)
        ami.plan(Plan(outcome="busy"))
        answers = []
        async with aiohttp.ClientSession() as http:
            for recipient in ("+447400123456", "+819012345678"):  # GB mobile, JP mobile
                fields = {
                    "caller": "+81312345678",
                    "recipient": recipient,
                    "tts_message": "Hi",
                    "tts_lang": "en",
                }
                async with http.post(
                    f"{gw.base_url}/voice/simple/playbacks/", data=fields, headers=gw.auth(creds)
                ) as r:
                    answers.append((r.status, await r.json()))
        (gb, gb_body), (jp, _) = answers
        assert gb == 400 and set(gb_body) == {"recipient"} and "no price" in gb_body["recipient"][0]
        assert jp == 201
        [originate] = ami.named("Originate")
        assert originate.get("Channel") == "PJSIP/+819012345678@trunk"
    finally:
        await gw.runner.cleanup()
        await ami.close()
