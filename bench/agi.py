"""AGI bridge: simulated Asterisk calls to a DIN whose action_url answers a short script, through
the gateway's FastAGI server (the gateway in its own process, as deployed) and through the
per-call pyst2 AGI script (asterisk/agi/din_agi.py, one process per call, as AGI() starts it).

The Asterisk side is the stand-in of gateway/voice/asterisk_side.py. Each call: the AGI header,
then the bridge looks the DIN up, records the call, GETs the action_url from a local aiohttp
server and runs the script: ANSWER, STREAM FILE (the say is synthesised once during warm-up and
cached; --script playback fetches a small WAV once and caches it), HANGUP.

Three runs, each C calls at a time (a call starts when one ends):

* FastAGI back-to-back: the stand-in answers every command at once, so calls last milliseconds
  and the gateway runs flat out: calls/s is its capacity, and the latencies are mostly queueing
  (C / calls/s).
* FastAGI held: STREAM FILE takes --hold seconds, as playing the audio would, and the workers'
  first calls are spread over one hold: C calls in progress at any time, new ones arriving at
  about C / hold per second. This is the "C concurrent calls, first command p99" case.
* pyst2 script: the same calls through din_agi.py, one process per call.

Prints, for each: calls/s, the time from connect (FastAGI) or process start (script) to the
first command received from the bridge (ANSWER) p50/p99/max, whole-call time p50/p99, failures,
and memory: the gateway's peak RSS (VmHWM); for the script, each script process's peak RSS
(VmHWM, max and median) and the largest sum of the live script processes' PSS (both sampled
from /proc every 50 ms). Load generator, gateway, action_url server and script processes share
the machine's cores.

    .venv/bin/python -m bench.agi --calls 2000 --concurrency 200 --held-calls 600 --hold 5 \\
        --script-calls 100 --script-concurrency 20 [--db postgresql] [--script playback]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

from bench.common import (
    ROOT,
    create_database,
    drain_output,
    free_port,
    peak_rss_mib,
    percentile,
    start_process,
    stop_process,
)
from gateway.db import migrate
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Call, Number
from gateway.egress.policy import SsrfPolicy
from gateway.services.accounts import AccountService
from gateway.services.number_import import parse_numbers_csv
from gateway.services.numbers import NumberService
from gateway.voice import asterisk_side as asterisk_agi  # patched below: fastagi_call looks it up there
from tests.peers.asterisk_agi import (
    CallScenario,
    CallTranscript,
    Exchange,
    fastagi_call,
    run_agi_script,
)

DIN = "+81312345678"
BURST_DIN = "+81312345679"  # its action_url answers after --action-delay: say + playback
INVENTORY = f"""number,country_code,prefix,sms,voice,monthly_cost,minute_cost
{DIN},JP,813,false,true,1000,3.5
{BURST_DIN},JP,813,false,true,1000,3.5
"""
EXPECTED_VERBS = ["ANSWER", "STREAM FILE", "HANGUP"]
BURST_VERBS = ["ANSWER", "STREAM FILE", "STREAM FILE", "HANGUP"]
DIN_AGI = str(ROOT / "asterisk" / "agi" / "din_agi.py")
CALL_TIMEOUT = 60.0  # seconds one call may take before it counts as failed

# perf_counter() when the stand-in read each call's first command, by the call's uniqueid.
_first_command_at: dict[str, float] = {}


class _ClockedAgi(asterisk_agi.AsteriskAgi):
    """The stand-in's command side, noting when the first command of the call arrived."""

    def handle(self, line: str) -> str:
        _first_command_at.setdefault(self.uniqueid, time.perf_counter())
        return super().handle(line)


def _clock_first_commands() -> None:
    # fastagi_call / run_agi_script build their AsteriskAgi by this module-level name.
    asterisk_agi.AsteriskAgi = _ClockedAgi  # type: ignore[misc]


