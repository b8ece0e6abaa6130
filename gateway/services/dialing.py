"""Toll-fraud guards: where an account's calls may go, and which caller ids it may present.

Both outbound calls (POST /voice/simple/playbacks/) and `transfer` in a DIN's script place a
call the operator pays for, so both go through the same checks:

* the destination must start with an allowed E.164 prefix: the account's own list when the
  operator set one (`gateway accounts set --outbound-allow-prefixes`), else the global one;
* its number type (phonenumbers' metadata) must not be on the operator's deny-list: premium
  rate and the other revenue-share ranges are what international revenue share fraud dials,
  and they hide inside otherwise harmless prefixes (+81990..., +81570... inside +81);
* the caller id shown must be a DIN the account holds, or a number the operator verified for
  it, so a tenant cannot present someone else's number (or a toll-free one) as its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Account, Number, NumberSubscription

# Denied unless the operator says otherwise (voice.deny_number_types):
# - PREMIUM_RATE, SHARED_COST: the callee's operator shares the charge with the number's holder,
#   which is how toll fraud is paid out.
# - UAN: company-wide numbers often charged above a normal call, e.g. Japan's 0570 "Navi Dial"
#   (phonenumbers files +81570 as UAN, not SHARED_COST).
# - PERSONAL_NUMBER and PAGER: the UK's 070 / 076 ranges are look-alike revenue-share numbers
#   and a classic fraud destination.
# - UNKNOWN: what phonenumbers cannot place in any allocated range (also every invalid number);
#   hijacked and unallocated ranges used in revenue-share fraud look like this. The cost is
#   that a range allocated after the installed phonenumbers release is refused until upgraded.
# Allowed: FIXED_LINE, MOBILE, FIXED_LINE_OR_MOBILE, TOLL_FREE (free for the caller's side),
# VOIP (Japan's ordinary 050 numbers) and VOICEMAIL, which are billed like normal calls.
DEFAULT_DENY_NUMBER_TYPES = "PREMIUM_RATE,SHARED_COST,UAN,PERSONAL_NUMBER,PAGER,UNKNOWN"
_TYPES = {name: value for name, value in vars(PhoneNumberType).items() if name.isupper()}
_NAMES = {value: name for name, value in _TYPES.items()}
_DESCRIBED = {
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.UAN: "a universal access (UAN) number",
    PhoneNumberType.PERSONAL_NUMBER: "a personal number",
    PhoneNumberType.UNKNOWN: "not in any range known to be allocated",
}
MAX_PREFIX_DIGITS = 15


def normalise_prefix(prefix: str, what: str = "prefix") -> str:
    """ "81" or " +81 " -> "+81"; anything but + and 1-15 ASCII digits is a ValueError."""
    p = prefix.strip()
    if p and not p.startswith("+"):
        p = "+" + p
    digits = p[1:]
    if not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_PREFIX_DIGITS):
        raise ValueError(f"{what} {prefix!r} is not + followed by digits")
    return p


def parse_prefixes(text: str, what: str = "prefix") -> tuple[str, ...]:
    """Comma-separated prefixes; "" is the empty list (nothing allowed)."""
    return tuple(normalise_prefix(p, what) for p in text.split(",") if p.strip())


def parse_number_types(text: str) -> frozenset[int]:
    """Comma-separated phonenumbers PhoneNumberType names, e.g. "PREMIUM_RATE,UAN"."""
    out = set()
    for name in (n.strip().upper() for n in text.split(",")):
        if not name:
            continue
        if name not in _TYPES:
            raise ValueError(f"unknown number type {name!r}; known: {', '.join(sorted(_TYPES))}")
        out.add(_TYPES[name])
    return frozenset(out)


def is_phone_number(value: str) -> bool:
    """A valid E.164 number, as an operator may register for an account's caller ids."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    canonical = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return canonical == value and phonenumbers.is_valid_number(parsed)


