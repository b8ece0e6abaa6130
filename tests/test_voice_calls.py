"""Inbound calls end to end: an Asterisk stand-in speaking FastAGI to the gateway, the DIN's
action_url on a real HTTP server, media fetched and converted, call records and voicemails."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import math
import struct
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web

from gateway.app import CALLS, FASTAGI
from gateway.db.models import Call
from gateway.keys import NUMBERS, SESSIONS
from gateway.services.accounts import NewCredentials
from gateway.services.dialing import update_rights
from gateway.services.number_import import parse_numbers_csv
from tests.conftest import Gateway, serve_app, wait_for
from tests.peers.asterisk_agi import CallScenario, fastagi_call
from tests.webhook_receiver import Receiver, genuine

DIN = "+81312345678"
CALLER = "+819012345678"
INVENTORY = """number,country_code,prefix,sms,voice,monthly_cost,minute_cost
+81312345678,JP,813,false,true,1000,3.5
+81399990000,JP,813,false,true,1000,3.5
"""


def tone_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                for i in range(int(seconds * rate))
            )
        )
    return buf.getvalue()


@dataclass
class ActionServer:
    base_url: str = ""
    script: str = 'say en "Hello"'
    status: int = 200
    requests: list[dict[str, str]] = field(default_factory=list)
    media_hits: int = 0


@pytest_asyncio.fixture
async def action_server() -> AsyncIterator[ActionServer]:
    srv = ActionServer()
    wav = tone_wav()

    async def actions(request: web.Request) -> web.Response:
        srv.requests.append(dict(request.query))
        return web.Response(status=srv.status, text=srv.script, content_type="text/plain")

    async def media(request: web.Request) -> web.Response:
        srv.media_hits += 1
        return web.Response(body=wav, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/actions", actions)
    app.router.add_get("/greeting.wav", media)
    async with serve_app(app) as srv.base_url:
        yield srv


@dataclass
class Din:
    creds: NewCredentials
    uid: str


async def subscribe(gw: Gateway, http: aiohttp.ClientSession, action_url: str) -> Din:
    await gw.app[NUMBERS].import_numbers(parse_numbers_csv(INVENTORY))
    creds = await gw.account(name="voice")
    auth = gw.auth(creds)
    async with http.get(f"{gw.base_url}/voice/dins/?prefix=813", headers=auth) as r:
        uid = next(d["din_uid"] for d in await r.json() if "+" + d["din"] == DIN)
    async with http.post(
        f"{gw.base_url}/voice/dins/subscriptions/", data={"din_uid": uid}, headers=auth
    ) as r:
        assert r.status == 201
    async with http.post(
        f"{gw.base_url}/voice/dins/subscriptions/{uid}/", data={"action_url": action_url}, headers=auth
    ) as r:
        assert r.status == 200
    return Din(creds, uid)


async def _hits(receiver: Receiver, path: str) -> list[Any]:
    return receiver.on(path)


async def call(gw: Gateway, **scenario: Any) -> Any:
    port = gw.app[FASTAGI].port
    return await fastagi_call("127.0.0.1", port, CallScenario(**scenario), timeout=30)


async def records(gw: Gateway, http: aiohttp.ClientSession, creds: NewCredentials) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        async with http.get(f"{gw.base_url}/voice/calls/", headers=gw.auth(creds)) as r:
            rows: list[dict[str, Any]] = await r.json()
        return rows if rows and all(c["end_time"] for c in rows) else None

    result: list[dict[str, Any]] = await wait_for(done)
    return result


async def test_say_and_playback_on_a_live_call(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    action_server.script = (
        "# greeting\n"
        f"playback {action_server.base_url}/greeting.wav\n"
        'say en "Thank you for calling."\n'
        'say ja "こんにちは"\n'
    )
    t = await call(gateway)
    assert t.verbs == ["ANSWER", "STREAM FILE", "STREAM FILE", "STREAM FILE", "HANGUP"]
    assert len(t.streamed) == 3 and t.missing == []
    assert action_server.requests == [{"caller": CALLER, "recipient": DIN}]
    [rec] = await records(gateway, http, din.creds)
    assert rec["status"] == "COMPLETED" and rec["direction"] == "inbound" and rec["result"] == "completed"
    assert rec["caller"] == CALLER and rec["recipient"] == DIN and rec["error"] is None
    assert [a.split()[0] for a in rec["actions"]] == ["playback", "say", "say"]
    assert rec["cost"] == 3.5  # one started minute at the DIN's minute_cost
    # The media is fetched once and served from the cache afterwards.
    await call(gateway)
    assert action_server.media_hits == 1
    async with http.get(
        f"{gateway.base_url}/voice/calls/{rec['callid']}", headers=gateway.auth(din.creds)
    ) as r:
        assert (await r.json())["callid"] == rec["callid"]


async def test_transfer_respects_the_allow_list(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    action_server.script = "transfer +14155550123\ntransfer +81311112222 --caller=+81312345678\n"
    t = await call(gateway)
    assert t.dialed == [
        "PJSIP/+81311112222@trunk,30,U(gateway-transfer)"
    ]  # +1 is not on the default allow-list
    assert t.callerids == ["+81312345678"]
    [rec] = await records(gateway, http, din.creds)
    assert rec["result"] == "transferred" and "+14155550123" in rec["error"]


async def test_transfer_toll_fraud_guards_on_a_live_call(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    """The DIN holder's script: Japanese premium-rate (0990) and Navi Dial (0570) numbers are
    valid +81 numbers, refused by their type; a caller id the holder neither holds nor had
    verified is not set, the transfer goes on; one the operator verified is set."""
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    action_server.script = (
        "transfer +81990123456\ntransfer +81570123456\ntransfer +81311112222 --caller=+81120444444\n"
    )
    t = await call(gateway)
    assert t.dialed == ["PJSIP/+81311112222@trunk,30,U(gateway-transfer)"] and t.callerids == []
    assert "+81120444444" not in t.received.decode()
    [rec] = await records(gateway, http, din.creds)
    assert rec["result"] == "transferred"
    assert "+81990123456 is a premium-rate number" in rec["error"]
    assert "+81570123456 is a universal access (UAN) number" in rec["error"]
    assert "caller id not set" in rec["error"]
    await update_rights(gateway.app[SESSIONS], din.creds.account.sid, {}, add_callers=["+81120444444"])
    t = await call(gateway)
    assert t.callerids == ["+81120444444"] and t.dialed == ["PJSIP/+81311112222@trunk,30,U(gateway-transfer)"]


async def test_voicemail_is_recorded_listed_and_downloadable(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer, receiver: Receiver
) -> None:
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    async with http.post(
        f"{gateway.base_url}/voice/dins/subscriptions/{din.uid}/",
        data={"voicemail_url": receiver.url("/vm")},
        headers=gateway.auth(din.creds),
    ) as r:
        body = await r.json()
        assert r.status == 200 and body["voicemail_url"] == receiver.url("/vm")
        assert body["action_url"] == f"{action_server.base_url}/actions"  # untouched
    action_server.script = 'voicemail say en "Please leave a message after the tone."'
    t = await call(gateway, record_seconds=1.0)
    assert t.verbs[:3] == ["ANSWER", "STREAM FILE", "RECORD FILE"]
    [rec] = await records(gateway, http, din.creds)
    assert rec["result"] == "voicemail"
    auth = gateway.auth(din.creds)
    async with http.get(f"{gateway.base_url}/voice/voicemails/", headers=auth) as r:
        [vm] = await r.json()
    assert vm["callid"] == rec["callid"] and vm["caller"] == CALLER and 0.5 < vm["duration"] < 2
    async with http.get(f"{gateway.base_url}/metrics") as r:
        assert 'gateway_voice_audio_stored_total{kind="voicemail"} 1.0' in await r.text()
    async with http.get(f"{gateway.base_url}{vm['audio_url']}", headers=auth) as r:
        body = await r.read()
        assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(body)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1
    hit = (await wait_for(lambda: _hits(receiver, "/vm")))[0]
    note = json.loads(hit.body)
    assert note["voicemail_id"] == vm["voicemail_id"] and note["callid"] == rec["callid"]
    assert note["audio_url"] == f"{gateway.base_url}{vm['audio_url']}"
    ts = hit.headers["X-Gateway-Timestamp"]
    assert (
        hit.headers["X-Gateway-Signature"]
        == hmac.new(
            din.creds.account.webhook_secret.encode(), ts.encode() + hit.body, hashlib.sha256
        ).hexdigest()
    )
    assert genuine(din.creds.account.webhook_secret, hit.headers, hit.body, {})
    other = await gateway.account(name="other")
    for path in (
        f"/voice/voicemails/{vm['voicemail_id']}/",
        vm["audio_url"],
        f"/voice/calls/{rec['callid']}/",
    ):
        async with http.get(f"{gateway.base_url}{path}", headers=gateway.auth(other)) as r:
            assert r.status == 404, path


async def test_fallbacks_are_spoken_and_recorded(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    # Unknown DIN: the apology, and a record nobody's account shows.
    t = await call(gateway, dnid="+81399990000")
    assert t.verbs == ["ANSWER", "STREAM FILE", "HANGUP"] and t.missing == []
    action_server.script = 'say en "unterminated'
    await call(gateway)
    action_server.status = 500
    await call(gateway)
    rows = await records(gateway, http, din.creds)
    errors = sorted(r["error"] for r in rows)
    assert len(rows) == 2
    assert any("HTTP 500" in e for e in errors) and any(
        "invalid script" in e and "line 1" in e for e in errors
    )
    assert all(
        r["status"] == "FAILED" and len(r["actions"]) == 1 and r["actions"][0].startswith("say en")
        for r in rows
    )
    assert len(await gateway.sql("SELECT id FROM calls WHERE account_id IS NULL")) == 1


async def test_hangups_end_the_script_and_keep_the_record(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    action_server.script = "\n".join(f'say en "line {i}"' for i in range(5))
    for mode in ("line", "511", "eof"):
        t = await call(gateway, hangup_after=2, hangup_mode=mode)
        assert len([v for v in t.verbs if v == "STREAM FILE"]) <= 2, mode
    rows = await records(gateway, http, din.creds)
    assert len(rows) == 3 and all(r["result"] == "hangup" for r in rows)


async def test_hangup_during_the_last_say_and_mid_script(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    """The caller hangs up while the last say plays (`-1 endpos=N`, then HANGUP): a hangup, not
    completed. Mid-script, the record lists only the actions started: never the transfer that
    was not dialled."""
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    action_server.script = 'say en "one"\nsay en "two"'
    await call(gateway, hangup_after=3, hangup_during=True)
    [last] = await records(gateway, http, din.creds)
    assert last["result"] == "hangup" and last["actions"] == ["say en", "say en"]
    action_server.script = 'say en "one"\nsay en "two"\ntransfer +81311112222'
    t = await call(gateway, hangup_after=2, hangup_during=True)
    assert t.dialed == []
    rows = await records(gateway, http, din.creds)
    mid = next(r for r in rows if r["callid"] != last["callid"])
    assert mid["result"] == "hangup" and mid["actions"] == ["say en"]
    assert mid["transfer_status"] is None and mid["transfer_seconds"] is None


async def test_transfer_outcomes_are_recorded(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    """transferred only when answered, with its talk seconds; a caller who hangs up while it rings
    is a hangup (CANCEL); busy, no answer or failure let the fallback say run."""
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    action_server.script = 'transfer +81311112222\nsay en "Nobody is free, sorry."'
    expected = {
        "ANSWER": ("transferred", ["transfer +81311112222"]),
        "CANCEL": ("hangup", ["transfer +81311112222"]),
        "BUSY": ("completed", ["transfer +81311112222", "say en"]),
        "NOANSWER": ("completed", ["transfer +81311112222", "say en"]),
        "CHANUNAVAIL": ("completed", ["transfer +81311112222", "say en"]),
    }
    for status in expected:
        # The answered callee rings 2 s, then talks 1 s.
        timing = (
            {"dial_seconds": 3.0, "dial_ring_seconds": 2.0} if status == "ANSWER" else {"dial_seconds": 0.2}
        )
        t = await call(gateway, dial_status=status, **timing)
        assert t.dialed == ["PJSIP/+81311112222@trunk,30,U(gateway-transfer)"]
    rows = await records(gateway, http, din.creds)
    got = {r["transfer_status"]: (r["result"], r["actions"]) for r in rows}
    assert got == expected
    seconds = {r["transfer_status"]: r["transfer_seconds"] for r in rows}
    # The talk time in Asterisk's whole seconds, not the 3 s of ringing and talk.
    assert seconds.pop("ANSWER") in (1, 2) and set(seconds.values()) == {None}
    answered = next(r for r in rows if r["transfer_status"] == "ANSWER")
    async with http.get(
        f"{gateway.base_url}/voice/calls/{answered['callid']}", headers=gateway.auth(din.creds)
    ) as r:
        one = await r.json()
    assert one["transfer_status"] == "ANSWER" and one["transfer_seconds"] == answered["transfer_seconds"]
    # The last action's outcome when the transfer is the last one.
    action_server.script = "transfer +81311112222"
    await call(gateway, dial_status="BUSY")
    rows = await records(gateway, http, din.creds)
    assert len(rows) == 6 and rows[0]["result"] == "transfer_busy" and rows[0]["transfer_status"] == "BUSY"
    # An Asterisk still on a dialplan without [gateway-transfer]: connected, talk time unknown.
    await call(gateway, dial_status="ANSWER", dial_seconds=0.2, subroutines={})
    rows = await records(gateway, http, din.creds)
    assert len(rows) == 7 and rows[0]["result"] == "transferred" and rows[0]["transfer_status"] == "ANSWER"
    assert rows[0]["transfer_seconds"] is None and rows[0]["error"] is None


async def test_many_concurrent_calls(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    action_server.script = 'say en "Hello"'
    transcripts = await asyncio.gather(*(call(gateway) for _ in range(50)))
    assert all(t.verbs == ["ANSWER", "STREAM FILE", "HANGUP"] for t in transcripts)
    rows = await records(gateway, http, din.creds)
    assert len(rows) == 50 and all(r["status"] == "COMPLETED" for r in rows)


async def test_the_pyst2_agi_script_runs_the_same_call_flow(
    gateway: Gateway, http: aiohttp.ClientSession, action_server: ActionServer
) -> None:
    """asterisk/agi/din_agi.py as Asterisk's AGI() runs it: its own process, same database."""
    import os
    import sys

    from gateway.keys import CONFIG
    from tests.conftest import ROOT
    from tests.peers.asterisk_agi import run_agi_script

    din = await subscribe(gateway, http, f"{action_server.base_url}/actions")
    action_server.script = f'say en "From the script"\nplayback {action_server.base_url}/greeting.wav'
    cfg = gateway.app[CONFIG]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_DATABASE_URL": cfg.database.url,
        "GATEWAY_VOICE_DATA_DIR": cfg.voice.data_dir,
        "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",  # the action_url server is on loopback
    }
    env.pop("DIN_AGI_HOOK", None)
    t = await run_agi_script(
        [sys.executable, str(ROOT / "asterisk" / "agi" / "din_agi.py")], CallScenario(), env=env, timeout=60
    )
    assert t.returncode == 0, t.stderr.decode()[-2000:]
    assert t.verbs == ["ANSWER", "STREAM FILE", "STREAM FILE", "HANGUP"], t.commands
    assert t.missing == []
    [rec] = await records(gateway, http, din.creds)
    assert rec["status"] == "COMPLETED" and len(rec["actions"]) == 2


