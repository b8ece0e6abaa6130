"""Our gateway (SQLite and PostgreSQL) side by side with Kannel, on one machine, in interleaved
rounds (ours-sqlite, ours-postgresql, kannel, ours-sqlite, ...), each against the same SMSC peer.

The SMSC is the node-smpp server of the tests (tests/peers/node_smsc, quiet): it answers every
submit_sm at once, sends the delivery receipt 1 s later, and injects MO deliver_sm at a fixed
rate with the send time in the text. Each system gets a fresh peer, one transceiver bind and
the same window. The HTTP load comes from its own process (bench/http_load.py); status
callbacks, DLRs and MO webhooks go to one receiver in this process.

Per system and round, after a warm-up:
  * MO: R per second for S seconds; latency p50/p99 from the deliver_sm leaving the SMSC to the
    webhook arriving; sustained MO/s.
  * SMS out: N messages, C concurrent clients; end to end msg/s from the first request to the
    last submit_sm received at the SMSC; API latency p50/p99; final DLRs applied per second
    (first to last final-status callback received); CPU per message.
  * peak RSS of the system's processes (VmHWM, summed over them).

    .venv/bin/python -m bench.compare                      # N=20,000, C=50, 3 rounds
    .venv/bin/python -m bench.compare --n 2000 --rounds 1  # quick (~2 min)

Kannel is the Debian package `kannel` (apt-get install -y kannel); see bench/kannel.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from bench import kannel as kannel_box
from bench.common import (
    PG_ADMIN,
    ROOT,
    cpu_seconds,
    create_database,
    free_port,
    machine_busy_seconds,
    parent_pid,
    percentile,
    process_tree,
)
from bench.http_load import SENDER
from tests.peers.node_smsc import NodeSmsc

SIN = "+81312345678"
MO_SOURCE = "819011112222"
DLR_DELAY_MS = 1000
WARM_MESSAGES = 50
WARM_MO = 20
OURS_NOT_FINAL = {"QUEUED", "DELIVERING"}


# ---------------------------------------------------------------------------------------------
# What the receiver saw
# ---------------------------------------------------------------------------------------------
@dataclass
class Seen:
    final_dlrs: dict[str, float] = field(default_factory=dict)  # message key -> arrival (epoch s)
    not_delivered: int = 0  # final callbacks that were not "delivered"
    other_callbacks: int = 0  # intermediate ones (ours DELIVERING, Kannel "delivered to SMSC")
    mo: dict[str, dict[int, float]] = field(default_factory=dict)  # tag -> index -> latency ms
    mo_last: dict[str, float] = field(default_factory=dict)  # tag -> last arrival (epoch s)
    bad: int = 0  # requests the receiver could not read

    def final(self, key: str, delivered: bool) -> None:
        self.final_dlrs.setdefault(key, time.time())
        self.not_delivered += not delivered

    def mo_text(self, text: str) -> None:
        now = time.time()
        try:
            tag, index, sent_ms = text.split(" ")
            latency = now * 1000 - float(sent_ms)
            self.mo.setdefault(tag, {}).setdefault(int(index), latency)
        except ValueError:
            self.bad += 1
            return
        self.mo_last[tag] = now


class Receiver:
    """Our status callbacks (JSON POST) and SIN webhooks (form POST); Kannel's dlr-url and
    get-url (GET with a query)."""

    def __init__(self) -> None:
        self.seen = Seen()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/ours/dlr", self._ours_dlr)
        app.router.add_post("/ours/mo", self._ours_mo)
        app.router.add_get("/kannel/dlr", self._kannel_dlr)
        app.router.add_get("/kannel/mo", self._kannel_mo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ours_dlr(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["status"] in OURS_NOT_FINAL:
            self.seen.other_callbacks += 1
        else:
            self.seen.final(body["msgid"], body["status"] == "DELIVERED")
        return web.Response(status=204)

    async def _ours_mo(self, request: web.Request) -> web.Response:
        self.seen.mo_text((await request.post())["message"])  # type: ignore[arg-type]
        return web.Response(status=204)

    async def _kannel_dlr(self, request: web.Request) -> web.Response:
        kind = request.query.get("type", "")
        if kind in kannel_box.FINAL_DLR_TYPES:
            self.seen.final(request.query["i"], kind == "1")
        else:
            self.seen.other_callbacks += 1
        return web.Response(text="")

    async def _kannel_mo(self, request: web.Request) -> web.Response:
        self.seen.mo_text(request.query.get("text", ""))
        return web.Response(text="")  # empty: no reply SMS (max-messages = 0 anyway)


# ---------------------------------------------------------------------------------------------
# Processes: peak RSS and CPU time of a system's process tree, from /proc
# ---------------------------------------------------------------------------------------------
def peak_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in process_tree(pids):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


# ---------------------------------------------------------------------------------------------
# The two systems
# ---------------------------------------------------------------------------------------------
class System(Protocol):
    label: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def pids(self) -> list[int]: ...

    def load_args(self, n: int, concurrency: int, start: int) -> list[str]: ...

    def log_tail(self) -> str: ...

    async def db_cpu_seconds(self) -> float | None:
        """CPU time so far of the database server processes serving it (PostgreSQL backends)."""


class Ours:
    """Our gateway as its own process: embedded defaults, except the SMSC address, the ports,
    loopback callbacks allowed, the log level and the window (the same as Kannel's)."""

    def __init__(
        self, engine: str, work: Path, smsc_port: int, window: int, log_level: str, receiver: Receiver
    ) -> None:
        self.label = f"ours-{engine}"
        self.engine = engine
        self.work = work
        self.receiver = receiver
        self.http_port = free_port()
        self.env = {
            "PYTHONPATH": str(ROOT),
            "GATEWAY_HTTP_PORT": str(self.http_port),
            "GATEWAY_SMPP_HOST": "127.0.0.1",
            "GATEWAY_SMPP_PORT": str(smsc_port),
            "GATEWAY_SMPP_WINDOW": str(window),
            "GATEWAY_SIMULATOR_ENABLED": "false",
            "GATEWAY_VOICE_FASTAGI_PORT": str(free_port()),
            "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",  # the receiver is on loopback
            "GATEWAY_LOG_LEVEL": log_level,
        }
        self.auth = ""
        self._db_name = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._drop: Callable[[], Any] | None = None

    async def start(self) -> None:
        db_url, self._drop = await create_database(self.engine, self.work)
        self.env["GATEWAY_DATABASE_URL"] = db_url
        self._db_name = db_url.rsplit("/", 1)[1] if self.engine == "postgresql" else ""
        await self._cli("migrate")
        out = await self._cli("accounts", "create", "--name", "bench", "--freeform", "--sender", SENDER)
        creds = json.loads(out[out.index("{") :])
        self.auth = f"{creds['sid']}:{creds['auth_token']}"
        numbers = self.work / "numbers.csv"
        numbers.write_text(
            f"number,country_code,prefix,sms,voice,monthly_cost,minute_cost\n{SIN},JP,813,1,0,0,0\n"
        )
        await self._cli("numbers", "import", str(numbers))
        with (self.work / "gateway.log").open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "run",
                env={**os.environ, **self.env}, cwd=str(self.work), stdout=log, stderr=log,
            )  # fmt: skip
        sid, token = self.auth.split(":", 1)
        base = f"http://127.0.0.1:{self.http_port}"
        auth = {"Authorization": aiohttp.encode_basic_auth(sid, token)}
        async with aiohttp.ClientSession(headers=auth, raise_for_status=True) as http:
            await _wait_http(http, f"{base}/healthz", self._proc)
            async with http.get(f"{base}/sms/sins/") as r:
                uid = next(n["sin_uid"] for n in await r.json() if n["sin"] == SIN.lstrip("+"))
            async with http.post(f"{base}/sms/sins/subscriptions/", data={"sin_uid": uid}):
                pass
            action = {"action_url": f"{self.receiver.base}/ours/mo"}
            async with http.post(f"{base}/sms/sins/subscriptions/{uid}/", data=action):
                pass

    async def _cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args,
            env={**os.environ, **self.env}, cwd=str(self.work),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await proc.communicate())[0].decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"gateway {' '.join(args)} exited with {proc.returncode}:\n{out}")
        return out

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 30)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._drop is not None:
            await self._drop()

    def pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None and self._proc.returncode is None else []

    def load_args(self, n: int, concurrency: int, start: int) -> list[str]:
        return [
            "ours", "--url", f"http://127.0.0.1:{self.http_port}", "--auth", self.auth,
            "--callback", f"{self.receiver.base}/ours/dlr",
            "--n", str(n), "--concurrency", str(concurrency), "--start", str(start),
        ]  # fmt: skip

    async def db_cpu_seconds(self) -> float | None:
        if not self._db_name:
            return None
        import asyncpg

        # The whole server: the postmaster's tree, with the backends that exited (closed pool
        # connections) counted through its children's times; the backends serving the gateway
        # alone undercounted, and went negative when a busy one closed during the run. Nothing
        # else uses this PostgreSQL during a run.
        conn = await asyncpg.connect(PG_ADMIN)
        try:  # read while this backend is alive
            postmaster = parent_pid(int(await conn.fetchval("SELECT pg_backend_pid()")))
        finally:
            await conn.close()
        return cpu_seconds([postmaster])

    def log_tail(self) -> str:
        path = self.work / "gateway.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:]) if path.exists() else ""


