"""Inbound SMS (MO): reassembly, storage, opt-out keywords, auto-replies and webhooks.

Every MO part is written (group commit) before the adapter answers deliver_sm_resp, so an
acknowledged MO is never lost; the webhook to the SIN's action_url and any reply are
written in the same transaction, so a crash cannot separate them from the message.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.group_commit import GroupCommitter
from gateway.db.in_list import in_list
from gateway.db.models import (
    Account,
    AutoReplyRule,
    Batch,
    EsmeOutbox,
    InboundMessage,
    Message,
    MoPartRow,
    Number,
    NumberSubscription,
    OptOut,
    SmppCredential,
)
from gateway.services import outbox, sinch
from gateway.services.batches import link_replies
from gateway.services.errors import forbidden, not_found
from gateway.services.keywords import HELP_WORDS, START_WORDS, STOP_WORDS
from gateway.services.messages import MessageService, OutboundRequest
from gateway.services.numbers import (
    AutoReply,
    NumberService,
    SubscriptionTarget,
    first_auto_reply,
    targets_query,
)
from gateway.services.views import fmt_time
from smpp.types import MoPart

log = logging.getLogger(__name__)
# Core tables: a batch's rows go in as one executemany each, without the ORM's unit of work.
_INBOUND = cast(Table, InboundMessage.__table__)
# The statements every MO batch runs, built once: building one cost more CPU than running it
# (SQLAlchemy then also derives its cache key from the tree on every execution).
_INSERT_INBOUND = insert(_INBOUND)
# Who holds each SIN, with what the MO path needs of the account (webhook secret, SMPP
# credentials, whether it ever sent a batch an MO could answer) and whether it has auto-reply
# rules.
_SIN_OWNERS = (
    targets_query(
        "sin",
        Number.number,
        Account.webhook_secret,
        exists().where(AutoReplyRule.subscription_id == NumberSubscription.id),
        exists().where(SmppCredential.account_id == NumberSubscription.account_id),
        exists().where(Batch.account_id == NumberSubscription.account_id),
    )
    .join(Account, Account.id == NumberSubscription.account_id)
    .where(in_list(Number.number, "numbers"))
)


def e164_from_smpp(addr: str) -> str:
    """SMPP carries international numbers without '+'; alphanumeric senders stay as they are."""
    addr = addr.strip()
    if addr.startswith("+"):
        return addr
    # isdigit() alone takes "²" or Arabic-Indic digits, which no numbering plan has.
    return f"+{addr}" if addr.isascii() and addr.isdigit() else addr


@dataclass(frozen=True)
class KeywordReplies:
    optout: str
    optin: str
    help: str


def _group(source: str, dest: str, ref: int, total: int) -> tuple[ColumnElement[bool], ...]:
    """The parts of one concatenated MO (assembled or not)."""
    return (
        MoPartRow.source == source,
        MoPartRow.destination == dest,
        MoPartRow.ref == ref,
        MoPartRow.total == total,
    )


async def _waiting_parts(s: AsyncSession, group: tuple[ColumnElement[bool], ...]) -> list[MoPartRow]:
    query = select(MoPartRow).where(*group, MoPartRow.assembled_at.is_(None)).order_by(MoPartRow.seq)
    return list((await s.execute(query)).scalars())


async def _holds_sin(s: AsyncSession, account_id: int, number_id: int | None) -> bool:
    """Replies go out from the SIN an MO came to: only while this account still holds it."""
    if number_id is None:
        return False
    held = await s.scalar(
        select(NumberSubscription.id).where(
            NumberSubscription.number_id == number_id,
            NumberSubscription.kind == "sin",
            NumberSubscription.account_id == account_id,
        )
    )
    return held is not None


async def _mark_assembled(s: AsyncSession, group: tuple[ColumnElement[bool], ...], when: datetime) -> None:
    await s.execute(
        update(MoPartRow).where(*group, MoPartRow.assembled_at.is_(None)).values(assembled_at=when)
    )


@dataclass
class _BatchCache:
    """Lookups shared by the MOs of one group-commit batch (one transaction)."""

    owners: dict[str, SubscriptionTarget | None] = field(default_factory=dict)
    secrets: dict[int, str] = field(default_factory=dict)
    # Rows inserted as one statement per table before the commit: the ORM's unit of work cost
    # more CPU than the rest of the MO path at hundreds of MO a second.
    inbound: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    rules: dict[int, list[AutoReply]] = field(default_factory=dict)
    # Webhooks in Sinch's JSON, built before the insert once the batch each MO answers is known
    # (its client_reference): (index of the MO in `inbound`, the SIN's action_url).
    sinch_hooks: list[tuple[int, str]] = field(default_factory=list)
    # One log line each, once committed.
    stored: list[dict[str, object]] = field(default_factory=list)
    esme: dict[int, bool] = field(default_factory=dict)  # account id -> has SMPP credentials
    batches: set[int] = field(default_factory=set)  # accounts that have sent batches


class InboundService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        numbers: NumberService,
        messages: MessageService,
        replies: KeywordReplies,
        reassembly_window: float,
        wake_dispatcher: Callable[[], None],
        wake_webhooks: Callable[[], None],
        fast_path: outbox.FastPath | None = None,
        wake_esme: Callable[[Iterable[int]], None] = lambda accounts: None,
        write_lanes: int = 1,
    ) -> None:
        self._fast_path = fast_path
        self._wake_esme = wake_esme
        self._sessions = sessions
        self._numbers = numbers
        self._messages = messages
        self._replies = replies
        self._window = timedelta(seconds=reassembly_window)
        self._wake_dispatcher = wake_dispatcher
        self._wake_webhooks = wake_webhooks
        # Transactions of MO from different senders may run side by side (PostgreSQL: one
        # batch waiting on the server no longer holds up every MO behind it); one sender's MO
        # share a lane, so the parts of a long MO and opt-out keywords never race each other.
        self._lanes: list[GroupCommitter[tuple[MoPart, str]]] = [
            GroupCommitter(self._write) for _ in range(max(1, write_lanes))
        ]
        self.unrouted = 0  # MO to numbers nobody subscribed to (stored, not delivered)

    async def receive(self, part: MoPart, connector: str = "default") -> None:
        """Returns once the part is durably stored (and, if complete, processed); `connector`:
        the SMSC connector it came over, recorded on the message (`smsc`)."""
        await self._lanes[self.lane_of(part.source)].submit((part, connector))

    def lane_of(self, source: str) -> int:
        """The write lane of MO from `source` (as the SMSC sent it)."""
        return hash(source) % len(self._lanes)

    async def close(self) -> None:
        await asyncio.gather(*(lane.close() for lane in self._lanes))

    async def _write(self, parts: Sequence[tuple[MoPart, str]]) -> None:
        cache = _BatchCache()
        async with self._sessions.begin() as s:
            complete = [c for part, connector in parts if (c := await self._assemble(s, part, connector))]
            await self._load_owners(s, cache, {dest for _, dest, *_ in complete})
            for mo in complete:
                await self._store(s, cache, *mo)
            await self._before_commit(s, cache)
        self._after_commit(s, cache)

    async def _load_owners(self, s: AsyncSession, cache: _BatchCache, numbers: Iterable[str]) -> None:
        """_SIN_OWNERS for these numbers: one statement for a batch, where the subscription, the
        rules, the credentials and the secret were a statement each (on SQLite each costs a
        trip to the connection's thread, more than the lookups themselves)."""
        wanted = sorted({n for n in numbers if n not in cache.owners})
        if not wanted:
            return
        cache.owners.update(dict.fromkeys(wanted))
        for row in await s.execute(_SIN_OWNERS, {"numbers": wanted}):
            owner = SubscriptionTarget(*row[:7])
            number, secret, rules, esme, batches = row[7:]
            cache.owners[number] = owner
            cache.secrets[owner.account_id] = secret
            cache.esme[owner.account_id] = bool(esme)
            if batches:
                cache.batches.add(owner.account_id)
            if not rules:
                cache.rules[owner.subscription_id] = []

    async def _before_commit(self, s: AsyncSession, cache: _BatchCache) -> None:
        if cache.inbound:
            await link_replies(s, [mo for mo in cache.inbound if mo["account_id"] in cache.batches])
            for i, url in cache.sinch_hooks:
                cache.webhooks.append(self._sinch_hook(s, cache.inbound[i], url))
            await s.execute(_INSERT_INBOUND, cache.inbound)
        if cache.webhooks:
            await outbox.insert_rows(s, cache.webhooks)

    def _after_commit(self, s: AsyncSession, cache: _BatchCache) -> None:
        leased = (
            [outbox.Job.of(row, cache.secrets[row["account_id"]]) for row in cache.webhooks]
            if self._fast_path is not None
            else []
        )
        outbox.hand_over(s, leased, self._fast_path, self._wake_webhooks, self._wake_esme)
        if s.info.get("replies_queued"):
            self._wake_dispatcher()
        for fields in cache.stored:
            log.info("MO stored", extra=fields)

    async def _assemble(
        self, s: AsyncSession, part: MoPart, connector: str
    ) -> tuple[str, str, str, int, datetime, str] | None:
        """The whole MO once all its parts are in; its connector is the one of the last part."""
        source, dest = e164_from_smpp(part.source), e164_from_smpp(part.destination)
        received = part.received_at or datetime.now(UTC)
        if part.concat_ref is None or part.concat_total <= 1:
            return source, dest, part.text, 1, received, connector
        key = _group(source, dest, part.concat_ref, part.concat_total)
        dup = await s.scalar(select(MoPartRow.id).where(*key, MoPartRow.seq == part.concat_seq))
        if dup is not None:
            # An SMSC redelivering a part it thinks we missed (lost deliver_sm_resp) must not
            # duplicate it, before or after the message was assembled.
            return None
        s.add(
            MoPartRow(
                source=source,
                destination=dest,
                ref=part.concat_ref,
                total=part.concat_total,
                seq=part.concat_seq,
                text=part.text,
                received_at=received,
                smsc=connector,
            )
        )
        await s.flush()
        rows = await _waiting_parts(s, key)
        if len({r.seq for r in rows}) < part.concat_total:
            return None
        await _mark_assembled(s, key, datetime.now(UTC))
        text = "".join(r.text for r in rows)
        return source, dest, text, part.concat_total, rows[0].received_at, connector

    async def flush_stale(self) -> None:
        """Deliver, as they are, concatenated MOs whose missing parts never came; forget old
        assembled parts (kept so far only to recognise redeliveries)."""
        now = datetime.now(UTC)
        cutoff = now - self._window
        cache = _BatchCache()
        async with self._sessions.begin() as s:
            await s.execute(delete(MoPartRow).where(MoPartRow.assembled_at < cutoff))
            groups = (
                await s.execute(
                    select(MoPartRow.source, MoPartRow.destination, MoPartRow.ref, MoPartRow.total)
                    .where(MoPartRow.assembled_at.is_(None))
                    .group_by(MoPartRow.source, MoPartRow.destination, MoPartRow.ref, MoPartRow.total)
                    .having(func.min(MoPartRow.received_at) < cutoff)
                )
            ).all()
            for source, dest, ref, total in groups:
                key = _group(source, dest, ref, total)
                rows = await _waiting_parts(s, key)
                await _mark_assembled(s, key, now)
                log.warning(
                    "MO %s->%s ref %d: %d of %d parts after the window", source, dest, ref, len(rows), total
                )
                text = "".join(r.text for r in rows)
                await self._store(s, cache, source, dest, text, len(rows), rows[0].received_at, rows[-1].smsc)
            await self._before_commit(s, cache)
        self._after_commit(s, cache)

    async def _owner(self, s: AsyncSession, cache: _BatchCache, number: str) -> SubscriptionTarget | None:
        await self._load_owners(s, cache, [number])
        return cache.owners[number]

    async def _store(
        self,
        s: AsyncSession,
        cache: _BatchCache,
        source: str,
        dest: str,
        text: str,
        parts: int,
        received: datetime,
        smsc: str | None,
    ) -> None:
        owner = await self._owner(s, cache, dest)
        word = text.strip().upper()
        keyword = word if word in STOP_WORDS | START_WORDS | HELP_WORDS else None
        uid = uuid.uuid4().hex
        cache.inbound.append(
            {
                "uid": uid,
                "account_id": owner.account_id if owner else None,
                "number_id": owner.number_id if owner else None,
                "sender": source,
                "recipient": dest,
                "body": text,
                "parts": parts,
                "keyword": keyword if owner else None,
                "client_reference": None,
                "operator_id": None,
                "received_at": received,
                "smsc": smsc,
            }
        )
        fields: dict[str, object] = {"inbound_id": uid, "sin": dest, "parts": parts, "smsc": smsc}
        cache.stored.append(fields)
        if owner is None:
            self.unrouted += 1
            log.warning(
                "MO %s -> %s: no SIN subscription; stored unrouted (%d so far)",
                source,
                dest,
                self.unrouted,
                extra={"inbound_id": uid},
            )
            return
        reply = (
            await self._keyword(s, owner, source, keyword)
            if keyword
            else await self._auto_reply(s, cache, owner, text)
        )
        if keyword:
            fields["keyword"] = keyword
        if reply:
            fields["reply_msgid"] = await self._send_reply(s, owner.account_id, dest, source, reply)
        if owner.mo_delivery != "webhook" and await self._has_esme(s, cache, owner.account_id):
            # For the account's SMPP receiver, held until one is bound and acknowledges it.
            s.add(EsmeOutbox(account_id=owner.account_id, source=source, destination=dest, body=text))
            outbox.esme_written(s, owner.account_id)
            if owner.mo_delivery == "smpp":
                return
        if owner.action_url and owner.webhook_format == "sinch":
            cache.sinch_hooks.append((len(cache.inbound) - 1, owner.action_url))
        elif owner.action_url:
            row = outbox.form_row(
                account_id=owner.account_id,
                kind="sms.inbound",
                ref=uid,
                url=owner.action_url,
                fields={
                    "sender": source,
                    "recipient": dest,
                    "message": text,
                    "recv_time": fmt_time(received) or "",
                    "id": uid,
                },
                lease=self._fast_path.lease() if self._fast_path is not None else None,
            )
            if self._fast_path is None:
                outbox.count(s)
            cache.webhooks.append(row)

    async def _has_esme(self, s: AsyncSession, cache: _BatchCache, account_id: int) -> bool:
        if account_id not in cache.esme:
            found = await s.scalar(select(SmppCredential.id).where(SmppCredential.account_id == account_id))
            cache.esme[account_id] = found is not None
        return cache.esme[account_id]

    def _sinch_hook(self, s: AsyncSession, mo: dict[str, Any], url: str) -> dict[str, Any]:
        payload = sinch.mo_text(
            mo["uid"],
            mo["sender"],
            mo["recipient"],
            mo["body"],
            mo["received_at"],
            None,
            mo["client_reference"],
        )
        lease = self._fast_path.lease() if self._fast_path is not None else None
        if self._fast_path is None:
            outbox.count(s)
        return outbox.json_row(
            account_id=mo["account_id"],
            kind="sms.inbound",
            ref=mo["uid"],
            url=url,
            payload=payload,
            lease=lease,
        )

    async def _keyword(self, s: AsyncSession, owner: SubscriptionTarget, sender: str, keyword: str) -> str:
        if keyword in STOP_WORDS:
            exists = await s.scalar(
                select(OptOut.id).where(OptOut.account_id == owner.account_id, OptOut.number == sender)
            )
            if exists is None:
                s.add(OptOut(account_id=owner.account_id, number=sender))
            return self._replies.optout
        if keyword in START_WORDS:
            await s.execute(
                delete(OptOut).where(OptOut.account_id == owner.account_id, OptOut.number == sender)
            )
            return self._replies.optin
        return self._replies.help

    async def _auto_reply(
        self, s: AsyncSession, cache: _BatchCache, owner: SubscriptionTarget, text: str
    ) -> str | None:
        rules = cache.rules.get(owner.subscription_id)
        if rules is None:
            rules = await self._numbers.rules_for_subscription(owner.subscription_id, session=s)
            cache.rules[owner.subscription_id] = rules
        if any(r.regex is not None for r in rules):
            # RE2 is linear but up to 50 rules of up to MAX_PROGRAM instructions over a long MO
            # still add up; it releases the GIL, so a worker thread keeps the loop answering.
            rule = await asyncio.to_thread(first_auto_reply, rules, text)
        else:
            rule = first_auto_reply(rules, text)
        return None if rule is None else rule.reply

    async def _send_reply(self, s: AsyncSession, account_id: int, sin: str, to: str, text: str) -> str | None:
        """Queues the reply in the caller's transaction; its msgid, or None if it can't be sent."""
        if not to.startswith("+"):
            return None  # an alphanumeric sender cannot receive SMS
        req = OutboundRequest(account_id=account_id, sender=sin.lstrip("+"), recipient=to, text=text)
        parts = self._messages.check_length("message", text)
        row = self._messages.row_for(req, text, parts)
        await s.execute(insert(Message), [row])
        s.info["replies_queued"] = True
        return str(row["msgid"])

    # -- API side -------------------------------------------------------------------------

    async def reply(self, account_id: int, uid: str, text: str) -> str:
        """POST /sms/inbounds/<id>/reply/: from the SIN back to the original sender."""
        row = await self.get(account_id, uid)
        async with self._sessions() as s:
            if not await _holds_sin(s, account_id, row.number_id):
                raise forbidden(
                    "This SIN is no longer yours: replies go out from the SIN the message came to."
                )
        req = OutboundRequest(
            account_id=account_id, sender=row.recipient.lstrip("+"), recipient=row.sender, text=text
        )
        return await self._messages.create(req)

    async def reply_from_webhook(self, uid: str, text: str) -> None:
        """A SIN webhook answered 200 text/plain: that text is the reply."""
        async with self._sessions.begin() as s:
            row = (
                await s.execute(select(InboundMessage).where(InboundMessage.uid == uid))
            ).scalar_one_or_none()
            if row is None or row.account_id is None:
                return
            if not await _holds_sin(s, row.account_id, row.number_id):
                log.info("webhook reply suppressed: the SIN changed hands", extra={"inbound_id": uid})
                return
            opted_out = await s.scalar(
                select(OptOut.id).where(OptOut.account_id == row.account_id, OptOut.number == row.sender)
            )
            if opted_out is not None:
                log.info("webhook reply to opted-out %s suppressed", row.sender, extra={"inbound_id": uid})
                return
            msgid = await self._send_reply(s, row.account_id, row.recipient, row.sender, text)
        self._wake_dispatcher()
        log.info("webhook reply queued", extra={"inbound_id": uid, "msgid": msgid})

    async def get(self, account_id: int, uid: str) -> InboundMessage:
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(InboundMessage).where(
                        InboundMessage.uid == uid, InboundMessage.account_id == account_id
                    )
                )
            ).scalar_one_or_none()
        if row is None:
            raise not_found("No such inbound message.")
        return row

    async def list(
        self,
        account_id: int,
        *,
        to: Sequence[str] = (),
        start: datetime,
        end: datetime | None,
        client_reference: str | None,
        page: int,
        page_size: int,
    ) -> tuple[int, list[InboundMessage]]:
        conds: list[Any] = [InboundMessage.account_id == account_id, InboundMessage.received_at >= start]
        if end is not None:
            conds.append(InboundMessage.received_at < end)
        if to:
            conds.append(InboundMessage.recipient.in_(list(to)))
        if client_reference is not None:
            conds.append(InboundMessage.client_reference == client_reference)
        async with self._sessions() as s:
            count = await s.scalar(select(func.count()).select_from(InboundMessage).where(*conds)) or 0
            rows = list(
                (
                    await s.execute(
                        select(InboundMessage)
                        .where(*conds)
                        .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
                        .offset(page * page_size)
                        .limit(page_size)
                    )
                ).scalars()
            )
        return count, rows
