"""Outbound SMS: accept (durably queue), read back, list. Sending is the dispatcher's job."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from urllib.parse import unquote

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.group_commit import GroupCommitter, Rejections
from gateway.db.models import Message, OptOut, Template, TrackedLink
from gateway.services import links as linksvc
from gateway.services import senders
from gateway.services.errors import FieldErrors, not_found
from gateway.services.pricing import PriceList
from gateway.services.views import message_json
from smpp.encoding import GSM_SINGLE_MAX, plan, plan_binary

log = logging.getLogger(__name__)
# Core INSERTs built once for the per-message paths: the ORM's bulk layer cost ~20 us a row.
_INSERT_MESSAGES = insert(cast(Table, Message.__table__))


@dataclass(frozen=True)
class OutboundRequest:
    account_id: int
    sender: str
    recipient: str
    text: str
    callbackurl: str | None = None
    tags: tuple[str, ...] = ()
    track_link: bool = False
    lt_callbackurl: str | None = None
    template_id: int | None = None
    # The SMPP server's submits: a receipt for the ESME, a scheduled start, an expiry, and the
    # msgid the parts of a long one were already answered with.
    esme_receipt: int = 0  # SMPP registered_delivery: 1 a final receipt, 2 only a failure
    binary_coding: int | None = None  # 8-bit data: `text` is its octets in hex
    send_at: datetime | None = None
    expire_at: datetime | None = None
    msgid: str | None = None


_SENT_DATE = re.compile(r"sent_date(<=|>=|=|<|>)(.*)")


@dataclass(frozen=True)
class DateFilter:
    op: str
    day: date


def parse_sent_date_query(raw_query: str, today: date, retention_days: int) -> DateFilter | None:
    """The Xoxzo list filter is the raw query `sent_date<op>YYYY-mm-dd` (op may arrive %-encoded)."""
    if raw_query == "":
        return None
    pieces = [p for p in raw_query.split("&") if p]
    if len(pieces) != 1:
        raise FieldErrors.one("sent_date", "This field is required")
    match = _SENT_DATE.fullmatch(unquote(pieces[0].replace("+", " ")))
    if not match:
        raise FieldErrors.one("sent_date", "This field is required")
    op, value = match.groups()
    try:
        day = datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise FieldErrors.one("sent_date", "Invalid sent_date format") from None
    if day < today - timedelta(days=retention_days) or day > today + timedelta(days=1):
        raise FieldErrors.one("sent_date", "Invalid sent_date")
    return DateFilter(op, day)


async def _opted_out(s: AsyncSession, pairs: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which (account, recipient) pairs are on an opt-out list."""
    if not pairs:
        return set()
    rows = await s.execute(
        select(OptOut.account_id, OptOut.number).where(
            OptOut.account_id.in_({a for a, _ in pairs}), OptOut.number.in_({n for _, n in pairs})
        )
    )
    return {(a, n) for a, n in rows} & set(pairs)


async def message_with_template(s: AsyncSession, account_id: int, msgid: str) -> tuple[Message, str | None]:
    """The account's message and the uid of the template it was sent from (None: freeform);
    404 for a message that is not the account's."""
    row = (
        await s.execute(
            select(Message, Template.uid)
            .outerjoin(Template, Template.id == Message.template_id)
            .where(Message.msgid == msgid, Message.account_id == account_id)
        )
    ).one_or_none()
    if row is None:
        raise not_found("No such message.")
    return row[0], row[1]


