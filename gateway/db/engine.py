"""Engine and session factory for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gateway.db import sqlite_driver

CONNECT_TIMEOUT = 10.0  # seconds for a new PostgreSQL connection


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _create_private(Path(parsed.database))
        # SQLite has one writer at a time; several connections fight for the lock through its
        # busy handler, which sleeps (p99 latency in seconds under load). One connection turns
        # that into a fair asyncio queue, and WAL commits without fsync are cheap enough for it.
        args, kwargs = SQLiteDialect_aiosqlite().create_connect_args(parsed)
        engine = create_async_engine(
            url,
            async_creator=sqlite_driver.connector(*args, **{**kwargs, "timeout": 30}),
            pool_size=1,
            max_overflow=0,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # A database host that drops packets would otherwise hold each request for asyncpg's 60 s
    # connect timeout before it can answer 503 (gateway/db/availability.py).
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"timeout": CONNECT_TIMEOUT},
    )


def _create_private(path: Path) -> None:
    """The database holds webhook secrets in clear: a new one is created 0600 (in a new 0700
    directory) before SQLite opens it, whatever the umask, and SQLite gives its -wal and -shm files
    the database file's mode. An existing file keeps the mode it has."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while the dispatcher writes; NORMAL sync is durable across
    # process crashes (not power loss), which is the embedded default's promise.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
