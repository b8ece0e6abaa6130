"""Read-only views over stored rows for people rather than programs: the web console's pages
(gateway/http/console) and the operator's usage export. Every customer query takes the account
id and filters by it in SQL; nothing here writes.

Days are UTC days, grouped by the database (`date(...)` on both engines, over the naive UTC the
columns store).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import (
    Account,
    Call,
    InboundMessage,
    Message,
    MessagePart,
    OptOut,
    Recording,
    SmscBind,
    Template,
    Voicemail,
    WebhookAttempt,
    WebhookDelivery,
)
from gateway.services.errors import not_found
from gateway.services.keywords import STOP_WORDS
from gateway.services.messages import message_with_template

FINAL_OK = ("DELIVERED",)
FINAL_FAILED = ("FAIL", "FAILED", "UNDELIVERED", "EXPIRED", "REJECTED")
QUEUE = ("QUEUED", "DELIVERING")
MESSAGE_STATUSES = ("QUEUED", "DELIVERING", "DELIVERED", "FAIL")
SEARCH_LIMIT = 200
LIST_LIMIT = 500
_Audio = TypeVar("_Audio", Voicemail, Recording)  # what callers left: stored and listed alike


def _day(value: Any) -> date:
    """`date(column)`: a date on PostgreSQL, 'YYYY-MM-DD' text on SQLite."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@dataclass
class DayRow:
    day: date
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    mo: int = 0
    calls: int = 0
    spend: Decimal = Decimal(0)


@dataclass
class Overview:
    days: list[DayRow]
    queued: int  # QUEUED or DELIVERING now
    totals: DayRow


@dataclass(frozen=True)
class MessageSearch:
    recipient: str | None = None
    status: str | None = None
    day_from: date | None = None
    day_to: date | None = None  # inclusive
    tag: str | None = None
    msgid: str | None = None
    page: int = 0  # of SEARCH_LIMIT rows each, newest first


@dataclass
class Timeline:
    message: Message
    template_uid: str | None
    parts: list[MessagePart]
    callbacks: list[WebhookDelivery]
    # Each callback's failed attempts, oldest first (a successful one is the delivery row).
    attempts: dict[int, list[WebhookAttempt]]
    final: bool = field(init=False)
    reports: dict[int, str] = field(init=False)  # callback id -> the status it reports

    def __post_init__(self) -> None:
        self.final = self.message.status not in QUEUE
        self.reports = {c.id: _reported(c) for c in self.callbacks}


def _reported(c: WebhookDelivery) -> str:
    try:
        status = json.loads(c.body).get("status") if c.content_type == "application/json" else None
    except (ValueError, AttributeError):
        status = None
    return status if isinstance(status, str) else ""


@dataclass(frozen=True)
class Conversation:
    number: str  # the account's SIN the MOs came to
    remote: str  # who wrote
    count: int
    last_at: datetime
    last_uid: str  # the newest MO, whose page shows the thread


@dataclass(frozen=True)
class ThreadItem:
    at: datetime
    inbound: bool
    text: str
    status: str | None  # an outbound message's status
    ref: str  # MO uid or msgid


@dataclass(frozen=True)
class OptOutRow:
    number: str
    at: datetime
    keyword: str | None  # the word of the MO that opted the number out, when one did
    via: str | None  # the SIN it was sent to


@dataclass(frozen=True)
class UsageRow:
    sid: str
    name: str
    messages: int
    parts: int
    sms_cost: Decimal
    inbound: int
    calls: int
    call_seconds: int
    call_cost: Decimal


def like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """'YYYY-MM' -> [first instant, first instant of the next month); ValueError if malformed."""
    first = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first, nxt


