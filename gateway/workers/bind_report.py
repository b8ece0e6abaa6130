"""This node's SMPP binds in the database (`smsc_binds`), so the operator's console shows the
binds of every node on one database, not only of the node serving the page.

The node rewrites its rows when a bind goes up or down (the connectors' events wake it) and
at least every `smpp.bind_report_seconds`, never per message. Each row says until when it
counts as fresh (three intervals on); after that the console shows it stale: the node crashed,
hangs or cannot reach the database. A node that stops cleanly deletes its rows. Rows nobody
refreshed for a day (a node that crashed and never came back under its node id) are deleted
by whichever node reports next.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import SmscBind, utcnow
from gateway.workers.connectors import Connectors

FRESH_FOR = 3  # report intervals a row counts as fresh: one missed write is not yet stale
FORGET_AFTER = timedelta(days=1)


class BindReport:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        connectors: Connectors,
        node: str,
        interval: float,
    ) -> None:
        self._sessions = sessions
        self._connectors = connectors
        self.node = node
        self._fresh_for = timedelta(seconds=interval * FRESH_FOR)
        self._since: dict[str, tuple[bool, datetime]] = {}  # bind -> (bound, since) last seen

    async def write(self) -> None:
        """Every bind of this node as it is now, in one transaction."""
        now = utcnow()
        rows = []
        for cid, connector in self._connectors.items():
            for client in connector.clients:
                cfg, bound = client.config, client.bound
                seen = self._since.get(cfg.name)
                if seen is None or seen[0] != bound:
                    seen = self._since[cfg.name] = (bound, now)
                rows.append(
                    SmscBind(
                        node=self.node,
                        bind=cfg.name,
                        connector=cid,
                        mode=cfg.bind_mode,
                        peer=f"{cfg.host}:{cfg.port}",
                        tls=cfg.tls is not None,
                        bound=bound,
                        since=seen[1],
                        updated_at=now,
                        stale_after=now + self._fresh_for,
                    )
                )
        async with self._sessions.begin() as s:
            await s.execute(
                delete(SmscBind).where(
                    or_(SmscBind.node == self.node, SmscBind.updated_at < now - FORGET_AFTER)
                )
            )
            s.add_all(rows)

    async def remove(self) -> None:
        """A clean stop: this node has no binds any more."""
        async with self._sessions.begin() as s:
            await s.execute(delete(SmscBind).where(SmscBind.node == self.node))
