"""Delivery receipts -> part states -> message status (DELIVERED when every part is, else FAIL).

Receipts are applied in batches (group commit) with a constant number of statements per
batch, so hundreds of receipts a second cost a few transactions, not hundreds.

A receipt matches only the parts sent over the connector it came from: SMSC message ids are
unique within one SMSC, and two SMSCs may well hand out the same one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.group_commit import GroupCommitter
from gateway.db.in_list import in_list
from gateway.db.models import Message, MessagePart, OrphanReceipt
from gateway.services import outbox
from gateway.workers.observer import NullObserver, Observer
from gateway.workers.status import REPORTED_MESSAGES, enqueue_status_callback
from smpp.dlr import candidate_ids, normalize_id
from smpp.types import DeliveryReceipt, ReceiptState

log = logging.getLogger(__name__)

ORPHAN_MAX_AGE = timedelta(days=3)
SWEEP_BATCH = 1000  # orphans looked at per sweep, newest first
_SETTLED = "settled_messages"
# The statements of every receipt batch, built once: building one (and deriving its cache key)
# cost about as much CPU as running it.
_PARTS = cast(Table, MessagePart.__table__)
_MESSAGES = cast(Table, Message.__table__)
_SUBMITTED = select(_PARTS.c.connector, _PARTS.c.smsc_id, _PARTS.c.id, _PARTS.c.message_id).where(
    in_list(_PARTS.c.smsc_id, "smsc_ids"),
    _PARTS.c.state == "SUBMITTED",
    in_list(_PARTS.c.connector, "connectors"),
)
_RECEIPTED = (
    update(_PARTS)
    .where(in_list(_PARTS.c.id, "ids"), _PARTS.c.state == "SUBMITTED")
    .values(state=bindparam("new_state"), stat=bindparam("new_stat"), err=bindparam("new_err"))
)
_PART_STATES = select(_PARTS.c.message_id, _PARTS.c.state).where(in_list(_PARTS.c.message_id, "ids"))
_ORPHANS_OF = select(OrphanReceipt).where(
    in_list(OrphanReceipt.smsc_id, "smsc_ids"), in_list(OrphanReceipt.connector, "connectors")
)
# The session's orphan objects are not used after the delete: no synchronize pass over them.
_ADOPTED = (
    delete(OrphanReceipt).where(in_list(OrphanReceipt.id, "ids")).execution_options(synchronize_session=False)
)
# Core, not the ORM's UPDATE: objects of these messages the session holds keep their old status
# until REPORTED_MESSAGES reads them again.
_SETTLE = (
    update(_MESSAGES)
    .where(in_list(_MESSAGES.c.id, "ids"), _MESSAGES.c.status == "DELIVERING")
    .values(status=bindparam("final"), done_at=bindparam("now"))
    .returning(_MESSAGES.c.id, _MESSAGES.c.msgid, _MESSAGES.c.sent_time)
)


def log_settled(s: AsyncSession, observer: Observer) -> None:
    """After the commit: one line per message a receipt brought to its final status, and its
    time from the SMSC's acceptance to that status for the delivery-latency histogram."""
    for msgid, status, seconds in s.info.pop(_SETTLED, ()):
        observer.settled(status, seconds)
        log.info("final status %s", status, extra={"msgid": msgid, "status": status, "seconds": seconds})


@dataclass(frozen=True)
class _Pending:
    connector: str  # where the receipt came from
    smsc_id: str  # normalized id as the receipt carried it
    state: str
    stat: str
    err: str | None = None  # the receipt's error code (Sinch delivery reports show it)
    orphan_id: int | None = None


