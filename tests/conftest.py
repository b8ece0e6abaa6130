"""Shared fixtures: a migrated database per engine (SQLite and a real PostgreSQL), and a real
gateway server on a loopback port wired to an SMSC peer."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import text

from gateway.app import create_app
from gateway.config import Config
from gateway.db import migrate
from gateway.db.engine import create_engine
from gateway.http.listener import start_api
from gateway.keys import ACCOUNTS, SESSIONS
from gateway.net.listening import ListenError
from gateway.services.accounts import NewCredentials

pytest_plugins = ["tests.peers.node_smsc", "tests.peers.simulator_peer", "tests.webhook_receiver"]

PG_ADMIN_DSN = os.environ.get("GWTEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ENGINES = [e for e in os.environ.get("GWTEST_ENGINES", "sqlite,postgresql").split(",") if e]
TABLES = [
    "recordings",
    "smsc_binds",
    "console_sessions",
    "voicemails",
    "calls",
    "auto_reply_rules",
    "number_subscriptions",
    "inbound_messages",
    "numbers",
    "mo_parts",
    "opt_outs",
    "tracked_links",
    "message_parts",
    "orphan_receipts",
    "smpp_rate_windows",
    "webhook_attempts",
    "webhook_deliveries",
    "messages",
    "batches",
    "templates",
    "sender_ids",
    "smpp_credentials",
    "esme_deliveries",
    "esme_parts",
    "accounts",
]

# The senders the suite's messages go out from: every account a test makes may use them
# (gateway/services/senders.py); the allow-list's own tests make accounts with senders=().
TEST_SENDERS = (
    "DEMO",
    "XOXZO",
    "ACME",
    "A",
    "B",
    "SHOP",
    "ALPHA",
    "BETA",
    "SINCH",
    "SENDER",
    "SCALE",
    "Gateway",
    "CRASH",
    "CAP",
    "BENCH",
    "BANK",
    "X",
    "X1",
    "+12345",
    "+12015555555",
    "+81312345678",
    "+819011112222",
)

RESTART_SEQUENCES = """DO $$ DECLARE seq text; BEGIN
  FOR seq IN SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = 'public'
  LOOP EXECUTE format('ALTER SEQUENCE %I RESTART', seq); END LOOP;
END $$"""


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + dbname


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# The files that take longest, first: with `--dist loadfile --no-loadscope-reorder`
# (scripts/test) each worker takes whole files in collection order, and one of these started
# last kept a single worker busy for a minute or two after the others had finished (the suite's
# wall time is the last worker's).
LONGEST_FIRST = (
    "test_schemathesis_routes.py",
    "test_crash_safety.py",
    "test_faults.py",
    "test_webhook_fairness.py",
    "test_scale_out.py",
    "test_cli_and_run.py",
    "test_connectors.py",
    "test_console_browser.py",
    "test_openapi_metrics_ratelimit.py",
    "test_smpp_backpressure.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def fuzz_examples(db_url: str, sqlite_examples: int) -> int:
    """Schemathesis draws a third as many random cases on PostgreSQL. What differs between the
    engines is how they take hostile values (NUL, out-of-range integers and dates, lone
    surrogates), and those go to every operation on both engines as explicit cases; the random
    draw exercises the HTTP layer, the same on both, and on PostgreSQL it took twice SQLite's
    time (the longest test of the suite)."""
    return sqlite_examples if db_url.startswith("sqlite") else max(1, sqlite_examples // 3)


class _Databases:
    """One database per engine, migrated to head on first use and kept for the whole session."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self._urls: dict[str, str] = {}
        self._pg_names: list[str] = []

    def url(self, engine: str) -> str:
        if engine not in self._urls:
            if engine == "sqlite":
                url = f"sqlite+aiosqlite:///{self._tmp.mktemp('db') / 'gateway.sqlite3'}"
            else:
                name = f"gw_test_{uuid.uuid4().hex[:12]}"
                asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
                self._pg_names.append(name)
                url = _pg_url(name)
            migrate.upgrade(url)
            self._urls[engine] = url
        return self._urls[engine]

    def drop(self) -> None:
        for name in self._pg_names:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Databases]:
    dbs = _Databases(tmp_path_factory)
    try:
        yield dbs
    finally:
        dbs.drop()


@pytest.fixture(scope="module", params=ENGINES)
def db_url(request: pytest.FixtureRequest, databases: _Databases) -> str:
    """A database migrated to head with alembic, once per engine per test session (per xdist
    worker). Module-scoped over a session cache: as a parametrized session fixture it was made
    and migrated again at every switch of engine, and under `--dist loadfile` a worker switches
    twice per file."""
    return databases.url(request.param)


