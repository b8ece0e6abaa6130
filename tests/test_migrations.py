"""Every migration goes down and up again cleanly, and head matches the models."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.db import migrate
from gateway.db.engine import create_engine
from gateway.db.models import Base
from tests.conftest import ENGINES, _pg_admin, _pg_url


async def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    await engine.dispose()
    return list(diff)


@pytest.mark.parametrize("engine", ENGINES)
def test_down_and_up_again(engine: str, tmp_path: Path) -> None:
    name = f"gw_mig_{uuid.uuid4().hex[:10]}"
    if engine == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/m.sqlite3"
    else:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        url = _pg_url(name)
    try:
        cfg = migrate.alembic_config(url)
        command.upgrade(cfg, "head")
        assert asyncio.run(_diff(url)) == []
        command.downgrade(cfg, "base")
        command.upgrade(cfg, "head")
        assert asyncio.run(_diff(url)) == []
    finally:
        if engine != "sqlite":
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