@dataclass
class Phase:
    label: str
    calls: int
    concurrency: int
    first: list[float] = field(default_factory=list)  # seconds, start -> first command
    whole: list[float] = field(default_factory=list)  # seconds, start -> call over
    failures: int = 0
    first_error: str = ""
    seconds: float = 0.0
    rss: float = float("nan")  # MiB: the gateway's VmHWM after the phase, or the largest script

    expected: list[str] = field(default_factory=lambda: EXPECTED_VERBS)

    def record(self, started: float, t: CallTranscript | None, error: str = "") -> None:
        done = time.perf_counter()
        first = _first_command_at.pop(t.uniqueid, None) if t is not None else None
        if t is not None and not error:
            if t.verbs != self.expected or t.missing or t.ended_by != "bridge":
                error = f"verbs {t.verbs}, missing {t.missing}, ended by {t.ended_by!r}"
            elif t.returncode not in (None, 0):
                error = f"exit status {t.returncode}: {t.stderr.decode(errors='replace')[-500:]}"
        if error or first is None:
            self.failures += 1
            self.first_error = self.first_error or error or "no command received"
            return
        self.first.append(first - started)
        self.whole.append(done - started)


async def held_call(host: str, port: int, hold: float) -> CallTranscript:
    """One FastAGI call on which STREAM FILE takes `hold` seconds, as playing the audio would.

    The stand-in's fastagi_call answers every command at once; this drives the same command
    side (AsteriskAgi: header, answers, transcript) over its own socket loop to add the wait."""
    scenario = CallScenario()
    transcript = CallTranscript()
    agi = asterisk_agi.AsteriskAgi(scenario, transcript, fast=True)
    transcript.uniqueid = agi.uniqueid
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(agi.header(f"agi://{host}:{port}/{scenario.script}").encode())
        while True:
            raw = await asyncio.wait_for(reader.readline(), 30)
            if not raw:
                transcript.ended_by = transcript.ended_by or "bridge"
                return transcript
            line = raw.decode().removesuffix("\n")
            reply = agi.handle(line)
            transcript.exchanges.append(Exchange(line, reply))
            if transcript.verbs[-1] == "STREAM FILE" and not agi.dead:
                await asyncio.sleep(hold)
            writer.write(reply.encode())
            await writer.drain()
            agi.after_answer()
            if agi.hangup_pending:  # the bridge sent HANGUP: Asterisk's FastAGI sends the line
                agi.hangup_pending, agi.dead, transcript.hangup_sent = False, True, True
                writer.write(b"HANGUP\n")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


@dataclass
class Burst:
    """N calls whose connections are all opened at once (one asyncio task each, created in one
    go): header -> first command is measured from the header written to the first command line
    read, on this process's clock."""

    calls: int
    header_sent: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    failures: int = 0
    first_error: str = ""
    gateway_cpu: float = 0.0  # seconds of CPU the gateway used during the burst


async def burst_call(host: str, port: int, burst: Burst, answer_delay: float, hold: float) -> None:
    """One call of a burst: ANSWER takes `answer_delay` (a real Asterisk: ~0.5 s), each STREAM
    FILE `hold` seconds; the rest is answered at once."""
    scenario = CallScenario(dnid=BURST_DIN)
    transcript = CallTranscript()
    agi = asterisk_agi.AsteriskAgi(scenario, transcript, fast=True)
    first: float | None = None
    sent = 0.0
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        burst.failures += 1
        burst.first_error = burst.first_error or f"connect: {exc}"
        return
    try:
        writer.write(agi.header(f"agi://{host}:{port}/{scenario.script}").encode())
        sent = time.perf_counter()
        while True:
            raw = await asyncio.wait_for(reader.readline(), CALL_TIMEOUT)
            if first is None:
                first = time.perf_counter()
            if not raw:
                transcript.ended_by = transcript.ended_by or "bridge"
                break
            line = raw.decode().removesuffix("\n")
            reply = agi.handle(line)
            transcript.exchanges.append(Exchange(line, reply))
            verb = transcript.verbs[-1]
            if verb == "ANSWER" and answer_delay:
                await asyncio.sleep(answer_delay)
            elif verb == "STREAM FILE" and hold and not agi.dead:
                await asyncio.sleep(hold)
            writer.write(reply.encode())
            await writer.drain()
            agi.after_answer()
            if agi.hangup_pending:
                agi.hangup_pending, agi.dead, transcript.hangup_sent = False, True, True
                writer.write(b"HANGUP\n")
    except Exception as exc:
        burst.failures += 1
        burst.first_error = burst.first_error or f"{type(exc).__name__}: {exc}"
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    _first_command_at.pop(agi.uniqueid, None)
    if transcript.verbs != BURST_VERBS or first is None:
        burst.failures += 1
        burst.first_error = burst.first_error or f"verbs {transcript.verbs}"
        return
    burst.header_sent.append(sent)
    burst.first.append(first - sent)
    burst.ended.append(time.perf_counter())


