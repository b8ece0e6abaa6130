"""IVR on live calls: the Asterisk stand-in plays a caller pressing keys (at given seconds of the
call's clock, or typed as each menu listens) over FastAGI; the customer's scripts come from a
real HTTP server, which checks the signature of every fetch a gather makes; recordings are POSTed
to a real receiver. Menus, barge-in, timeouts, a looping menu hitting the fetch bound, a bad
script after a gather, a hangup while keys are awaited, reject before answer, record."""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web

from gateway.app import FASTAGI
from gateway.voice.executor import KEYS
from tests.conftest import Gateway, gateway_config, serve_app, start_gateway, wait_for
from tests.peers.asterisk_agi import CallScenario, CallTranscript, fastagi_call
from tests.test_voice_calls import CALLER, DIN, Din, records, subscribe
from tests.webhook_receiver import Receiver, genuine

MAX_FETCHES = 3


@pytest_asyncio.fixture
async def gw(clean_db: str, sim_smsc: Any) -> AsyncIterator[Gateway]:
    cfg = gateway_config(clean_db, sim_smsc.host, sim_smsc.port, voice__max_fetches_per_call=MAX_FETCHES)
    gateway = await start_gateway(cfg)
    yield gateway
    await gateway.runner.cleanup()


@dataclass
class Fetch:
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]


@dataclass
class Scripts:
    """The customer's server: a script per path (or an HTTP status), and every fetch seen."""

    base_url: str = ""
    scripts: dict[str, str | int] = field(default_factory=dict)
    fetches: list[Fetch] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str) -> list[Fetch]:
        return [f for f in self.fetches if f.path == path]


