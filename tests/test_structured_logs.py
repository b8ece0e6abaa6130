"""Structured logs: the formatters and the bound context, and a real gateway process whose JSON
lines follow one message (queued, submitted, delivered, its callback) and one call by their ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from gateway.logs import JsonFormatter, log_context, make_handler
from smpp.simulator import SimulatorConfig, SmscSimulator
from tests.conftest import ENGINES, Gateway, basic, free_port, wait_for
from tests.peers.asterisk_agi import CallScenario, fastagi_call
from tests.procs import create_account, fresh_database, gateway_processes, subscribe_number
from tests.webhook_receiver import Receiver

JP = "+818012345678"
DIN = "+81312345678"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, io.StringIO]]:
    """A private logger writing through both formats, as `gateway run` would."""
    text, js = io.StringIO(), io.StringIO()
    logger = logging.getLogger("tests.structured")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handlers = [make_handler("text", text), make_handler("json", js)]
    for h in handlers:
        logger.addHandler(h)
    yield logger, text, js
    for h in handlers:
        logger.removeHandler(h)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_context_reaches_child_tasks_and_ends_with_its_block(
    captured: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, _, js = captured

    async def child() -> None:
        await asyncio.sleep(0)
        logger.info("in a task")

    with log_context(callid="c1", din="+8131"):
        with log_context(request_id="r1", callid="c2"):
            logger.info("inner")
        await asyncio.create_task(child())
        logger.info("own field", extra={"msgid": "m1"})
    logger.info("outside")
    lines = json_lines(js)
    assert [line["message"] for line in lines] == ["inner", "in a task", "own field", "outside"]
    assert {k: lines[0][k] for k in ("callid", "din", "request_id")} == {
        "callid": "c2",
        "din": "+8131",
        "request_id": "r1",
    }
    assert lines[1]["callid"] == "c1" and "request_id" not in lines[1]
    assert lines[2]["callid"] == "c1" and lines[2]["msgid"] == "m1"
    assert not {"callid", "din", "msgid", "request_id"} & set(lines[3])


def test_text_lines_cannot_be_split_or_forged(
    captured: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, text, js = captured
    hostile = 'x\nFAKE ERROR gateway: injected status=ok "q"'
    logger.warning("MO from %s", hostile, extra={"sender": hostile, "parts": 2})
    out = text.getvalue().splitlines()
    assert len(out) == 1, out
    line = out[0]
    assert " WARNING tests.structured: MO from x\\nFAKE ERROR" in line
    # A value with spaces, quotes or control characters is one quoted, escaped token.
    assert line.endswith(' sender="x\\nFAKE ERROR gateway: injected status=ok \\"q\\"" parts=2')
    (obj,) = json_lines(js)
    assert obj["sender"] == hostile and obj["parts"] == 2 and obj["level"] == "WARNING"


# Every character str.splitlines() ends a line on, and other controls a viewer could act on.
SEPARATORS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
CONTROLS = SEPARATORS + "\x00\x1b\x7f\x9b\u202e"


def test_no_separator_or_control_starts_a_line_in_either_format(
    captured: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, text, js = captured
    for c in CONTROLS:
        hostile = f"a{c}FAKE"
        logger.warning("MO from %s", hostile, extra={"sender": hostile})
        try:
            raise ValueError(hostile)
        except ValueError:
            logger.exception("failed on %s", hostile)
    for out in (text.getvalue(), js.getvalue()):
        assert out.splitlines() == out.split("\n")[:-1]
        assert not any(c in out for c in CONTROLS.replace("\n", ""))
    records = json_lines(js)
    assert len(records) == 2 * len(CONTROLS)
    for c, mo, exc in zip(CONTROLS, records[::2], records[1::2], strict=True):
        assert mo["message"] == f"MO from a{c}FAKE" and mo["sender"] == f"a{c}FAKE"
        assert exc["exception"].endswith(f"ValueError: a{c}FAKE")
    lines = text.getvalue().splitlines()
    mo_lines = [line for line in lines if " WARNING " in line]
    assert len(mo_lines) == len(CONTROLS)
    assert all(' sender="a\\' in line for line in mo_lines), mo_lines  # escaped, quoted
    # A traceback keeps its lines, indented, so not even a newline in one starts a line.
    assert [line for line in lines if line.startswith("FAKE")] == []
    assert all(line.startswith(("20", "  ")) for line in lines)


def test_json_lines_carry_exceptions_and_odd_values(
    captured: tuple[logging.Logger, io.StringIO, io.StringIO],
) -> None:
    logger, text, js = captured
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed", extra={"smsc_ids": ["a1", 2], "when": object()})
    (obj,) = json_lines(js)
    assert obj["message"] == "failed" and obj["level"] == "ERROR"
    assert obj["time"].endswith("+00:00") and obj["logger"] == "tests.structured"
    assert obj["smsc_ids"] == ["a1", 2] and obj["when"].startswith("<object")
    assert "RuntimeError: boom" in obj["exception"]
    # The text format keeps the traceback below the line, after the fields.
    first, *rest = text.getvalue().splitlines()
    assert "smsc_ids=" in first and rest and "RuntimeError: boom" in rest[-1]
    assert JsonFormatter().format(logging.makeLogRecord({"msg": "plain"})).startswith('{"time"')


def test_unknown_format_or_level_is_refused() -> None:
    from gateway.cli import main

    assert main(["--log-format", "json", "--log-level", "LOUD", "accounts", "list"]) == 2
    with pytest.raises(ValueError, match="log format"):
        make_handler("xml")


async def test_request_id_is_echoed_or_made(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.base_url}/healthz", headers={"X-Request-ID": "abc-123.x:y"}) as r:
        assert r.headers["X-Request-ID"] == "abc-123.x:y"
    for hostile in ("a b", "x" * 65, "evil\tline"):
        async with http.get(f"{gateway.base_url}/sms/messages/", headers={"X-Request-ID": hostile}) as r:
            assert r.status == 401
            made = r.headers["X-Request-ID"]
            assert made != hostile and len(made) == 16 and made.isalnum()


# --- a real process logging JSON -------------------------------------------------------------


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    simulator = SmscSimulator(SimulatorConfig(port=0, dlr_delay=0, fail_prefix=None, summary_interval=0))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def test_a_gateway_process_logs_json_lines_with_message_and_call_ids(
    tmp_path: Path, sim: SmscSimulator, receiver: Receiver
) -> None:
    receiver.replies["/actions"] = 'say en "Hello"'
    async with fresh_database(ENGINES[0], tmp_path) as db, gateway_processes(tmp_path) as procs:
        creds = await create_account(db)
        await subscribe_number(db, creds.account.id, DIN, "din", receiver.url("/actions"))
        agi_port = free_port()
        gw = procs.spawn(
            "gw",
            db,
            sim.port,
            GATEWAY_LOG_FORMAT="json",
            GATEWAY_LOG_LEVEL="INFO",
            GATEWAY_LOG_ACCESS="true",
            GATEWAY_VOICE_FASTAGI_ENABLED="true",
            GATEWAY_VOICE_FASTAGI_PORT=str(agi_port),
        )
        await gw.start()
        async with aiohttp.ClientSession(headers=basic(creds.account.sid, creds.auth_token)) as http:
            async with http.post(
                f"{gw.base_url}/sms/messages/",
                data={
                    "message": "hello",
                    "recipient": JP,
                    "sender": "DEMO",
                    "callbackurl": receiver.url("/cb"),
                },
                headers={"X-Request-ID": "req-logs-1"},
            ) as r:
                assert r.status == 201
                msgid = (await r.json())[0]["msgid"]

            async def delivered() -> bool:
                return any(b'"DELIVERED"' in h.body for h in receiver.on("/cb"))

            await wait_for(delivered)
            transcript = await fastagi_call("127.0.0.1", agi_port, CallScenario(dnid=DIN), timeout=30)

            async def call_ended() -> list[dict[str, Any]] | None:
                async with http.get(f"{gw.base_url}/voice/calls/") as r:
                    rows: list[dict[str, Any]] = await r.json()
                return rows if rows and rows[0]["end_time"] else None

            (call,) = await wait_for(call_ended)
        assert await gw.stop() == 0

        lines = gw.log_path.read_text().splitlines()
        assert lines[0].startswith("--- start #1")
        records = [json.loads(line) for line in lines[1:]]  # every line is one JSON object
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records)

        about_msg = [r for r in records if r.get("msgid") == msgid]
        messages = [r["message"] for r in about_msg]
        for expected in ("queued", "submitted", "final status DELIVERED", "webhook delivered"):
            assert expected in messages, messages
        queued = about_msg[messages.index("queued")]
        assert queued["request_id"] == "req-logs-1" and queued["account"] == creds.account.sid
        assert about_msg[messages.index("submitted")]["smsc_ids"]
        hooks = [r for r in about_msg if r["message"] == "webhook delivered"]
        assert {h["url"] for h in hooks} == {receiver.url("/cb")} and all(
            h["http_status"] == 200 for h in hooks
        )
        access = [
            r for r in records if r["logger"] == "gateway.access" and r.get("request_id") == "req-logs-1"
        ]
        assert [(a["message"], a["status"], a["account"]) for a in access] == [
            ("POST /sms/messages/ 201", 201, creds.account.sid)
        ]

        about_call = [r for r in records if r.get("callid") == call["callid"]]
        said = [r["message"] for r in about_call]
        assert said[0] == "call answered" and said[-1].startswith("call ended"), said
        assert all(r["din"] == DIN and r["asterisk_uniqueid"] == transcript.uniqueid for r in about_call)


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_caller_text_cannot_split_a_gateway_process_log_line(
    fmt: str, tmp_path: Path, sim: SmscSimulator
) -> None:
    """A request path and an MO sender (what SMPP's latin-1 address can carry) with separators."""
    path = "/x" + "".join(f"%{b:02X}" for b in SEPARATORS.encode()) + "y"
    sender = "S\x85\x1c\x1d\x1e\x0b\x0cT"  # an alphanumeric source_addr, 21 octets at most
    async with fresh_database(ENGINES[0], tmp_path) as db, gateway_processes(tmp_path) as procs:
        gw = procs.spawn("gw", db, sim.port, GATEWAY_LOG_FORMAT=fmt, GATEWAY_LOG_ACCESS="true")
        gw.env["GATEWAY_LOG_LEVEL"] = "INFO"
        await gw.start()
        async with aiohttp.ClientSession() as http:
            async with http.get(URL(gw.base_url + path, encoded=True)) as r:
                assert r.status == 401  # every unknown path asks for credentials first
        await sim.inject_mo(sender, "81399999999", b"hello")  # nobody holds it: logged, unrouted

        def logged() -> str:
            return gw.log_path.read_text(encoding="utf-8")

        async def both_logged() -> bool:
            out = logged()
            return "/x" in out and "no SIN subscription" in out

        await wait_for(both_logged)
        assert await gw.stop() == 0
    out = logged()
    assert out.splitlines() == out.split("\n")[:-1]  # no separator but the records' own newlines
    lines = [line for line in out.splitlines() if not line.startswith("--- start")]
    if fmt == "json":
        records = [json.loads(line) for line in lines]  # one object per physical line
        messages = [r["message"] for r in records]
        assert f"GET /x{SEPARATORS}y 401" in messages
        assert any(m.startswith(f"MO {sender} -> +81399999999") for m in messages), messages
    else:
        assert all(line.startswith(("20", "  ")) for line in lines), lines
        escaped = "\\n\\r\\u000b\\f\\u001c\\u001d\\u001e\\u0085\\u2028\\u2029"
        assert any(f"GET /x{escaped}y 401" in x for x in lines)
        assert any("MO S\\u0085\\u001c\\u001d\\u001e\\u000b\\fT -> +81399999999" in x for x in lines)


def _run_script(script: str) -> subprocess.CompletedProcess[str]:
    """`script` in a Python process of its own (logs.configure changes the process's logging)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )


STALLED_LOG_SCRIPT = r"""
import os, sys, time
from gateway import logs
r, w = os.pipe()  # nobody reads it until the end: a stalled journald or docker log driver
logs.configure("text", "INFO", os.fdopen(w, "w"))
import logging
log = logging.getLogger("gateway.test")
start = time.monotonic()
for i in range(60_000):  # ~5 MB of lines: far beyond what a pipe holds
    log.info("line %d of a flood", i, extra={"msgid": "m%d" % i})
print("logged in %.2f s" % (time.monotonic() - start), flush=True)
os.set_blocking(r, False)
seen = b""
deadline = time.monotonic() + 30
while b"log records dropped" not in seen and time.monotonic() < deadline:
    try:
        seen += os.read(r, 1 << 20)
    except BlockingIOError:
        time.sleep(0.01)
    if len(seen) > 1 << 20:
        seen = seen[-4096:]
for line in seen.decode().splitlines():
    if "log records dropped" in line:
        print(line, flush=True)
        break
os._exit(0)
"""


def test_a_stalled_log_output_never_blocks_the_caller(tmp_path: Path) -> None:
    """Whoever logs (the event loop) goes on when nobody reads the log: the lines the output cannot
    take are dropped and counted, and the count is written once it drains."""
    try:
        out = _run_script(STALLED_LOG_SCRIPT)
    except subprocess.TimeoutExpired:
        pytest.fail("logging blocked on an output nobody reads")
    lines = out.stdout.splitlines()
    assert lines and lines[0].startswith("logged in"), (out.stdout, out.stderr[-2000:])
    assert len(lines) == 2 and "WARNING gateway.logs:" in lines[1], out.stdout
    dropped = int(lines[1].split("WARNING gateway.logs: ")[1].split()[0])
    assert 0 < dropped < 60_000


BATCHED_LOG_SCRIPT = r"""
import io, logging
from gateway import logs

class Counting(io.StringIO):
    writes = 0
    def write(self, s):
        Counting.writes += 1
        return super().write(s)

out = Counting()
logs.configure("text", "INFO", out)
log = logging.getLogger("gateway.test")
for i in range(200):
    log.info("line %d", i, extra={"msgid": "m%d" % i})
logs.flush()
lines = out.getvalue().splitlines()
print(len(lines), Counting.writes, lines[0].split(": ", 1)[1], lines[-1].split(": ", 1)[1], sep="|")
"""


def test_the_log_writer_writes_lines_that_queued_together_at_once() -> None:
    """200 lines logged in a burst reach the output whole and in order, in a few writes: one
    write (and one wake-up of the writer thread) per line cost the event loop more than the
    lines themselves at three lines per message."""
    out = _run_script(BATCHED_LOG_SCRIPT)
    count, writes, first, last = out.stdout.strip().split("|")
    assert (int(count), first, last) == (200, "line 0 msgid=m0", "line 199 msgid=m199"), out.stderr
    assert int(writes) <= 20, writes