async def run_burst(burst: Burst, answer_delay: float, hold: float, port: int, spread: float = 0.0) -> None:
    """All the calls at once, or the i-th `spread * i / calls` seconds after the first."""

    async def call(i: int) -> None:
        if spread:
            await asyncio.sleep(spread * i / burst.calls)
        await burst_call("127.0.0.1", port, burst, answer_delay, hold)

    await asyncio.gather(*(call(i) for i in range(burst.calls)))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_calls(
    phase: Phase, place: Callable[[], Awaitable[CallTranscript]], stagger: float = 0.0
) -> None:
    """`phase.calls` calls, `phase.concurrency` at a time, each started when one ends; the
    workers' first calls are spread evenly over `stagger` seconds."""
    remaining = phase.calls

    async def worker(i: int) -> None:
        nonlocal remaining
        await asyncio.sleep(stagger * i / phase.concurrency)
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                t = await asyncio.wait_for(place(), CALL_TIMEOUT)
            except Exception as exc:
                phase.record(started, None, f"{type(exc).__name__}: {exc}")
            else:
                phase.record(started, t)

    begin = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(phase.concurrency)))
    phase.seconds = time.perf_counter() - begin


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def _proc_kib(pid: int, path: str, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ChildMemory:
    """Samples our child processes (but `exclude`) from /proc every `interval` seconds: the last
    VmHWM seen of each, and the largest sum of their PSS at one time.

    (Not getrusage(RUSAGE_CHILDREN).ru_maxrss: Linux carries the spawning process's peak RSS
    across the vfork and exec into it, so that figure is this benchmark's own size.)"""

    def __init__(self, exclude: set[int], interval: float = 0.05) -> None:
        self.exclude = exclude
        self.interval = interval
        self.hwm_mib: dict[int, float] = {}
        self.pss_peak_mib = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            pss = 0
            for pid in _children():
                if pid in self.exclude:
                    continue
                hwm = _proc_kib(pid, "status", "VmHWM:")
                if hwm:
                    self.hwm_mib[pid] = max(self.hwm_mib.get(pid, 0.0), hwm / 1024)
                pss += _proc_kib(pid, "smaps_rollup", "Pss:")
            self.pss_peak_mib = max(self.pss_peak_mib, pss / 1024)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000, help="FastAGI back-to-back calls (default 2000)")
    ap.add_argument(
        "--concurrency", type=int, default=200, help="FastAGI calls at once, both runs (default 200)"
    )
    ap.add_argument(
        "--held-calls", type=int, default=600, help="FastAGI held calls, 0 skips them (default 600)"
    )
    ap.add_argument(
        "--hold", type=float, default=5.0, help="seconds a held call's STREAM FILE takes (default 5)"
    )
    ap.add_argument(
        "--script-calls", type=int, default=100, help="pyst2 script calls, 0 skips them (default 100)"
    )
    ap.add_argument(
        "--script-concurrency", type=int, default=20, help="script processes at once (default 20)"
    )
    ap.add_argument(
        "--script", choices=["say", "playback"], default="say", help="what action_url returns (default say)"
    )
    ap.add_argument("--warmup", type=int, default=50, help="FastAGI warm-up calls, not measured (default 50)")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument(
        "--burst", type=int, default=200, help="calls started at once, 0 skips the burst (default 200)"
    )
    ap.add_argument(
        "--action-delay",
        type=float,
        default=0.02,
        help="seconds the burst DIN's action_url takes to answer (default 0.02)",
    )
    ap.add_argument(
        "--answer-delay",
        type=float,
        default=0.5,
        help="seconds the stand-in takes to answer ANSWER in the burst, as Asterisk does (default 0.5)",
    )
    ap.add_argument(
        "--burst-hold", type=float, default=1.0, help="seconds each burst STREAM FILE takes (default 1)"
    )
    ap.add_argument(
        "--burst-spread",
        type=float,
        default=0.0,
        help="seconds over which the burst's calls start, evenly; 0: all at once (default 0)",
    )
    ap.add_argument(
        "--unique-say",
        action="store_true",
        help="a different say text on every burst call: one speech synthesis per call",
    )
    ap.add_argument(
        "--profile", metavar="FILE", help="run the gateway under cProfile, its stats written to FILE"
    )
    args = ap.parse_args()
    _clock_first_commands()

    work = Path(tempfile.mkdtemp(prefix="bench-agi-"))
    voice_dir = work / "voice"
    db_url, drop_database = await create_database(args.db, work)

    # The DINs' action_url server, in its own process (see bench/action_server.py).
    app_port = free_port()
    base = f"http://127.0.0.1:{app_port}"
    script = 'say en "Hello"\n' if args.script == "say" else "playback {base}/greeting.wav\n"
    action_server = await start_process(
        "-m",
        "bench.action_server",
        "--port",
        str(app_port),
        "--script",
        script,
        "--burst-delay",
        str(args.action_delay),
        *(["--unique-say"] if args.unique_say else []),
        ready="listening",
    )
    script = script.replace("{base}", base)

    gw: asyncio.subprocess.Process | None = None
    try:
        await asyncio.to_thread(migrate.upgrade, db_url)
        engine = create_engine(db_url)
        sessions = session_factory(engine)
        creds = await AccountService(sessions).create("bench")
        numbers = NumberService(sessions)
        await numbers.import_numbers(parse_numbers_csv(INVENTORY))
        async with sessions() as s:
            din_uid = (await s.execute(select(Number.uid).where(Number.number == DIN))).scalar_one()
        await numbers.subscribe(creds.account.id, "din", din_uid)
        # The action_url server is on loopback, which the outbound URL policy refuses by default.
        loopback_ok = SsrfPolicy(allow_private=False, allow_loopback=True)
        await numbers.set_action_url(
            creds.account.id, "din", din_uid, f"{base}/actions", url_policy=loopback_ok
        )
        async with sessions() as s:
            burst_uid = (await s.execute(select(Number.uid).where(Number.number == BURST_DIN))).scalar_one()
        await numbers.subscribe(creds.account.id, "din", burst_uid)
        await numbers.set_action_url(
            creds.account.id, "din", burst_uid, f"{base}/burst", url_policy=loopback_ok
        )

        http_port, agi_port = free_port(), free_port()
        env = {
            "GATEWAY_DATABASE_URL": db_url,
            "GATEWAY_HTTP_PORT": str(http_port),
            "GATEWAY_SMPP_PORT": str(free_port()),
            "GATEWAY_SIMULATOR_ENABLED": "true",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_VOICE_FASTAGI_PORT": str(agi_port),
            "GATEWAY_VOICE_DATA_DIR": str(voice_dir),
            "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",
        }
        profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        gw = await start_process(*profile, "-m", "gateway", "run", env=env, cwd=work)
        drain = asyncio.get_running_loop().create_task(drain_output(gw))
        await _wait_up(f"http://127.0.0.1:{http_port}/healthz")

        # Warm-up: TTS (or the media download) and the first-call caches, then a concurrent
        # round for the connection pool.
        warm = Phase("warm-up", args.warmup, min(args.concurrency, max(args.warmup, 1)))
        await run_calls(Phase("warm-up", 1, 1), lambda: fastagi_call("127.0.0.1", agi_port, CallScenario()))
        await run_calls(warm, lambda: fastagi_call("127.0.0.1", agi_port, CallScenario()))
        if warm.failures:
            print(f"warm-up: {warm.failures} of {warm.calls} calls failed: {warm.first_error}")

        burst = Burst(args.burst)
        burst_rss = float("nan")
        if args.burst > 0:
            # Warm-up: the playback WAV (and, unless --unique-say, the speech) into the caches.
            await run_burst(Burst(1), 0, 0, agi_port)
            cpu = _cpu_seconds(gw.pid)
            begin = time.perf_counter()
            await run_burst(burst, args.answer_delay, args.burst_hold, agi_port, args.burst_spread)
            burst.gateway_cpu = _cpu_seconds(gw.pid) - cpu
            burst_rss = peak_rss_mib(gw.pid)
            _print_burst(burst, begin, burst_rss, args)

        fast = Phase("FastAGI back-to-back", args.calls, args.concurrency)
        await run_calls(fast, lambda: fastagi_call("127.0.0.1", agi_port, CallScenario(), timeout=30))
        fast.rss = peak_rss_mib(gw.pid)
        held = Phase(f"FastAGI held {args.hold:g} s", args.held_calls, args.concurrency)
        if args.held_calls > 0:
            await run_calls(held, lambda: held_call("127.0.0.1", agi_port, args.hold), stagger=args.hold)
            held.rss = peak_rss_mib(gw.pid)

        memory = ChildMemory({gw.pid})
        proc = Phase("pyst2 script", args.script_calls, args.script_concurrency)
        if args.script_calls > 0:
            script_env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "GATEWAY_DATABASE_URL": db_url,
                "GATEWAY_VOICE_DATA_DIR": str(voice_dir),
                "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",
            }
            script_env.pop("DIN_AGI_HOOK", None)

            def place_script() -> Awaitable[CallTranscript]:
                return run_agi_script([sys.executable, DIN_AGI], CallScenario(), env=script_env, timeout=30)

            # Warm-up: the page cache for the interpreter and the modules.
            script_warm = Phase("script warm-up", 2, 1)
            await run_calls(script_warm, place_script)
            if script_warm.failures:
                print(f"script warm-up: {script_warm.failures} calls failed: {script_warm.first_error}")
            memory.start()
            try:
                await run_calls(proc, place_script)
            finally:
                await memory.stop()
            proc.rss = max(memory.hwm_mib.values(), default=float("nan"))

        async with sessions() as s:
            completed = (
                await s.execute(select(func.count()).select_from(Call).where(Call.status == "COMPLETED"))
            ).scalar_one()
            recorded = (await s.execute(select(func.count()).select_from(Call))).scalar_one()
        await engine.dispose()
        drain.cancel()

        measured = [p for p in (fast, held, proc) if p.calls > 0]
        print(f"engine {args.db}; action_url script {script.strip()!r} on loopback; {os.cpu_count()} cores")
        print(f"each call: header, {', '.join(EXPECTED_VERBS)} (expected commands from the bridge)")
        print()
        if measured:
            _table(
                measured,
                [
                    ("calls (concurrency)", lambda p: f"{p.calls} ({p.concurrency})"),
                    ("failures", lambda p: f"{p.failures}"),
                    ("calls/s", lambda p: f"{len(p.whole) / p.seconds:,.1f}" if p.seconds else "-"),
                    ("first command p50", lambda p: _ms(p.first, 50)),
                    ("first command p99", lambda p: _ms(p.first, 99)),
                    ("first command max", lambda p: _ms(p.first, 100)),
                    ("call duration p50", lambda p: _ms(p.whole, 50)),
                    ("call duration p99", lambda p: _ms(p.whole, 99)),
                    (
                        "peak RSS",
                        lambda p: (
                            f"{p.rss:.0f} MiB"
                            if p is not proc
                            else f"{p.rss:.0f} MiB max, {_median_hwm(memory):.0f} p50"
                        ),
                    ),
                    (
                        "peak memory, all calls",
                        lambda p: (
                            f"{p.rss:.0f} MiB"
                            if p is not proc
                            else f"{memory.pss_peak_mib:.0f} MiB (sum PSS)"
                        ),
                    ),
                ],
            )
            print()
            print("first command: from connect (FastAGI) or process start (script) to ANSWER received")
            print("call duration: to the bridge closing the call, after HANGUP and the call record")
            print("peak RSS: the gateway's VmHWM after the phase (one process for all calls); for the")
            print("  script, the VmHWM of each script process (max and median over processes) and the")
            print("  largest sum of the live script processes' PSS (both sampled from /proc every 50 ms)")
        for p in measured:
            if p.first_error:
                print(f"{p.label}: first failure: {p.first_error}")
        async with aiohttp.ClientSession() as http, http.get(f"{base}/hits") as r:
            hits = await r.json()
        print(
            f"action_url fetches  {hits['actions']} + {hits['burst']} (burst), media fetches {hits['media']}"
        )
        print(f"call records        {recorded} ({completed} COMPLETED), warm-ups included")
    finally:
        if gw is not None:
            await stop_process(gw)
        await stop_process(action_server)
        await drop_database()
        shutil.rmtree(work, ignore_errors=True)


