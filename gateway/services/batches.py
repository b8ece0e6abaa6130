"""Sinch-style batches: one text (with per-recipient parameters) to up to 1,000 recipients.

A batch is one `batches` row and one `messages` row per recipient, written in one transaction:
each recipient then goes through the same durable queue, dispatcher, receipts and callbacks as
any message. What the gateway decides for a recipient at once (opted out, a parameter without
a value, too many parts) is a FAIL row with its Sinch code, so the delivery report shows it.

`send_at` is the rows' `next_attempt_at`: the dispatcher does not claim them before (on any
node, across restarts). `expire_at` is the rows' `expire_at`: the dispatcher does not claim
them after, and the batch sweep fails them. Cancelling fails the rows no node has claimed.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.in_list import in_list
from gateway.db.models import Batch, Message, MessagePart, OptOut
from gateway.services import batch_reports, outbox, senders, sinch
from gateway.services.errors import ApiError, FieldErrors, not_found
from gateway.services.messages import MessageService, OutboundRequest
from smpp.encoding import DC_DEFAULT, GSM_SINGLE_MAX, UCS2_SINGLE_MAX, gsm7_length, is_gsm7, plan

log = logging.getLogger(__name__)

MAX_VALIDITY = timedelta(days=3)  # Sinch's default and longest expire_at after send_at
REPLY_WINDOW = timedelta(days=30)  # an MO answers a batch message sent at most this long before
_CHUNK = 500  # numbers per IN (...) query


@dataclass(frozen=True)
class BatchRequest:
    """A batch as the API checked it (E.164 recipients with +, deduplicated, in order)."""

    sender: str
    recipients: tuple[str, ...]
    body: str
    parameters: dict[str, dict[str, str]] | None = None
    delivery_report: str = "none"
    send_at: datetime | None = None
    expire_at: datetime | None = None
    callback_url: str | None = None
    client_reference: str | None = None
    flash_message: bool = False
    feedback_enabled: bool = False
    truncate_concat: bool = False
    max_parts: int | None = None


@dataclass(frozen=True)
class BatchUpdate:
    """POST /batches/{id}: the fields given change, the others stay; recipients are added and
    removed by `to_add` / `to_remove`."""

    changes: dict[str, Any]  # BatchRequest field -> new value
    to_add: tuple[str, ...] = ()
    to_remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rendered:
    recipient: str
    text: str
    parts: int
    encoding: str  # "text" (GSM 03.38) or "unicode" (UCS-2), as Sinch's dry run names them
    fail_code: int | None  # the gateway's own reason not to send it


def _one_part(text: str) -> str:
    """The longest start of `text` that fits one SMS (truncate_concat)."""
    gsm = is_gsm7(text)
    limit = GSM_SINGLE_MAX if gsm else UCS2_SINGLE_MAX
    used = 0
    for i, ch in enumerate(text):
        used += gsm7_length(ch) if gsm else len(ch.encode("utf-16-le")) // 2
        if used > limit:
            return text[:i]
    return text


def _window(send_at: datetime | None, expire_at: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """(when the rows become due, when they expire), refused if expire_at is not after send_at
    or more than 3 days after it."""
    start = max(send_at or now, now)
    if expire_at is None:
        return start, start + MAX_VALIDITY
    if expire_at <= start:
        raise FieldErrors.one("expire_at", "Must be after send_at (or now, without send_at).")
    if expire_at > start + MAX_VALIDITY:
        raise FieldErrors.one("expire_at", "At most 3 days after send_at (or now, without send_at).")
    return start, expire_at


class BatchService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        messages: MessageService,
        max_parts: int,
        wake_dispatcher: Callable[[], None],
        wake_webhooks: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._messages = messages
        self._max_parts = max_parts
        self._wake = wake_dispatcher
        self._wake_webhooks = wake_webhooks

    # -- what each recipient gets -----------------------------------------------------------

    def render(self, req: BatchRequest, recipient: str) -> Rendered:
        text = sinch.render(req.body, recipient, req.parameters)
        if text is None:
            return Rendered(recipient, req.body, 0, "text", sinch.UNMATCHED_PARAMETER)
        limit = min(self._max_parts, req.max_parts or self._max_parts)
        if not req.truncate_concat and len(text) > limit * GSM_SINGLE_MAX:
            return Rendered(recipient, text, 0, "text", sinch.PARTS_LIMIT)  # no need to count
        if req.truncate_concat:
            text = _one_part(text)
        encoded = plan(text)
        encoding = "text" if encoded.data_coding == DC_DEFAULT else "unicode"
        fail = sinch.PARTS_LIMIT if encoded.parts > limit else None
        return Rendered(recipient, text, encoded.parts, encoding, fail)

    def dry_run(self, req: BatchRequest, per_recipient: bool, number: int) -> dict[str, Any]:
        """What a batch would send, without sending (nor checking opt-outs)."""
        rendered = [self.render(req, r) for r in req.recipients]
        out: dict[str, Any] = {
            "number_of_recipients": len(rendered),
            "number_of_messages": sum(r.parts for r in rendered if r.fail_code is None),
        }
        if per_recipient:
            out["per_recipient"] = [
                {
                    "recipient": sinch.digits(r.recipient),
                    "body": r.text,
                    "number_of_parts": r.parts,
                    "encoding": r.encoding,
                }
                for r in rendered[:number]
            ]
        return out

    # -- batches ------------------------------------------------------------------------------

    async def create(self, account_id: int, req: BatchRequest) -> dict[str, Any]:
        now = datetime.now(UTC)
        start, expire = _window(req.send_at, req.expire_at, now)
        batch = Batch(
            uid=secrets.token_hex(16),
            account_id=account_id,
            created_at=now,
            modified_at=now,
            canceled=False,
            **self._columns(req, expire, now),
        )
        async with self._sessions.begin() as s:
            s.add(batch)
            await s.flush()
            await self._queue(s, batch, req, start, now)
        self._woken(s)
        log.info("batch queued", extra={"batch_id": batch.uid, "recipients": len(req.recipients)})
        return sinch.batch_json(batch)

    def _woken(self, s: AsyncSession) -> None:
        self._wake()
        if outbox.written(s):
            self._wake_webhooks()

    @staticmethod
    def _columns(req: BatchRequest, expire: datetime, now: datetime) -> dict[str, Any]:
        return {
            "sender": req.sender,
            "recipients": json.dumps(list(req.recipients)),
            "body": req.body,
            "parameters": None if req.parameters is None else json.dumps(req.parameters, ensure_ascii=False),
            "delivery_report": req.delivery_report,
            "send_at": req.send_at,
            "expire_at": expire,
            "callback_url": req.callback_url,
            "client_reference": req.client_reference,
            "flash_message": req.flash_message,
            "feedback_enabled": req.feedback_enabled,
            "truncate_concat": req.truncate_concat,
            "max_parts": req.max_parts,
            # Only batches with a summary or full report to send wait for it (the batch sweep).
            "reported_at": None
            if batch_reports.needs_batch_report(req.delivery_report, req.callback_url)
            else now,
        }

    async def _queue(
        self, s: AsyncSession, batch: Batch, req: BatchRequest, start: datetime, now: datetime
    ) -> None:
        """One messages row per recipient; the sender and opt-out checks share the transaction."""
        await senders.check(s, batch.account_id, req.sender, "from")
        opted = await _opted_out(s, batch.account_id, req.recipients)
        # Per-recipient reports ride on the status callbacks every message can have.
        callback = req.callback_url if req.delivery_report in sinch.PER_RECIPIENT else None
        rows = []
        for r in [self.render(req, recipient) for recipient in req.recipients]:
            fail = sinch.UNROUTABLE if r.recipient in opted else r.fail_code
            out = OutboundRequest(batch.account_id, req.sender, r.recipient, r.text, callbackurl=callback)
            row = self._messages.row_for(out, r.text, max(r.parts, 1))
            row.update(batch_id=batch.id, expire_at=batch.expire_at, next_attempt_at=start, created_at=now)
            if fail is not None:
                row.update(status="FAIL", fail_code=fail, done_at=now, cost=0)
            rows.append(row)
        if rows:
            await s.execute(insert(Message), rows)
        if callback is not None and any(r["status"] == "FAIL" for r in rows):
            failed = select(Message.id).where(Message.batch_id == batch.id, Message.status == "FAIL")
            await batch_reports.recipient_callbacks(s, (await s.execute(failed)).scalars())

    async def _own(self, s: AsyncSession, account_id: int, uid: str, lock: bool = False) -> Batch:
        q = select(Batch).where(Batch.uid == uid, Batch.account_id == account_id)
        batch = (await s.execute(q.with_for_update() if lock else q)).scalar_one_or_none()
        if batch is None:
            raise not_found("No such batch.")
        return batch

    async def get(self, account_id: int, uid: str) -> dict[str, Any]:
        async with self._sessions() as s:
            return sinch.batch_json(await self._own(s, account_id, uid))

    async def list_batches(
        self,
        account_id: int,
        *,
        start: datetime,
        end: datetime | None,
        senders: Sequence[str],
        client_reference: str | None,
        page: int,
        page_size: int,
    ) -> tuple[int, list[dict[str, Any]]]:
        where: list[ColumnElement[bool]] = [Batch.account_id == account_id, Batch.created_at >= start]
        if end is not None:
            where.append(Batch.created_at < end)
        if senders:
            where.append(Batch.sender.in_({f for s in senders for f in (s, f"+{s}", s.lstrip("+"))}))
        if client_reference is not None:
            where.append(Batch.client_reference == client_reference)
        async with self._sessions() as s:
            count = (await s.execute(select(func.count()).select_from(Batch).where(*where))).scalar_one()
            rows = (
                await s.execute(
                    select(Batch)
                    .where(*where)
                    .order_by(Batch.created_at.desc(), Batch.id.desc())
                    .offset(page * page_size)
                    .limit(page_size)
                )
            ).scalars()
            return count, [sinch.batch_json(b) for b in rows]

    async def cancel(self, account_id: int, uid: str) -> dict[str, Any]:
        """Fails (Cancelled, 407) every recipient no node has claimed yet; those in flight go on."""
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            batch = await self._own(s, account_id, uid, lock=True)
            batch.canceled, batch.modified_at = True, now
            failed = await fail_unclaimed(s, [Message.batch_id == batch.id], sinch.CANCELLED, now)
            await batch_reports.recipient_callbacks(s, failed)
        self._woken(s)
        return sinch.batch_json(batch)

    async def replace(self, account_id: int, uid: str, req: BatchRequest) -> dict[str, Any]:
        return await self._rewrite(account_id, uid, lambda _: req)

    async def update(self, account_id: int, uid: str, upd: BatchUpdate) -> dict[str, Any]:
        def updated(old: BatchRequest) -> BatchRequest:
            removed = set(upd.to_remove)
            kept = [r for r in old.recipients if r not in removed]
            recipients = tuple(dict.fromkeys([*kept, *upd.to_add]))
            if not recipients:
                raise FieldErrors.one("to_remove", "A batch keeps at least one recipient.")
            if len(recipients) > sinch.MAX_RECIPIENTS:
                raise FieldErrors.one("to_add", f"At most {sinch.MAX_RECIPIENTS} recipients in a batch.")
            return replace(old, recipients=recipients, **upd.changes)

        return await self._rewrite(account_id, uid, updated)

    async def _rewrite(
        self, account_id: int, uid: str, change: Callable[[BatchRequest], BatchRequest]
    ) -> dict[str, Any]:
        """Update or replace: only while nothing of the batch has been sent, in one transaction
        that drops its recipients' rows and queues the new ones."""
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            batch = await self._own(s, account_id, uid, lock=True)
            req = change(_request_of(batch))
            start, expire = _window(req.send_at, req.expire_at, now)
            untouched = (
                Message.batch_id == batch.id,
                Message.status.in_(("QUEUED", "FAIL")),
                Message.fail_code.is_not(None) | (Message.status == "QUEUED"),
                Message.attempts == 0,
                or_(Message.claimed_until.is_(None), Message.claimed_until < now),
            )
            total = await _count(s, Message.batch_id == batch.id)
            if batch.canceled or await _count(s, *untouched) != total or await _has_parts(s, batch.id):
                raise ApiError(400, {"detail": "The batch has started sending or was cancelled."})
            gone = await s.execute(delete(Message).where(*untouched))
            if getattr(gone, "rowcount", 0) != total:  # a dispatcher claimed one meanwhile
                raise ApiError(400, {"detail": "The batch has started sending or was cancelled."})
            for column, value in self._columns(req, expire, now).items():
                setattr(batch, column, value)
            batch.modified_at = now
            await s.flush()
            await self._queue(s, batch, req, start, now)
        self._woken(s)
        return sinch.batch_json(batch)

    # -- delivery reports ---------------------------------------------------------------------

    async def _outcomes(
        self, s: AsyncSession, where: Sequence[ColumnElement[bool]]
    ) -> list[tuple[Message, sinch.Outcome]]:
        msgs = list((await s.execute(select(Message).where(*where).order_by(Message.id))).scalars())
        return list(zip(msgs, await batch_reports.outcomes(s, msgs), strict=True))

    async def delivery_report(
        self,
        account_id: int,
        uid: str,
        *,
        full: bool,
        statuses: frozenset[str] = frozenset(),
        codes: frozenset[int] = frozenset(),
        client_reference: str | None = None,
    ) -> dict[str, Any]:
        async with self._sessions() as s:
            batch = await self._own(s, account_id, uid)
            if client_reference is not None and client_reference != batch.client_reference:
                raise not_found("No such batch.")
            results = await self._outcomes(s, [Message.batch_id == batch.id])
        kept = [(m.recipient, o) for m, o in results if _wanted(o, statuses, codes)]
        return sinch.batch_report(batch, kept, full=full, total=len(results))

    async def recipient_report(self, account_id: int, uid: str, recipient: str) -> dict[str, Any]:
        async with self._sessions() as s:
            batch = await self._own(s, account_id, uid)
            results = await self._outcomes(s, [Message.batch_id == batch.id, Message.recipient == recipient])
        if not results:
            raise not_found("No such recipient in this batch.")
        msg, result = results[0]
        return sinch.recipient_report(batch, msg, result)

    async def list_reports(
        self,
        account_id: int,
        *,
        start: datetime,
        end: datetime | None,
        statuses: frozenset[str],
        codes: frozenset[int],
        client_reference: str | None,
        page: int,
        page_size: int,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Recipient reports of the account's batch messages created in [start, end), newest
        first."""
        where: list[ColumnElement[bool]] = [
            Message.account_id == account_id,
            Message.batch_id.is_not(None),
            Message.created_at >= start,
        ]
        if end is not None:
            where.append(Message.created_at < end)
        if client_reference is not None:
            where.append(
                Message.batch_id.in_(select(Batch.id).where(Batch.client_reference == client_reference))
            )
        async with self._sessions() as s:
            if statuses or codes:  # worked out per message: filter the window in memory
                results = [(m, o) for m, o in await self._outcomes(s, where) if _wanted(o, statuses, codes)]
                count = len(results)
                chosen = results[::-1][page * page_size : (page + 1) * page_size]
            else:
                count = await _count(s, *where)
                newest = (Message.created_at.desc(), Message.id.desc())
                ids = (
                    select(Message.id)
                    .where(*where)
                    .order_by(*newest)
                    .offset(page * page_size)
                    .limit(page_size)
                )
                chosen = (await self._outcomes(s, [Message.id.in_(ids)]))[::-1]
            wanted = {m.batch_id for m, _ in chosen}
            batches = {
                b.id: b for b in (await s.execute(select(Batch).where(Batch.id.in_(wanted)))).scalars()
            }
        return count, [sinch.recipient_report(batches[m.batch_id], m, o) for m, o in chosen if m.batch_id]


def _wanted(result: sinch.Outcome, statuses: frozenset[str], codes: frozenset[int]) -> bool:
    return (not statuses or result.status in statuses) and (not codes or result.code in codes)


def _request_of(batch: Batch) -> BatchRequest:
    return BatchRequest(
        sender=batch.sender,
        recipients=tuple(sinch.recipients_of(batch)),
        body=batch.body,
        parameters=sinch.parameters_of(batch),
        delivery_report=batch.delivery_report,
        send_at=batch.send_at,
        expire_at=batch.expire_at,
        callback_url=batch.callback_url,
        client_reference=batch.client_reference,
        flash_message=batch.flash_message,
        feedback_enabled=batch.feedback_enabled,
        truncate_concat=batch.truncate_concat,
        max_parts=batch.max_parts,
    )


async def _count(s: AsyncSession, *where: ColumnElement[bool]) -> int:
    return int((await s.execute(select(func.count()).select_from(Message).where(*where))).scalar_one())


async def _has_parts(s: AsyncSession, batch_id: int) -> bool:
    q = (
        select(MessagePart.id)
        .join(Message, Message.id == MessagePart.message_id)
        .where(Message.batch_id == batch_id)
    )
    return (await s.execute(q.limit(1))).first() is not None


async def _opted_out(s: AsyncSession, account_id: int, numbers: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(numbers), _CHUNK):
        q = select(OptOut.number).where(
            OptOut.account_id == account_id, OptOut.number.in_(numbers[i : i + _CHUNK])
        )
        found.update((await s.execute(q)).scalars())
    return found


async def fail_unclaimed(
    s: AsyncSession, where: Sequence[ColumnElement[bool]], code: int, now: datetime
) -> list[int]:
    """QUEUED messages matching `where` that no node holds become FAIL with `code` (guarded:
    a row a dispatcher claimed meanwhile is left to it); returns their ids."""
    res = await s.execute(
        update(Message)
        .where(
            *where,
            Message.status == "QUEUED",
            or_(Message.claimed_until.is_(None), Message.claimed_until < now),
        )
        .values(status="FAIL", fail_code=code, done_at=now, claimed_until=None, claimed_by=None)
        .returning(Message.id)
    )
    return list(res.scalars())


# Built once: every MO batch runs it, and building a statement cost more CPU than running it.
_BATCH_SENDS = (
    select(Message.account_id, Message.recipient, Message.sender, Batch.client_reference)
    .join(Batch, Batch.id == Message.batch_id)
    .where(
        Message.batch_id.is_not(None),
        in_list(Message.recipient, "recipients"),
        Message.created_at >= bindparam("since"),
    )
    .order_by(Message.created_at, Message.id)
)


async def link_replies(s: AsyncSession, mos: Sequence[dict[str, Any]]) -> None:
    """Sets `client_reference` on inbound rows (as about to be inserted) that answer a batch:
    the reference of the latest batch message the account sent from the MO's SIN to its
    sender. One query for all of them."""
    owned = [m for m in mos if m["account_id"] is not None and m["sender"].startswith("+")]
    if not owned:
        return
    params = {"recipients": sorted({m["sender"] for m in owned}), "since": datetime.now(UTC) - REPLY_WINDOW}
    latest: dict[tuple[int, str, str], str | None] = {}
    for account_id, recipient, sender, reference in await s.execute(_BATCH_SENDS, params):
        latest[(account_id, recipient, "+" + sender.removeprefix("+"))] = reference  # the later wins
    for m in owned:
        m["client_reference"] = latest.get((m["account_id"], m["sender"], m["recipient"]))
