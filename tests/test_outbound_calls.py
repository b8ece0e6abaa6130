"""Outbound calls end to end: xoxzo-cloudpy -> POST /voice/simple/playbacks/ -> Originate over
AMI to an Asterisk stand-in (tests/peers/ami_server.py) -> the stand-in, as the gateway-outbound
dialplan would, places the FastAGI call -> the recording or the TTS message is streamed ->
status, duration, cost and the signed status callback. Also the AMI client on its own: login,
reconnect, logoff, header sanitising."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import phonenumbers
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import text
from xoxzo.cloudpy import XoxzoClient

from gateway.app import CALLS, WEBHOOKS, create_app
from gateway.config import VoiceConfig
from gateway.egress.client import policy_session
from gateway.egress.policy import SsrfPolicy
from gateway.http import routes_outbound
from gateway.http.routes_outbound import OUTBOUND
from gateway.keys import CONFIG, NUMBERS, SESSIONS
from gateway.services.accounts import NewCredentials
from gateway.services.dialing import update_rights
from gateway.services.number_import import parse_numbers_csv
from gateway.voice.ami import AmiClient, AmiNotConnected, format_action, sanitise_value
from gateway.voice.executor import Executor
from gateway.voice.fastagi import FastAgiServer
from gateway.voice.fetcher import PolicyFetcher
from gateway.voice.media import MediaCache
from gateway.voice.outbound import OutboundCalls, OutboundSettings, agi_router, outbound_cleanup_ctx
from gateway.voice.tts import EspeakSpeech
from tests.conftest import Gateway, gateway_config, serve_app, wait_for
from tests.peers.ami_server import AmiServer, Plan
from tests.peers.asterisk_agi import CallScenario, fastagi_call
from tests.test_callbacks_links import verify
from tests.test_voice_calls import tone_wav
from tests.webhook_receiver import Receiver

CALLER = "+81312345678"  # a DIN the rig's account holds
RECIPIENT = "+819012345678"
ALLOWED = "+81,+44,+1,+371"  # the rig's global voice.outbound_allow_prefixes: JP, GB, US, LV
SECRET = "s3cret"
PRICE_81 = 3.5
INJECTION = "\r\nAction: Command\r\nCommand: core stop now\r\n\r\n"


@dataclass
class MediaServer:
    url: str = ""
    hits: int = 0


@pytest_asyncio.fixture
async def media() -> AsyncIterator[MediaServer]:
    srv = MediaServer()
    wav = tone_wav()

    async def greeting(request: web.Request) -> web.Response:
        srv.hits += 1
        return web.Response(body=wav, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/greeting.wav", greeting)
    async with serve_app(app) as base_url:
        srv.url = f"{base_url}/greeting.wav"
        yield srv


@asynccontextmanager
async def voice_executor(cfg: VoiceConfig) -> AsyncIterator[Executor]:
    """The Executor the app's call flow uses, built from the same parts (gateway/voice/assembly.py)."""
    policy = SsrfPolicy(allow_private=True, allow_loopback=True)
    session = policy_session(policy)
    try:
        media = MediaCache(PolicyFetcher(session), cfg.data_dir, cfg.media_max_bytes, cfg.media_timeout)
        yield Executor(
            media,
            EspeakSpeech(cfg.data_dir),
            cfg.trunk,
            cfg.dial_timeout,
            ("+81",),
            os.path.join(cfg.data_dir, "voicemail"),
            cfg.voicemail_max_seconds,
            cfg.voicemail_silence_seconds,
        )
    finally:
        await session.close()


