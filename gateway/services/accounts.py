"""Accounts and API credentials. Tokens are random 256-bit secrets, so a plain SHA-256 is a
sufficient one-way store (no password-stretching needed) and is cheap per request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Account, SenderId
from gateway.services.senders import check_entry

# The webhook secret is the HMAC-SHA256 key receivers verify signatures with. An empty or short
# one lets anyone forge webhooks; 16 characters is the least that keeps a random secret out of
# reach (~96 bits as base64) while accepting secrets receivers already share. The generated
# ones are 43. At most the column's width.
MIN_WEBHOOK_SECRET = 16
MAX_WEBHOOK_SECRET = 128


def check_webhook_secret(secret: str) -> str:
    """The secret as given, or ValueError saying why it cannot be an HMAC key."""
    if len(secret.strip()) < MIN_WEBHOOK_SECRET:
        raise ValueError(f"webhook secret must have at least {MIN_WEBHOOK_SECRET} non-blank characters")
    if len(secret) > MAX_WEBHOOK_SECRET:
        raise ValueError(f"webhook secret must have at most {MAX_WEBHOOK_SECRET} characters")
    if not secret.isprintable():
        raise ValueError("webhook secret must not contain control characters")
    return secret


@dataclass(frozen=True)
class AccountInfo:
    id: int
    sid: str
    name: str
    freeform: bool
    webhook_secret: str
    disabled: bool = False
    # The operator's per-account API rate limit and burst; None: the ratelimit settings.
    rate: float | None = None
    burst: int | None = None


@dataclass(frozen=True)
class NewCredentials:
    account: AccountInfo
    auth_token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: Account) -> AccountInfo:
    return AccountInfo(
        row.id,
        row.sid,
        row.name,
        row.freeform,
        row.webhook_secret,
        bool(row.disabled),
        row.rate_limit,
        row.rate_burst,
    )


class AccountService:
    # Authenticated lookups are cached briefly: at 1,000 req/s a DB round trip per request
    # would dominate latency. A rotated or disabled token stops working within this TTL.
    CACHE_TTL = 5.0

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[tuple[str, str], tuple[float, AccountInfo]] = {}

    async def create(
        self,
        name: str,
        *,
        freeform: bool = False,
        webhook_secret: str | None = None,
        senders: Iterable[str] = (),
    ) -> NewCredentials:
        """`senders`: its allow-list to start with (gateway/services/senders.py); ValueError
        (nothing created) for one that cannot be a sender."""
        allowed = {check_entry(x) for x in senders}
        token = secrets.token_urlsafe(32)
        row = Account(
            sid=secrets.token_hex(16),
            token_hash=hash_token(token),
            name=name,
            freeform=freeform,
            webhook_secret=secrets.token_urlsafe(32)
            if webhook_secret is None
            else check_webhook_secret(webhook_secret),
            disabled=False,
        )
        async with self._sessions.begin() as s:
            s.add(row)
            if allowed:
                await s.flush()
                s.add_all(SenderId(account_id=row.id, sender=x) for x in sorted(allowed))
        return NewCredentials(_info(row), token)

    async def rotate_token(self, sid: str) -> str | None:
        token = secrets.token_urlsafe(32)
        async with self._sessions.begin() as s:
            res = await s.execute(
                update(Account).where(Account.sid == sid).values(token_hash=hash_token(token))
            )
        self._cache.clear()
        return token if res.rowcount else None  # type: ignore[attr-defined]

    async def rotate_webhook_secret(self, sid: str) -> str | None:
        """A new random webhook secret (the old one stops signing at once); None: no account."""
        secret = secrets.token_urlsafe(32)
        return secret if await self.update_flags(sid, webhook_secret=secret) is not None else None

    async def update_flags(
        self, sid: str, *, freeform: bool | None = None, webhook_secret: str | None = None
    ) -> AccountInfo | None:
        """ValueError (and nothing changed) for a webhook secret that cannot be an HMAC key."""
        if webhook_secret is not None:
            check_webhook_secret(webhook_secret)
        async with self._sessions.begin() as s:
            row = (await s.execute(select(Account).where(Account.sid == sid))).scalar_one_or_none()
            if row is None:
                return None
            if freeform is not None:
                row.freeform = freeform
            if webhook_secret is not None:
                row.webhook_secret = webhook_secret
        self._cache.clear()
        return _info(row)

    async def set_rate_limit(self, sid: str, rate: float | None, burst: int | None) -> AccountInfo | None:
        """The account's API rate limit in requests per second (0: none) and its burst; None
        for either: the gateway's ratelimit setting. Running nodes apply it within CACHE_TTL.
        ValueError (nothing changed) for a negative rate, a burst below 1 or above 100,000."""
        if rate is not None and not (0 <= rate <= 1_000_000):
            raise ValueError("rate: requests per second from 0 (no limit) to 1,000,000")
        if burst is not None and not (1 <= burst <= 100_000):
            raise ValueError("burst: from 1 to 100,000 requests")
        async with self._sessions.begin() as s:
            row = (await s.execute(select(Account).where(Account.sid == sid))).scalar_one_or_none()
            if row is None:
                return None
            row.rate_limit, row.rate_burst = rate, burst
        self._cache.clear()
        return _info(row)

    async def set_disabled(self, sid: str, disabled: bool) -> AccountInfo | None:
        """A disabled account's credentials stop working (within CACHE_TTL on running nodes) and
        its queued messages wait unsent; enabling it again resumes both."""
        async with self._sessions.begin() as s:
            row = (await s.execute(select(Account).where(Account.sid == sid))).scalar_one_or_none()
            if row is None:
                return None
            row.disabled = disabled
        self._cache.clear()
        return _info(row)

    async def get(self, sid: str) -> AccountInfo | None:
        async with self._sessions() as s:
            row = (await s.execute(select(Account).where(Account.sid == sid))).scalar_one_or_none()
        return None if row is None else _info(row)

    async def list(self) -> list[AccountInfo]:
        async with self._sessions() as s:
            rows = (await s.execute(select(Account).order_by(Account.id))).scalars().all()
        return [_info(r) for r in rows]

    def cached(self, sid: str, token: str) -> AccountInfo | None:
        """The account if these credentials authenticated within CACHE_TTL; no database query."""
        if not (sid.isascii() and token.isascii()):
            return None
        hit = self._cache.get((sid, hash_token(token)))
        return hit[1] if hit and hit[0] > time.monotonic() else None

    async def authenticate(self, sid: str, token: str) -> AccountInfo | None:
        if not (sid.isascii() and token.isascii()):
            return None  # SIDs and tokens are ASCII by construction: nothing to look up
        if (hit := self.cached(sid, token)) is not None:
            return hit
        digest = hash_token(token)
        key = (sid, digest)
        now = time.monotonic()
        async with self._sessions() as s:
            row = (
                await s.execute(select(Account).where(Account.sid == sid, Account.disabled.is_(False)))
            ).scalar_one_or_none()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        info = _info(row)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self.CACHE_TTL, info)
        return info