class KannelSystem:
    label = "kannel"

    def __init__(self, work: Path, smsc_port: int, window: int, log_level: str, receiver: Receiver) -> None:
        self.receiver = receiver
        self.box = kannel_box.Kannel(work, smsc_port, window, f"{receiver.base}/kannel/mo", log_level)

    async def start(self) -> None:
        await self.box.start()

    async def stop(self) -> None:
        await self.box.stop()

    def pids(self) -> list[int]:
        return self.box.pids()

    def load_args(self, n: int, concurrency: int, start: int) -> list[str]:
        return [
            "kannel", "--url", self.box.sendsms_url,
            "--auth", f"{kannel_box.SENDSMS_USER}:{kannel_box.SENDSMS_PASSWORD}",
            "--callback", f"{self.receiver.base}/kannel/dlr", "--dlr-mask", str(kannel_box.DLR_MASK),
            "--n", str(n), "--concurrency", str(concurrency), "--start", str(start),
        ]  # fmt: skip

    def log_tail(self) -> str:
        return self.box.log_tail()

    async def db_cpu_seconds(self) -> float | None:
        return None


async def _wait_http(http: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if proc.returncode is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


# ---------------------------------------------------------------------------------------------
# One run: a system against a fresh SMSC peer
# ---------------------------------------------------------------------------------------------
async def load(system: System, n: int, concurrency: int, start: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.http_load", *system.load_args(n, concurrency, start),
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(
            f"{system.label} refused requests: {result['errors']}, e.g. {result['error_sample']}"
        )
    return result


async def wait_count(what: str, count: Callable[[], Any], target: int, args: argparse.Namespace) -> bool:
    """Until count() >= target (True); False when it has not moved for --stall seconds or the
    wait took --max-wait seconds: a system that lost messages, or one too slow to wait for."""
    loop = asyncio.get_running_loop()
    began = moved = loop.time()
    last = -1
    while True:
        now_count = await count() if asyncio.iscoroutinefunction(count) else count()
        if now_count >= target:
            return True
        if now_count != last:
            last, moved = now_count, loop.time()
        elif loop.time() - moved > args.stall:
            print(f"  {what}: stuck at {now_count:,} of {target:,} for {args.stall:g} s", flush=True)
            return False
        if loop.time() - began > args.max_wait:
            print(f"  {what}: {now_count:,} of {target:,} after {args.max_wait:g} s; gave up", flush=True)
            return False
        await asyncio.sleep(0.1)


async def must(what: str, count: Callable[[], Any], target: int, args: argparse.Namespace) -> None:
    if not await wait_count(what, count, target, args):
        raise RuntimeError(f"{what}: incomplete")


async def until_accepting(system: System, smsc: NodeSmsc) -> None:
    """Bound to the SMSC and taking requests (smsbox may still be connecting to bearerbox)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while await smsc.bind_count() < 1:
        if loop.time() > deadline:
            raise RuntimeError(f"{system.label} did not bind to the SMSC")
        await asyncio.sleep(0.1)
    while True:
        try:
            await load(system, 1, 1, 10**8)
            return
        except RuntimeError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def run_one(
    system: System, smsc: NodeSmsc, receiver: Receiver, args: argparse.Namespace, figures: dict[str, float]
) -> None:
    """Fills `figures` as it goes, so a run that fails half-way still reports its first half."""
    seen = receiver.seen = Seen()
    await smsc.configure(dlr_delay_ms=DLR_DELAY_MS)
    await system.start()
    await until_accepting(system, smsc)
    # Warm-up: connections, caches, the first DLRs and MO.
    await load(system, WARM_MESSAGES, min(args.concurrency, WARM_MESSAGES), 10**8 + 1)
    await must("warm-up DLRs", lambda: len(seen.final_dlrs), WARM_MESSAGES + 1, args)
    await smsc.mo_stream(MO_SOURCE, SIN[1:], rate=200, count=WARM_MO, tag="warm")
    await must("warm-up MO", lambda: len(seen.mo.get("warm", {})), WARM_MO, args)

    # MO first: a system that falls behind on callbacks later still gets its MO figures.
    if args.only in (None, "mo"):
        seen = receiver.seen = Seen()
        count = max(1, round(args.mo_rate * args.mo_seconds))
        await smsc.mo_stream(MO_SOURCE, SIN[1:], rate=args.mo_rate, count=count, tag="mo")
        complete = await wait_count("MO webhooks", lambda: len(seen.mo.get("mo", {})), count, args)
        started = (await smsc.stats())["mo_stream"]["started_at"] / 1000
        latencies = list(seen.mo.get("mo", {}).values())
        if latencies:
            figures.update(
                mo_p50=percentile(latencies, 50),
                mo_p99=percentile(latencies, 99),
                mo_rate=len(latencies) / (seen.mo_last["mo"] - started),
            )
        if not complete:
            figures["mo_missing"] = count - len(latencies)
            raise RuntimeError("MO webhooks incomplete")

    if args.only in (None, "out"):
        seen = receiver.seen = Seen()
        before = int((await smsc.stats())["submits"])
        cpu0, db0 = cpu_seconds(system.pids()), await system.db_cpu_seconds()
        rx0, busy0 = cpu_seconds([os.getpid()], tree=False), machine_busy_seconds()
        result = await load(system, args.n, args.concurrency, 0)
        figures.update(accepted=result["accepted_per_s"], api_p50=result["p50_ms"], api_p99=result["p99_ms"])

        async def submits() -> int:
            return int((await smsc.stats())["submits"]) - before

        await must("submit_sm at the SMSC", submits, args.n, args)
        figures["e2e"] = args.n / ((await smsc.stats())["last_submit_at"] / 1000 - result["first_request_at"])
        complete = await wait_count("final DLR callbacks", lambda: len(seen.final_dlrs), args.n, args)
        cpu1, db1 = cpu_seconds(system.pids()), await system.db_cpu_seconds()
        rx1, busy1 = cpu_seconds([os.getpid()], tree=False), machine_busy_seconds()
        arrivals = sorted(seen.final_dlrs.values())
        if len(arrivals) > 1:
            figures["dlr"] = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
            span = arrivals[-1] - result["first_request_at"]
            figures["receiver_cpu"] = (rx1 - rx0) / span
            # Taken after the wait that follows the last callback, so slightly low; near the
            # machine's core count, the machine, not the system under test, set the pace.
            figures["machine_cpu"] = (busy1 - busy0) / span
            figures["system_cpu"] = (cpu1 - cpu0) / span
        if complete:
            figures["cpu_ms"] = (cpu1 - cpu0) * 1000 / args.n
            if db0 is not None and db1 is not None:
                figures["db_cpu_ms"] = (db1 - db0) * 1000 / args.n
        else:
            figures["dlr_missing"] = args.n - len(arrivals)
            raise RuntimeError("final DLR callbacks incomplete")
        if seen.not_delivered:
            print(f"  warning: {seen.not_delivered} final callbacks were not 'delivered'", flush=True)


async def run_system(
    make: Callable[[Path, int], System], receiver: Receiver, args: argparse.Namespace
) -> dict[str, float]:
    """One run; a run that fails keeps what it measured and is counted in `failed`."""
    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    figures: dict[str, float] = {}
    try:
        async with NodeSmsc(quiet=True) as smsc:
            system = make(work, smsc.port)
            try:
                await run_one(system, smsc, receiver, args, figures)
            except (RuntimeError, OSError, aiohttp.ClientError) as exc:
                figures["failed"] = 1
                print(f"  {system.label} FAILED: {exc}\n--- its log ---\n{system.log_tail()}", flush=True)
            finally:
                if system.pids():
                    figures["rss"] = peak_rss_mib(system.pids())
                await system.stop()
    finally:
        if args.keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return figures


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
FIGURES = [
    # key, label, format; the last three are per-run counts, shown as a list, without a ratio
    ("e2e", "SMS out end to end, msg/s (first POST -> last submit_sm at the SMSC)", "{:,.0f}"),
    ("accepted", "API accepted/s (load generator's view)", "{:,.0f}"),
    ("api_p50", "API latency p50, ms", "{:,.1f}"),
    ("api_p99", "API latency p99, ms", "{:,.1f}"),
    ("dlr", "final DLRs applied/s (callbacks received, first to last)", "{:,.0f}"),
    ("cpu_ms", "CPU per message out, ms (MT + 2 callbacks + DLR)", "{:,.2f}"),
    ("db_cpu_ms", "PostgreSQL server CPU per message out, ms (all its processes)", "{:,.2f}"),
    ("mo_p50", "MO -> webhook latency p50, ms", "{:,.1f}"),
    ("mo_p99", "MO -> webhook latency p99, ms", "{:,.1f}"),
    ("mo_rate", "MO sustained/s", "{:,.0f}"),
    ("rss", "peak RSS, MiB (VmHWM, all processes)", "{:,.0f}"),
    # The share of a core the benchmark's own receiver (this process) used during SMS out: near
    # 1.0 it, not the system, would be what limits the DLR figure.
    ("receiver_cpu", "benchmark receiver's CPU during SMS out, cores", "{:,.2f}"),
    ("system_cpu", "the system's own CPU during SMS out, cores", "{:,.2f}"),
    ("machine_cpu", "whole machine busy during SMS out, cores (all processes)", "{:,.2f}"),
    ("mo_missing", "MO webhooks missing when the wait ended, per failed run", "{:,.0f}"),
    ("dlr_missing", "final DLR callbacks missing when the wait ended, per failed run", "{:,.0f}"),
    ("failed", "runs that did not finish (see the log above)", "{:,.0f}"),
]
COUNTS = {"mo_missing", "dlr_missing", "failed"}
NO_RATIO = {*COUNTS, "db_cpu_ms", "receiver_cpu", "system_cpu", "machine_cpu"}

TITLES = {"ours-sqlite": "ours SQLite", "ours-postgresql": "ours PostgreSQL", "kannel": "Kannel"}


def report(results: dict[str, list[dict[str, float]]]) -> str:
    labels = list(results)
    ours = [label for label in labels if label != "kannel"]
    have_kannel = "kannel" in results
    head = ["figure (min / median / max)", *(TITLES.get(label, label) for label in labels)]
    if have_kannel:
        head += [f"{TITLES.get(label, label)} / Kannel" for label in ours]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, name, fmt in FIGURES:
        runs = {label: [r[key] for r in results[label] if key in r] for label in labels}
        if not any(runs.values()):
            continue
        row = [name]
        for label in labels:
            v = runs[label]
            if key in COUNTS:
                row.append(", ".join(fmt.format(x) for x in v))
            else:
                row.append(
                    " / ".join(fmt.format(x) for x in (min(v), statistics.median(v), max(v))) if v else ""
                )
        if have_kannel:
            base = runs["kannel"]
            for label in ours:
                v = runs[label]
                if key in NO_RATIO or not v or not base or statistics.median(base) <= 0:
                    row.append("")
                    continue
                ratio = statistics.median(v) / statistics.median(base)
                row.append(f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


PER_MESSAGE = """\
What each system does per message here:
  ours:   POST /sms/messages/ (form) -> row committed (group commit) -> 201; dispatcher submit_sm;
          status DELIVERING + callback row committed; receipt committed before deliver_sm_resp;
          status DELIVERED + callback row; two JSON callbacks POSTed. MO: stored and its webhook
          row committed before deliver_sm_resp, then a form POST to the SIN's action_url.
  Kannel: GET /cgi-bin/sendsms -> smsbox -> bearerbox writes the message to the spool directory
          (one file, no fsync) -> 202; submit_sm; spool file removed on submit_sm_resp; DLR
          mapping kept in memory (dlr-storage = internal); dlr-mask 27 -> two DLR HTTP GETs
          (SMSC ack, final receipt). MO: spool file written before deliver_sm_resp, then an
          HTTP GET of get-url by smsbox.
  SQLite runs in WAL mode with synchronous=NORMAL (no fsync per commit, like Kannel's spool);
  PostgreSQL fsyncs each commit; its server's CPU is shown on its own line (all its processes),
  not in "CPU per message" nor in the RSS."""


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="messages out per run")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mo-rate", type=float, default=1000, help="MO per second offered")
    ap.add_argument("--mo-seconds", type=float, default=10)
    ap.add_argument("--only", choices=["out", "mo"])
    ap.add_argument(
        "--engines", default="sqlite,postgresql", help="ours: comma-separated; '' for Kannel only"
    )
    ap.add_argument("--no-kannel", action="store_true")
    ap.add_argument("--window", type=int, default=10, help="SMPP window, both systems (ours' default: 10)")
    ap.add_argument("--log-level", default="WARNING", help="both systems (Kannel: -v 2 = warning)")
    ap.add_argument("--stall", type=float, default=60, help="give up a wait that has not moved for this long")
    ap.add_argument("--max-wait", type=float, default=900, help="give up any wait after this long (s)")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory (configs, logs)")
    args = ap.parse_args()
    args.engines = [e for e in args.engines.split(",") if e]
    for engine in args.engines:
        if engine not in ("sqlite", "postgresql"):
            ap.error(f"unknown engine {engine!r}")
    return args


async def main() -> None:
    args = parse_args()
    receiver = Receiver()
    await receiver.start()
    makers: list[tuple[str, Callable[[Path, int], System]]] = []
    for engine in args.engines:

        def ours(work: Path, port: int, engine: str = engine) -> System:
            return Ours(engine, work, port, args.window, args.log_level, receiver)

        makers.append((f"ours-{engine}", ours))
    if not args.no_kannel:
        kannel_box.binaries()  # fail before the first round, not after it

        def kannel(work: Path, port: int) -> System:
            return KannelSystem(work, port, args.window, args.log_level, receiver)

        makers.append(("kannel", kannel))
    print(
        f"N={args.n:,} concurrency {args.concurrency}, MO {args.mo_rate:,.0f}/s for {args.mo_seconds:g} s, "
        f"{args.rounds} round(s), window {args.window}, log level {args.log_level}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in makers}
    try:
        for round_no in range(1, args.rounds + 1):
            for label, make in makers:
                t0 = time.monotonic()
                figures = await run_system(make, receiver, args)
                results[label].append(figures)
                shown = ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())
                print(f"round {round_no} {label:16} {shown}  ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        await receiver.stop()
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}\n")
    print(report(results))
    print()
    print(PER_MESSAGE)


if __name__ == "__main__":
    asyncio.run(main())