def _outbound_fastagi(ami: AmiServer) -> Callable[[web.Application], AsyncIterator[None]]:
    """The FastAGI server with the router app.py is to use: outbound scripts to OutboundCalls."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        server = FastAgiServer(agi_router(app[CALLS].handle, lambda: app.get(OUTBOUND)), "127.0.0.1", 0)
        await server.start()
        ami.agi_port = server.port
        yield
        await server.stop()

    return ctx


@dataclass
class Rig:
    gw: Gateway
    ami: AmiServer
    calls: OutboundCalls
    creds: NewCredentials
    client: XoxzoClient
    http: aiohttp.ClientSession

    async def post(
        self, data: dict[str, str], creds: NewCredentials | None = None, *, as_json: bool = False
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"json": data} if as_json else {"data": data}
        async with self.http.post(
            f"{self.gw.base_url}/voice/simple/playbacks/", headers=self.gw.auth(creds or self.creds), **kwargs
        ) as r:
            return r.status, await r.json()

    async def final_status(self, callid: str) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            st = await asyncio.to_thread(self.client.get_simple_playback_status, callid)
            assert st.errors is None, st.message
            body: dict[str, Any] = st.message
            return body if body["status"] not in ("QUEUED", "IN_PROGRESS") else None

        result: dict[str, Any] = await wait_for(done)
        return result

    async def rows(self) -> list[Any]:
        return await self.gw.sql("SELECT uid, status, direction FROM calls ORDER BY id")


def _has_route(app: web.Application, path: str) -> bool:
    return any(r.canonical == path for r in app.router.resources())


async def hold_din(gw: Gateway, creds: NewCredentials, number: str) -> None:
    """`creds`' account subscribes to `number` as a DIN (put in the inventory first)."""
    numbers = gw.app[NUMBERS]
    await numbers.import_numbers(
        parse_numbers_csv(
            "number,country_code,prefix,sms,voice,monthly_cost,minute_cost\n"
            f"{number},JP,{number[1:4]},false,true,1000,3.5\n"
        )
    )
    [(uid,)] = await gw.sql("SELECT uid FROM numbers WHERE number = :n", n=number)
    await numbers.subscribe(creds.account.id, "din", uid)


@pytest_asyncio.fixture
async def rig(clean_db: str, sim_smsc: Any, http: aiohttp.ClientSession) -> AsyncIterator[Rig]:
    ami = AmiServer(secret=SECRET)
    await ami.start()
    cfg = gateway_config(clean_db, sim_smsc.host, sim_smsc.port)
    async with voice_executor(cfg.voice) as executor:
        app = create_app(cfg)
        if not _has_route(app, "/voice/simple/playbacks/"):  # until app.py mounts the routes
            app.add_routes(routes_outbound.routes)
        settings = OutboundSettings(
            ami_host=ami.host,
            ami_port=ami.port,
            ami_username="gateway",
            ami_secret=SECRET,
            trunk="trunk",
            ring_timeout=20,
            prices={"": 12.0, "81": PRICE_81},
            allow_prefixes=ALLOWED,
            hangup_grace=0.3,
            orphan_grace=0.5,
            reconnect_max_seconds=0.5,
            sweep_interval=3600,
        )
        app.cleanup_ctx.append(
            outbound_cleanup_ctx(settings, lambda _app: executor, wake_webhooks=lambda a: a[WEBHOOKS].wake)
        )
        app.cleanup_ctx.append(_outbound_fastagi(ami))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, cfg.http.host, cfg.http.port)
        await site.start()
        gw = Gateway(app, cfg.public_base_url, runner)
        try:
            calls = app[OUTBOUND]
            assert await calls.ami.wait_connected(10), calls.ami.last_error
            creds = await gw.account(name="outbound")
            await hold_din(gw, creds, CALLER)
            client = XoxzoClient(sid=creds.account.sid, auth_token=creds.auth_token, api_host=gw.base_url)
            yield Rig(gw, ami, calls, creds, client, http)
        finally:
            await runner.cleanup()
            await ami.close()


def originate_of(rig: Rig, callid: str) -> Any:
    [action] = [a for a in rig.ami.named("Originate") if a.get("ActionID") == f"gw-originate-{callid}"]
    return action


# -- happy paths ------------------------------------------------------------------------------


async def test_simple_playback_with_xoxzo_cloudpy(rig: Rig, media: MediaServer, receiver: Receiver) -> None:
    res = await asyncio.to_thread(
        rig.client.call_simple_playback, CALLER, RECIPIENT, media.url, receiver.url("/status")
    )
    assert res.errors is None, res.message
    [answer] = res.messages
    callid = answer["callid"]
    assert re.fullmatch(r"[0-9a-f]{32}", callid)

    [placed] = await rig.ami.finished_calls(1)
    action = originate_of(rig, callid)
    assert action.get("Channel") == f"PJSIP/{RECIPIENT}@trunk"
    assert action.get("Context") == "gateway-outbound"
    assert action.get("Exten") == "s" and action.get("Priority") == "1"
    assert action.get("CallerID") == CALLER
    assert action.get_all("Variable") == [f"GATEWAY_CALLID={callid}"]
    assert action.get("Async") == "true" and action.get("Timeout") == "20000"
    # The dialplan's AGI reached the gateway with the call id and the recording was played.
    assert placed.callid == callid and placed.transcript is not None
    assert placed.transcript.verbs == ["ANSWER", "STREAM FILE", "HANGUP"]
    assert len(placed.transcript.streamed) == 1 and placed.transcript.missing == []
    assert media.hits == 1

    st = await rig.final_status(callid)
    assert st["status"] == "COMPLETED" and st["direction"] == "outbound"
    assert st["caller"] == CALLER and st["recipient"] == RECIPIENT
    assert st["duration"] >= 1 and st["cost"] == PRICE_81 * math.ceil(st["duration"] / 60)
    assert st["answer_time"] and st["end_time"] and st["error"] is None
    assert st["actions"] == [f"playback {media.url}"]

    await wait_for(lambda: _async(receiver.on("/status")))
    [hit] = receiver.on("/status")
    verify(rig.creds.account.webhook_secret, hit)
    body = json.loads(hit.body)
    assert body["callid"] == callid and body["status"] == "COMPLETED" and body["duration"] == st["duration"]


