"""Alembic environment (async). The URL is set by gateway.db.migrate, or read from the gateway config."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from gateway.config import load_config
from gateway.db.engine import create_engine
from gateway.db.models import Base

config = context.config
target_metadata = Base.metadata
# pg_advisory_lock key taken around upgrades (any fixed bigint; this is b"gwmigrat").
PG_LOCK_KEY = 0x67776D6967726174


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    return url or load_config().database.url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _do_run(connection: Connection) -> None:
    # Several nodes starting at once against one PostgreSQL would each run the same DDL: they
    # take turns on a session lock of this connection, and whoever comes second finds the schema
    # at head. (SQLite has one writer anyway, and one node.)
    locked = connection.dialect.name == "postgresql"
    if locked:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
        connection.commit()  # the lock is the session's: alembic's own transaction follows
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table (copy, drop, rename) to add a foreign key or alter a column;
        # with foreign keys enforced, dropping `messages` fails once `message_parts` has rows.
        # SQLite's own recipe for such changes: enforcement off (it cannot change inside a
        # transaction), the changes, then a check that every reference still holds.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        # Batch mode lets ALTERs work on SQLite, which cannot alter most column properties in place.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").first()):
                raise RuntimeError(f"migration left a broken reference: {tuple(broken)}")
    finally:
        if locked:
            connection.rollback()  # after a failed migration, so that the unlock can run
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
            connection.commit()


async def run_migrations_online() -> None:
    engine = create_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_do_run)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
