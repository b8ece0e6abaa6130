"""Call records, voicemails and recordings are kept `voice.retention_days` after the call ended,
then deleted together: the rows in one transaction, then the WAV files.

A file is removed only after its row is gone, so a crash in between leaves a file nobody lists
(removed by hand, or never noticed) rather than a listed voicemail whose audio is missing. Calls
that never ended (a node died mid-call) are ended by the abandoned-call sweep first, so every
call ages out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Call, Recording, Voicemail

log = logging.getLogger(__name__)

BATCH = 500  # calls deleted per transaction


class VoiceRetention:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], days: int) -> None:
        self._sessions = sessions
        self._days = days

    async def sweep(self, now: datetime | None = None) -> int:
        """Delete what ended more than the retention period ago; returns how many calls went.
        0 days keeps everything."""
        if self._days <= 0:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self._days)
        total = 0
        while True:
            deleted, files = await self._delete_batch(cutoff)
            await asyncio.to_thread(_remove, files)
            total += deleted
            if deleted < BATCH:
                break
        if total:
            log.info("deleted %d call records past the retention period (%d days)", total, self._days)
        return total

    async def _delete_batch(self, cutoff: datetime) -> tuple[int, list[str]]:
        async with self._sessions.begin() as s:
            ids = list(
                (
                    await s.execute(
                        select(Call.id).where(Call.ended_at.is_not(None), Call.ended_at < cutoff).limit(BATCH)
                    )
                ).scalars()
            )
            if not ids:
                return 0, []
            files = [
                *(await s.execute(select(Voicemail.path).where(Voicemail.call_id.in_(ids)))).scalars(),
                *(await s.execute(select(Recording.path).where(Recording.call_id.in_(ids)))).scalars(),
            ]
            await s.execute(delete(Voicemail).where(Voicemail.call_id.in_(ids)))
            await s.execute(delete(Recording).where(Recording.call_id.in_(ids)))
            await s.execute(delete(Call).where(Call.id.in_(ids)))
        return len(ids), files


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