class MessageService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        prices: PriceList,
        base_url: str,
        max_parts: int,
        retention_days: int,
        list_limit: int,
        wake_dispatcher: Callable[[], None],
    ) -> None:
        self._sessions = sessions
        self._prices = prices
        self._base_url = base_url
        self._max_parts = max_parts
        self._retention_days = retention_days
        self._list_limit = list_limit
        self._wake = wake_dispatcher
        # Under load, API inserts that arrive together share one transaction (and one hop to
        # SQLite's single connection); each caller still answers only after its row committed.
        self._inserter: GroupCommitter[dict[str, Any]] = GroupCommitter(self._insert_many)

    async def close(self) -> None:
        await self._inserter.close()

    async def _insert_many(self, rows: Sequence[dict[str, Any]]) -> Rejections:
        # The sender and opt-out checks share the insert's transaction: no extra round trip per
        # request, and no window between checking and queueing.
        async with self._sessions.begin() as s:
            refused = await senders.refused(s, [(r["account_id"], r["sender"]) for r in rows])
            opted = await _opted_out(s, [(r["account_id"], r["recipient"]) for r in rows])
            rejected: dict[int, Exception] = {}
            for i, r in enumerate(rows):
                if (r["account_id"], r["sender"]) in refused:
                    rejected[i] = senders.refusal(r["sender"])
                elif (r["account_id"], r["recipient"]) in opted:
                    rejected[i] = FieldErrors.one("recipient", "Recipient has opted out")
            keep = [r for i, r in enumerate(rows) if i not in rejected]
            if keep:
                await s.execute(_INSERT_MESSAGES, keep)
        if keep:
            self._wake()
        return rejected

    def _parts(self, req: OutboundRequest, field: str, text: str) -> int:
        if req.binary_coding is None:
            return self.check_length(field, text)
        parts = plan_binary(bytes.fromhex(text)).parts
        if parts > self._max_parts:
            raise FieldErrors.one(field, f"Message too long: {parts} parts, at most {self._max_parts}.")
        return parts

    def check_length(self, field: str, text: str) -> int:
        # No part carries more than GSM_SINGLE_MAX characters: a longer text is refused before
        # plan() walks it, so a 64 KiB body costs no more than a short one.
        if len(text) > self._max_parts * GSM_SINGLE_MAX:
            raise FieldErrors.one(
                field,
                f"Message too long: over {self._max_parts * GSM_SINGLE_MAX} characters, "
                f"at most {self._max_parts} parts.",
            )
        parts = plan(text).parts
        if parts > self._max_parts:
            raise FieldErrors.one(field, f"Message too long: {parts} parts, at most {self._max_parts}.")
        return parts

    def row_for(self, req: OutboundRequest, text: str, parts: int) -> dict[str, Any]:
        """The messages row for a send; used inside other transactions (replies to MO) too."""
        now = datetime.now(UTC)
        return {
            "msgid": req.msgid or uuid.uuid4().hex,
            "account_id": req.account_id,
            "template_id": req.template_id,
            "sender": req.sender,
            "recipient": req.recipient,
            "body": text,
            "parts": parts,
            "cost": self._prices.cost(req.recipient, parts),
            "tags": ",".join(req.tags),
            "callbackurl": req.callbackurl,
            "lt_callbackurl": req.lt_callbackurl,
            "track_link": req.track_link,
            "status": "QUEUED",
            "created_at": now,
            "next_attempt_at": max(now, req.send_at or now),
            "expire_at": req.expire_at,
            "esme_receipt": req.esme_receipt,
            "data_coding": req.binary_coding,
            "attempts": 0,
        }

    async def create(self, req: OutboundRequest, body_field: str = "message") -> str:
        text = req.text
        tracked: list[linksvc.RewrittenLink] = []
        if req.track_link:
            text, tracked = linksvc.rewrite(text, self._base_url)
        parts = self._parts(req, body_field, text)
        row = self.row_for(req, text, parts)
        if not tracked:
            await self._inserter.submit(row)
        else:
            # One transaction: a 201 means the message and its links are committed together.
            async with self._sessions.begin() as s:
                await senders.check(s, req.account_id, req.sender)
                if await _opted_out(s, [(req.account_id, req.recipient)]):
                    raise FieldErrors.one("recipient", "Recipient has opted out")
                msg = Message(**row)
                s.add(msg)
                await s.flush()
                s.add_all(TrackedLink(code=t.code, message_id=msg.id, url=t.url) for t in tracked)
            self._wake()
        msgid = str(row["msgid"])
        log.info("queued", extra={"msgid": msgid, "parts": parts})
        return msgid

    async def queue_in(self, s: AsyncSession, req: OutboundRequest) -> str:
        """Queue `req` inside the caller's transaction, under the checks of create (length,
        sender, opt-out); call queued() after the commit."""
        parts = self._parts(req, "message", req.text)
        await senders.check(s, req.account_id, req.sender)
        if await _opted_out(s, [(req.account_id, req.recipient)]):
            raise FieldErrors.one("recipient", "Recipient has opted out")
        row = self.row_for(req, req.text, parts)
        await s.execute(insert(Message), [row])
        return str(row["msgid"])

    def queued(self) -> None:
        """Messages were committed outside create(): the dispatcher looks now."""
        self._wake()

    async def _links(self, s: AsyncSession, message_ids: Sequence[int]) -> dict[int, list[TrackedLink]]:
        if not message_ids:
            return {}
        rows = (
            await s.execute(
                select(TrackedLink).where(TrackedLink.message_id.in_(message_ids)).order_by(TrackedLink.id)
            )
        ).scalars()
        out: dict[int, list[TrackedLink]] = {}
        for row in rows:
            out.setdefault(row.message_id, []).append(row)
        return out

    async def get(self, account_id: int, msgid: str, template_only: bool = False) -> dict[str, Any]:
        async with self._sessions() as s:
            msg, template_uid = await message_with_template(s, account_id, msgid)
            if template_only and template_uid is None:
                raise not_found("No such message.")
            links = await self._links(s, [msg.id]) if msg.track_link else {}
        return message_json(msg, self._base_url, links.get(msg.id, ()), template_uid)

    async def list(
        self,
        account_id: int,
        date_filter: DateFilter | None,
        template_id: int | None = None,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        now = now or datetime.now(UTC)
        floor = now - timedelta(days=self._retention_days)
        q = select(Message).where(Message.account_id == account_id, Message.created_at >= floor)
        if template_id is not None:
            q = q.where(Message.template_id == template_id)
        if date_filter is not None:
            start = datetime.combine(date_filter.day, time(), UTC)
            end = start + timedelta(days=1)
            q = q.where(
                {
                    "=": (Message.created_at >= start) & (Message.created_at < end),
                    "<": Message.created_at < start,
                    "<=": Message.created_at < end,
                    ">": Message.created_at >= end,
                    ">=": Message.created_at >= start,
                }[date_filter.op]
            )
        q = q.order_by(Message.created_at.desc(), Message.id.desc()).limit(self._list_limit)
        async with self._sessions() as s:
            msgs = list((await s.execute(q)).scalars())
            links = await self._links(s, [m.id for m in msgs if m.track_link])
        return [message_json(m, self._base_url, links.get(m.id, ())) for m in msgs]
