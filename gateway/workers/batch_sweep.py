"""The periodic job behind Sinch batches: recipients still queued when their batch's `expire_at`
passes fail as Expired (406), whichever node notices first; and batches that asked for a
summary or full delivery report get it once every recipient is final (or at `expire_at`).

The dispatcher never claims such a row (its claim skips expired ones), so an expired message is
never sent even before this sweep has run; the sweep gives it its final status. Rows a node
holds (on the wire) are left to it: the guarded update only takes unleased QUEUED rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Message
from gateway.services import batch_reports, outbox, sinch
from gateway.services.batches import fail_unclaimed
from gateway.workers.status import esme_receipts

log = logging.getLogger(__name__)

BATCH = 1000  # rows failed per transaction
REPORTS = 100  # batch reports written per transaction


class BatchSweep:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        wake_webhooks: Callable[[], None] = lambda: None,
        wake_esme: Callable[[Iterable[int]], None] = lambda accounts: None,
    ) -> None:
        self._sessions = sessions
        self._wake_webhooks = wake_webhooks
        self._wake_esme = wake_esme

    async def run(self) -> None:
        while await self._expire(datetime.now(UTC)) == BATCH:
            pass
        while True:
            async with self._sessions.begin() as s:
                written = await batch_reports.batch_reports_due(s, datetime.now(UTC), REPORTS)
            if outbox.written(s):
                self._wake_webhooks()
            if written < REPORTS:
                return

    async def _expire(self, now: datetime) -> int:
        async with self._sessions.begin() as s:
            due = await s.execute(
                select(Message.id)
                .where(Message.status == "QUEUED", Message.expire_at.is_not(None), Message.expire_at <= now)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            ids = list(due.scalars())
            if not ids:
                return 0
            failed = await fail_unclaimed(s, [Message.id.in_(ids)], sinch.EXPIRED, now)
            await batch_reports.recipient_callbacks(s, failed)
            await esme_receipts(s, failed)
        outbox.hand_over(s, [], None, self._wake_webhooks, self._wake_esme)
        if failed:
            log.info("expired before sending", extra={"messages": len(failed)})
        return len(ids)
