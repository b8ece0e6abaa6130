"""`gateway simulate ...` against a real `gateway run` process on embedded defaults (built-in
SMSC simulator, its loopback control port): what a newcomer does in the first hour."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import ENGINES, basic, free_port, wait_for
from tests.procs import (
    GatewayProcess,
    create_account,
    fresh_database,
    gateway_processes,
    sql,
    subscribe_number,
    subscribe_sin,
)
from tests.test_cli_and_run import run_cli
from tests.webhook_receiver import Receiver

SIN = "+81312345678"
HANDSET = "+819011112222"
FAILING = "+819099991234"  # the simulator's default fail prefix 81909999


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Demo:
    gw: GatewayProcess
    db_url: str
    control_port: int
    env: dict[str, str]  # for run_cli: the same settings the gateway runs with


@pytest_asyncio.fixture
async def demo(engine: str, tmp_path: Path) -> AsyncIterator[Demo]:
    control_port = free_port()
    async with fresh_database(engine, tmp_path) as db_url, gateway_processes(tmp_path) as procs:
        extra = {
            "GATEWAY_SIMULATOR_ENABLED": "true",
            "GATEWAY_SIMULATOR_CONTROL_PORT": str(control_port),
            "GATEWAY_SIMULATOR_DLR_DELAY": "0",
        }
        gw = procs.spawn("demo", db_url, free_port(), **extra)
        await gw.start()
        yield Demo(gw, db_url, control_port, {"GATEWAY_DATABASE_URL": db_url, **extra})


async def simulate_mo(demo: Demo, text: str, *extra: str) -> tuple[int, str, str]:
    return await run_cli(demo.env, "simulate", "mo", "--from", HANDSET, "--to", SIN, *extra, text)


async def test_simulated_mo_reaches_the_webhook_gets_a_reply_and_stop_opts_out(
    demo: Demo, receiver: Receiver
) -> None:
    creds = await create_account(demo.db_url, "newcomer")
    await subscribe_sin(demo.db_url, creds.account.id, SIN, receiver.url("/mo"))
    receiver.replies["/mo"] = "Thanks, we got it"

    code, out, err = await simulate_mo(demo, "Hello gateway", "--wait", "10")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"injected MO {HANDSET} -> {SIN}: 1 part(s), GSM 7-bit, 13 octets"
    assert f"reply from {SIN}: Thanks, we got it" in lines[1:]
    [hit] = receiver.on("/mo")
    body = {k: v[0] for k, v in parse_qs(hit.body.decode()).items()}
    assert (body["sender"], body["recipient"], body["message"]) == (HANDSET, SIN, "Hello gateway")

    # A long text goes in as a concatenated MO and is stored (and webhooked) whole, once.
    long_text = "Long message " + "x" * 300
    code, out, err = await simulate_mo(demo, long_text, "--wait", "0")
    assert code == 0 and "3 part(s), GSM 7-bit" in out, (out, err)
    await hits(receiver, "/mo", 2)
    assert parse_qs(receiver.on("/mo")[1].body.decode())["message"] == [long_text]

    receiver.replies.pop("/mo")
    code, out, err = await simulate_mo(demo, "STOP", "--wait", "10")
    assert code == 0, err
    assert any(line.startswith(f"reply from {SIN}: ") and "unsubscribed" in line for line in out.splitlines())

    base = demo.gw.base_url
    auth = basic(creds.account.sid, creds.auth_token)
    async with aiohttp.ClientSession() as http:
        send = {"message": "promo", "recipient": HANDSET, "sender": "SHOP"}
        async with http.post(f"{base}/sms/messages/", data=send, headers=auth) as r:
            assert r.status == 400 and await r.json() == {"recipient": ["Recipient has opted out"]}
        async with http.get(f"{base}/sms/inbounds/", headers=auth) as r:
            listed = await r.json()
        assert sorted(m["message"] for m in listed) == sorted(["Hello gateway", long_text, "STOP"])
        bearer = {"Authorization": f"Bearer {creds.auth_token}"}
        async with http.get(f"{base}/xms/v1/{creds.account.sid}/inbounds", headers=bearer) as r:
            page = await r.json()
        assert page["count"] == 3
        assert {(m["from"], m["to"]) for m in page["inbounds"]} == {(HANDSET[1:], SIN[1:])}


async def test_simulate_mo_says_what_is_wrong_in_one_line(demo: Demo) -> None:
    code, out, err = await run_cli(
        demo.env, "simulate", "mo", "--from", "nobody!", "--to", SIN, "hi", "--wait", "0"
    )
    assert (code, out) == (1, "") and err.strip() == "error: refused: source: 'nobody!' is not a phone number"
    closed = {**demo.env, "GATEWAY_SIMULATOR_CONTROL_PORT": str(free_port())}
    code, out, err = await run_cli(closed, "simulate", "mo", "--from", HANDSET, "--to", SIN, "hi")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no SMSC simulator control port" in err
    assert "Traceback" not in err


async def test_control_port_is_loopback_only_and_ignores_http(demo: Demo) -> None:
    """A web page or a webhook URL pointed at the port must not inject anything."""
    # The only socket listening on the port, IPv4 or IPv6, is 127.0.0.1's.
    port = f":{demo.control_port:04X}"
    tables = [(await asyncio.to_thread(Path(t).read_text)) for t in ("/proc/net/tcp", "/proc/net/tcp6")]
    listening = [
        fields[1]
        for table in tables
        for fields in (line.split() for line in table.splitlines()[1:])
        if fields[3] == "0A" and fields[1].endswith(port)
    ]
    assert listening == [f"0100007F{port}"]

    request = json.dumps({"op": "mo", "source": HANDSET, "destination": SIN, "text": "from a browser"})
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.control_port)
    writer.write(
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(request)}\r\n\r\n{request}\n".encode()
    )
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, unanswered
    writer.close()
    rows = await _inbound(demo)
    assert rows == []


async def _inbound(demo: Demo) -> list[Any]:
    await asyncio.sleep(0.5)
    return await sql(demo.db_url, "SELECT id FROM inbound_messages")


async def hits(receiver: Receiver, path: str, n: int) -> list[Any]:
    async def ready() -> list[Any] | None:
        got = receiver.on(path)
        return got if len(got) >= n else None

    result: list[Any] = await wait_for(ready, timeout=20)
    return result


async def test_a_valid_number_under_the_fail_prefix_ends_in_fail_with_its_callback(
    demo: Demo, receiver: Receiver
) -> None:
    creds = await create_account(demo.db_url, "newcomer")
    auth = basic(creds.account.sid, creds.auth_token)
    async with aiohttp.ClientSession() as http:
        sent = {"message": "will fail", "recipient": FAILING, "sender": "DEMO"}
        sent["callbackurl"] = receiver.url("/status")
        async with http.post(f"{demo.gw.base_url}/sms/messages/", data=sent, headers=auth) as r:
            assert r.status == 201, await r.text()
            msgid = (await r.json())[0]["msgid"]

        async def failed() -> bool:
            async with http.get(f"{demo.gw.base_url}/sms/messages/{msgid}/", headers=auth) as r:
                shown = await r.json()
                return bool(shown["status"] == "FAIL")

        await wait_for(failed, timeout=20)

    async def final_callback() -> dict[str, str] | None:
        for hit in receiver.on("/status"):
            callback: dict[str, str] = json.loads(hit.body)
            if callback["status"] == "FAIL":
                return callback
        return None

    assert (await wait_for(final_callback, timeout=20))["msgid"] == msgid


DIN = "+81312340001"
TRANSFER_TO = "+819012345678"


@pytest_asyncio.fixture
async def voice_demo(engine: str, tmp_path: Path) -> AsyncIterator[Demo]:
    """A gateway taking calls on FastAGI (loopback peers only, its default)."""
    async with fresh_database(engine, tmp_path) as db_url, gateway_processes(tmp_path) as procs:
        extra = {
            "GATEWAY_VOICE_FASTAGI_ENABLED": "true",
            "GATEWAY_VOICE_FASTAGI_PORT": str(free_port()),
            "GATEWAY_VOICE_DATA_DIR": str(tmp_path / "voice"),
            "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",  # the action_url server is on loopback
        }
        gw = procs.spawn("voice", db_url, free_port(), **extra)
        await gw.start()
        yield Demo(gw, db_url, 0, {"GATEWAY_DATABASE_URL": db_url, **extra})


@contextlib.asynccontextmanager
async def _script_server(script: str) -> AsyncIterator[str]:
    """An action_url answering `script` ({base} replaced by its own URL), and a WAV under /hold.wav."""
    from aiohttp import web

    from tests.conftest import serve_app

    wav = io.BytesIO()
    with wave.open(wav, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x10" * 12000)  # 1.5 s
    where: list[str] = []

    async def action(request: web.Request) -> web.Response:
        assert request.query["recipient"] == DIN
        return web.Response(text=script.format(base=where[0]), content_type="text/plain")

    async def hold(_: web.Request) -> web.Response:
        return web.Response(body=wav.getvalue(), content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/action", action)
    app.router.add_get("/hold.wav", hold)
    async with serve_app(app) as base:
        where.append(base)
        yield base


async def test_simulate_call_prints_what_the_caller_hears(voice_demo: Demo) -> None:
    script = 'say en "Welcome to the demo line"\nplayback {base}/hold.wav\ntransfer ' + TRANSFER_TO + "\n"
    async with _script_server(script) as base:
        creds = await create_account(voice_demo.db_url, "voice")
        await subscribe_number(voice_demo.db_url, creds.account.id, DIN, "din", f"{base}/action")
        code, out, err = await run_cli(voice_demo.env, "simulate", "call", "--din", DIN, "--caller", HANDSET)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"call from {HANDSET} to {DIN} over FastAGI 127.0.0.1:")
    assert "> ANSWER" in lines and "< 200 result=0" in lines
    said = [
        line for line in lines if line.startswith('  caller hears say (en): "Welcome to the demo line" [')
    ]
    assert len(said) == 1 and said[0].endswith(" s]")
    assert f"  caller hears playback {base}/hold.wav [1.50 s]" in lines
    assert f"  caller is transferred to {TRANSFER_TO}" in lines
    assert any(line.startswith("> EXEC Dial PJSIP/" + TRANSFER_TO + "@") for line in lines)
    assert lines[-1].startswith("call ended: ")


async def test_simulate_call_digits_drive_a_menu(voice_demo: Demo) -> None:
    menu = "gather --timeout=1 --action={base}/action?menu=2\n  playback {base}/hold.wav\n"
    async with _script_server(menu) as base:
        creds = await create_account(voice_demo.db_url, "voice")
        await subscribe_number(voice_demo.db_url, creds.account.id, DIN, "din", f"{base}/action")
        code, out, err = await run_cli(
            voice_demo.env, "simulate", "call", "--din", DIN, "--caller", HANDSET, "--digits", "1,2#"
        )
    assert code == 0, err
    lines = out.splitlines()
    # The menu leads to itself: 1 (then the timeout) to the first, 2# to the next, nothing to the third.
    assert [line for line in lines if line.startswith("  caller presses")] == [
        "  caller presses 1: the prompt stops",
        "  caller presses nothing: the wait ends",
        "  caller presses 2: the prompt stops",
        "  caller presses #",
        "  caller presses nothing: the wait ends",
    ]
    assert any(line.startswith("< 200 result=49 endpos=") for line in lines)
    [call] = await sql(voice_demo.db_url, "SELECT steps FROM calls")
    assert [step["digits"] for step in json.loads(call[0])] == [None, "1", "2", ""]


async def test_simulate_call_records_voicemail_from_the_given_wav(voice_demo: Demo, tmp_path: Path) -> None:
    message = tmp_path / "message.wav"
    with wave.open(str(message), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x01\x00" * 20000)  # 2.5 s
    async with _script_server('voicemail say en "Leave a message"\n') as base:
        creds = await create_account(voice_demo.db_url, "voice")
        await subscribe_number(voice_demo.db_url, creds.account.id, DIN, "din", f"{base}/action")
        code, out, err = await run_cli(
            voice_demo.env,
            "simulate",
            "call",
            "--din",
            DIN,
            "--caller",
            HANDSET,
            "--voicemail-wav",
            str(message),
        )
        # `#` ends the recording as a caller's key press does.
        pressed = await run_cli(
            voice_demo.env, "simulate", "call", "--din", DIN, "--caller", HANDSET, "--digits", "#"
        )
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith('  caller hears say (en): "Leave a message" [') for line in lines)
    [recorded] = [line for line in lines if line.startswith("  voicemail recorded: 2.50 s into ")]
    stored = Path(recorded.rsplit(" into ", 1)[1])
    assert await asyncio.to_thread(stored.read_bytes) == await asyncio.to_thread(message.read_bytes)
    rows = await sql(voice_demo.db_url, "SELECT duration FROM voicemails")
    assert sorted(float(d) for (d,) in rows) == [1.5, 2.5]  # the second: a tone, no --voicemail-wav

    assert pressed[0] == 0 and any(
        line.startswith("< 200 result=35 (dtmf) endpos=") for line in pressed[1].splitlines()
    )
    assert "caller presses # (a group per menu" in pressed[1].splitlines()[0]
    code, out, err = await run_cli(
        voice_demo.env, "simulate", "call", "--din", DIN, "--caller", HANDSET, "--digits", "1x"
    )
    assert (code, out) == (1, "") and "only 0-9, * and # are DTMF keys" in err