async def _async(value: Any) -> Any:
    return value


@pytest.mark.parametrize("agi_first", [False, True], ids=["response-first", "agi-first"])
async def test_tts_playback_with_xoxzo_cloudpy(rig: Rig, agi_first: bool) -> None:
    rig.ami.plan(Plan(agi_first=agi_first))
    res = await asyncio.to_thread(
        rig.client.call_tts_playback, CALLER, RECIPIENT, "Your parcel arrives today.", "en"
    )
    assert res.errors is None, res.message
    callid = res.messages[0]["callid"]
    [placed] = await rig.ami.finished_calls(1)
    assert placed.transcript is not None and placed.transcript.verbs == ["ANSWER", "STREAM FILE", "HANGUP"]
    [path] = placed.transcript.streamed  # the synthesised message: a playable 8 kHz WAV
    assert path.startswith(os.path.join(rig.gw.app[CONFIG].voice.data_dir, "tts") + "/")
    st = await rig.final_status(callid)
    assert st["status"] == "COMPLETED" and st["actions"] == ["say en"] and st["cost"] == PRICE_81
    assert originate_of(rig, callid).get("Channel") == f"PJSIP/{RECIPIENT}@trunk"


async def test_digits_without_plus_as_the_client_readme_sends_them(rig: Rig) -> None:
    """xoxzo-cloudpy's README writes caller="818011112222": read as E.164, +digits everywhere."""
    res = await asyncio.to_thread(rig.client.call_tts_playback, CALLER[1:], RECIPIENT[1:], "Hello", "en")
    assert res.errors is None, res.message
    callid = res.messages[0]["callid"]
    await rig.ami.finished_calls(1)
    action = originate_of(rig, callid)
    assert action.get("Channel") == f"PJSIP/{RECIPIENT}@trunk" and action.get("CallerID") == CALLER
    st = await rig.final_status(callid)
    assert (st["caller"], st["recipient"], st["status"]) == (CALLER, RECIPIENT, "COMPLETED")
    # Digits are read as E.164, so the national trunk 0 is as wrong without + as with it.
    refused = await asyncio.to_thread(rig.client.call_tts_playback, CALLER[1:], "8108012345678", "Hi", "en")
    assert refused.errors == 400 and set(refused.message) == {"recipient"}


