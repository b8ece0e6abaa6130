"""Apply alembic migrations programmatically (the `migrate` command and start-up), and tell the
other commands whether the database is at the schema this code expects.

The migration scripts ship inside the package (gateway/db/migrations), and the alembic config is
built here: no alembic.ini, and nothing depends on the directory a command runs in.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from gateway.db.engine import create_engine

SCRIPTS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(SCRIPTS))
    # ConfigParser interpolation would eat a literal % in a password.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Synchronous: runs its own event loop, so call it before the app loop or in a thread.
    On PostgreSQL it holds an advisory lock (gateway/db/migrations/env.py), so nodes upgrade one at a time."""
    command.upgrade(alembic_config(url), revision)


def schema_problem(url: str) -> str | None:
    """One line saying why the database at `url` cannot be used yet, or None when it is at head.
    Creates nothing: a missing SQLite file stays missing."""
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    missing = f"database at {shown} is not migrated: run `gateway migrate`"
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            return missing
    scripts = ScriptDirectory.from_config(alembic_config(url))
    try:
        current = asyncio.run(_current_heads(url))
    except (DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"cannot open database at {shown}: {reason[0] if reason else type(exc).__name__}"
    if current == set(scripts.get_heads()):
        return None
    if current <= {script.revision for script in scripts.walk_revisions()}:
        return missing  # empty, or behind
    unknown = ", ".join(sorted(current))
    return f"database at {shown} is at revision {unknown}, which this gateway does not know (a newer one?)"


async def _current_heads(url: str) -> set[str]:
    # Read alembic_version directly: alembic's MigrationContext logs at INFO on every use.
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda c: inspect(c).has_table(VERSION_TABLE)):
                return set()
            return set((await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).scalars())
    finally:
        await engine.dispose()
