"""A connector's max_submits_per_second across every node on one PostgreSQL.

One row per connector counts the submits taken in the current second, by the database's
clock (so the nodes' clocks need not agree). A node takes tokens in blocks, one upsert each:
the row moves on to the new second when it is behind, else adds the block while the count is
under the cap, and answers how far the count got. A node uses its tokens within that second
and asks again; when the second's tokens are gone it waits for the next one. A block is at
most a tenth of the cap and never more than the submits waiting for one, so a node leaves
little unused at the end of a second: with several nodes the cap is never passed, and is
reached within what those leftovers cost.

Each node also spaces its own submits at the cap (smpp.pacing.TokenBucket), so a node alone
sends evenly through the second instead of a burst at its start. If the database cannot be
reached, the node goes on with its own spacing only (the cap then holds per node) and says so
through DbOutage.
"""

from __future__ import annotations

import asyncio
import logging
import math

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.availability import DbOutage
from smpp.pacing import TokenBucket

log = logging.getLogger(__name__)

_TAKE = text(
    """
    WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now),
    taken AS (
        INSERT INTO smpp_rate_windows AS w (connector, epoch_second, taken)
        SELECT :connector, floor(now)::bigint, :want FROM clock
        ON CONFLICT (connector) DO UPDATE
            SET taken = CASE WHEN w.epoch_second = excluded.epoch_second
                             THEN w.taken + excluded.taken ELSE excluded.taken END,
                epoch_second = excluded.epoch_second
            WHERE w.epoch_second <> excluded.epoch_second OR w.taken < :cap
        RETURNING w.taken
    )
    SELECT (SELECT now FROM clock), (SELECT taken FROM taken)
    """
)


class ClusterRate:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        connector: str,
        rate: int,
        db: DbOutage | None = None,
    ) -> None:
        if rate < 1:
            raise ValueError("rate must be at least 1")
        self._sessions = sessions
        self._connector = connector
        self._cap = rate
        self._block = max(1, rate // 10)
        self._spacing = TokenBucket(rate)
        self._db = db or DbOutage()
        self._tokens = 0
        self._expires = 0.0  # loop time at which the tokens' second ends
        self._waiting = 0
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        await self._spacing.take()
        self._waiting += 1
        try:
            while True:
                async with self._lock:
                    loop = asyncio.get_running_loop()
                    if self._tokens > 0 and loop.time() < self._expires:
                        self._tokens -= 1
                        return
                    wait = await self._refill(loop)
                    if wait is None:
                        continue
                await asyncio.sleep(wait)
        finally:
            self._waiting -= 1

    async def _refill(self, loop: asyncio.AbstractEventLoop) -> float | None:
        """Take a block for this second: None when there are tokens now, else how long to wait
        for the next second (0 when the database failed: go on with the spacing alone)."""
        want = min(self._block, self._waiting)
        try:
            async with self._sessions.begin() as s:
                now, taken = (
                    await s.execute(_TAKE, {"connector": self._connector, "want": want, "cap": self._cap})
                ).one()
        except Exception as exc:
            self._db.failed(exc, f"sharing the submit rate of connector {self._connector}", log)
            self._tokens, self._expires = want, loop.time() + 1.0
            return None
        left = float(math.floor(now) + 1 - now)  # of the database's current second
        granted = 0 if taken is None else min(want, self._cap - (taken - want))
        if granted <= 0:
            return left
        self._tokens, self._expires = granted, loop.time() + left
        return None