class ReceiptApplier:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        base_url: str,
        wake_webhooks: Callable[[], None] = lambda: None,
        observer: Observer | None = None,
        fast_path: outbox.FastPath | None = None,
        wake_esme: Callable[[Iterable[int]], None] = lambda accounts: None,
    ) -> None:
        self.observer: Observer = observer or NullObserver()
        self._wake_esme = wake_esme
        self._fast_path = fast_path
        self._sessions = sessions
        self._base_url = base_url
        self._wake_webhooks = wake_webhooks
        self._committer: GroupCommitter[_Pending] = GroupCommitter(self._write)

    async def on_receipt(self, receipt: DeliveryReceipt, connector: str) -> None:
        """Store a receipt that came from `connector`; returns once it is committed."""
        if receipt.state is ReceiptState.PENDING:
            return  # intermediate receipts change nothing the API shows
        await self._committer.submit(
            _Pending(
                connector,
                normalize_id(receipt.smsc_id),
                receipt.state.value,
                receipt.stat[:16],
                None if receipt.err is None else receipt.err[:16],
            )
        )

    async def close(self) -> None:
        await self._committer.close()

    async def _write(self, pending: Sequence[_Pending]) -> None:
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            unmatched = await self._apply(s, pending, now)
            s.add_all(
                OrphanReceipt(
                    smsc_id=p.smsc_id,
                    connector=p.connector,
                    state=p.state,
                    stat=p.stat,
                    err=p.err,
                    received_at=now,
                )
                for p in unmatched
            )
            leased = await outbox.lease_fast(s, self._fast_path)
        self._committed(s, leased)

    def _committed(self, s: AsyncSession, leased: list[outbox.Job]) -> None:
        outbox.hand_over(s, leased, self._fast_path, self._wake_webhooks, self._wake_esme)
        log_settled(s, self.observer)

    async def _apply(self, s: AsyncSession, pending: Sequence[_Pending], now: datetime) -> list[_Pending]:
        """Apply receipts to their parts; settle the messages; return the receipts that matched nothing."""
        wanted = {p: candidate_ids(p.smsc_id) for p in pending}
        all_ids = sorted(set().union(*wanted.values())) if wanted else []
        by_smsc_id: dict[tuple[str, str], list[tuple[int, int]]] = {}
        if all_ids:
            rows = await s.execute(
                _SUBMITTED, {"smsc_ids": all_ids, "connectors": sorted({p.connector for p in pending})}
            )
            for connector, smsc_id, part_id, message_id in rows:
                by_smsc_id.setdefault((connector, smsc_id), []).append((part_id, message_id))
        updates: dict[tuple[str, str, str | None], list[int]] = {}
        touched: set[int] = set()
        taken: set[int] = set()
        unmatched: list[_Pending] = []
        for p, ids in wanted.items():
            hits = [
                (pid, mid)
                for i in ids
                for pid, mid in by_smsc_id.get((p.connector, i), ())
                if pid not in taken
            ]
            if not hits:
                unmatched.append(p)
                continue
            for pid, mid in hits:
                taken.add(pid)
                touched.add(mid)
                updates.setdefault((p.state, p.stat, p.err), []).append(pid)
        for (state, stat, err), part_ids in updates.items():
            values = {"new_state": state, "new_stat": stat, "new_err": err}
            await s.execute(_RECEIPTED, {"ids": part_ids, **values})
        await self.settle(s, touched, now)
        return unmatched

    async def settle(self, s: AsyncSession, message_ids: Iterable[int], now: datetime) -> None:
        """DELIVERING messages none of whose parts is SUBMITTED any more get their final status.

        A message still QUEUED is left alone even if every part recorded so far has its final
        receipt: those are the parts an interrupted attempt got accepted, and the rest are to come.
        """
        ids = sorted(set(message_ids))
        if not ids:
            return
        states: dict[int, list[str]] = {}
        for mid, state in await s.execute(_PART_STATES, {"ids": ids}):
            states.setdefault(mid, []).append(state)
        finals: dict[str, list[int]] = {"DELIVERED": [], "FAIL": []}
        for mid, part_states in states.items():
            if "SUBMITTED" in part_states:
                continue
            finals["DELIVERED" if all(p == "DELIVERED" for p in part_states) else "FAIL"].append(mid)
        changed: list[int] = []
        for final, mids in finals.items():
            if mids:
                res = await s.execute(_SETTLE, {"ids": mids, "final": final, "now": now})
                for mid, msgid, sent in res:
                    changed.append(mid)
                    seconds = round(max(0.0, (now - sent).total_seconds()), 3) if sent else None
                    s.info.setdefault(_SETTLED, []).append((msgid, final, seconds))
        if changed:
            msgs = (await s.execute(REPORTED_MESSAGES, {"ids": changed})).scalars()
            for msg in msgs:
                await enqueue_status_callback(s, msg, self._base_url)

    async def adopt_orphans(self, s: AsyncSession, parts: Sequence[tuple[str, str]], now: datetime) -> None:
        """Called in the transaction that stored parts with these (connector, normalized id)."""
        # Orphans keep the receipt's own id form; the hex/decimal relation is symmetric.
        wanted = set().union(*(candidate_ids(i) for _, i in parts))
        connectors = sorted({c for c, _ in parts})
        await self._adopt(s, _ORPHANS_OF, now, {"smsc_ids": sorted(wanted), "connectors": connectors})

    async def sweep(self) -> None:
        """Match orphans whose parts were committed concurrently with them; forget very old ones.

        Newest first: those races are seconds old, while receipts for copies the gateway never
        recorded (resent after a drop or a response timeout) stay unmatched for days. Oldest
        first, a thousand such leftovers hid every newer orphan from the sweep for good.
        """
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            newest = select(OrphanReceipt).order_by(OrphanReceipt.id.desc()).limit(SWEEP_BATCH)
            await self._adopt(s, newest, now)
            await s.execute(delete(OrphanReceipt).where(OrphanReceipt.received_at < now - ORPHAN_MAX_AGE))
            leased = await outbox.lease_fast(s, self._fast_path)
        self._committed(s, leased)

    async def _adopt(
        self, s: AsyncSession, query: Any, now: datetime, params: dict[str, Any] | None = None
    ) -> None:
        orphans = [
            _Pending(o.connector, o.smsc_id, o.state, o.stat, o.err, o.id)
            for o in (await s.execute(query, params)).scalars()
        ]
        if not orphans:
            return
        unmatched = {p.orphan_id for p in await self._apply(s, orphans, now)}
        adopted = [p.orphan_id for p in orphans if p.orphan_id not in unmatched]
        if adopted:
            await s.execute(_ADOPTED, {"ids": adopted})
