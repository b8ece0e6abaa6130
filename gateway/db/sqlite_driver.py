"""aiosqlite with one trip to its thread per statement instead of three or four.

aiosqlite runs every call on its connection's thread: SQLAlchemy's adapter makes a cursor,
executes, fetches and closes it, each a separate trip (a queue put, a thread wake-up, a
call_soon_threadsafe back through the loop's self-pipe). Measured under `bench/sms_out.py
--callbacks`, these trips cost more CPU than the statements they carry (~22 per message).
Here a cursor is a plain object on the loop's side: `execute` runs the statement and reads all
its rows in one trip, and fetch and close are local. The rows of a result are read at once,
which SQLAlchemy's adapter does anyway for every statement that returns any.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite

# What one statement left behind: description, rows, rowcount, lastrowid.
_Outcome = tuple[Any, list[Any], int, int | None]


def _run(conn: sqlite3.Connection, many: bool, sql: str, parameters: Any) -> _Outcome:
    cur = conn.cursor()
    try:
        if many:
            cur.executemany(sql, parameters)
        else:
            cur.execute(sql, parameters)
        rows = cur.fetchall() if cur.description else []
        # After the fetch: with RETURNING, sqlite3 counts the rows as they are read.
        return cur.description, rows, cur.rowcount, cur.lastrowid
    finally:
        cur.close()


class Cursor:
    """The part of aiosqlite's cursor that SQLAlchemy's aiosqlite dialect uses."""

    arraysize = 1

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def _go(self, many: bool, sql: str, parameters: Any) -> Cursor:
        self.description, self._rows, self.rowcount, self.lastrowid = await self._conn.run_statement(
            many, sql, parameters
        )
        return self

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> Cursor:
        return await self._go(False, sql, () if parameters is None else parameters)

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> Cursor:
        return await self._go(True, sql, parameters)

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        n = self.arraysize if size is None else size
        out, self._rows = self._rows[:n], self._rows[n:]
        return out

    async def fetchall(self) -> Sequence[Any]:
        out, self._rows = self._rows, []
        return out

    async def close(self) -> None:
        self._rows = []


class Connection(aiosqlite.Connection):
    def cursor(self) -> Cursor:  # type: ignore[override]
        # No trip: the sqlite3 cursor is made on the thread, per statement (_run).
        return Cursor(self)

    async def run_statement(self, many: bool, sql: str, parameters: Any) -> _Outcome:
        outcome: _Outcome = await self._execute(  # type: ignore[no-untyped-call]
            partial(_run, self._conn, many, sql, parameters)
        )
        return outcome


def connector(database: str, **kwargs: Any) -> Callable[[], Awaitable[Connection]]:
    """An `async_creator` for create_async_engine: the same sqlite3.connect arguments the
    aiosqlite dialect would pass (its create_connect_args), through this module's connection."""

    async def connect() -> Connection:
        conn = Connection(partial(sqlite3.connect, database, **kwargs), 64)
        # As the dialect does for aiosqlite's own: a forgotten connection never holds up exit.
        conn._thread.daemon = True
        await conn  # starts the thread and opens the database there
        return conn

    return connect
