"""The SQLite driver (gateway/db/sqlite_driver.py) behaves as aiosqlite does for SQLAlchemy:
rows, counts, ids, errors and transactions, on a real database file."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from gateway.db.engine import create_engine

meta = MetaData()
things = Table("things", meta, Column("id", Integer, primary_key=True), Column("name", String, unique=True))


async def test_rows_counts_ids_and_errors(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        async with engine.begin() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            await conn.run_sync(meta.create_all)
            one = await conn.execute(insert(things).values(name="a"))
            assert one.inserted_primary_key == (1,)
            many = await conn.execute(insert(things), [{"name": n} for n in "bcde"])
            assert many.rowcount == 4
            back = await conn.execute(
                insert(things).returning(things.c.id, things.c.name), [{"name": "f"}, {"name": "g"}]
            )
            assert sorted(back.all()) == [(6, "f"), (7, "g")]
            # With RETURNING the count is known only once the rows are read: read on the thread.
            changed = await conn.execute(
                update(things).where(things.c.id > 5).values(name=things.c.name + "!").returning(things.c.id)
            )
            assert sorted(changed.scalars()) == [6, 7]
            assert (
                await conn.execute(update(things).where(things.c.id < 3).values(name=things.c.name + "?"))
            ).rowcount == 2
            result = await conn.execute(select(things.c.name).order_by(things.c.id))
            assert result.fetchone() == ("a?",)
            assert result.fetchmany(2) == [("b?",), ("c",)]
            assert [r[0] for r in result.fetchall()] == ["d", "e", "f!", "g!"]
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert(things).values(name="z"))
                await conn.execute(insert(things).values(name="c"))  # unique
        with pytest.raises(OperationalError):
            async with engine.begin() as conn:
                await conn.execute(text("SELECT * FROM nowhere"))
        async with engine.connect() as conn:
            # The failed transaction left nothing behind; the connection still works.
            assert (await conn.execute(select(things.c.id).where(things.c.name == "z"))).first() is None
            assert (await conn.execute(text("SELECT count(*) FROM things"))).scalar() == 7
    finally:
        await engine.dispose()
