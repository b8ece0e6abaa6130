"""Which sender ids an account may send from: the operator's allow-list for the account, plus
the SINs it holds.

A sender is shown on the handset as who the message is from, so an account free to pick any
would impersonate banks or other customers. The operator approves each account's alphanumeric
senders (1-11 letters, digits and single spaces, at least one letter; the industry's limit,
spaces only where the SMSCs accept them) and any number it has verified the account owns;
numbers the account holds as SIN need no entry. An account whose list is empty may only send
from its SINs. Every send path checks this inside the transaction that queues the message
(REST, templates, Sinch batches, the SMPP server); replies to an MO go out from the SIN it came
to, which the reply path already requires the account to hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Account, Number, NumberSubscription, SenderId
from gateway.services.errors import FieldErrors

_ALNUM = re.compile(r"[A-Za-z0-9]+( [A-Za-z0-9]+)*")
_NUMERIC = re.compile(r"\+?[0-9]{1,15}")
MAX_ALNUM = 11


def canonical(sender: str) -> str:
    """The stored form: a number as E.164 with +, an alphanumeric sender as it is written."""
    return "+" + sender.removeprefix("+") if _NUMERIC.fullmatch(sender) else sender


def check_entry(sender: str) -> str:
    """An operator's entry in canonical form, or ValueError saying why it cannot be a sender."""
    if _NUMERIC.fullmatch(sender):
        return canonical(sender)
    if len(sender) > MAX_ALNUM or not _ALNUM.fullmatch(sender) or not any(c.isalpha() for c in sender):
        raise ValueError(
            f"{sender!r}: a sender is a number of at most 15 digits or 1-{MAX_ALNUM} letters, digits"
            " and single spaces with at least one letter"
        )
    return sender


def refusal(sender: str, field: str = "sender") -> FieldErrors:
    return FieldErrors.one(
        field,
        f"Sender {sender!r} is not allowed for this account: send from one of your SINs, or ask"
        " the operator to allow it.",
    )


async def refused(s: AsyncSession, pairs: Iterable[tuple[int, str]]) -> set[tuple[int, str]]:
    """The (account id, sender) pairs whose account may not send from that sender; two queries
    however many pairs."""
    wanted = {(a, canonical(sender)): (a, sender) for a, sender in pairs}
    if not wanted:
        return set()
    accounts = {a for a, _ in wanted}
    senders = {c for _, c in wanted}
    listed = await s.execute(
        select(SenderId.account_id, SenderId.sender).where(
            SenderId.account_id.in_(accounts), SenderId.sender.in_(senders)
        )
    )
    allowed = {(a, x) for a, x in listed}
    numbers = {c for c in senders if c.startswith("+")}
    if numbers:
        held = await s.execute(
            select(NumberSubscription.account_id, Number.number)
            .join(Number, Number.id == NumberSubscription.number_id)
            .where(
                NumberSubscription.kind == "sin",
                NumberSubscription.account_id.in_(accounts),
                Number.number.in_(numbers),
            )
        )
        allowed |= {(a, n) for a, n in held}
    return {given for key, given in wanted.items() if key not in allowed}


async def check(s: AsyncSession, account_id: int, sender: str, field: str = "sender") -> None:
    """FieldErrors naming `field` unless the account may send from `sender`."""
    if await refused(s, [(account_id, sender)]):
        raise refusal(sender, field)


@dataclass(frozen=True)
class AllowedSender:
    sender: str
    origin: str
    created_at: datetime


def _insert_missing(s: AsyncSession) -> type[postgresql.Insert] | type[sqlite.Insert]:
    return postgresql.Insert if s.get_bind().dialect.name == "postgresql" else sqlite.Insert


class SenderService:
    """The operator's side: list, add and remove an account's allowed senders."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def _account(self, s: AsyncSession, sid: str) -> int | None:
        return await s.scalar(select(Account.id).where(Account.sid == sid))

    async def list(self, sid: str) -> tuple[list[AllowedSender], list[str]] | None:
        """(the allow-list, the SINs the account holds), or None for an unknown account."""
        async with self._sessions() as s:
            account_id = await self._account(s, sid)
            if account_id is None:
                return None
            rows = (
                await s.execute(
                    select(SenderId).where(SenderId.account_id == account_id).order_by(SenderId.sender)
                )
            ).scalars()
            listed = [AllowedSender(r.sender, r.origin, r.created_at) for r in rows]
            sins = (
                await s.execute(
                    select(Number.number)
                    .join(NumberSubscription, NumberSubscription.number_id == Number.id)
                    .where(NumberSubscription.account_id == account_id, NumberSubscription.kind == "sin")
                    .order_by(Number.number)
                )
            ).scalars()
            return listed, list(sins)

    async def add(self, sid: str, senders: Iterable[str], origin: str = "operator") -> bool:
        """False for an unknown account; ValueError (nothing added) for a sender that cannot be
        one. Senders already on the list stay as they are."""
        entries = sorted({check_entry(x) for x in senders})
        async with self._sessions.begin() as s:
            account_id = await self._account(s, sid)
            if account_id is None:
                return False
            if entries:
                insert = _insert_missing(s)
                await s.execute(
                    insert(SenderId)
                    .values([{"account_id": account_id, "sender": e, "origin": origin} for e in entries])
                    .on_conflict_do_nothing()
                )
        return True

    async def remove(self, sid: str, senders: Iterable[str]) -> bool:
        async with self._sessions.begin() as s:
            account_id = await self._account(s, sid)
            if account_id is None:
                return False
            await s.execute(
                delete(SenderId).where(
                    SenderId.account_id == account_id, SenderId.sender.in_({canonical(x) for x in senders})
                )
            )
        return True
