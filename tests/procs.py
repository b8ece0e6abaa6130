"""The gateway as a real process (`python -m gateway run`) for crash and scale-out tests.

A test module's fixture wraps `gateway_processes()`; a test spawns one or more gateways
against its own database and SMSC (the simulator runs in the test process, so it outlives a
killed gateway), and can start, SIGKILL, restart and stop them. Whatever the test does, the
fixture kills every process spawned on the way out; each child is also started under
`setpriv --pdeathsig KILL` (where available), so even a test run that is itself killed leaves
no gateway behind.

Output goes to a log file per process (never to a pipe nobody reads, which would block the
gateway once full); a failed start shows its tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text

from gateway.db import migrate
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Number, NumberSubscription
from gateway.services.accounts import AccountService, NewCredentials
from tests.conftest import ROOT, TEST_SENDERS, _pg_admin, _pg_url, free_port

_SETPRIV = shutil.which("setpriv")


class GatewayProcess:
    """One `gateway run` process; start() may be called again after kill() or stop()."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path, http_port: int) -> None:
        self.name = name
        self.env = env
        self.workdir = workdir
        self.http_port = http_port
        self.base_url = f"http://127.0.0.1:{http_port}"
        self.log_path = workdir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.open_files: tuple[int, int] | None = None  # set: starts under this (soft, hard) RLIMIT_NOFILE

    def _limit_open_files(self) -> None:  # runs in the child, before exec
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, timeout: float = 60) -> None:
        """Spawn the process and return once /healthz answers 200."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        prefix = [_SETPRIV, "--pdeathsig", "KILL"] if _SETPRIV else []
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts} ---\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                *prefix,
                sys.executable,
                "-m",
                "gateway",
                "run",
                env=self.env,
                cwd=str(self.workdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=self._limit_open_files if self.open_files else None,
            )
        try:
            await self._wait_healthy(timeout)
        except BaseException:
            await self.kill()
            raise

    async def _wait_healthy(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode} before it was up:\n{self.tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base_url}/healthz") as r:
                        if r.status == 200:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"{self.name} not healthy within {timeout} s:\n{self.tail()}")
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crashed node or a power cut."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def restart(self, timeout: float = 60) -> None:
        await self.kill()
        await self.start(timeout)

    async def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (graceful shutdown); SIGKILL if it does not exit within `timeout`."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                await self.kill()
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class GatewayProcesses:
    """Spawns gateways for one test and guarantees none survives it (see the fixture)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.all: list[GatewayProcess] = []

    def spawn(self, name: str, db_url: str, smpp_port: int, **env: str) -> GatewayProcess:
        """A gateway (not started yet) on db_url bound to the SMSC at 127.0.0.1:smpp_port.

        Keyword arguments are extra GATEWAY_* variables (they win over the defaults here).
        """
        http_port = free_port()
        workdir = self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        # Nothing GATEWAY_* leaks in from the environment running the tests.
        base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        full = {
            **base,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "GATEWAY_DATABASE_URL": db_url,
            "GATEWAY_SIMULATOR_ENABLED": "false",
            "GATEWAY_SMPP_HOST": "127.0.0.1",
            "GATEWAY_SMPP_PORT": str(smpp_port),
            "GATEWAY_HTTP_HOST": "127.0.0.1",
            "GATEWAY_HTTP_PORT": str(http_port),
            "GATEWAY_VOICE_FASTAGI_ENABLED": "false",
            "GATEWAY_VOICE_DATA_DIR": str(workdir / "voice"),
            "GATEWAY_DISPATCHER_POLL_INTERVAL": "0.1",
            "GATEWAY_WEBHOOKS_POLL_INTERVAL": "0.2",
            "GATEWAY_WEBHOOKS_FIRST_RETRY_SECONDS": "0.5",
            "GATEWAY_WEBHOOKS_TIMEOUT": "5",
            # Webhooks a killed process held in memory (leased to its fast path) go out from the
            # table when their lease ends: 15 s, the least allowed with that timeout (3x), not
            # the default 60 s, which is as long as the crash tests wait for every callback.
            "GATEWAY_WEBHOOKS_LEASE_SECONDS": "15",
            "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",  # the receivers are on loopback
            "GATEWAY_SMPP_ENQUIRE_LINK_INTERVAL": "5",
            "GATEWAY_LOG_LEVEL": "WARNING",
            **env,
        }
        proc = GatewayProcess(name, full, workdir, http_port)
        self.all.append(proc)
        return proc

    async def close(self) -> None:
        for proc in self.all:
            await proc.kill()


@contextlib.asynccontextmanager
async def gateway_processes(workdir: Path) -> AsyncIterator[GatewayProcesses]:
    """For a test module's fixture: every process spawned inside is killed on the way out."""
    procs = GatewayProcesses(workdir)
    try:
        yield procs
    finally:
        await procs.close()


# -- databases ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(engine: str, tmp_path: Path) -> AsyncIterator[str]:
    """A new database migrated to head (a SQLite file, or a PostgreSQL database dropped after)."""
    if engine == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.sqlite3'}"
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
        return
    name = f"gw_proc_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        url = _pg_url(name)
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def sql(db_url: str, query: str, **params: Any) -> list[Any]:
    """Run one statement on its own short-lived engine (committed); rows if it returns any."""
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(query), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def create_account(db_url: str, name: str = "crash") -> NewCredentials:
    engine = create_engine(db_url)
    try:
        return await AccountService(session_factory(engine)).create(name, freeform=True, senders=TEST_SENDERS)
    finally:
        await engine.dispose()


async def subscribe_sin(db_url: str, account_id: int, number: str, action_url: str) -> None:
    """Put `number` in the inventory and subscribe it as a SIN of the account, with a webhook."""
    await subscribe_number(db_url, account_id, number, "sin", action_url)


async def subscribe_number(db_url: str, account_id: int, number: str, kind: str, action_url: str) -> None:
    """Put `number` in the inventory and subscribe it ("sin" or "din") with its action_url."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine).begin() as s:
            num = Number(
                uid=uuid.uuid4().hex,
                number=number,
                country_code="JP",
                prefix=number[1:4],
                sms=kind == "sin",
                voice=kind == "din",
                monthly_cost=Decimal(0),
                minute_cost=Decimal(0),
            )
            s.add(num)
            await s.flush()
            s.add(
                NumberSubscription(number_id=num.id, account_id=account_id, kind=kind, action_url=action_url)
            )
    finally:
        await engine.dispose()
