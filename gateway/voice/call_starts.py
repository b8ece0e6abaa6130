"""Call starts: the dialled DIN's subscription looked up, and the call recorded IN_PROGRESS, for
all the calls that start at about the same time in one query each.

At a burst of call starts (a campaign's callers, a phone-in, a carrier failing over to us) one
lookup and one insert per call queue up on the database (SQLite has one connection, PostgreSQL
a small pool): 200 simultaneous starts made 400 transactions before the last caller's action_url
was even fetched, ~0.3-0.6 s. Here the first call's query starts at once; calls arriving while
it runs go together in the next one (group commit). No timer, so a lone call waits for nothing;
no cache, so every call reads the subscription as the database has it then (a change made on
another node counts from the next query, as before).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Call
from gateway.services.numbers import NumberService, SubscriptionTarget

MAX_BATCH = 100  # items per query: bounds one transaction's length and its bind parameters

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Waiter(Generic[In, Out]):
    item: In
    done: asyncio.Future[Out]


class _Batches(Generic[In, Out]):
    """Runs `work` on everything submitted while the previous run was busy, one run at a time."""

    def __init__(self, work: Callable[[list[In]], Awaitable[list[Out]]], name: str) -> None:
        self._work = work
        self._name = name
        self._waiting: list[_Waiter[In, Out]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: In) -> Out:
        waiter = _Waiter[In, Out](item, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=self._name)
        # A waiter cancelled before its batch began is left out of it.
        return await waiter.done

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = [w for w in self._waiting[:MAX_BATCH] if not w.done.done()]
                del self._waiting[:MAX_BATCH]
                if not batch:
                    continue
                try:
                    results = await self._work([w.item for w in batch])
                except Exception as exc:
                    for w in batch:
                        if not w.done.done():
                            w.done.set_exception(exc)
                else:
                    for w, result in zip(batch, results, strict=True):
                        if not w.done.done():
                            w.done.set_result(result)
        finally:
            self._runner = None


class CallStarts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], numbers: NumberService) -> None:
        self._sessions = sessions
        self._numbers = numbers
        self._lookups = _Batches(self._lookup_all, "din-lookups")
        self._inserts = _Batches(self._insert_all, "call-inserts")

    async def target(self, din: str) -> SubscriptionTarget | None:
        """Who holds `din` (E.164 with +) as a DIN; None for nobody or ""."""
        return await self._lookups.submit(din) if din else None

    async def insert(self, call: Call) -> None:
        """Insert `call` (a new, unsaved inbound call); sets its id. Raises what the database
        raised, and the call is then not recorded."""
        call.id = await self._inserts.submit(call)

    async def _lookup_all(self, dins: list[str]) -> list[SubscriptionTarget | None]:
        async with self._sessions() as session:
            found = await self._numbers.subscriptions_for_numbers(dins, "din", session)
        return [found.get(din) for din in dins]

    async def _insert_all(self, calls: list[Call]) -> list[int]:
        async with self._sessions.begin() as session:
            # One multi-row INSERT: the ORM's unit of work costs several times more CPU per row,
            # and asking RETURNING for row order makes SQLite insert one row at a time.
            rows = [_columns_set(call) for call in calls]
            result = await session.execute(insert(Call).returning(Call.uid, Call.id), rows)
            ids = {uid: call_id for uid, call_id in result.all()}
        return [ids[call.uid] for call in calls]


def _columns_set(call: Call) -> dict[str, Any]:
    """The columns given a value on `call` (by its constructor); the others take their defaults."""
    state = inspect(call)
    return {attr.key: getattr(call, attr.key) for attr in state.mapper.column_attrs if attr.key in state.dict}
