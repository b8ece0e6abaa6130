"""Number inventory (shared by SIN and DIN), per-account subscriptions and SIN auto-reply rules.

Every method is generic over the subscription kind: "sin" needs the number's sms capability,
"din" its voice capability; API field names follow the kind (`sin_uid` / `din_uid`).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol

import phonenumbers
import re2
from sqlalchemy import ColumnElement, Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from gateway.db.models import Account, AutoReplyRule, Number, NumberSubscription
from gateway.services.errors import FieldErrors, not_found
from gateway.services.keywords import RESERVED_KEYWORDS
from gateway.services.number_import import NumberImportError, NumberRow
from gateway.services.views import fmt_time

Kind = Literal["sin", "din"]
WEBHOOK_FORMATS = ("xoxzo", "sinch")
KINDS: tuple[Kind, ...] = ("sin", "din")
_LABEL = {"sin": "SIN", "din": "DIN"}
_CAPABILITY = {"sin": "SMS", "din": "voice"}
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_PREFIX = re.compile(r"[0-9]{1,15}")
_CHUNK = 500  # numbers per IN (...) query; well under every engine's bind-parameter limit

log = logging.getLogger(__name__)

MATCHES = ("keyword", "regex")
MAX_PATTERN = 200
# Tenant regexes run on RE2 (linear in the input, no backtracking), so the work per MO is bounded
# by input length x program size. Both are capped: the program (RE2 instructions; a Unicode
# class like \pL+ is ~1,200) and RE2's memory for it, DFA cache included.
MAX_PROGRAM = 2000
_RE2_MAX_MEM = 1 << 20
MAX_KEYWORD = 64
MAX_REPLY = 1000
MAX_RULES = 50
# Keywords the inbound pipeline handles itself (opt-out / help); a rule for them would never fire.
# Regex rules look at most this much of an MO: bounds the work a hostile sender can cause.
MAX_MATCH_INPUT = 1600
_WORD = re.compile(r"\w+")
_EDGE_NON_WORD = re.compile(r"^\W+|\W+$")


class _Searcher(Protocol):
    def search(self, text: str) -> object | None: ...


class PatternError(ValueError):
    """A tenant pattern RE2 will not run: bad syntax, unsupported features or too complex."""


def compile_pattern(pattern: str) -> _Searcher:
    """RE2 with capped memory, no capture bookkeeping (only match/no match is needed) and its
    error log off (it would write the tenant's pattern raw to stderr). google-re2 has no fallback
    to `re`: what RE2 cannot run (backreferences, lookaround) is an error here."""
    options = re2.Options()
    options.max_mem = _RE2_MAX_MEM
    options.log_errors = False
    options.never_capture = True
    too_complex = PatternError(f"Too complex: at most {MAX_PROGRAM} RE2 instructions once compiled.")
    try:
        regex = re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else b""
        if isinstance(reason, bytes):  # the bindings hand RE2's message over as bytes
            reason = reason.decode(errors="replace")
        if "too large" in reason:  # over max_mem
            raise too_complex from None
        raise PatternError(
            f"Invalid regular expression: {reason}. "
            "RE2 syntax: backreferences and lookaround are not supported."
        ) from None
    if regex.programsize > MAX_PROGRAM:
        raise too_complex
    return regex  # type: ignore[no-any-return]


class SubscriptionTarget(NamedTuple):
    """Who receives traffic for a number: what `subscription_for_number` returns."""

    subscription_id: int
    account_id: int
    action_url: str | None
    number_id: int
    webhook_format: str = "xoxzo"  # SIN: "xoxzo" (form-encoded) or "sinch" (mo_text JSON)
    status_url: str | None = None  # DIN: where call events are POSTed
    mo_delivery: str = "webhook"  # SIN: "webhook", "smpp" (the account's SMPP receiver) or "both"


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int


@dataclass(frozen=True)
class AutoReply:
    """One auto-reply rule as the inbound pipeline uses it; the first matching rule wins."""

    rule_id: str
    match: str  # "keyword" | "regex"
    pattern: str
    reply: str
    regex: _Searcher | None  # compiled for "regex" rules

    def matches(self, body: str) -> bool:
        """keyword: the MO's first word (outer punctuation ignored), case-insensitively;
        regex: an RE2 search over the first MAX_MATCH_INPUT characters."""
        if self.regex is not None:
            return self.regex.search(body[:MAX_MATCH_INPUT]) is not None
        words = body.split(maxsplit=1)
        if not words:
            return False
        return _EDGE_NON_WORD.sub("", words[0]).casefold() == self.pattern.casefold()


def first_auto_reply(rules: Iterable[AutoReply], body: str) -> AutoReply | None:
    return next((r for r in rules if r.matches(body)), None)


def _money(value: Decimal) -> float:
    return float(value)


def number_json(kind: Kind, n: Number) -> dict[str, Any]:
    """A number as Xoxzo lists it: digits without +, the dialling code as `country_code`
    ("81"), the local area prefix without the trunk 0 ("3"), and its costs."""
    return {
        kind: n.number.removeprefix("+"),
        f"{kind}_uid": n.uid,
        "country_code": str(phonenumbers.parse(n.number, None).country_code),
        "prefix": n.prefix,
        "monthly_cost": _money(n.monthly_cost),
        "minute_cost": _money(n.minute_cost),
    }


def subscription_json(kind: Kind, n: Number, sub: NumberSubscription) -> dict[str, Any]:
    out = number_json(kind, n)
    out["action_url"] = sub.action_url
    if kind == "din":
        out["voicemail_url"] = sub.voicemail_url
        out["status_url"] = sub.status_url
    else:
        out["webhook_format"] = sub.webhook_format or "xoxzo"
        out["mo_delivery"] = sub.mo_delivery or "webhook"
    out["subscribed_at"] = fmt_time(sub.created_at)
    return out


def rule_json(r: AutoReplyRule) -> dict[str, Any]:
    return {
        "rule_id": r.uid,
        "match": r.match,
        "pattern": r.pattern,
        "reply": r.reply,
        "created_at": fmt_time(r.created_at),
    }


def _check_kind(kind: str) -> Kind:
    if kind == "sin":
        return "sin"
    if kind == "din":
        return "din"
    raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")


def _has_capability(kind: Kind, n: Number) -> bool:
    return n.sms if kind == "sin" else n.voice


def _capability_column(kind: Kind) -> Any:
    return Number.sms if kind == "sin" else Number.voice


def parse_filters(country: str | None, prefix: str | None) -> tuple[str | None, str | None]:
    """`country` (2 letters, any case) and `prefix` (digits); empty means no filter."""
    errors: dict[str, list[str]] = {}
    if country:
        if not _COUNTRY.fullmatch(country):
            errors["country"] = ["Enter a 2-letter ISO country code, e.g. JP."]
        country = country.upper()
    if prefix:
        if not _PREFIX.fullmatch(prefix):
            errors["prefix"] = ["Enter digits only, e.g. 813."]
    if errors:
        raise FieldErrors(errors)
    return country or None, prefix or None


def _filters(country: str | None, prefix: str | None) -> list[ColumnElement[bool]]:
    """`prefix` matches the start of the number (so 81 finds every +81...), not only the
    inventory's prefix column."""
    country, prefix = parse_filters(country, prefix)
    out: list[ColumnElement[bool]] = []
    if country:
        out.append(Number.country_code == country)
    if prefix:
        # Digits only (validated), so no LIKE wildcard can sneak in.
        out.append(Number.number.like(f"+{prefix}%"))
    return out


def pattern_problem(match: str, pattern: str) -> str | None:
    """Why `pattern` cannot be a rule of kind `match` ("keyword" or "regex"), or None."""
    if match == "keyword":
        if not _WORD.fullmatch(pattern) or len(pattern) > MAX_KEYWORD:
            return f"A keyword is a single word of letters/digits, at most {MAX_KEYWORD}."
        if pattern.upper() in RESERVED_KEYWORDS:
            return f"{pattern.upper()} is handled by the gateway (opt-out/help)."
        return None
    if len(pattern) > MAX_PATTERN:
        return f"At most {MAX_PATTERN} characters."
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return str(exc)
    return None


def auto_reply(r: AutoReplyRule) -> AutoReply | None:
    """A stored rule, compiled for matching; None for a regex rule RE2 refuses (stored before
    rules ran on RE2): it is skipped, with a line for the operator, and stays listed so its
    owner can see and delete it."""
    if r.match != "regex":
        return AutoReply(r.uid, r.match, r.pattern, r.reply, None)
    try:
        regex = compile_pattern(r.pattern)
    except PatternError as exc:
        log.warning("auto-reply rule %s skipped: %s", r.uid, exc, extra={"rule_id": r.uid})
        return None
    return AutoReply(r.uid, r.match, r.pattern, r.reply, regex)


class NumberService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # -- operator: inventory ------------------------------------------------------------------

    async def import_numbers(self, rows: Sequence[NumberRow]) -> ImportResult:
        """Upsert by number in one transaction. Existing numbers keep their uid and
        subscriptions; removing a capability a live subscription needs is refused (the whole
        file, with the offending lines)."""
        try:
            async with self._sessions.begin() as s:
                existing: dict[str, Number] = {}
                for i in range(0, len(rows), _CHUNK):
                    chunk = [r.number for r in rows[i : i + _CHUNK]]
                    q = select(Number).where(Number.number.in_(chunk)).with_for_update()
                    existing.update((n.number, n) for n in (await s.execute(q)).scalars())
                await self._refuse_dropped_capabilities(s, rows, existing)
                created = 0
                for r in rows:
                    n = existing.get(r.number)
                    if n is None:
                        n = Number(uid=secrets.token_hex(16), number=r.number)
                        s.add(n)
                        created += 1
                    n.country_code, n.prefix = r.country_code, r.prefix
                    n.sms, n.voice = r.sms, r.voice
                    n.monthly_cost, n.minute_cost = r.monthly_cost, r.minute_cost
        except IntegrityError:
            raise NumberImportError(["another import added some of these numbers meanwhile; retry"]) from None
        return ImportResult(created=created, updated=len(rows) - created)

    @staticmethod
    async def _refuse_dropped_capabilities(
        s: AsyncSession, rows: Sequence[NumberRow], existing: dict[str, Number]
    ) -> None:
        dropping: dict[int, NumberRow] = {}
        for r in rows:
            n = existing.get(r.number)
            if n is not None and ((n.sms and not r.sms) or (n.voice and not r.voice)):
                dropping[n.id] = r
        if not dropping:
            return
        ids = list(dropping)
        subs = (
            await s.execute(
                select(NumberSubscription.number_id, NumberSubscription.kind).where(
                    NumberSubscription.number_id.in_(ids)
                )
            )
        ).all()
        errors = []
        for number_id, kind in sorted(subs, key=lambda t: dropping[t[0]].line):
            r = dropping[number_id]
            if (kind == "sin" and not r.sms) or (kind == "din" and not r.voice):
                column = "sms" if kind == "sin" else "voice"
                errors.append(
                    f"line {r.line}: {column}: {r.number} has a {_LABEL[kind]} subscription; "
                    f"unsubscribe it before removing {_CAPABILITY[kind]}"
                )
        if errors:
            raise NumberImportError(errors)

    async def list_inventory(
        self, country: str | None = None, prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """Operator view: every number, its capabilities and who (SID) holds it as SIN/DIN."""
        sin, din = aliased(NumberSubscription), aliased(NumberSubscription)
        sin_acct, din_acct = aliased(Account), aliased(Account)
        q = (
            select(Number, sin_acct.sid, din_acct.sid)
            .outerjoin(sin, (sin.number_id == Number.id) & (sin.kind == "sin"))
            .outerjoin(sin_acct, sin_acct.id == sin.account_id)
            .outerjoin(din, (din.number_id == Number.id) & (din.kind == "din"))
            .outerjoin(din_acct, din_acct.id == din.account_id)
            .order_by(Number.number)
        )
        async with self._sessions() as s:
            rows = (await s.execute(q.where(*_filters(country, prefix)))).all()
        return [
            {
                "number": n.number,
                "uid": n.uid,
                "country_code": n.country_code,
                "prefix": n.prefix,
                "sms": n.sms,
                "voice": n.voice,
                "monthly_cost": _money(n.monthly_cost),
                "minute_cost": _money(n.minute_cost),
                "sin_subscriber": sin_sid,
                "din_subscriber": din_sid,
            }
            for n, sin_sid, din_sid in rows
        ]

    # -- accounts: subscriptions ---------------------------------------------------------------

    async def list_available(
        self, kind: Kind, country: str | None = None, prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """Numbers with the kind's capability that nobody holds as that kind."""
        kind = _check_kind(kind)
        taken = (
            select(NumberSubscription.id)
            .where(NumberSubscription.number_id == Number.id, NumberSubscription.kind == kind)
            .exists()
        )
        q = select(Number).where(_capability_column(kind).is_(True), ~taken).order_by(Number.number)
        async with self._sessions() as s:
            rows = (await s.execute(q.where(*_filters(country, prefix)))).scalars()
            return [number_json(kind, n) for n in rows]

    async def subscribe(self, account_id: int, kind: Kind, uid: str | None) -> dict[str, Any]:
        kind = _check_kind(kind)
        field, label = f"{kind}_uid", _LABEL[kind]
        if not uid:
            raise FieldErrors.one(field, "This field is required.")
        taken = FieldErrors.one(field, f"This {label} is not available.")
        try:
            async with self._sessions.begin() as s:
                # The row lock (PostgreSQL) orders concurrent subscribers and inventory imports.
                q = select(Number).where(Number.uid == uid).with_for_update()
                n = (await s.execute(q)).scalar_one_or_none()
                if n is None:
                    raise FieldErrors.one(field, f"No such {label}.")
                if not _has_capability(kind, n):
                    raise FieldErrors.one(field, f"This number does not support {_CAPABILITY[kind]}.")
                holder = (
                    await s.execute(
                        select(NumberSubscription.account_id).where(
                            NumberSubscription.number_id == n.id, NumberSubscription.kind == kind
                        )
                    )
                ).scalar_one_or_none()
                if holder == account_id:
                    raise FieldErrors.one(field, f"You are already subscribed to this {label}.")
                if holder is not None:
                    raise taken
                sub = NumberSubscription(number_id=n.id, account_id=account_id, kind=kind)
                s.add(sub)
        except IntegrityError:  # a concurrent subscriber won the (number_id, kind) unique key
            raise taken from None
        return subscription_json(kind, n, sub)

    @staticmethod
    async def _own(
        s: AsyncSession, account_id: int, kind: Kind, uid: str
    ) -> tuple[NumberSubscription, Number]:
        row = (
            await s.execute(
                select(NumberSubscription, Number)
                .join(Number, Number.id == NumberSubscription.number_id)
                .where(
                    Number.uid == uid,
                    NumberSubscription.kind == kind,
                    NumberSubscription.account_id == account_id,
                )
            )
        ).one_or_none()
        if row is None:
            raise not_found(f"No such {_LABEL[kind]} subscription.")
        return row[0], row[1]

    async def list_subscriptions(self, account_id: int, kind: Kind) -> list[dict[str, Any]]:
        kind = _check_kind(kind)
        q = (
            select(NumberSubscription, Number)
            .join(Number, Number.id == NumberSubscription.number_id)
            .where(NumberSubscription.account_id == account_id, NumberSubscription.kind == kind)
            .order_by(NumberSubscription.created_at, NumberSubscription.id)
        )
        async with self._sessions() as s:
            return [subscription_json(kind, n, sub) for sub, n in (await s.execute(q)).all()]

    async def get_subscription(self, account_id: int, kind: Kind, uid: str) -> dict[str, Any]:
        kind = _check_kind(kind)
        async with self._sessions() as s:
            sub, n = await self._own(s, account_id, kind, uid)
        return subscription_json(kind, n, sub)

    async def set_action_url(
        self,
        account_id: int,
        kind: Kind,
        uid: str,
        action_url: str | None,
        voicemail_url: str | None = None,
        webhook_format: str | None = None,
        mo_delivery: str | None = None,
        *,
        status_url: str | None = None,
    ) -> dict[str, Any]:
        """Sets action_url and, for a DIN, voicemail_url (where new voicemails are POSTed) and
        status_url (call events), for a SIN the webhook format and where its MO go; None leaves
        one as it is. The URLs as the API checked them against the outbound policy."""
        kind = _check_kind(kind)
        async with self._sessions.begin() as s:
            sub, n = await self._own(s, account_id, kind, uid)
            if action_url is not None:
                sub.action_url = action_url
            if voicemail_url is not None:
                sub.voicemail_url = voicemail_url
            if status_url is not None:
                sub.status_url = status_url
            if webhook_format is not None:
                sub.webhook_format = webhook_format
            if mo_delivery is not None:
                sub.mo_delivery = mo_delivery
        return subscription_json(kind, n, sub)

    async def unsubscribe(self, account_id: int, kind: Kind, uid: str) -> None:
        """Ends the subscription; its auto-reply rules go with it. The number is free again."""
        kind = _check_kind(kind)
        async with self._sessions.begin() as s:
            sub, _ = await self._own(s, account_id, kind, uid)
            await s.execute(delete(AutoReplyRule).where(AutoReplyRule.subscription_id == sub.id))
            await s.delete(sub)

    async def subscription_for_number(
        self, number: str, kind: Kind, session: AsyncSession | None = None
    ) -> SubscriptionTarget | None:
        """For the inbound pipeline: who holds `number` (E.164 with +; a bare digit string as
        SMPP carries it is read as +digits) as `kind`, or None. Pass `session` to read inside
        the caller's transaction."""
        kind = _check_kind(kind)
        if number.isdigit():
            number = "+" + number
        q = targets_query(kind).where(Number.number == number)
        if session is not None:
            row = (await session.execute(q)).one_or_none()
        else:
            async with self._sessions() as s:
                row = (await s.execute(q)).one_or_none()
        return None if row is None else SubscriptionTarget(*row[:7])

    async def subscriptions_for_numbers(
        self, numbers: Iterable[str], kind: Kind, session: AsyncSession
    ) -> dict[str, SubscriptionTarget]:
        """`subscription_for_number` for many E.164 numbers (with +) in one query per _CHUNK,
        inside the caller's transaction: {number: target} for those held as `kind`."""
        kind = _check_kind(kind)
        wanted = sorted(set(numbers))
        found: dict[str, SubscriptionTarget] = {}
        for i in range(0, len(wanted), _CHUNK):
            q = targets_query(kind, Number.number).where(Number.number.in_(wanted[i : i + _CHUNK]))
            for row in await session.execute(q):
                found[row[7]] = SubscriptionTarget(*row[:7])
        return found

    # -- SIN auto-reply rules ----------------------------------------------------------------

    async def add_rule(
        self, account_id: int, uid: str, match: str, pattern: str, reply: str
    ) -> dict[str, Any]:
        """`match`, `pattern` (see pattern_problem) and `reply` as the API checked them."""
        async with self._sessions.begin() as s:
            sub, _ = await self._own(s, account_id, "sin", uid)
            existing = (
                await s.execute(
                    select(AutoReplyRule.match, AutoReplyRule.pattern).where(
                        AutoReplyRule.subscription_id == sub.id
                    )
                )
            ).all()
            if len(existing) >= MAX_RULES:
                raise FieldErrors.one("sin_uid", f"At most {MAX_RULES} auto-reply rules per SIN.")
            if match == "keyword" and any(
                m == "keyword" and p.casefold() == pattern.casefold() for m, p in existing
            ):
                raise FieldErrors.one("pattern", "There is already a rule for this keyword.")
            rule = AutoReplyRule(
                uid=secrets.token_hex(16), subscription_id=sub.id, match=match, pattern=pattern, reply=reply
            )
            s.add(rule)
        return rule_json(rule)

    async def list_rules(self, account_id: int, uid: str) -> list[dict[str, Any]]:
        async with self._sessions() as s:
            sub, _ = await self._own(s, account_id, "sin", uid)
            return [rule_json(r) for r in await _rules(s, sub.id)]

    async def delete_rule(self, account_id: int, uid: str, rule_id: str) -> None:
        async with self._sessions.begin() as s:
            sub, _ = await self._own(s, account_id, "sin", uid)
            gone = await s.execute(
                delete(AutoReplyRule).where(
                    AutoReplyRule.subscription_id == sub.id, AutoReplyRule.uid == rule_id
                )
            )
            if getattr(gone, "rowcount", 0) != 1:
                raise not_found("No such auto-reply rule.")

    async def rules_for_subscription(
        self, subscription_id: int, session: AsyncSession | None = None
    ) -> list[AutoReply]:
        """For the inbound pipeline, in creation order; `first_auto_reply(rules, body)` picks
        the reply. Pass `session` to read inside the caller's transaction."""
        if session is not None:
            rows = await _rules(session, subscription_id)
        else:
            async with self._sessions() as s:
                rows = await _rules(s, subscription_id)
        return [rule for rule in map(auto_reply, rows) if rule is not None]


async def _rules(s: AsyncSession, subscription_id: int) -> list[AutoReplyRule]:
    q = (
        select(AutoReplyRule)
        .where(AutoReplyRule.subscription_id == subscription_id)
        .order_by(AutoReplyRule.created_at, AutoReplyRule.id)
    )
    return list((await s.execute(q)).scalars())


def targets_query(kind: Kind, *extra: Any) -> Select[Any]:
    """Subscription id, account id, action_url, number id, webhook format, status_url and MO
    delivery of `kind` subscriptions (then the `extra` columns); the caller adds which numbers."""
    return (
        select(
            NumberSubscription.id,
            NumberSubscription.account_id,
            NumberSubscription.action_url,
            Number.id,
            NumberSubscription.webhook_format,
            NumberSubscription.status_url,
            NumberSubscription.mo_delivery,
            *extra,
        )
        .join(Number, Number.id == NumberSubscription.number_id)
        .where(NumberSubscription.kind == kind)
    )
