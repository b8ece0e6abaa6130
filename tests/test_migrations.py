"""Every migration goes down and up again cleanly, and head matches the models."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.db import migrate
from gateway.db.engine import create_engine
from gateway.db.models import Base
from tests.conftest import ENGINES, ROOT, _pg_admin, _pg_url


@contextlib.contextmanager
def _empty_database(engine: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own for one test: a SQLite file, or a PostgreSQL database dropped after."""
    if engine == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/m.sqlite3"
        return
    name = f"gw_mig_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_url(name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    await engine.dispose()
    return list(diff)


@pytest.mark.parametrize("engine", ENGINES)
def test_down_and_up_again(engine: str, tmp_path: Path) -> None:
    with _empty_database(engine, tmp_path) as url:
        cfg = migrate.alembic_config(url)
        command.upgrade(cfg, "head")
        assert asyncio.run(_diff(url)) == []
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")
        assert asyncio.run(_diff(url)) == []


async def _sql(url: str, *statements: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            rows: list[Any] = []
            for stmt in statements:
                result = await conn.execute(text(stmt))
                rows = list(result.all()) if result.returns_rows else []
            return rows
    finally:
        await engine.dispose()


@pytest.mark.parametrize("engine", ENGINES)
def test_webhook_receiver_host_and_uid_backfilled(engine: str, tmp_path: Path) -> None:
    """Deliveries written before 0005 are claimed by receiver host like new ones, and each gets
    its own delivery id."""
    with _empty_database(engine, tmp_path) as url:
        cfg = migrate.alembic_config(url)
        command.upgrade(cfg, "0003")
        urls = ["https://Hooks.Example.com/a?x=1", "http://10.0.0.5:8080/b", "http://[::1]/c"]
        rows = ", ".join(
            f"(1, 'sms.status', 'm{i}', '{u}', '{{}}', 'application/json', 'PENDING', 0,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            for i, u in enumerate(urls)
        )
        asyncio.run(
            _sql(
                url,
                "INSERT INTO accounts"
                " (id, sid, token_hash, name, freeform, webhook_secret, disabled, created_at) VALUES"
                " (1, 'sid', 'hash', 'old', false, 'secret', false, '2026-01-01 00:00:00')",
                "INSERT INTO webhook_deliveries (account_id, kind, ref, url, body, content_type, status,"
                f" attempts, next_attempt_at, created_at) VALUES {rows}",
            )
        )
        command.upgrade(cfg, "head")
        got = asyncio.run(_sql(url, "SELECT receiver_host, uid FROM webhook_deliveries ORDER BY id"))
        assert [r[0] for r in got] == ["hooks.example.com:443", "10.0.0.5:8080", "[::1]:80"]
        uids = [r[1] for r in got]
        assert len(set(uids)) == 3 and all(len(u) == 32 and int(u, 16) >= 0 for u in uids)


@pytest.mark.parametrize("engine", ENGINES)
def test_messages_sent_before_connectors_are_the_connector_default(engine: str, tmp_path: Path) -> None:
    """Before 0007 there was one SMSC: what was sent went over `default`, and its receipts,
    orphans included, keep matching there; a message never sent has no connector."""
    with _empty_database(engine, tmp_path) as url:
        cfg = migrate.alembic_config(url)
        command.upgrade(cfg, "0006")
        message = (
            "INSERT INTO messages (id, msgid, account_id, sender, recipient, body, parts, cost, status,"
            " tags, track_link, created_at, sent_time, attempts, next_attempt_at) VALUES"
            " ({id}, 'm{id}', 1, 'S', '+818012345678', 'x', 1, 1, '{status}', '', false,"
            " '2026-01-01 00:00:00', {sent}, 1, '2026-01-01 00:00:00')"
        )
        asyncio.run(
            _sql(
                url,
                "INSERT INTO accounts"
                " (id, sid, token_hash, name, freeform, webhook_secret, disabled, created_at) VALUES"
                " (1, 'sid', 'hash', 'old', false, 'secret', false, '2026-01-01 00:00:00')",
                message.format(id=1, status="DELIVERING", sent="'2026-01-01 00:00:01'"),
                message.format(id=2, status="QUEUED", sent="NULL"),
                "INSERT INTO message_parts (message_id, seq, smsc_id, state)"
                " VALUES (1, 1, 'abc', 'SUBMITTED')",
                "INSERT INTO orphan_receipts (smsc_id, state, stat, received_at)"
                " VALUES ('def', 'DELIVERED', 'DELIVRD', '2026-01-01 00:00:00')",
            )
        )
        command.upgrade(cfg, "head")
        assert asyncio.run(_sql(url, "SELECT id, smsc FROM messages ORDER BY id")) == [
            (1, "default"),
            (2, None),
        ]
        assert asyncio.run(_sql(url, "SELECT connector FROM message_parts")) == [("default",)]
        assert asyncio.run(_sql(url, "SELECT connector FROM orphan_receipts")) == [("default",)]


@pytest.mark.parametrize("engine", ENGINES)
def test_number_prefixes_become_local_area_prefixes(engine: str, tmp_path: Path) -> None:
    """0009: the inventory's leading digits ("813") become the local prefix Xoxzo lists ("3"),
    and back on downgrade."""
    with _empty_database(engine, tmp_path) as url:
        cfg = migrate.alembic_config(url)
        command.upgrade(cfg, "0006")
        numbers = {"+81312345678": "813", "+815012345678": "8150", "+14155550100": "1415"}
        rows = ", ".join(
            f"('u{i}', '{n}', 'JP', '{p}', true, true, 1, 1, '2026-01-01 00:00:00')"
            for i, (n, p) in enumerate(numbers.items())
        )
        asyncio.run(
            _sql(
                url,
                "INSERT INTO numbers (uid, number, country_code, prefix, sms, voice, monthly_cost,"
                f" minute_cost, created_at) VALUES {rows}",
            )
        )
        command.upgrade(cfg, "head")
        got = asyncio.run(_sql(url, "SELECT number, prefix FROM numbers ORDER BY number"))
        assert [tuple(r) for r in got] == [
            ("+14155550100", "415"),
            ("+81312345678", "3"),
            ("+815012345678", "50"),
        ]
        command.downgrade(cfg, "0006")
        got = asyncio.run(_sql(url, "SELECT number, prefix FROM numbers ORDER BY number"))
        assert dict(tuple(r) for r in got) == numbers


@pytest.mark.skipif("postgresql" not in ENGINES, reason="PostgreSQL not in GWTEST_ENGINES")
async def test_nodes_starting_at_once_migrate_one_after_another(tmp_path: Path) -> None:
    """Several `gateway migrate` (or `run`) processes on one fresh PostgreSQL database ran the
    same DDL at once, and all but one died on duplicate tables."""
    name = f"gw_mig_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_DATABASE_URL": url, "GATEWAY_CONFIG": ""}

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args, env=env, cwd=str(tmp_path), stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    try:
        # Before: other commands say so in one line (the password is not shown).
        code, err = await cli("accounts", "list")
        assert code == 1 and err.splitlines() == [
            f"database at {make_url(url).render_as_string(hide_password=True)} is not migrated: "
            "run `gateway migrate`"
        ]
        results = await asyncio.gather(*(cli("migrate") for _ in range(4)))
        assert [code for code, _ in results] == [0] * 4, [err for _, err in results]
        assert await _diff(url) == []
        assert await _sql(url, "SELECT count(*) FROM alembic_version") == [(1,)]
        assert await asyncio.to_thread(migrate.schema_problem, url) is None
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