class Reports:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # -- customer ---------------------------------------------------------------------------

    async def overview(self, account_id: int, days: int = 14, today: date | None = None) -> Overview:
        today = today or datetime.now(UTC).date()
        first = today - timedelta(days=days - 1)
        since = _start(first)
        rows = {first + timedelta(days=i): DayRow(first + timedelta(days=i)) for i in range(days)}
        mday = func.date(Message.created_at)
        async with self._sessions() as s:
            for d, status, n, cost in await s.execute(
                select(mday, Message.status, func.count(), func.sum(Message.cost))
                .where(Message.account_id == account_id, Message.created_at >= since)
                .group_by(mday, Message.status)
            ):
                row = rows.get(_day(d))
                if row is None:
                    continue
                row.sent += n
                row.delivered += n if status in FINAL_OK else 0
                row.failed += n if status in FINAL_FAILED else 0
                row.spend += Decimal(cost or 0)
            iday = func.date(InboundMessage.received_at)
            for d, n in await s.execute(
                select(iday, func.count())
                .where(InboundMessage.account_id == account_id, InboundMessage.received_at >= since)
                .group_by(iday)
            ):
                if (row := rows.get(_day(d))) is not None:
                    row.mo += n
            cday = func.date(Call.started_at)
            for d, n, cost in await s.execute(
                select(cday, func.count(), func.sum(Call.cost))
                .where(Call.account_id == account_id, Call.started_at >= since)
                .group_by(cday)
            ):
                if (row := rows.get(_day(d))) is not None:
                    row.calls += n
                    row.spend += Decimal(cost or 0)
            queued = await s.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.account_id == account_id, Message.status.in_(QUEUE))
            )
        ordered = sorted(rows.values(), key=lambda r: r.day, reverse=True)
        totals = DayRow(first)
        for r in ordered:
            totals.sent += r.sent
            totals.delivered += r.delivered
            totals.failed += r.failed
            totals.mo += r.mo
            totals.calls += r.calls
            totals.spend += r.spend
        return Overview(ordered, queued or 0, totals)

    async def search_messages(self, account_id: int, q: MessageSearch) -> list[Message]:
        conds: list[ColumnElement[bool]] = [Message.account_id == account_id]
        if q.msgid:
            conds.append(Message.msgid == q.msgid)
        if q.recipient:
            conds.append(Message.recipient == q.recipient)
        if q.status:
            conds.append(Message.status == q.status)
        if q.day_from:
            conds.append(Message.created_at >= _start(q.day_from))
        if q.day_to:
            conds.append(Message.created_at < _start(q.day_to + timedelta(days=1)))
        if q.tag:
            # Tags are stored comma-joined: match one whole tag, wildcards taken literally.
            framed = "," + Message.tags + ","
            conds.append(framed.like(f"%,{like_escaped(q.tag)},%", escape="\\"))
        async with self._sessions() as s:
            rows = await s.execute(
                select(Message)
                .where(*conds)
                .order_by(Message.created_at.desc(), Message.id.desc())
                .offset(q.page * SEARCH_LIMIT)
                .limit(SEARCH_LIMIT)
            )
            return list(rows.scalars())

    async def timeline(self, account_id: int, msgid: str) -> Timeline:
        async with self._sessions() as s:
            msg, template_uid = await message_with_template(s, account_id, msgid)
            parts = (
                await s.execute(
                    select(MessagePart).where(MessagePart.message_id == msg.id).order_by(MessagePart.seq)
                )
            ).scalars()
            callbacks = list(
                (
                    await s.execute(
                        select(WebhookDelivery)
                        .where(WebhookDelivery.account_id == account_id, WebhookDelivery.ref == msgid)
                        .order_by(WebhookDelivery.id)
                    )
                ).scalars()
            )
            attempts: dict[int, list[WebhookAttempt]] = {c.id: [] for c in callbacks}
            for a in (
                await s.execute(
                    select(WebhookAttempt)
                    .where(WebhookAttempt.delivery_id.in_(list(attempts)))
                    .order_by(WebhookAttempt.id)
                )
            ).scalars():
                attempts[a.delivery_id].append(a)
            return Timeline(msg, template_uid, list(parts), callbacks, attempts)

    async def conversations(self, account_id: int) -> list[Conversation]:
        last = func.max(InboundMessage.id)
        async with self._sessions() as s:
            groups = (
                await s.execute(
                    select(InboundMessage.recipient, InboundMessage.sender, func.count(), last)
                    .where(InboundMessage.account_id == account_id)
                    .group_by(InboundMessage.recipient, InboundMessage.sender)
                    .order_by(last.desc())
                    .limit(LIST_LIMIT)
                )
            ).all()
            newest = {
                m.id: m
                for m in (
                    await s.execute(
                        select(InboundMessage).where(InboundMessage.id.in_([g[3] for g in groups]))
                    )
                ).scalars()
            }
        return [
            Conversation(number, remote, n, newest[i].received_at, newest[i].uid)
            for number, remote, n, i in groups
        ]

    async def thread(self, account_id: int, uid: str) -> tuple[InboundMessage, list[ThreadItem]]:
        """The MO `uid` and the conversation it belongs to: every MO from its sender to the same
        number, and every message the account sent from that number back to the sender."""
        async with self._sessions() as s:
            mo = (
                await s.execute(
                    select(InboundMessage).where(
                        InboundMessage.uid == uid, InboundMessage.account_id == account_id
                    )
                )
            ).scalar_one_or_none()
            if mo is None:
                raise not_found("No such inbound message.")
            ins = (
                await s.execute(
                    select(InboundMessage)
                    .where(
                        InboundMessage.account_id == account_id,
                        InboundMessage.sender == mo.sender,
                        InboundMessage.recipient == mo.recipient,
                    )
                    .order_by(InboundMessage.received_at.desc())
                    .limit(LIST_LIMIT)
                )
            ).scalars()
            # Replies go out with the SIN as sender, without its + (InboundService.reply).
            senders = [mo.recipient, mo.recipient.lstrip("+")]
            outs = (
                await s.execute(
                    select(Message)
                    .where(
                        Message.account_id == account_id,
                        Message.recipient == mo.sender,
                        Message.sender.in_(senders),
                    )
                    .order_by(Message.created_at.desc())
                    .limit(LIST_LIMIT)
                )
            ).scalars()
            items = [ThreadItem(m.received_at, True, m.body, None, m.uid) for m in ins]
            items += [ThreadItem(m.created_at, False, m.body, m.status, m.msgid) for m in outs]
        items.sort(key=lambda i: i.at)
        return mo, items

    async def opt_outs(self, account_id: int) -> list[OptOutRow]:
        """The account's opt-outs, newest first, each with the STOP-word MO that made it (the
        latest one from that number received by then), when there is one."""
        async with self._sessions() as s:
            rows = list(
                (
                    await s.execute(
                        select(OptOut)
                        .where(OptOut.account_id == account_id)
                        .order_by(OptOut.created_at.desc())
                        .limit(LIST_LIMIT)
                    )
                ).scalars()
            )
            stops = await s.execute(
                select(
                    InboundMessage.sender,
                    InboundMessage.received_at,
                    InboundMessage.body,
                    InboundMessage.recipient,
                )
                .where(
                    InboundMessage.account_id == account_id,
                    InboundMessage.sender.in_([o.number for o in rows]),
                    InboundMessage.keyword.in_(sorted(STOP_WORDS)),
                )
                .order_by(InboundMessage.received_at)
            )
            by_number: dict[str, list[tuple[datetime, str, str]]] = {}
            for sender, at, body, via in stops:
                by_number.setdefault(sender, []).append((at, body, via))
        out = []
        for o in rows:
            # The opt-out row is written in the MO's transaction, a moment after its receipt time.
            made = [m for m in by_number.get(o.number, []) if m[0] <= o.created_at + timedelta(seconds=5)]
            word = made[-1][1].split()[0].upper() if made and made[-1][1].split() else None
            out.append(OptOutRow(o.number, o.created_at, word, made[-1][2] if made else None))
        return out

    async def calls(self, account_id: int, limit: int = 1000) -> list[Call]:
        async with self._sessions() as s:
            rows = await s.execute(
                select(Call)
                .where(Call.account_id == account_id)
                .order_by(Call.started_at.desc(), Call.id.desc())
                .limit(limit)
            )
            return list(rows.scalars())

    async def call(self, account_id: int, uid: str) -> Call:
        async with self._sessions() as s:
            row = (
                await s.execute(select(Call).where(Call.uid == uid, Call.account_id == account_id))
            ).scalar_one_or_none()
        if row is None:
            raise not_found("No such call.")
        return row

    async def voicemails(self, account_id: int, limit: int = 1000) -> list[tuple[Voicemail, str]]:
        """(voicemail, its call's uid), newest first."""
        return await self._audio_list(Voicemail, account_id, limit)

    async def voicemail(self, account_id: int, uid: str) -> tuple[Voicemail, str]:
        return await self._audio_one(Voicemail, account_id, uid, "No such voicemail.")

    async def recordings(self, account_id: int, limit: int = 1000) -> list[tuple[Recording, str]]:
        """(recording, its call's uid), newest first."""
        return await self._audio_list(Recording, account_id, limit)

    async def recording(self, account_id: int, uid: str) -> tuple[Recording, str]:
        return await self._audio_one(Recording, account_id, uid, "No such recording.")

    async def _audio_list(self, model: type[_Audio], account_id: int, limit: int) -> list[tuple[_Audio, str]]:
        async with self._sessions() as s:
            rows = await s.execute(
                select(model, Call.uid)
                .join(Call, Call.id == model.call_id)
                .where(model.account_id == account_id)
                .order_by(model.created_at.desc(), model.id.desc())
                .limit(limit)
            )
            return [(v, uid) for v, uid in rows]

    async def _audio_one(
        self, model: type[_Audio], account_id: int, uid: str, missing: str
    ) -> tuple[_Audio, str]:
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(model, Call.uid)
                    .join(Call, Call.id == model.call_id)
                    .where(model.uid == uid, model.account_id == account_id)
                )
            ).one_or_none()
        if row is None:
            raise not_found(missing)
        return row[0], row[1]

    # -- operator ---------------------------------------------------------------------------

    async def pending_templates(self) -> list[tuple[Template, str, str]]:
        """(template, owner's SID, owner's name) waiting for approval, oldest first."""
        async with self._sessions() as s:
            rows = await s.execute(
                select(Template, Account.sid, Account.name)
                .join(Account, Account.id == Template.account_id)
                .where(Template.status == "PENDING")
                .order_by(Template.updated_at, Template.id)
                .limit(LIST_LIMIT)
            )
            return [(t, sid, name) for t, sid, name in rows]

    async def smsc_binds(self) -> list[SmscBind]:
        """Every node's SMPP binds as each last reported them (gateway/workers/bind_report.py)."""
        async with self._sessions() as s:
            rows = await s.scalars(
                select(SmscBind).order_by(SmscBind.node, SmscBind.connector, SmscBind.bind).limit(LIST_LIMIT)
            )
            return list(rows)

    async def webhook_backlog(self) -> list[dict[str, Any]]:
        """Pending deliveries per receiver host: how many, the oldest, the most attempts, the
        last HTTP status seen; worst first."""
        async with self._sessions() as s:
            rows = await s.execute(
                select(
                    WebhookDelivery.receiver_host,
                    func.count(),
                    func.min(WebhookDelivery.created_at),
                    func.max(WebhookDelivery.attempts),
                    func.min(WebhookDelivery.next_attempt_at),
                )
                .where(WebhookDelivery.status == "PENDING")
                .group_by(WebhookDelivery.receiver_host)
                .order_by(func.count().desc())
                .limit(LIST_LIMIT)
            )
            out = [
                {"host": h, "pending": n, "oldest": oldest, "max_attempts": a, "next_attempt": nxt}
                for h, n, oldest, a, nxt in rows
            ]
            statuses = await s.execute(
                select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
            )
            totals: dict[str, int] = {status: n for status, n in statuses}
        return [{"totals": totals}, *out]

    async def usage(self, month: str) -> list[UsageRow]:
        """Per account for one UTC month ('YYYY-MM'): messages, parts and their cost, MO
        received, calls, their seconds and cost. ValueError for a malformed month."""
        start, end = month_bounds(month)
        async with self._sessions() as s:
            accounts = (await s.execute(select(Account).order_by(Account.id))).scalars().all()
            sms = {
                a: (n, p, c)
                for a, n, p, c in await s.execute(
                    select(Message.account_id, func.count(), func.sum(Message.parts), func.sum(Message.cost))
                    .where(Message.created_at >= start, Message.created_at < end)
                    .group_by(Message.account_id)
                )
            }
            mo: dict[int | None, int] = {
                a: n
                for a, n in await s.execute(
                    select(InboundMessage.account_id, func.count())
                    .where(
                        InboundMessage.account_id.is_not(None),
                        InboundMessage.received_at >= start,
                        InboundMessage.received_at < end,
                    )
                    .group_by(InboundMessage.account_id)
                )
            }
            calls = {
                a: (n, d, c)
                for a, n, d, c in await s.execute(
                    select(Call.account_id, func.count(), func.sum(Call.duration), func.sum(Call.cost))
                    .where(Call.started_at >= start, Call.started_at < end, Call.account_id.is_not(None))
                    .group_by(Call.account_id)
                )
            }
        out = []
        for a in accounts:
            n, p, c = sms.get(a.id, (0, 0, 0))
            cn, cd, cc = calls.get(a.id, (0, 0, 0))
            out.append(
                UsageRow(
                    a.sid,
                    a.name,
                    n,
                    int(p or 0),
                    Decimal(c or 0),
                    mo.get(a.id, 0),
                    cn,
                    int(cd or 0),
                    Decimal(cc or 0),
                )
            )
        return out


USAGE_COLUMNS = (
    "month",
    "sid",
    "name",
    "messages",
    "parts",
    "sms_cost",
    "inbound_sms",
    "calls",
    "call_seconds",
    "call_cost",
)


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab/CR) is a
    formula there, so it gets a leading apostrophe."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def usage_csv(month: str, rows: Sequence[UsageRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(USAGE_COLUMNS)
    for r in rows:
        w.writerow(
            [
                _cell(x)
                for x in (
                    month,
                    r.sid,
                    r.name,
                    r.messages,
                    r.parts,
                    f"{r.sms_cost:.4f}",
                    r.inbound,
                    r.calls,
                    r.call_seconds,
                    f"{r.call_cost:.4f}",
                )
            ]
        )
    return buf.getvalue()