async def test_calls_abandoned_by_a_dead_node_are_swept_but_live_ones_are_not(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """A node that dies mid-call leaves its record IN_PROGRESS; the sweep ends it FAILED with an
    unknown (0) duration. Calls this process is handling, and recent ones, are left alone."""
    release = asyncio.Event()

    async def held_script(request: web.Request) -> web.Response:
        await release.wait()  # the live call stays in progress until the test lets it go
        return web.Response(text='say en "Hello"', content_type="text/plain")

    app = web.Application()
    app.router.add_get("/actions", held_script)
    async with serve_app(app) as base_url:
        try:
            din = await subscribe(gateway, http, f"{base_url}/actions")
            now = datetime.now(UTC)
            async with gateway.app[SESSIONS].begin() as s:
                # Seen from `later`, four hours on: 5 h old (abandoned) and 3 h old (may still run).
                hour = timedelta(hours=1)
                for uid, started in (("deadnode0", now - hour), ("recent000", now + hour)):
                    s.add(
                        Call(
                            uid=uid,
                            account_id=din.creds.account.id,
                            direction="inbound",
                            caller=CALLER,
                            recipient=DIN,
                            status="IN_PROGRESS",
                            started_at=started,
                            actions="[]",
                        )
                    )
            live = asyncio.create_task(call(gateway))

            async def live_in_progress() -> bool:
                return gateway.app[CALLS].in_progress == 1

            await wait_for(live_in_progress)
            calls = gateway.app[CALLS]
            later = now + timedelta(hours=4, minutes=1)  # the live call looks abandoned by then too
            assert await calls.sweep_abandoned(4 * 3600, now=later) == 1
            release.set()
            await live

            async def live_recorded() -> dict[str, Any] | None:
                async with http.get(f"{gateway.base_url}/voice/calls/", headers=gateway.auth(din.creds)) as r:
                    got = {c["callid"]: c for c in await r.json()}
                ended = sum(c["end_time"] is not None for c in got.values())
                return got if len(got) == 3 and ended == 2 else None

            rows = await wait_for(live_recorded)
            dead = rows["deadnode0"]
            assert dead["status"] == "FAILED" and "duration unknown" in dead["error"]
            assert dead["duration"] == 0 and dead["cost"] == 0
            assert rows["recent000"]["status"] == "IN_PROGRESS" and rows["recent000"]["end_time"] is None
            [live_rec] = [r for uid, r in rows.items() if uid not in ("deadnode0", "recent000")]
            assert live_rec["status"] == "COMPLETED" and live_rec["duration"] >= 0
            assert await calls.sweep_abandoned(4 * 3600, now=later) == 0
        finally:
            release.set()