@dataclass(frozen=True)
class DialPolicy:
    """The operator's global destination rules."""

    allow_prefixes: tuple[str, ...]
    deny_types: frozenset[int]

    @classmethod
    def parse(cls, allow_prefixes: str, deny_types: str = DEFAULT_DENY_NUMBER_TYPES) -> DialPolicy:
        return cls(parse_prefixes(allow_prefixes), parse_number_types(deny_types))

    def refusal(self, number: str, prefixes: tuple[str, ...] | None = None) -> str | None:
        """Why `number` (E.164) may not be called, or None. `prefixes` is the account's own
        allow-list when the operator set one; the number-type deny-list applies to everyone."""
        allowed = self.allow_prefixes if prefixes is None else prefixes
        if not any(number.startswith(p) for p in allowed):
            return "is not under an allowed prefix"
        try:
            kind = phonenumbers.number_type(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            kind = PhoneNumberType.UNKNOWN
        if kind in self.deny_types:
            return "is " + _DESCRIBED.get(kind, f"a {_NAMES[kind].lower().replace('_', ' ')} number")
        return None


@dataclass(frozen=True)
class DialRights:
    """What one account may do when it places or transfers a call (operator-set)."""

    account_id: int
    callers: frozenset[str]  # DINs it holds and caller ids the operator verified for it
    allow_prefixes: tuple[str, ...] | None = None  # None: the global list
    max_concurrent: int | None = None  # None: the global default
    max_per_minute: int | None = None


async def load_rights(s: AsyncSession, account_id: int, *, lock: bool = False) -> DialRights | None:
    """The account's rights, read in the caller's transaction. `lock` holds its row until the
    transaction ends (FOR UPDATE on PostgreSQL), so checks and inserts that count the account's
    calls are serialised across gateway nodes."""
    q = select(Account).where(Account.id == account_id)
    account = await s.scalar(q.with_for_update() if lock else q)
    if account is None:
        return None
    dins = await s.scalars(
        select(Number.number)
        .join(NumberSubscription, NumberSubscription.number_id == Number.id)
        .where(NumberSubscription.account_id == account_id, NumberSubscription.kind == "din")
    )
    return DialRights(
        account_id=account_id,
        callers=frozenset(dins) | frozenset(split_list(account.verified_callers)),
        allow_prefixes=None
        if account.outbound_allow_prefixes is None
        else parse_prefixes(account.outbound_allow_prefixes),
        max_concurrent=account.outbound_max_concurrent,
        max_per_minute=account.outbound_max_per_minute,
    )


def split_list(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def join_list(values: Iterable[str]) -> str | None:
    unique = sorted(set(values))
    return ",".join(unique) if unique else None


RIGHTS_COLUMNS = ("outbound_allow_prefixes", "outbound_max_concurrent", "outbound_max_per_minute")


def rights_json(account: Account) -> dict[str, Any]:
    """The operator's view (`gateway accounts set`); null = the global setting applies."""
    return {
        "outbound_allow_prefixes": account.outbound_allow_prefixes,
        "outbound_max_concurrent": account.outbound_max_concurrent,
        "outbound_max_per_minute": account.outbound_max_per_minute,
        "verified_callers": split_list(account.verified_callers),
    }


async def get_rights(sessions: async_sessionmaker[AsyncSession], sid: str) -> dict[str, Any] | None:
    """The account's overrides as `rights_json` shows them; None when there is no such account."""
    async with sessions() as s:
        account = await s.scalar(select(Account).where(Account.sid == sid))
    return None if account is None else rights_json(account)


async def update_rights(
    sessions: async_sessionmaker[AsyncSession],
    sid: str,
    columns: Mapping[str, str | int | None],
    add_callers: Iterable[str] = (),
    remove_callers: Iterable[str] = (),
) -> dict[str, Any] | None:
    """Set the account's overrides (`columns`: RIGHTS_COLUMNS -> value, None = back to the
    global setting) and its verified caller ids; values must be checked already. None when
    there is no such account."""
    assert set(columns) <= set(RIGHTS_COLUMNS), columns
    async with sessions.begin() as s:
        account = await s.scalar(select(Account).where(Account.sid == sid).with_for_update())
        if account is None:
            return None
        for name, value in columns.items():
            setattr(account, name, value)
        callers = (set(split_list(account.verified_callers)) | set(add_callers)) - set(remove_callers)
        account.verified_callers = join_list(callers)
        return rights_json(account)
