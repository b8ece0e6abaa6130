"""Several dispatchers (nodes) on one database never claim the same queued message."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import insert

from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Account, Message
from gateway.workers.dispatcher import Dispatcher
from gateway.workers.receipts import ReceiptApplier
from smpp.types import SubmitRequest, SubmitResult


class NeverCalled:
    async def submit(self, req: SubmitRequest) -> SubmitResult:
        raise AssertionError("claims only")


async def test_concurrent_claims_are_disjoint(clean_db: str) -> None:
    engine = create_engine(clean_db)
    sessions = session_factory(engine)
    try:
        async with sessions.begin() as s:
            acct = Account(sid="s", token_hash="h", name="n", webhook_secret="w")
            s.add(acct)
            await s.flush()
            now = datetime.now(UTC)
            await s.execute(
                insert(Message),
                [
                    dict(
                        msgid=f"{i:032d}",
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
                    for i in range(500)
                ],
            )
        nodes = [
            Dispatcher(
                sessions, NeverCalled(), ReceiptApplier(sessions, ""), "", node_id=f"n{i}", batch_size=37
            )
            for i in range(4)
        ]
        claimed: list[str] = []
        while True:
            rounds = await asyncio.gather(*(n.claim() for n in nodes for _ in range(2)))
            # The batch size bounds every claim (PostgreSQL once ran the LIMIT subquery per row).
            assert all(len(batch) <= 37 for batch in rounds)
            got = [c.msgid for batch in rounds for c in batch]
            if not got:
                break
            claimed.extend(got)
        assert len(claimed) == 500 and len(set(claimed)) == 500
    finally:
        await engine.dispose()


async def test_one_claim_takes_at_most_a_batch(clean_db: str) -> None:
    """The reproduction of the PostgreSQL semi-join plan: 300 queued, batch 200, one claim."""
    engine = create_engine(clean_db)
    sessions = session_factory(engine)
    try:
        async with sessions.begin() as s:
            acct = Account(sid="s2", token_hash="h", name="n", webhook_secret="w")
            s.add(acct)
            await s.flush()
            now = datetime.now(UTC)
            await s.execute(
                insert(Message),
                [
                    dict(
                        msgid=f"b{i:031d}",
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
                    for i in range(300)
                ],
            )
        node = Dispatcher(
            sessions, NeverCalled(), ReceiptApplier(sessions, ""), "", node_id="n", batch_size=200
        )
        assert len(await node.claim()) == 200
        assert len(await node.claim()) == 100
    finally:
        await engine.dispose()