def _print_burst(burst: Burst, begin: float, rss: float, args: argparse.Namespace) -> None:
    done = len(burst.first)
    spread = (max(burst.header_sent) - min(burst.header_sent)) * 1000 if done else float("nan")
    span = (max(burst.ended) - begin) if done else float("nan")
    say = "a different text each call" if args.unique_say else "the same text (cached)"
    how = f"over {args.burst_spread:g} s" if args.burst_spread else "at once"
    print(
        f"burst: {burst.calls} calls opened {how} (headers written within {spread:.0f} ms), "
        f"engine {args.db}, {os.cpu_count()} cores"
    )
    print(
        f"  action_url answers after {args.action_delay * 1000:g} ms: say ({say}) + playback; "
        f"ANSWER takes {args.answer_delay * 1000:g} ms, each STREAM FILE {args.burst_hold:g} s"
    )
    print(
        f"  header -> first command: p50 {_ms(burst.first, 50)}  p90 {_ms(burst.first, 90)}  "
        f"p99 {_ms(burst.first, 99)}  max {_ms(burst.first, 100)}"
    )
    print(
        f"  {done} calls done in {span:.2f} s ({done / span:.1f} calls/s), {burst.failures} failed; "
        f"gateway peak RSS {rss:.0f} MiB"
    )
    print(
        f"  gateway CPU during the burst: {burst.gateway_cpu:.2f} s "
        f"({burst.gateway_cpu / max(done, 1) * 1000:.2f} ms per call, whole calls)"
    )
    if burst.first_error:
        print(f"  first failure: {burst.first_error}")
    print()


def _median_hwm(memory: ChildMemory) -> float:
    return percentile(list(memory.hwm_mib.values()), 50)


def _ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:,.1f} ms" if values else "-"


def _table(phases: list[Phase], rows: list[tuple[str, Callable[[Phase], str]]]) -> None:
    width = 26
    print(f"{'':24}" + "".join(f"{p.label:<{width}}" for p in phases))
    for name, cell in rows:
        print(f"{name:24}" + "".join(f"{cell(p):<{width}}" for p in phases))


async def _wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("gateway did not come up")


if __name__ == "__main__":
    asyncio.run(main())