async def test_caller_hanging_up_mid_message_completes_the_call(rig: Rig) -> None:
    rig.ami.plan(Plan(scenario={"hangup_after": 2, "hangup_during": True}))
    status, body = await rig.post(
        {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hi", "tts_lang": "en"}
    )
    assert status == 201
    st = await rig.final_status(body[0]["callid"])
    assert st["status"] == "COMPLETED" and st["result"] == "hangup"


# -- failures ---------------------------------------------------------------------------------


async def test_recording_that_cannot_be_fetched_fails_the_answered_call(rig: Rig, media: MediaServer) -> None:
    missing = media.url.replace("greeting.wav", "missing.wav")
    code, body = await rig.post({"caller": CALLER, "recipient": RECIPIENT, "recording_url": missing})
    assert code == 201
    [placed] = await rig.ami.finished_calls(1)
    assert placed.transcript is not None and placed.transcript.verbs == ["ANSWER", "HANGUP"]
    st = await rig.final_status(body[0]["callid"])
    assert st["status"] == "FAILED" and st["error"].startswith("playback:")
    assert st["answer_time"] and st["cost"] == PRICE_81  # answered: the minute was used


async def test_outbound_agi_for_no_known_call_just_hangs_up(rig: Rig) -> None:
    port = rig.ami.agi_port
    for args in (["0" * 32], ["not-a-call-id"], []):
        t = await fastagi_call("127.0.0.1", port, CallScenario(script="outbound", args=args))
        assert t.verbs == ["HANGUP"], args
    assert await rig.rows() == []


async def test_router_without_outbound_calls_hangs_up_and_passes_inbound_on() -> None:
    inbound: list[str] = []

    async def din(channel: Any) -> None:
        inbound.append(channel.env["network_script"])

    async with FastAgiServer(agi_router(din, lambda: None), "127.0.0.1", 0) as server:
        t = await fastagi_call("127.0.0.1", server.port, CallScenario(script="outbound", args=["0" * 32]))
        assert t.verbs == ["HANGUP"]
        await fastagi_call("127.0.0.1", server.port, CallScenario(script="din"))
    assert inbound == ["din"]


async def test_answered_call_whose_playback_never_ran_fails_on_hangup(rig: Rig) -> None:
    rig.ami.plan(Plan(outcome="answer_no_agi", hold_seconds=1.1))
    code, body = await rig.post(
        {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hello", "tts_lang": "en"}
    )
    assert code == 201
    st = await rig.final_status(body[0]["callid"])
    assert st["status"] == "FAILED" and "never ran" in st["error"]
    assert st["answer_time"] and st["duration"] >= 1 and st["cost"] == PRICE_81


async def _as_if_another_node_started_playing(rig: Rig, callid: str) -> None:
    """What play() on another node writes when the FastAGI call reaches it (then that node dies)."""

    async def answered() -> bool:
        return [tuple(r)[1] for r in await rig.rows()] == ["IN_PROGRESS"]

    await wait_for(answered)
    async with rig.gw.app[SESSIONS].begin() as s:
        await s.execute(
            text("UPDATE calls SET actions = :a WHERE uid = :u"), {"a": '["say en"]', "u": callid}
        )


async def test_call_whose_playing_node_died_is_ended_at_the_hangup(rig: Rig) -> None:
    """The Hangup event for a started playback is left to the node playing it; when that node
    has died, the record is ended FAILED at the hangup, with the duration up to it."""
    rig.ami.plan(Plan(outcome="answer_no_agi", hold_seconds=2.0))
    code, body = await rig.post(
        {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hello", "tts_lang": "en"}
    )
    assert code == 201
    callid = body[0]["callid"]
    await _as_if_another_node_started_playing(rig, callid)
    st = await rig.final_status(callid)
    assert st["status"] == "FAILED" and "node playing this call stopped" in st["error"], st
    # Ended at the hangup (2 s after the answer), not when the grace periods ran out.
    assert 1 <= st["duration"] <= 3 and st["cost"] == PRICE_81


async def test_answered_call_with_no_outcome_at_all_is_swept(rig: Rig) -> None:
    """A single node that crashed mid-playback sees no Hangup after its restart: the sweep ends
    the call once no playback could still be running, with an unknown (0) duration."""
    rig.ami.plan(Plan(outcome="answer_no_agi", hold_seconds=60))
    code, body = await rig.post(
        {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hello", "tts_lang": "en"}
    )
    assert code == 201
    callid = body[0]["callid"]
    await _as_if_another_node_started_playing(rig, callid)
    assert await rig.calls.sweep(now=datetime.now(UTC) + timedelta(hours=1)) == 0  # may still play
    assert await rig.calls.sweep(now=datetime.now(UTC) + timedelta(hours=5)) == 1
    st = await rig.final_status(callid)
    assert st["status"] == "FAILED" and "duration unknown" in st["error"], st
    assert st["duration"] == 0 and st["cost"] == 0
    assert await rig.calls.sweep(now=datetime.now(UTC) + timedelta(hours=5)) == 0  # ended once


async def test_unconfirmed_originate_is_kept_and_swept(rig: Rig) -> None:
    """The connection goes after the Originate was written: Asterisk may be dialling, so the
    call is kept (201) rather than offered for a retry that could ring the callee twice."""
    rig.ami.plan(Plan(outcome="drop"))
    code, body = await rig.post(
        {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hi", "tts_lang": "en"}
    )
    assert code == 201
    callid = body[0]["callid"]
    assert [tuple(r) for r in await rig.rows()] == [(callid, "QUEUED", "outbound")]
    assert await rig.calls.sweep() == 0  # not stale yet
    assert await rig.calls.sweep(now=datetime.now(UTC) + timedelta(hours=1)) == 1
    st = await rig.final_status(callid)
    assert st["status"] == "FAILED" and "no outcome" in st["error"]
    assert await rig.calls.ami.wait_connected(10)  # and the client came back


# -- API checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"recipient": RECIPIENT, "recording_url": "http://example.com/a.mp3"}, "caller"),
        ({"caller": "0312345678", "recipient": RECIPIENT, "recording_url": "http://e.com/a.mp3"}, "caller"),
        (
            {"caller": CALLER, "recipient": "+8108012345678", "recording_url": "http://e.com/a.mp3"},
            "recipient",
        ),
        ({"caller": CALLER, "recipient": RECIPIENT}, "recording_url"),
        ({"caller": CALLER, "recipient": RECIPIENT, "recording_url": "ftp://e.com/a.mp3"}, "recording_url"),
        ({"caller": CALLER, "recipient": RECIPIENT, "recording_url": "http://e.com/a'.mp3"}, "recording_url"),
        (
            {
                "caller": CALLER,
                "recipient": RECIPIENT,
                "recording_url": "http://e.com/a.mp3",
                "tts_message": "x",
            },
            "recording_url",
        ),
        ({"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hello"}, "tts_lang"),
        ({"caller": CALLER, "recipient": RECIPIENT, "tts_lang": "en"}, "tts_message"),
        ({"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hi", "tts_lang": "english!"}, "tts_lang"),
        (
            {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hi\u202e", "tts_lang": "en"},
            "tts_message",
        ),
        (
            {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "x" * 1001, "tts_lang": "en"},
            "tts_message",
        ),
        (
            {
                "caller": CALLER,
                "recipient": RECIPIENT,
                "tts_message": "Hi",
                "tts_lang": "en",
                "callbackurl": "nope",
            },
            "callbackurl",
        ),
    ],
)
async def test_bad_fields_are_400_naming_the_field(rig: Rig, fields: dict[str, str], bad: str) -> None:
    code, body = await rig.post(fields)
    assert code == 400 and bad in body, body
    assert rig.ami.named("Originate") == [] and await rig.rows() == []


async def test_every_bad_field_is_reported_at_once(rig: Rig) -> None:
    code, body = await rig.post({"caller": "x", "recipient": "y", "tts_message": "Hi"})
    assert code == 400 and set(body) == {"caller", "recipient", "tts_lang"}


async def test_xoxzo_cloudpy_sees_400_and_401(rig: Rig) -> None:
    res = await asyncio.to_thread(
        rig.client.call_simple_playback, CALLER, "+8108012345678", "http://e.com/a.mp3"
    )
    assert res.errors == 400 and "recipient" in res.message
    wrong = XoxzoClient(sid=rig.creds.account.sid, auth_token="nope", api_host=rig.gw.base_url)
    res = await asyncio.to_thread(wrong.call_tts_playback, CALLER, RECIPIENT, "Hi", "en")
    assert res.errors == 401
    assert rig.ami.named("Originate") == []


async def test_other_accounts_call_is_404(rig: Rig) -> None:
    code, body = await rig.post(
        {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hi", "tts_lang": "en"}
    )
    assert code == 201
    callid = body[0]["callid"]
    await rig.final_status(callid)
    other = await rig.gw.account(name="other")
    client = XoxzoClient(sid=other.account.sid, auth_token=other.auth_token, api_host=rig.gw.base_url)
    st = await asyncio.to_thread(client.get_simple_playback_status, callid)
    assert st.errors == 404
    for path in (f"/voice/calls/{callid}/", f"/voice/calls/{callid}"):
        async with rig.http.get(f"{rig.gw.base_url}{path}", headers=rig.gw.auth(other)) as r:
            assert r.status == 404
    async with rig.http.get(f"{rig.gw.base_url}/voice/calls/", headers=rig.gw.auth(other)) as r:
        assert await r.json() == []


async def test_ami_down_is_503_and_nothing_is_written(rig: Rig) -> None:
    fields = {"caller": CALLER, "recipient": RECIPIENT, "tts_message": "Hi", "tts_lang": "en"}
    await rig.ami.stop()
    await wait_for(lambda: _async(not rig.calls.ami.connected))
    code, body = await rig.post(fields)
    assert code == 503 and "detail" in body
    res = await asyncio.to_thread(rig.client.call_tts_playback, CALLER, RECIPIENT, "Hi", "en")
    assert res.errors == 503
    assert await rig.rows() == []
    # Asterisk refusing the Originate outright: 503 too, and the row is gone again.
    await rig.ami.start()  # same port: the client reconnects with its backoff
    assert await rig.calls.ami.wait_connected(10), rig.calls.ami.last_error
    rig.ami.plan(Plan(outcome="refuse"))
    code, body = await rig.post(fields)
    assert code == 503 and len(rig.ami.named("Originate")) == 1
    assert await rig.rows() == []
    code, body = await rig.post(fields)
    assert code == 201
    st = await rig.final_status(body[0]["callid"])
    assert st["status"] == "COMPLETED"


async def test_header_injection_never_reaches_the_ami_wire(rig: Rig) -> None:
    code, body = await rig.post(
        {"caller": CALLER + INJECTION, "recipient": RECIPIENT, "tts_message": "Hi", "tts_lang": "en"}
    )
    assert code == 400 and "caller" in body
    code, body = await rig.post(
        {
            "caller": CALLER,
            "recipient": RECIPIENT,
            "tts_message": "Hello" + INJECTION + "bye",
            "tts_lang": "en",
        },
        as_json=True,
    )
    assert code == 201, body
    st = await rig.final_status(body[0]["callid"])
    assert st["status"] == "COMPLETED"
    assert [a.name for a in rig.ami.actions] == ["Login", "Originate"]
    wire = bytes(rig.ami.received)
    assert b"core stop now" not in wire  # the message never goes to AMI at all
    assert wire.count(b"\n") == wire.count(b"\r\n")  # no bare LF (manager.c ends a line at one)
    assert not any(line.startswith((b"Command", b"Action: Command")) for line in wire.split(b"\r\n"))
    row = await rig.gw.sql("SELECT tts_message FROM calls")
    assert row[0][0] == "Hello Action: Command Command: core stop now bye"


# -- toll-fraud guards ------------------------------------------------------------------------

TTS = {"tts_message": "Hi", "tts_lang": "en"}


def example(region: str, kind: int) -> str:
    number = phonenumbers.example_number_for_type(region, kind)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@pytest.mark.parametrize("region", ["GB", "JP", "US", "LV"])
async def test_premium_rate_destinations_are_refused_and_never_dialled(rig: Rig, region: str) -> None:
    """Each country's prefix is allowed (its mobile example is called), its premium-rate
    range is not: the number-type deny-list, not the prefix, refuses it."""
    premium = example(region, phonenumbers.PhoneNumberType.PREMIUM_RATE)
    code, body = await rig.post({"caller": CALLER, "recipient": premium, **TTS})
    assert code == 400 and set(body) == {"recipient"} and "premium-rate" in body["recipient"][0], body
    assert rig.ami.named("Originate") == [] and await rig.rows() == []
    rig.ami.plan(Plan(outcome="busy"))
    mobile = example(region, phonenumbers.PhoneNumberType.MOBILE)
    code, body = await rig.post({"caller": CALLER, "recipient": mobile, **TTS})
    assert code == 201, body
    assert originate_of(rig, body[0]["callid"]).get("Channel") == f"PJSIP/{mobile}@trunk"


@pytest.mark.parametrize(
    "recipient",
    ["+81570123456", "+447012345678", "+33612345678"],  # JP 0570 (UAN), UK 070 (personal), FR
)
async def test_other_denied_types_and_prefixes_are_refused(rig: Rig, recipient: str) -> None:
    code, body = await rig.post({"caller": CALLER, "recipient": recipient, **TTS})
    assert code == 400 and set(body) == {"recipient"}, body
    assert rig.ami.named("Originate") == [] and await rig.rows() == []


async def test_a_caller_the_account_does_not_hold_is_refused(rig: Rig) -> None:
    other = await rig.gw.account(name="other")
    await hold_din(rig.gw, other, "+81399990000")
    for caller in ("+81120444444", "+81399990000", "+819011112222"):  # toll-free, B's DIN, anyone
        code, body = await rig.post({"caller": caller, "recipient": RECIPIENT, **TTS})
        assert code == 400 and set(body) == {"caller"}, (caller, body)
    # Both refusals at once; and B's own DIN is fine for B.
    code, body = await rig.post({"caller": "+81120444444", "recipient": "+81990123456", **TTS})
    assert code == 400 and set(body) == {"caller", "recipient"}, body
    assert rig.ami.named("Originate") == [] and await rig.rows() == []
    code, body = await rig.post({"caller": "+81399990000", "recipient": RECIPIENT, **TTS}, other)
    assert code == 201, body
    assert originate_of(rig, body[0]["callid"]).get("CallerID") == "+81399990000"


async def test_an_operator_verified_caller_id_is_accepted(rig: Rig) -> None:
    verified = "+815012345678"
    code, body = await rig.post({"caller": verified, "recipient": RECIPIENT, **TTS})
    assert code == 400 and "caller" in body
    sid = rig.creds.account.sid
    await update_rights(rig.gw.app[SESSIONS], sid, {}, add_callers=[verified])  # what the CLI does
    code, body = await rig.post({"caller": verified, "recipient": RECIPIENT, **TTS})
    assert code == 201, body
    assert originate_of(rig, body[0]["callid"]).get("CallerID") == verified
    assert (await rig.final_status(body[0]["callid"]))["caller"] == verified
    await update_rights(rig.gw.app[SESSIONS], sid, {}, remove_callers=[verified])
    code, body = await rig.post({"caller": verified, "recipient": RECIPIENT, **TTS})
    assert code == 400 and "caller" in body


async def test_the_accounts_own_prefixes_replace_the_global_list(rig: Rig) -> None:
    sessions, sid = rig.gw.app[SESSIONS], rig.creds.account.sid
    await update_rights(sessions, sid, {"outbound_allow_prefixes": "+33"})  # widens to FR, drops JP
    code, body = await rig.post({"caller": CALLER, "recipient": RECIPIENT, **TTS})
    assert code == 400 and set(body) == {"recipient"}, body
    code, body = await rig.post({"caller": CALLER, "recipient": "+33899123456", **TTS})  # FR premium
    assert code == 400 and "premium-rate" in body["recipient"][0], body
    rig.ami.plan(Plan(outcome="busy"))
    code, body = await rig.post({"caller": CALLER, "recipient": "+33612345678", **TTS})
    assert code == 201, body
    await update_rights(sessions, sid, {"outbound_allow_prefixes": ""})  # no destination at all
    code, body = await rig.post({"caller": CALLER, "recipient": "+33612345678", **TTS})
    assert code == 400 and set(body) == {"recipient"}, body
    await update_rights(sessions, sid, {"outbound_allow_prefixes": None})  # the global list again
    rig.ami.plan(Plan(outcome="busy"))
    code, body = await rig.post({"caller": CALLER, "recipient": RECIPIENT, **TTS})
    assert code == 201, body
    assert len(rig.ami.named("Originate")) == 2


async def test_concurrent_call_limit_is_429(rig: Rig) -> None:
    await update_rights(rig.gw.app[SESSIONS], rig.creds.account.sid, {"outbound_max_concurrent": 2})
    rig.ami.plan(Plan(outcome="silent"), Plan(outcome="silent"))  # both stay open
    for _ in range(2):
        code, body = await rig.post({"caller": CALLER, "recipient": RECIPIENT, **TTS})
        assert code == 201, body
    async with rig.http.post(
        f"{rig.gw.base_url}/voice/simple/playbacks/",
        headers=rig.gw.auth(rig.creds),
        data={"caller": CALLER, "recipient": RECIPIENT, **TTS},
    ) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        body = await r.json()
    assert body["limit"] == "outbound_max_concurrent" and "2" in body["detail"], body
    assert len(rig.ami.named("Originate")) == 2 and len(await rig.rows()) == 2
    # Another account is not held up by this one's calls.
    other = await rig.gw.account(name="other")
    await hold_din(rig.gw, other, "+81399990000")
    rig.ami.plan(Plan(outcome="busy"))
    code, body = await rig.post({"caller": "+81399990000", "recipient": RECIPIENT, **TTS}, other)
    assert code == 201, body
    # Once the open calls have ended, the account may call again.
    assert await rig.calls.sweep(now=datetime.now(UTC) + timedelta(hours=1)) == 2
    rig.ami.plan(Plan(outcome="busy"))
    code, body = await rig.post({"caller": CALLER, "recipient": RECIPIENT, **TTS})
    assert code == 201, body


async def test_calls_per_minute_limit_is_429(rig: Rig) -> None:
    await update_rights(rig.gw.app[SESSIONS], rig.creds.account.sid, {"outbound_max_per_minute": 2})
    for _ in range(2):
        rig.ami.plan(Plan(outcome="busy"))
        code, body = await rig.post({"caller": CALLER, "recipient": RECIPIENT, **TTS})
        assert code == 201, body
        assert (await rig.final_status(body[0]["callid"]))["status"] == "BUSY"  # ended: not concurrency
    async with rig.http.post(
        f"{rig.gw.base_url}/voice/simple/playbacks/",
        headers=rig.gw.auth(rig.creds),
        data={"caller": CALLER, "recipient": RECIPIENT, **TTS},
    ) as r:
        assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
        body = await r.json()
    assert body["limit"] == "outbound_max_per_minute", body
    assert len(rig.ami.named("Originate")) == 2 and len(await rig.rows()) == 2


# -- the AMI client on its own ----------------------------------------------------------------


@pytest_asyncio.fixture
async def ami_server() -> AsyncIterator[AmiServer]:
    srv = AmiServer(secret=SECRET)
    await srv.start()
    yield srv
    await srv.close()


def test_format_action_sanitises_values_and_checks_names() -> None:
    data = format_action("Originate", "id\r\n1", [("CallerID", "+81" + INJECTION), ("Variable", "A=1\nB=2")])
    lines = data.split(b"\r\n")
    assert (
        data.endswith(b"\r\n\r\n")
        and data.count(b"\r\n\r\n") == 1
        and b"\n" not in data.replace(b"\r\n", b"")
    )
    assert lines[:4] == [
        b"Action: Originate",
        b"ActionID: id  1",
        b"CallerID: +81  Action: Command  Command: core stop now    ",
        b"Variable: A=1 B=2",
    ]
    assert sanitise_value("a\x00b\x85c\u2028d") == "a b c d"
    for bad in ("Caller ID", "X:Y", "A\r\nB", ""):
        with pytest.raises(ValueError):
            format_action("Originate", "1", [(bad, "v")])
    with pytest.raises(ValueError):
        format_action("Originate", "1", [("ActionID", "x")])


async def test_client_logs_in_sends_actions_and_logs_off(ami_server: AmiServer) -> None:
    client = AmiClient(ami_server.host, ami_server.port, "gateway", SECRET, backoff_max=0.2)
    with pytest.raises(AmiNotConnected):
        await client.send_action("Ping")
    events: list[str] = []
    client.add_listener(lambda m: events.append(m.event or ""))
    responses: list[str] = []

    async def consume() -> None:
        async for msg in client.events():
            if msg.event == "OriginateResponse":
                responses.append(msg.get("Response") or "")

    async with client:
        consumer = asyncio.create_task(consume())
        assert await client.wait_connected(5)
        pong = await client.send_action("Ping")
        assert pong.success and pong.get("ping") == "Pong"
        refused = await client.send_action("Originate", {"Exten": "s"})
        assert not refused.success and refused.message == "Channel not specified"
        sent = await client.send_action(
            "Originate", {"Channel": "PJSIP/x@trunk", "CallerID": "1" + INJECTION}
        )
        assert sent.success and sent.message == "Originate successfully queued"
        await wait_for(lambda: _async("OriginateResponse" in events))
        await wait_for(lambda: _async(responses == ["Success"]))
        consumer.cancel()
    assert [a.name for a in ami_server.actions] == ["Login", "Ping", "Originate", "Originate", "Logoff"]
    login = ami_server.actions[0]
    assert (
        login.get("Username") == "gateway" and login.get("Secret") == SECRET and login.get("Events") == "call"
    )
    assert ami_server.actions[3].get("CallerID") == "1  Action: Command  Command: core stop now"
    assert "FullyBooted" in events and "Newchannel" in events
    ids = [a.get("ActionID") for a in ami_server.actions]
    assert len(set(ids)) == len(ids) and all(ids)


async def test_client_reconnects_after_the_connection_drops(ami_server: AmiServer) -> None:
    client = AmiClient(
        ami_server.host, ami_server.port, "gateway", SECRET, backoff_initial=0.05, backoff_max=0.2
    )
    async with client:
        assert await client.wait_connected(5)
        await ami_server.drop_connections()
        await wait_for(lambda: _async(ami_server.logins == 2))
        assert await client.wait_connected(5)
        assert (await client.send_action("Ping")).success


async def test_client_with_a_wrong_secret_keeps_retrying_and_stays_down(ami_server: AmiServer) -> None:
    client = AmiClient(
        ami_server.host, ami_server.port, "gateway", "wrong", backoff_initial=0.05, backoff_max=0.1
    )
    async with client:
        await wait_for(lambda: _async(ami_server.failed_logins >= 2))
        assert not client.connected and "Authentication failed" in (client.last_error or "")
        with pytest.raises(AmiNotConnected):
            await client.send_action("Ping")
    assert ami_server.logins == 0


async def test_client_notices_a_silent_server_with_pings(ami_server: AmiServer) -> None:
    """A peer that stops answering (half-open connection) is replaced after a missed Ping."""
    client = AmiClient(
        ami_server.host,
        ami_server.port,
        "gateway",
        SECRET,
        ping_interval=0.1,
        action_timeout=0.3,
        backoff_max=0.1,
    )
    async with client:
        assert await client.wait_connected(5)
        original = ami_server._handle

        async def deaf(session: Any, action: Any) -> bool:
            if action.name == "Ping" and ami_server.logins == 1:
                return True  # swallowed
            return await original(session, action)

        ami_server._handle = deaf  # type: ignore[method-assign]
        await wait_for(lambda: _async(ami_server.logins >= 2), timeout=5)
        assert await client.wait_connected(5)
