"""Delivery receipts -> part states -> message status (DELIVERED when every part is, else FAIL)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Message, MessagePart, OrphanReceipt
from gateway.workers.batcher import GroupCommitter
from gateway.workers.status import enqueue_status_callback
from smpp.dlr import candidate_ids, normalize_id
from smpp.types import DeliveryReceipt, ReceiptState

log = logging.getLogger(__name__)

ORPHAN_MAX_AGE = timedelta(days=3)


class ReceiptApplier:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], base_url: str) -> None:
        self._sessions = sessions
        self._base_url = base_url
        self._committer: GroupCommitter[DeliveryReceipt] = GroupCommitter(self._write)

    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        if receipt.state is ReceiptState.PENDING:
            return  # intermediate receipts change nothing the API shows
        await self._committer.submit(receipt)

    async def close(self) -> None:
        await self._committer.close()

    async def _write(self, receipts: Sequence[DeliveryReceipt]) -> None:
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            touched: set[int] = set()
            for r in receipts:
                ids = candidate_ids(r.smsc_id)
                matched = await self._apply(s, ids, r.state.value, r.stat)
                if matched:
                    touched.update(matched)
                else:
                    s.add(
                        OrphanReceipt(
                            smsc_id=normalize_id(r.smsc_id), state=r.state.value, stat=r.stat, received_at=now
                        )
                    )
            await self._settle(s, touched, now)

    async def _apply(self, s: AsyncSession, ids: Iterable[str], state: str, stat: str) -> list[int]:
        rows = list(
            (
                await s.execute(
                    update(MessagePart)
                    .where(MessagePart.smsc_id.in_(list(ids)), MessagePart.state == "SUBMITTED")
                    .values(state=state, stat=stat[:16])
                    .returning(MessagePart.message_id)
                )
            ).scalars()
        )
        return rows

    async def _settle(self, s: AsyncSession, message_ids: Iterable[int], now: datetime) -> None:
        ids = sorted(set(message_ids))
        if not ids:
            return
        states: dict[int, list[str]] = {}
        for mid, state in await s.execute(
            select(MessagePart.message_id, MessagePart.state).where(MessagePart.message_id.in_(ids))
        ):
            states.setdefault(mid, []).append(state)
        for mid, part_states in states.items():
            if "SUBMITTED" in part_states:
                continue
            final = "DELIVERED" if all(p == "DELIVERED" for p in part_states) else "FAIL"
            res = await s.execute(
                update(Message)
                .where(Message.id == mid, Message.status == "DELIVERING")
                .values(status=final, done_at=now)
            )
            if res.rowcount:  # type: ignore[attr-defined]
                msg = (await s.execute(select(Message).where(Message.id == mid))).scalar_one()
                await enqueue_status_callback(s, msg, self._base_url)

    async def adopt_orphans(self, s: AsyncSession, smsc_ids: Sequence[str], now: datetime) -> None:
        """Called in the transaction that stored parts with these (normalized) ids."""
        # Orphans keep the receipt's own id form; the hex/decimal relation is symmetric.
        wanted = set().union(*(candidate_ids(i) for i in smsc_ids))
        await self._adopt(s, select(OrphanReceipt).where(OrphanReceipt.smsc_id.in_(sorted(wanted))), now)

    async def sweep(self) -> None:
        """Match orphans whose parts were committed concurrently with them; forget very old ones."""
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            await self._adopt(s, select(OrphanReceipt).order_by(OrphanReceipt.id).limit(1000), now)
            await s.execute(delete(OrphanReceipt).where(OrphanReceipt.received_at < now - ORPHAN_MAX_AGE))

    async def _adopt(self, s: AsyncSession, query: object, now: datetime) -> None:
        orphans = list((await s.execute(query)).scalars())  # type: ignore[call-overload]
        touched: set[int] = set()
        for o in orphans:
            matched = await self._apply(s, candidate_ids(o.smsc_id), o.state, o.stat)
            if matched:
                touched.update(matched)
                await s.execute(delete(OrphanReceipt).where(OrphanReceipt.id == o.id))
        await self._settle(s, touched, now)
