"""Shared pieces of the benchmarks: starting processes, free ports, percentiles, RSS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def process_tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants (a gateway may run worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int], tree: bool = True) -> float:
    """User + system time so far of the processes (and their trees), children that exited and
    were waited for included."""
    ticks = 0
    for pid in process_tree(pids) if tree else pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _status_field(pid: int, name: str) -> int | None:
    """The first number of a field of /proc/<pid>/status (PPid, VmRSS in kB...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return None


def parent_pid(pid: int) -> int:
    ppid = _status_field(pid, "PPid")
    if ppid is None:
        raise ValueError(f"no PPid for {pid}")
    return ppid


def machine_busy_seconds() -> float:
    """CPU time so far of the whole machine, all cores, spent on anything but idling."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """VmRSS: the process's resident set size now."""
    kib = _status_field(pid, "VmRSS")
    return float("nan") if kib is None else kib / 1024


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set size so far."""
    kib = _status_field(pid, "VmHWM")
    return float("nan") if kib is None else kib / 1024


async def start_process(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready: str | None = None,
    timeout: float = 30,
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=str(cwd or ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    if ready is not None:
        assert proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{args} exited before it was ready")
                if ready in line:
                    break
        # Keep draining output so the child never blocks on a full pipe.
        asyncio.get_running_loop().create_task(drain_output(proc))
    return proc


async def drain_output(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def create_database(engine: str, work: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A fresh database for one benchmark run: (URL, drop). SQLite lives in `work`; PostgreSQL
    gets its own database on 127.0.0.1 (trust auth, admin database `test`)."""
    if engine == "sqlite":
        return f"sqlite+aiosqlite:///{work}/gateway.sqlite3", _nothing
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", drop


async def _nothing() -> None:
    return None
