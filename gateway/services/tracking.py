"""The public redirect behind tracked links; the first access fires lt_callbackurl."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Message, TrackedLink
from gateway.services import outbox
from gateway.services.views import fmt_time


class LinkTracker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], base_url: str) -> None:
        self._sessions = sessions
        self._base_url = base_url

    async def open(self, code: str) -> str | None:
        """Record an access and return the target URL, or None for an unknown code."""
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            link = (await s.execute(select(TrackedLink).where(TrackedLink.code == code))).scalar_one_or_none()
            if link is None:
                return None
            await s.execute(
                update(TrackedLink)
                .where(TrackedLink.id == link.id)
                .values(access_count=TrackedLink.access_count + 1)
            )
            # The conditional update makes "first" exact even with concurrent clicks on several nodes.
            first = await s.execute(
                update(TrackedLink)
                .where(TrackedLink.id == link.id, TrackedLink.first_access_at.is_(None))
                .values(first_access_at=now)
            )
            if first.rowcount:  # type: ignore[attr-defined]
                msg = (await s.execute(select(Message).where(Message.id == link.message_id))).scalar_one()
                if msg.lt_callbackurl:
                    outbox.enqueue(
                        s,
                        account_id=msg.account_id,
                        kind="link.access",
                        ref=msg.msgid,
                        url=msg.lt_callbackurl,
                        payload={
                            "msgid": msg.msgid,
                            "url": link.url,
                            "short_url": f"{self._base_url}/l/{code}",
                            "first_access_time": fmt_time(now),
                        },
                    )
            return link.url
