"""Outbound dispatcher: claims QUEUED rows and submits them over SMPP.

Claiming is a lease (claimed_until) taken with SELECT ... FOR UPDATE SKIP LOCKED, so
several gateway nodes on one PostgreSQL never take the same row at once, and a row
whose node died is taken again when the lease runs out. A message leaves QUEUED only
when the SMSC accepted it (DELIVERING) or refused it for good (FAIL): a lost
connection puts it back, so a 201 is never lost; the price is a possible duplicate
for submits that were in flight when the link dropped.

A batch can take long to go out (a slow or throttling SMSC, a small window): while it is on
the wire its lease is renewed every third of the lease, so only a node that stopped renewing
(it died) ever has its rows taken over. Without the renewal another worker would claim the
same rows once the lease ran out and send them again, and again: a slow SMSC livelocked the
queue, every message submitted over and over and none ever recorded.

While no SMSC connector is bound the dispatcher claims nothing: the queue waits untouched
instead of being claimed and put back every second.

Each message goes to the connectors its routing rule names (gateway/routing), in order: one
that is not bound is passed over, and one that throttles the message, refuses it with a
transient error or loses its connection before accepting any part hands it to the next
(failover). The last candidate keeps today's single-SMSC behaviour: it waits out throttling
itself and its refusals are final. The connector that took the message, or refused it for
good, is recorded on the row (`smsc`) and on each part, whose receipt it alone can match.

A long message interrupted after the SMSC accepted some of its parts goes back to the queue
with those parts recorded (message_parts rows, SUBMITTED, while the message stays QUEUED), in
the same write and under the same claim guard as the requeue. The next claim loads them and
the submit skips them: only the missing parts go out, under the same concatenation reference
(derived from the row id), so the handset assembles parts from both attempts. Receipts for the
early parts are matched as they come; the message settles once it is DELIVERING and no part is
left SUBMITTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db import leases
from gateway.db.availability import DbOutage
from gateway.db.in_list import in_list, not_in_list
from gateway.db.models import Account, Batch, Message, MessagePart
from gateway.logs import log_context
from gateway.routing.rules import Routed, RouteTable, default_table
from gateway.services import outbox
from gateway.workers.lifecycle import Lifecycle
from gateway.workers.observer import NullObserver, Observer
from gateway.workers.receipts import ReceiptApplier, log_settled
from gateway.workers.status import REPORTED_MESSAGES, enqueue_status_callback
from smpp.dlr import normalize_id
from smpp.types import ConnectionLost, Deferred, NotBound, SubmitRejected, SubmitRequest, SubmitResult

log = logging.getLogger(__name__)
# The statements of every batch, built once: building one (and deriving its cache key) cost
# about as much CPU as running it, and the ORM's bulk layer ~20 us a row.
_INSERT_PARTS = insert(cast(Table, MessagePart.__table__))
_MESSAGES = cast(Table, Message.__table__)
# What a claim (its token) took, and the parts an earlier attempt got accepted.
_CLAIMED = (
    select(
        Message.id,
        Message.msgid,
        Message.sender,
        Message.recipient,
        Message.body,
        Message.account_id.label("account"),
        Account.sid.label("account_sid"),
        Message.tags,
        Message.expire_at.label("valid_until"),
        Batch.flash_message.label("flash"),
        Message.data_coding,
    )
    .join(Account, Account.id == Message.account_id)
    .outerjoin(Batch, Batch.id == Message.batch_id)
    .where(Message.claimed_by == bindparam("token"), Message.status == "QUEUED")
    .order_by(Message.id)
)
_CLAIMED_PARTS = (
    select(MessagePart.message_id, MessagePart.seq, MessagePart.connector)
    .join(Message, Message.id == MessagePart.message_id)
    .where(Message.claimed_by == bindparam("token"), Message.status == "QUEUED")
    .order_by(MessagePart.id)
)
# Accepted by the SMSC: DELIVERING, if this node's claim still holds.
_ACCEPTED = (
    update(_MESSAGES)
    .where(
        in_list(_MESSAGES.c.id, "ids"),
        _MESSAGES.c.status == "QUEUED",
        in_list(_MESSAGES.c.claimed_by, "tokens"),
    )
    .values(status="DELIVERING", sent_time=bindparam("now"), claimed_until=None, smsc=bindparam("via"))
    .returning(_MESSAGES.c.id)
)

RETRY_DELAY = timedelta(seconds=1)


class Submitter(Protocol):
    """One SMSC connector (smpp.connector.Connector)."""

    @property
    def bound(self) -> bool: ...

    async def submit(self, req: SubmitRequest, *, fail_fast: bool = False) -> SubmitResult: ...


@dataclass(frozen=True)
class Claimed:
    id: int
    msgid: str
    sender: str
    recipient: str
    body: str
    # The sending account's id, for per-account metrics: not its sid, which is half of its
    # credentials and /metrics may be read more widely than the accounts.
    account: int
    account_sid: str  # what routing rules name
    tags: str
    valid_until: datetime | None  # a Sinch batch's expire_at: the SMSC's validity_period
    flash: bool | None  # a Sinch batch's flash_message (None: not a batch message)
    token: str  # the claim's lease token: results are written only while it still holds
    # Part numbers an earlier, interrupted attempt got accepted (message_parts rows), and the
    # connector they went to: the rest goes there first.
    done_parts: frozenset[int] = frozenset()
    done_on: str | None = None
    data_coding: int | None = None  # 8-bit data: `body` is its octets in hex

    @property
    def concat_ref(self) -> int:
        # From the row id rather than the random msgid: consecutive messages (to one handset
        # too) get different references, on every node, and every attempt the same one.
        return (self.id - 1) % 255 + 1


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    result: SubmitResult | None = None
    rejected: SubmitRejected | None = None  # permanent failure
    # Neither set: transient (not bound, connection lost), the row goes back to the queue,
    # with the parts the SMSC accepted before the link went (part number -> SMSC id).
    partial: dict[int, str] = field(default_factory=dict)
    connector: str | None = None  # that sent it, refused it, or took the partial parts


def _log_outcomes(outcomes: Sequence[Outcome]) -> None:
    for o in outcomes:
        if o.result is not None:
            log.info(
                "submitted",
                extra={"msgid": o.claimed.msgid, "smsc": o.connector, "smsc_ids": list(o.result.smsc_ids)},
            )
        elif o.rejected is not None:
            log.warning(
                "refused by the SMSC: %s", o.rejected, extra={"msgid": o.claimed.msgid, "smsc": o.connector}
            )


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        connectors: Mapping[str, Submitter],
        receipts: ReceiptApplier,
        base_url: str,
        node_id: str,
        batch_size: int = 200,
        poll_interval: float = 0.5,
        lease_seconds: float = 60.0,
        workers: int = 3,
        wake_webhooks: Callable[[], None] = lambda: None,
        observer: Observer | None = None,
        db: DbOutage | None = None,
        routes: Callable[[], RouteTable] | None = None,
        fast_path: outbox.FastPath | None = None,
        wake_esme: Callable[[Iterable[int]], None] = lambda accounts: None,
    ) -> None:
        if not connectors:
            raise ValueError("the dispatcher needs at least one connector")
        self._db = db or DbOutage()
        self._fast_path = fast_path
        self._wake_webhooks = wake_webhooks
        self._wake_esme = wake_esme
        self._observer = observer or NullObserver()
        self._sessions = sessions
        self._connectors = dict(connectors)
        fallback = default_table(list(connectors))
        self._routes = routes or (lambda: fallback)
        self._receipts = receipts
        self._base_url = base_url
        self._node = node_id
        self._batch = batch_size
        self._poll = poll_interval
        self._lease = timedelta(seconds=lease_seconds)
        self._workers = workers
        # Rows this node's workers have on the wire or are recording: never claimed again here,
        # however late a renewal comes (a busy event loop or a database queue can make it later
        # than the lease). Only another node relies on the lease alone. Claims take turns, so
        # none is built before the previous one's rows are in the set.
        self._in_flight: set[int] = set()
        self._claiming = asyncio.Lock()
        self.lifecycle = Lifecycle()

    def wake(self) -> None:
        self.lifecycle.wake()

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self._workers)))

    def _ready(self) -> bool:
        """False while no connector is bound: submits would only fail, so claim nothing."""
        return any(c.bound for c in self._connectors.values())

    async def _worker(self) -> None:
        while not self.lifecycle.stopping:
            if not self._ready():
                await self.lifecycle.idle(self._poll)
                continue
            try:
                claimed = await self.claim()
            except Exception as exc:
                backoff = self._db.failed(exc, "claiming queued messages", log)
                await self.lifecycle.idle(max(self._poll, backoff))
                continue
            if not claimed:
                await self.lifecycle.idle(self._poll)
                continue
            # Another worker may find more while this batch is on the wire.
            self.lifecycle.wake()
            sent = asyncio.Event()
            renewal = asyncio.create_task(self._renew(claimed[0].token, sent))
            try:
                outcomes = await asyncio.gather(*(self._submit(c) for c in claimed))
                await self._record(outcomes)
            finally:
                # Stopped, not cancelled: a renewal is never cut off mid-transaction.
                sent.set()
                await renewal
                self._in_flight.difference_update(c.id for c in claimed)

    async def _renew(self, token: str, sent: asyncio.Event) -> None:
        """Extend the lease of a batch's rows every third of the lease until its outcomes are
        recorded."""
        interval = self._lease.total_seconds() / 3
        while not sent.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sent.wait(), interval)
            if sent.is_set():
                return
            try:
                async with self._sessions.begin() as s:
                    await s.execute(
                        update(Message)
                        .where(Message.claimed_by == token, Message.status == "QUEUED")
                        .values(claimed_until=datetime.now(UTC) + self._lease)
                    )
            except Exception as exc:
                self._db.failed(exc, "renewing the lease of a batch in flight", log)

    async def claim(self) -> list[Claimed]:
        """Lease a batch of due rows; they count as in flight until the worker releases them."""
        async with self._claiming:
            batch = await self._take()
            self._in_flight.update(c.id for c in batch)
            return batch

    async def _take(self) -> list[Claimed]:
        now = datetime.now(UTC)
        token = f"{self._node}:{uuid.uuid4().hex[:12]}"
        async with self._sessions.begin() as s:
            claimed = await leases.claim(
                s,
                Message,
                ready_status="QUEUED",
                now=now,
                lease_until=now + self._lease,
                token=token,
                limit=self._batch,
                order_by=(Message.id,),
                # A disabled account's queued messages wait, unsent, until it is enabled again.
                extra=(
                    Message.account_id.not_in(select(Account.id).where(Account.disabled.is_(True))),
                    not_in_list(Message.id, "in_flight"),
                    # A batch message past its expire_at is the batch sweep's to fail, not to send.
                    or_(Message.expire_at.is_(None), Message.expire_at > now),
                ),
                values={"attempts": Message.attempts + 1},
                params={"in_flight": list(self._in_flight)},
            )
            if not claimed:
                return []
            batch = [Claimed(**r._asdict(), token=token) for r in await s.execute(_CLAIMED, {"token": token})]
            done: dict[int, set[int]] = {}
            done_on: dict[int, str] = {}
            for message_id, seq, connector in await s.execute(_CLAIMED_PARTS, {"token": token}):
                done.setdefault(message_id, set()).add(seq)
                done_on[message_id] = connector
            return [
                replace(c, done_parts=frozenset(done[c.id]), done_on=done_on[c.id]) if c.id in done else c
                for c in batch
            ]

    async def _submit(self, c: Claimed) -> Outcome:
        with log_context(msgid=c.msgid):
            return await self._submit_one(c)

    def _candidates(self, c: Claimed) -> list[str]:
        """The connectors to try, in order: the rule's, with the one that took the earlier
        parts of an interrupted message first."""
        tags = tuple(t for t in c.tags.split(",") if t)
        order = list(self._routes().connectors_for(Routed(c.recipient, c.account_sid, c.sender, tags)))
        if c.done_on is not None and c.done_on in self._connectors:
            order = [c.done_on, *(x for x in order if x != c.done_on)]
        return [x for x in order if x in self._connectors]

    async def _submit_one(self, c: Claimed) -> Outcome:
        req = SubmitRequest(
            c.msgid,
            c.sender,
            c.recipient,
            c.body,
            concat_ref=c.concat_ref,
            skip_parts=c.done_parts,
            flash=bool(c.flash),
            valid_until=c.valid_until,
            binary=None if c.data_coding is None else bytes.fromhex(c.body),
            binary_coding=c.data_coding or 0x04,
        )
        candidates = self._candidates(c)
        for n, name in enumerate(candidates):
            connector = self._connectors[name]
            # Another connector could take it: this one gives up on throttling at once.
            fallback = any(self._connectors[later].bound for later in candidates[n + 1 :])
            started = time.perf_counter()

            def done(ok: bool, name: str = name, started: float = started) -> None:
                seconds = time.perf_counter() - started
                self._observer.submit_done(seconds, ok=ok, account=str(c.account), connector=name)

            try:
                res = await connector.submit(req, fail_fast=fallback)
            except NotBound:
                continue  # nothing was sent
            except Deferred as exc:
                done(False)
                # Debug: during a throttling pause every message comes here; the client says
                # once that it pauses.
                log.debug("connector %s deferred it (%s); trying the next", name, exc)
                continue
            except SubmitRejected as exc:
                done(False)
                return Outcome(c, rejected=exc, connector=name)
            except ConnectionLost as exc:
                done(False)
                if exc.accepted:
                    log.info(
                        "back to the queue: connection to %s lost after part(s) %s",
                        name,
                        sorted(exc.accepted),
                    )
                    return Outcome(c, partial=exc.accepted, connector=name)
                if fallback:
                    log.info("connection to %s lost (%s); trying the next connector", name, exc)
                    continue
                log.info("back to the queue: connection to %s lost", name)
                return Outcome(c)
            except Exception:
                done(False)
                log.exception("unexpected submit error on %s; back to the queue", name)
                return Outcome(c)
            done(True)
            return Outcome(c, result=res, connector=name)
        # Debug: while a route's connectors are down this comes once a second for each of its
        # messages; the clients' bind failures and gateway_smpp_bound already say why.
        log.debug("back to the queue: no connector of its route (%s) is up", ", ".join(candidates))
        return Outcome(c)

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        now = datetime.now(UTC)
        for attempt in range(5):
            try:
                async with self._sessions.begin() as s:
                    await self._write(s, outcomes, now)
                    leased = await outbox.lease_fast(s, self._fast_path)
                outbox.hand_over(s, leased, self._fast_path, self._wake_webhooks, self._wake_esme)
                _log_outcomes(outcomes)
                log_settled(s, self._observer)
                return
            except Exception as exc:
                # The SMSC already has these; losing the write would resend them, so insist.
                what = f"recording {len(outcomes)} submit outcomes (attempt {attempt + 1})"
                await asyncio.sleep(max(0.2 * 2**attempt, self._db.failed(exc, what, log)))

    async def _write(self, s: AsyncSession, outcomes: Sequence[Outcome], now: datetime) -> None:
        # Few statements per batch whatever its size: on SQLite every statement is a hop to
        # the single connection's thread, and on PostgreSQL a round trip. The UPDATEs skip the
        # ORM's identity-map pass (synchronize_session=False): the session has loaded no
        # Message yet; the ones loaded below come fresh from the rows.
        accepted: dict[int, SubmitResult] = {o.claimed.id: o.result for o in outcomes if o.result is not None}
        retry = {o.claimed.id: o.partial for o in outcomes if o.result is None and o.rejected is None}
        via = {o.claimed.id: o.connector for o in outcomes if o.connector is not None}
        resumed = {o.claimed.id for o in outcomes if o.claimed.done_parts}
        tokens = sorted({o.claimed.token for o in outcomes})
        mine = (Message.status == "QUEUED", Message.claimed_by.in_(tokens))
        parts: list[dict[str, object]] = []
        if retry:
            requeued = (
                await s.execute(
                    update(Message)
                    .where(Message.id.in_(list(retry)), *mine)
                    .values(claimed_until=None, claimed_by=None, next_attempt_at=now + RETRY_DELAY)
                    .returning(Message.id)
                    .execution_options(synchronize_session=False)
                )
            ).scalars()
            # Parts of an interrupted long message the SMSC accepted: recorded only while the
            # claim still held, so the next attempt (on any node) skips exactly these.
            parts.extend(
                _part(mid, seq, smsc_id, via[mid]) for mid in requeued for seq, smsc_id in retry[mid].items()
            )
        changed: list[int] = []
        by_connector: dict[str, list[int]] = {}
        for mid in accepted:
            by_connector.setdefault(via[mid], []).append(mid)
        for connector, mids in by_connector.items():
            params = {"ids": mids, "tokens": tokens, "now": now, "via": connector}
            changed.extend((await s.execute(_ACCEPTED, params)).scalars())
        parts.extend(
            _part(mid, seq, smsc_id, via[mid]) for mid in changed for seq, smsc_id in accepted[mid].numbered()
        )
        if parts:
            await s.execute(_INSERT_PARTS, parts)
        for o in outcomes:
            if o.rejected is None:
                continue
            res = await s.execute(
                update(Message)
                .where(Message.id == o.claimed.id, *mine)
                .values(
                    status="FAIL", done_at=now, claimed_until=None, error=str(o.rejected), smsc=o.connector
                )
            )
            if res.rowcount:  # type: ignore[attr-defined]
                changed.append(o.claimed.id)
        if changed:
            msgs = (await s.execute(REPORTED_MESSAGES, {"ids": changed})).scalars()
            for msg in msgs:
                await enqueue_status_callback(s, msg, self._base_url)
        if parts:
            # Receipts that raced ahead of this write are waiting as orphans.
            await self._receipts.adopt_orphans(
                s, [(str(p["connector"]), str(p["smsc_id"])) for p in parts], now
            )
        earlier = [mid for mid in changed if mid in resumed and mid in accepted]
        if earlier:
            # The parts of an earlier attempt may all have their final receipts already.
            await self._receipts.settle(s, earlier, now)


def _part(message_id: int, seq: int, smsc_id: str, connector: str) -> dict[str, object]:
    return {
        "message_id": message_id,
        "seq": seq,
        "smsc_id": normalize_id(smsc_id),
        "connector": connector,
        "state": "SUBMITTED",
    }