async def wipe(db_url: str) -> None:
    """Every table of the engine's test database emptied, its ids restarted."""
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        # DELETE, not TRUNCATE: TRUNCATE makes new files for every table, 0.6-1 s a test on a
        # loaded machine; a test's few rows go in milliseconds. Ids restart as they would.
        for t in TABLES:
            await conn.execute(text(f"DELETE FROM {t}"))
        if not db_url.startswith("sqlite"):
            await conn.execute(text(RESTART_SEQUENCES))
    await engine.dispose()


@pytest_asyncio.fixture
async def clean_db(db_url: str) -> str:
    await wipe(db_url)
    return db_url


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """`app` on a free loopback port for the block; yields its base URL (http://127.0.0.1:<port>)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PICK = random.SystemRandom()  # not the seeded `random`: every xdist worker would pick alike


def free_port() -> int:
    """A loopback port free now, for a process started later to listen on. Picked below the
    kernel's ephemeral range: a port from bind(0) is one that outgoing connections take their
    local ports from too, and with the suite's thousands of connections one took it, now and
    then, before the gateway it was meant for had started and bound it (which then failed)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = _PICK.randrange(10_000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    app: web.Application
    base_url: str
    runner: web.AppRunner

    async def account(
        self, *, freeform: bool = True, name: str = "test", senders: tuple[str, ...] = TEST_SENDERS
    ) -> NewCredentials:
        return await self.app[ACCOUNTS].create(name, freeform=freeform, senders=senders)

    def auth(self, creds: NewCredentials) -> dict[str, str]:
        return basic(creds.account.sid, creds.auth_token)

    async def sql(self, query: str, **params: Any) -> list[Any]:
        async with self.app[SESSIONS]() as s:
            return list((await s.execute(text(query), params)).all())


def gateway_config(db_url: str, smsc_host: str, smsc_port: int, **overrides: Any) -> Config:
    cfg = Config()
    port = free_port()
    cfg.http.host, cfg.http.port = "127.0.0.1", port
    cfg.database.url = db_url
    cfg.simulator.enabled = False
    cfg.smpp.host, cfg.smpp.port = smsc_host, smsc_port
    cfg.smpp.enquire_link_interval = 5.0
    cfg.smpp.response_timeout = 5.0
    cfg.dispatcher.poll_interval = 0.1
    cfg.webhooks.poll_interval = 0.1
    cfg.webhooks.first_retry_seconds = 0.2
    cfg.webhooks.timeout = 3.0
    cfg.sms.prices = {"": 10.0, "81": 8.0, "8190": 9.5}
    cfg.voice.fastagi_port = 0  # ephemeral: tests run many gateways
    # The suite's receivers and action_url servers listen on loopback; tests of the URL policy
    # itself override this with outbound_http__allow_loopback=False.
    cfg.outbound_http.allow_loopback = True
    cfg.voice.data_dir = str(Path(tempfile.mkdtemp(prefix="gw-voice-")))
    # Many tests send wrong credentials on purpose, all from 127.0.0.1: a burst no test reaches
    # keeps the failed-auth throttle in the path without throttling them (test_auth_hostile.py
    # tightens it).
    cfg.ratelimit.auth_failures_burst = 100_000
    for key, value in overrides.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def ami_gateway_config(db_url: str, smsc: Any, ami: Any, **overrides: Any) -> Config:
    """`gateway_config` with outbound calls on through the AMI peer `ami` (a
    tests.peers.ami_server.AmiServer) and a price table, as the gateway requires."""
    settings: dict[str, Any] = {
        "voice__ami_enabled": True,
        "voice__ami_port": ami.port,
        "voice__ami_secret": ami.secret,
        "voice__outbound_prices": {"": 12.0},
    }
    return gateway_config(db_url, smsc.host, smsc.port, **(settings | overrides))


async def start_gateway(cfg: Config) -> Gateway:
    """The app behind the same guarded listener as `gateway run` (gateway/http/listener.py)."""
    for attempt in range(3):
        app = create_app(cfg)
        try:
            runner = await start_api(app, cfg.http, access_log=None)
        except ListenError as exc:
            # free_port() found the port free a moment ago; a socket of another test worker
            # can take it in between (seen in CI). start_api has stopped what it started.
            in_use = getattr(exc.__cause__, "errno", None) == errno.EADDRINUSE
            if attempt == 2 or not in_use or cfg.http.public_base_url:
                raise
            cfg.http.port = free_port()
            continue
        return Gateway(app, cfg.public_base_url, runner)
    raise AssertionError("unreachable")


@pytest_asyncio.fixture
async def gateway(clean_db: str, sim_smsc: Any) -> AsyncIterator[Gateway]:
    """A running gateway on a fresh database, bound to our SMSC simulator."""
    gw = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port))
    yield gw
    await gw.runner.cleanup()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)


ROOT = Path(__file__).resolve().parents[1]
