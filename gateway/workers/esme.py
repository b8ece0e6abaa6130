"""The gateway's side of the SMPP server (smpp/server.py, smpp/server_types.EsmeBackend).

Binds are checked against the credentials the operator issued (gateway/services/smpp_credentials.py;
only a scrypt hash is stored). A submit_sm goes into the same queue as the REST API's sends,
under the same rules: the account's freeform flag, its rate limit, its
sender allow-list, its opt-out list, the length limit; it is answered with the msgid only
after the row is committed. An account without the freeform flag sends only the texts of its
APPROVED templates: the submitted text (a long one whole, once all its parts are in) is matched
against them (services/templates.TemplateMatcher) and the message records the template, as a
REST template send does. The parts of a long message (UDH or sar_* TLVs) are kept in
`esme_parts` and become one message once all are in: every part is answered with that
message's msgid. Receipts and MO for the account's receiver wait in `esme_deliveries`,
claimed with a lease by the session sending them and deleted once the ESME acknowledged them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db import leases
from gateway.db.availability import DbOutage, is_outage
from gateway.db.models import Account, EsmeOutbox, EsmePart, Message, SmppCredential
from gateway.services import senders, validation
from gateway.services.errors import ApiError, FieldErrors
from gateway.services.inbound import e164_from_smpp
from gateway.services.messages import MessageService, OutboundRequest
from gateway.services.smpp_credentials import PASSWORD_LENGTH, check_password, hash_password
from gateway.services.templates import TemplateMatcher
from gateway.workers.status import esme_state
from smpp.server_types import (
    ESME_RBINDFAIL,
    ESME_RINVDSTADR,
    ESME_RINVMSGID,
    ESME_RINVMSGLEN,
    ESME_RINVPASWD,
    ESME_RINVSRCADR,
    ESME_RSUBMITFAIL,
    ESME_RTHROTTLED,
    ESME_RX_T_APPN,
    EsmeDelivery,
    EsmeMessageState,
    EsmeRefused,
    EsmeSubmit,
)

log = logging.getLogger(__name__)

_UNKNOWN = hash_password("x" * PASSWORD_LENGTH)  # an unknown system_id costs the same time


@dataclass(frozen=True)
class EsmeAccount:
    id: int
    sid: str
    freeform: bool
    rate: float | None = None  # the account's own API rate limit (None: the settings')
    burst: int | None = None


def _status_for(exc: ApiError) -> tuple[int, str]:
    """The SMPP status for what the REST API would have answered."""
    fields = set(exc.body) if isinstance(exc, FieldErrors) else set()
    reason = str(next(iter(exc.body.values()), ""))
    if "sender" in fields:
        return ESME_RINVSRCADR, reason
    if "recipient" in fields:
        return ESME_RINVDSTADR, reason
    if "message" in fields:
        return ESME_RINVMSGLEN, reason
    return ESME_RSUBMITFAIL, reason


class EsmeGateway:
    """smpp.server_types.EsmeBackend over the gateway's services."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        messages: MessageService,
        throttle: Callable[[int, float | None, int | None], float],
        lease_seconds: float = 30.0,
        parts_window: float = 300.0,
        db: DbOutage | None = None,
    ) -> None:
        self._db = db or DbOutage()
        self._sessions = sessions
        self._messages = messages
        self._throttle = throttle  # the API's per-account rate limit: seconds to wait, 0 = go
        self._lease = timedelta(seconds=lease_seconds)
        self._parts_window = timedelta(seconds=parts_window)
        self._matcher = TemplateMatcher()

    async def authenticate(self, system_id: str, password: str) -> object:
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(
                        SmppCredential.password_hash,
                        Account.id,
                        Account.sid,
                        Account.freeform,
                        Account.disabled,
                        Account.rate_limit,
                        Account.rate_burst,
                    )
                    .join(Account, Account.id == SmppCredential.account_id)
                    .where(SmppCredential.system_id == system_id)
                )
            ).one_or_none()
        stored = row[0] if row is not None else _UNKNOWN
        ok = await asyncio.to_thread(check_password, password, stored)
        if row is None or not ok:
            # One answer for an unknown system_id and a wrong password: no enumeration.
            raise EsmeRefused(ESME_RINVPASWD, "unknown system_id or wrong password")
        if row[4]:
            raise EsmeRefused(ESME_RBINDFAIL, "account disabled")
        return EsmeAccount(row[1], row[2], row[3], row[5], row[6])

    def account_key(self, account: object) -> int:
        assert isinstance(account, EsmeAccount)
        return account.id

    async def submit(self, account: object, submit: EsmeSubmit) -> str:
        assert isinstance(account, EsmeAccount)
        if self._throttle(account.id, account.rate, account.burst) > 0:
            raise EsmeRefused(ESME_RTHROTTLED, "over the account's rate limit")
        try:
            recipient = validation.e164("recipient", e164_from_smpp(submit.destination))
        except ApiError:
            raise EsmeRefused(ESME_RINVDSTADR, "destination_addr is not a valid number") from None
        try:
            senders.check_entry(submit.source)
        except ValueError:
            raise EsmeRefused(ESME_RINVSRCADR, "source_addr cannot be a sender") from None
        req = OutboundRequest(
            account_id=account.id,
            sender=submit.source,
            recipient=recipient,
            text=submit.text,
            esme_receipt=submit.receipt,
            binary_coding=submit.binary_coding,
            send_at=submit.schedule_at,
            expire_at=submit.expire_at,
        )
        try:
            if submit.concat_ref is not None and submit.concat_total > 1:
                return await self._part(req, submit, account.freeform)
            if not account.freeform:
                async with self._sessions() as s:
                    req = await self._templated(s, req)
            return await self._messages.create(req)
        except ApiError as exc:
            status, reason = _status_for(exc)
            raise EsmeRefused(status, reason) from None
        except Exception as exc:
            self._unavailable(exc, "queueing an ESME's submit")
            raise

    async def _templated(self, s: AsyncSession, req: OutboundRequest) -> OutboundRequest:
        """`req` with the APPROVED template its text is; ESME_RSUBMITFAIL, as for any send the
        account may not make, when it is none of them (or binary data, which no template is)."""
        template_id = None
        if req.binary_coding is None:
            template_id = await self._matcher.template_for(s, req.account_id, req.text)
        if template_id is None:
            raise EsmeRefused(
                ESME_RSUBMITFAIL, "freeform SMS is not enabled and the text is none of the approved templates"
            )
        return replace(req, template_id=template_id)

    async def query(self, account: object, message_id: str) -> EsmeMessageState:
        assert isinstance(account, EsmeAccount)
        try:
            async with self._sessions() as s:
                row = (
                    await s.execute(
                        select(Message.status, Message.fail_code, Message.done_at).where(
                            Message.msgid == message_id, Message.account_id == account.id
                        )
                    )
                ).one_or_none()
                # The parts of a long message answered with its msgid, not all in yet.
                part = select(EsmePart.id).filter_by(msgid=message_id, account_id=account.id).limit(1)
                waiting = row is None and await s.scalar(part)
        except Exception as exc:
            self._unavailable(exc, "answering an ESME's query_sm")
            raise
        if row is None and not waiting:
            raise EsmeRefused(ESME_RINVMSGID, "no message of the account has this id")
        status, fail_code, done_at = row or ("QUEUED", None, None)  # done_at: set when final
        return EsmeMessageState(esme_state(status, fail_code)[1], done_at)

    def _unavailable(self, exc: Exception, what: str) -> None:
        """A database outage is logged once per interval and the ESME told to try again later
        (ESME_RX_T_APPN), not a traceback per PDU."""
        if is_outage(exc):
            self._db.report(exc, what)
            raise EsmeRefused(ESME_RX_T_APPN, "database unavailable") from exc

    async def _part(self, req: OutboundRequest, submit: EsmeSubmit, freeform: bool) -> str:
        """Stores one part; the last one to arrive queues the whole message. Every part is
        answered with the message's msgid (a part sent again gets it again, stored once). A
        refusal of the whole (opt-out, no template) answers the last part and leaves the parts
        to the stale-parts flush, which checks them again and drops them."""
        assert submit.concat_ref is not None
        key = (
            EsmePart.account_id == req.account_id,
            EsmePart.source == req.sender,
            EsmePart.destination == req.recipient,
            EsmePart.ref == submit.concat_ref,
            EsmePart.total == submit.concat_total,
        )
        async with self._sessions.begin() as s:
            await senders.check(s, req.account_id, req.sender)  # refused at the first part
            parts = list((await s.execute(select(EsmePart).where(*key).order_by(EsmePart.seq))).scalars())
            msgid = parts[0].msgid if parts else uuid.uuid4().hex
            if any(p.seq == submit.concat_seq for p in parts):
                return msgid
            s.add(
                EsmePart(
                    account_id=req.account_id,
                    source=req.sender,
                    destination=req.recipient,
                    ref=submit.concat_ref,
                    total=submit.concat_total,
                    seq=submit.concat_seq,
                    text=submit.text,
                    msgid=msgid,
                    esme_receipt=req.esme_receipt,
                    data_coding=req.binary_coding,
                )
            )
            if len(parts) + 1 < submit.concat_total:
                return msgid
            texts = {p.seq: p.text for p in parts} | {submit.concat_seq: submit.text}
            whole = "".join(texts[i] for i in sorted(texts))
            await s.execute(delete(EsmePart).where(*key))
            req = replace(req, text=whole, msgid=msgid)
            await self._messages.queue_in(s, req if freeform else await self._templated(s, req))
        self._messages.queued()
        return msgid

    async def flush_stale_parts(self) -> None:
        """A long message whose other parts never came within the window is sent as far as it
        arrived (as MO reassembly does): the ESME was told its msgid."""
        cutoff = datetime.now(UTC) - self._parts_window
        async with self._sessions.begin() as s:
            groups = (
                await s.execute(
                    select(EsmePart.msgid, Account.freeform)
                    .join(Account, Account.id == EsmePart.account_id)
                    .group_by(EsmePart.msgid, Account.freeform)
                    .having(func.min(EsmePart.received_at) < cutoff)
                )
            ).all()
            for msgid, freeform in groups:
                parts = list(
                    (
                        await s.execute(
                            select(EsmePart).where(EsmePart.msgid == msgid).order_by(EsmePart.seq)
                        )
                    ).scalars()
                )
                await s.execute(delete(EsmePart).where(EsmePart.msgid == msgid))
                first = parts[0]
                req = OutboundRequest(
                    account_id=first.account_id,
                    sender=first.source,
                    recipient=first.destination,
                    text="".join(p.text for p in parts),
                    esme_receipt=first.esme_receipt,
                    binary_coding=first.data_coding,
                    msgid=msgid,
                )
                log.warning(
                    "ESME message %s: %d of %d parts after the window", msgid, len(parts), first.total
                )
                try:
                    async with s.begin_nested():
                        await self._messages.queue_in(s, req if freeform else await self._templated(s, req))
                except ApiError as exc:
                    log.warning("ESME message %s dropped: %s", msgid, exc.body)
                except EsmeRefused as exc:
                    log.warning("ESME message %s dropped: %s", msgid, exc)
        self._messages.queued()

    async def claim(self, account: object, session: str, limit: int) -> list[EsmeDelivery]:
        try:
            return await self._claim(account, session, limit)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._db.report(exc, "claiming receipts and MO for an ESME")
            return []

    async def _claim(self, account: object, session: str, limit: int) -> list[EsmeDelivery]:
        assert isinstance(account, EsmeAccount)
        now = datetime.now(UTC)
        token = f"{session}:{secrets.token_hex(4)}"  # this claim's rows, not the session's earlier ones
        async with self._sessions.begin() as s:
            await leases.claim(
                s,
                EsmeOutbox,
                ready_status="PENDING",
                now=now,
                lease_until=now + self._lease,
                token=token,
                limit=limit,
                order_by=(EsmeOutbox.id,),
                extra=(EsmeOutbox.account_id == account.id,),
            )
            rows = (
                await s.execute(
                    select(EsmeOutbox).where(EsmeOutbox.claimed_by == token).order_by(EsmeOutbox.id)
                )
            ).scalars()
            return [_delivery(r) for r in rows]

    async def done(self, account: object, delivery_ids: list[int]) -> None:
        assert isinstance(account, EsmeAccount)
        async with self._sessions.begin() as s:
            await s.execute(
                delete(EsmeOutbox).where(EsmeOutbox.id.in_(delivery_ids), EsmeOutbox.account_id == account.id)
            )

    async def release(self, account: object, delivery_ids: list[int]) -> None:
        assert isinstance(account, EsmeAccount)
        async with self._sessions.begin() as s:
            await s.execute(
                update(EsmeOutbox)
                .where(EsmeOutbox.id.in_(delivery_ids), EsmeOutbox.account_id == account.id)
                .values(claimed_until=None, claimed_by=None)
            )


def _delivery(row: EsmeOutbox) -> EsmeDelivery:
    return EsmeDelivery(
        id=row.id,
        source=row.source,
        destination=row.destination,
        text=row.body,
        receipted_id=row.receipted_id,
        message_state=row.message_state,
        stat=row.stat,
        err="000" if row.stat == "DELIVRD" else "001",
        submitted_at=row.submitted_at,
        done_at=row.done_at,
    )
