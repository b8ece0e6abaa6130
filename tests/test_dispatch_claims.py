"""Several dispatchers (nodes) on one database never claim the same queued message, and no
claim takes more than a batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest_asyncio
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Account, Message
from gateway.workers.dispatcher import Dispatcher
from gateway.workers.receipts import ReceiptApplier
from smpp.types import SubmitRequest, SubmitResult


class NeverCalled:
    bound = False

    async def submit(self, req: SubmitRequest, *, fail_fast: bool = False) -> SubmitResult:
        raise AssertionError("claims only")


@pytest_asyncio.fixture
async def sessions(clean_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(clean_db)
    yield session_factory(engine)
    await engine.dispose()


async def queue(sessions: async_sessionmaker[AsyncSession], n: int) -> None:
    async with sessions.begin() as s:
        acct = Account(sid="s", token_hash="h", name="n", webhook_secret="w")
        s.add(acct)
        await s.flush()
        now = datetime.now(UTC)
        row = dict(
            account_id=acct.id,
            sender="A",
            recipient="+818012345678",
            body="x",
            parts=1,
            cost=1,
            status="QUEUED",
            tags="",
            track_link=False,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
        await s.execute(insert(Message), [{**row, "msgid": f"{i:032d}"} for i in range(n)])


def node(sessions: async_sessionmaker[AsyncSession], name: str, batch: int) -> Dispatcher:
    return Dispatcher(
        sessions, {"default": NeverCalled()}, ReceiptApplier(sessions, ""), "", node_id=name, batch_size=batch
    )


async def test_concurrent_claims_are_disjoint(sessions: async_sessionmaker[AsyncSession]) -> None:
    await queue(sessions, 500)
    nodes = [node(sessions, f"n{i}", 37) for i in range(4)]
    claimed: list[str] = []
    while True:
        rounds = await asyncio.gather(*(n.claim() for n in nodes for _ in range(2)))
        assert all(len(batch) <= 37 for batch in rounds)
        got = [c.msgid for batch in rounds for c in batch]
        if not got:
            break
        claimed.extend(got)
    assert len(claimed) == 500 and len(set(claimed)) == 500


async def test_one_claim_takes_at_most_a_batch(sessions: async_sessionmaker[AsyncSession]) -> None:
    """PostgreSQL once ran the claim's LIMIT subquery once per row: 300 queued, batch 200,
    and one claim took all 300."""
    await queue(sessions, 300)
    one = node(sessions, "n", 200)
    assert len(await one.claim()) == 200
    assert len(await one.claim()) == 100