@pytest_asyncio.fixture
async def scripts() -> AsyncIterator[Scripts]:
    srv = Scripts()

    async def answer(request: web.Request) -> web.Response:
        srv.fetches.append(
            Fetch(request.path, dict(request.query), request.rel_url.raw_query_string, dict(request.headers))
        )
        script = srv.scripts.get(request.path, 404)
        if isinstance(script, int):
            return web.Response(status=script)
        return web.Response(text=script, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    async with serve_app(app) as srv.base_url:
        yield srv


async def setup(gw: Gateway, http: aiohttp.ClientSession, scripts: Scripts, first: str) -> Din:
    scripts.scripts["/start"] = first
    return await subscribe(gw, http, scripts.url("/start"))


async def call(gw: Gateway, **scenario: Any) -> CallTranscript:
    return await fastagi_call("127.0.0.1", gw.app[FASTAGI].port, CallScenario(**scenario), timeout=30)


def signed(secret: str, fetch: Fetch) -> bool:
    """The webhook recipe (docs/security.md), over the raw query string: a GET has no body."""
    return genuine(secret, fetch.headers, fetch.raw_query.encode(), {})


async def test_a_key_pressed_during_the_prompt_fetches_the_menu_signed_and_runs_it(
    gw: Gateway, http: aiohttp.ClientSession, scripts: Scripts
) -> None:
    din = await setup(
        gw,
        http,
        scripts,
        f"gather --digits=1 --action={scripts.url('/menu')}?from=main\n"
        '  say en "For sales press 1, for support press 2."\n'
        'say en "Goodbye."\n',
    )
    scripts.scripts["/menu"] = 'say en "Sales."'
    t = await call(gw, keys=[(0.5, "1")])
    assert t.verbs == ["ANSWER", "STREAM FILE", "STREAM FILE", "HANGUP"]
    prompt = t.exchanges[1]
    assert prompt.command.endswith(f' "{KEYS}"') or prompt.command.endswith(f" {KEYS}")
    assert prompt.reply == "200 result=49 endpos=4000\n"  # barge-in half a second into the prompt
    assert t.keys_heard == ["1"]
    [fetch] = scripts.on("/menu")
    [rec] = await records(gw, http, din.creds)
    assert fetch.query == {
        "from": "main",
        "caller": CALLER,
        "recipient": DIN,
        "digits": "1",
        "callid": rec["callid"],
    }
    assert signed(din.creds.account.webhook_secret, fetch)
    assert not signed("another secret", fetch)
    assert "X-Gateway-Signature-256" not in scripts.on("/start")[0].headers  # the first fetch: as before
    assert rec["status"] == "COMPLETED" and rec["result"] == "completed" and rec["error"] is None
    assert rec["actions"] == [f"gather {scripts.url('/menu')}?from=main", "say en"]
    assert rec["steps"] == [
        {"digits": None, "url": scripts.url("/start"), "status": 200, "error": None},
        {"digits": "1", "url": f"{scripts.url('/menu')}?from=main", "status": 200, "error": None},
    ]


async def test_timeouts_finish_key_and_no_input(
    gw: Gateway, http: aiohttp.ClientSession, scripts: Scripts
) -> None:
    din = await setup(
        gw,
        http,
        scripts,
        f"gather --timeout=2 --digits=4 --action={scripts.url('/menu')}\n"
        '  say en "Your account number, then hash."\n'
        "  pause 1\n"
        'say en "We got nothing."\n',
    )
    scripts.scripts["/menu"] = "hangup"
    # Nobody presses anything: the prompts, the 2 s wait, then the next line.
    t = await call(gw)
    assert t.verbs == ["ANSWER", "STREAM FILE", "WAIT FOR DIGIT", "WAIT FOR DIGIT", "STREAM FILE", "HANGUP"]
    assert [e.command for e in t.exchanges[2:4]] == ["WAIT FOR DIGIT 1000", "WAIT FOR DIGIT 2000"]
    assert scripts.on("/menu") == []
    # Keys typed while the menu listens, ended by #: fewer than --digits.
    t = await call(gw, key_groups=["12#"])
    assert t.keys_heard == ["1", "2", "#"] and t.verbs[-2:] == ["WAIT FOR DIGIT", "HANGUP"]
    assert scripts.on("/menu")[0].query["digits"] == "12"
    # --digits reached: no finish key needed; the keys after it are nobody's.
    t = await call(gw, key_groups=["98765"])
    assert scripts.on("/menu")[1].query["digits"] == "9876"
    # --no-input: no keys fetches that URL, with empty digits.
    scripts.scripts["/start"] = (
        f"gather --timeout=1 --no-input={scripts.url('/again')} --action={scripts.url('/menu')}\n"
    )
    scripts.scripts["/again"] = 'say en "Still there?"'
    t = await call(gw)
    assert t.verbs == ["ANSWER", "WAIT FOR DIGIT", "STREAM FILE", "HANGUP"]
    assert scripts.on("/again")[0].query["digits"] == ""
    rows = list(reversed(await records(gw, http, din.creds)))  # oldest first
    assert [r["steps"][1]["digits"] for r in rows] == ["", "12", "9876", ""]
    assert rows[0]["steps"][1] == {"digits": "", "url": None, "status": None, "error": None}
    assert rows[0]["actions"] == [f"gather {scripts.url('/menu')}", "say en"]
    assert rows[2]["actions"] == [f"gather {scripts.url('/menu')}", "hangup"]


async def test_a_looping_menu_ends_at_the_fetch_bound_and_bad_scripts_fall_back(
    gw: Gateway, http: aiohttp.ClientSession, scripts: Scripts
) -> None:
    menu = f'gather --digits=1 --action={scripts.url("/menu")}\n  say en "Menu. Press 1 to hear it again."\n'
    din = await setup(gw, http, scripts, menu)
    scripts.scripts["/menu"] = menu
    t = await call(gw, key_groups=["1"] * 10)
    # The action_url and two menus: the third key's fetch would be the fourth of the call.
    assert len(scripts.on("/menu")) == MAX_FETCHES - 1
    assert t.keys_heard == ["1"] * MAX_FETCHES and t.verbs[-2:] == ["STREAM FILE", "HANGUP"]
    [looped] = await records(gw, http, din.creds)
    assert looped["status"] == "FAILED"
    assert looped["error"] == f"gather: more than {MAX_FETCHES} scripts fetched on this call"
    assert [s["status"] for s in looped["steps"]] == [200, 200, 200, None]
    assert looped["actions"][-1] == "say en"  # the fallback

    # A script the parser refuses, or an HTTP error, after a gather: the fallback, and why.
    scripts.scripts["/start"] = f"gather --digits=1 --action={scripts.url('/bad')}\n  pause 5\n"
    for answer in ("dial +81312345678", 500):
        scripts.scripts["/bad"] = answer
        t = await call(gw, keys=[(1.0, "5")])
        assert t.verbs == ["ANSWER", "WAIT FOR DIGIT", "STREAM FILE", "HANGUP"]
    rows = [r for r in await records(gw, http, din.creds) if r["callid"] != looped["callid"]]
    by_status = {r["steps"][1]["status"]: r for r in rows}
    assert by_status[200]["error"] == "gather: invalid script at line 1, column 1"
    assert by_status[200]["steps"][1]["error"] == "invalid script at line 1, column 1"
    assert by_status[500]["error"] == "gather: action_url fetch failed: HTTP 500"
    assert all(r["status"] == "FAILED" and r["actions"][-1] == "say en" for r in rows)


async def test_hangup_while_keys_are_awaited_ends_cleanly(
    gw: Gateway, http: aiohttp.ClientSession, scripts: Scripts
) -> None:
    din = await setup(gw, http, scripts, f'gather --action={scripts.url("/menu")}\n  pause 3\nsay en "x"\n')
    # ANSWER, then the caller hangs up during the pause (a WAIT FOR DIGIT).
    t = await call(gw, hangup_after=2, hangup_during=True)
    assert t.verbs == ["ANSWER", "WAIT FOR DIGIT"] and t.exchanges[1].reply == "200 result=-1\n"
    assert t.hangup_sent
    [rec] = await records(gw, http, din.creds)
    assert rec["result"] == "hangup" and rec["status"] == "COMPLETED" and rec["error"] is None
    assert rec["actions"] == [f"gather {scripts.url('/menu')}"]
    assert scripts.on("/menu") == []
    # An Asterisk answering with something that is no key: no input, not a loop.
    t = await call(gw, replies={"WAIT FOR DIGIT": ["200 result=10"]})
    assert t.verbs == ["ANSWER", "WAIT FOR DIGIT", "WAIT FOR DIGIT", "STREAM FILE", "HANGUP"]
    assert scripts.on("/menu") == []


async def test_reject_refuses_before_answer_and_pause_hangup(
    gw: Gateway, http: aiohttp.ClientSession, scripts: Scripts
) -> None:
    din = await setup(gw, http, scripts, "reject busy\n")
    t = await call(gw)
    assert t.verbs == ["EXEC"] and t.hangup_causes == ["17"]  # 486 Busy Here; never answered
    scripts.scripts["/start"] = "reject"
    t = await call(gw)
    assert t.verbs == ["EXEC"] and t.hangup_causes == ["21"]  # 403: call rejected
    scripts.scripts["/start"] = 'pause 2\nhangup\nsay en "never said"\n'
    t = await call(gw)
    assert t.verbs == ["ANSWER", "EXEC", "HANGUP"] and t.commands[1] == "EXEC Wait 2"
    rows = list(reversed(await records(gw, http, din.creds)))  # oldest first
    for rejected, how in zip(rows[:2], ("reject busy", "reject"), strict=True):
        assert rejected["status"] == "REJECTED" and rejected["result"] == "rejected"
        assert rejected["cost"] == 0 and rejected["duration"] == 0 and rejected["answer_time"] is None
        assert rejected["actions"] == [how]
    assert rows[2]["actions"] == ["pause 2", "hangup"] and rows[2]["cost"] > 0


async def test_record_posts_the_recording_and_the_script_goes_on(
    gw: Gateway, http: aiohttp.ClientSession, scripts: Scripts, receiver: Receiver
) -> None:
    din = await setup(
        gw,
        http,
        scripts,
        'say en "Tell us after the beep."\n'
        f"record --max=30 --silence=3 --action={receiver.url('/rec')}\n"
        'say en "Thank you."\n',
    )
    t = await call(gw, record_seconds=1.0)
    assert t.verbs == ["ANSWER", "STREAM FILE", "RECORD FILE", "STREAM FILE", "HANGUP"]
    [made] = t.recordings
    assert (made.escape_digits, made.timeout_ms, made.beep, made.silence_seconds) == ("#", 30000, True, 3)
    [rec] = await records(gw, http, din.creds)
    assert rec["result"] == "completed" and rec["actions"] == [
        "say en",
        f"record {receiver.url('/rec')}",
        "say en",
    ]
    auth = gw.auth(din.creds)
    async with http.get(f"{gw.base_url}/voice/recordings/", headers=auth) as r:
        [recording] = await r.json()
    assert recording["callid"] == rec["callid"] and 0.5 < recording["duration"] < 2
    async with http.get(f"{gw.base_url}/voice/voicemails/", headers=auth) as r:
        assert await r.json() == []  # counted apart from voicemail
    async with http.get(f"{gw.base_url}{recording['audio_url']}", headers=auth) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
        with wave.open(io.BytesIO(await r.read())) as w:
            assert w.getframerate() == 8000
    [hit] = await wait_for(lambda: _hits(receiver, "/rec"))
    assert genuine(din.creds.account.webhook_secret, hit.headers, hit.body, {})
    note = json.loads(hit.body)
    assert note == {**recording, "audio_url": f"{gw.base_url}{recording['audio_url']}"}
    # The caller hangs up while recording: what was said is kept, the script ends there.
    t = await call(gw, record_seconds=1.0, hangup_after=3, hangup_during=True)
    assert t.verbs == ["ANSWER", "STREAM FILE", "RECORD FILE"]
    rows = await records(gw, http, din.creds)
    assert rows[0]["result"] == "hangup" and rows[0]["actions"][-1] == f"record {receiver.url('/rec')}"
    async with http.get(f"{gw.base_url}/voice/recordings/", headers=auth) as r:
        assert [x["callid"] for x in await r.json()] == [rows[0]["callid"], rec["callid"]]
    other = await gw.account(name="other")
    for path in (f"/voice/recordings/{recording['recording_id']}/", recording["audio_url"]):
        async with http.get(f"{gw.base_url}{path}", headers=gw.auth(other)) as r:
            assert r.status == 404, path


async def _hits(receiver: Receiver, path: str) -> list[Any]:
    return receiver.on(path)


async def test_status_url_gets_signed_call_events_in_order(
    gw: Gateway, http: aiohttp.ClientSession, scripts: Scripts, receiver: Receiver
) -> None:
    din = await setup(gw, http, scripts, f"gather --digits=1 --action={scripts.url('/menu')}\n  pause 2\n")
    scripts.scripts["/menu"] = 'say en "One."'
    async with http.post(
        f"{gw.base_url}/voice/dins/subscriptions/{din.uid}/",
        data={"status_url": receiver.url("/events")},
        headers=gw.auth(din.creds),
    ) as r:
        body = await r.json()
        assert r.status == 200 and body["status_url"] == receiver.url("/events")
        assert body["action_url"] == scripts.url("/start")  # untouched
    await call(gw, keys=[(1.0, "1")])
    hits = await wait_for(lambda: _at_least(receiver, "/events", 3))
    seen: dict[str, float] = {}
    assert all(genuine(din.creds.account.webhook_secret, h.headers, h.body, seen) for h in hits)
    events = [json.loads(h.body) for h in hits]
    assert [e["event"] for e in events] == ["ringing", "answered", "completed"]
    [rec] = await records(gw, http, din.creds)
    assert all(
        e["callid"] == rec["callid"] and e["caller"] == CALLER and e["recipient"] == DIN for e in events
    )
    done = events[2]
    assert done["duration"] == rec["duration"] and done["result"] == "completed"
    assert done["actions"] == [f"gather {scripts.url('/menu')}", "say en"]
    assert [s["digits"] for s in done["steps"]] == [None, "1"]
    # A refused call never rings through to an answer.
    scripts.scripts["/start"] = "reject"
    await call(gw)
    hits = await wait_for(lambda: _at_least(receiver, "/events", 5))
    assert [json.loads(h.body)["event"] for h in hits[3:]] == ["ringing", "completed"]
    assert json.loads(hits[4].body)["status"] == "REJECTED"
    # Only a DIN takes a status_url.
    async with http.post(
        f"{gw.base_url}/sms/sins/subscriptions/{din.uid}/",
        data={"status_url": receiver.url("/events")},
        headers=gw.auth(din.creds),
    ) as r:
        assert r.status == 400 and await r.json() == {
            "status_url": ["Only DIN subscriptions take a status_url."]
        }


async def _at_least(receiver: Receiver, path: str, n: int) -> list[Any]:
    hits = receiver.on(path)
    return hits if len(hits) >= n else []
