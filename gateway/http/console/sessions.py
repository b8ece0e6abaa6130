"""Console sessions, stored in the database (table console_sessions) so that every node sees a
sign-out, an expiry or a rotated token at once.

The browser holds a random 256-bit token; the table holds its SHA-256 (a copy of the table
signs nobody in). A session has an absolute end (`console.session_max_seconds` after sign-in)
and an idle end pushed forward by page views (`console.session_idle_seconds`; written at most
once a minute per session). A customer's session also ends when the account is disabled.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Account, ConsoleSession
from gateway.services.accounts import AccountInfo

Role = Literal["customer", "operator"]
TOUCH_EVERY = timedelta(seconds=60)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True)
class Session:
    token_hash: str
    role: Role
    csrf: str
    account: AccountInfo | None  # a customer's account
    operator: str | None  # an operator's user name

    @property
    def account_id(self) -> int:
        if self.account is None:
            raise PermissionError("not a customer session")
        return self.account.id


class ConsoleSessions:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, idle_seconds: float, max_seconds: float
    ) -> None:
        self._sessions = sessions
        self._idle = timedelta(seconds=idle_seconds)
        self._max = timedelta(seconds=max_seconds)

    async def start(
        self, role: Role, *, account_id: int | None = None, operator: str | None = None
    ) -> tuple[str, str]:
        """A new session (never a reused one: no fixation); the cookie token and its CSRF token.
        Expired rows are cleared on the way."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            await s.execute(
                delete(ConsoleSession).where(
                    or_(ConsoleSession.expires_at <= now, ConsoleSession.idle_until <= now)
                )
            )
            s.add(
                ConsoleSession(
                    token_hash=token_hash(token),
                    role=role,
                    account_id=account_id,
                    operator=operator,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + self._max,
                    idle_until=now + min(self._idle, self._max),
                )
            )
        return token, csrf

    async def find(self, token: str) -> Session | None:
        """The live session of this cookie token, or None (unknown, ended, expired, or its
        account disabled). Pushes the idle end forward."""
        if not token or len(token) > 128 or not token.isascii():
            return None
        digest = token_hash(token)
        now = datetime.now(UTC)
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(ConsoleSession, Account)
                    .outerjoin(Account, Account.id == ConsoleSession.account_id)
                    .where(
                        ConsoleSession.token_hash == digest,
                        ConsoleSession.expires_at > now,
                        ConsoleSession.idle_until > now,
                    )
                )
            ).one_or_none()
        if row is None:
            return None
        sess, account = row
        if sess.role == "customer":
            if account is None or account.disabled:
                return None
            info: AccountInfo | None = AccountInfo(
                account.id, account.sid, account.name, account.freeform, account.webhook_secret, False
            )
            role: Role = "customer"
        elif sess.role == "operator":
            info, role = None, "operator"
        else:
            return None
        idle_until = min(now + self._idle, sess.expires_at)
        if idle_until - sess.idle_until >= TOUCH_EVERY:
            async with self._sessions.begin() as s:
                await s.execute(
                    update(ConsoleSession)
                    .where(ConsoleSession.token_hash == digest)
                    .values(idle_until=idle_until)
                )
        return Session(digest, role, sess.csrf, info, sess.operator)

    async def end(self, session: Session) -> None:
        async with self._sessions.begin() as s:
            await s.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == session.token_hash))

    async def end_others(self, account_id: int, keep: str) -> None:
        """Every other session of the account (its token was rotated)."""
        async with self._sessions.begin() as s:
            await s.execute(
                delete(ConsoleSession).where(
                    ConsoleSession.account_id == account_id, ConsoleSession.token_hash != keep
                )
            )

    async def end_account(self, account_id: int) -> None:
        async with self._sessions.begin() as s:
            await s.execute(delete(ConsoleSession).where(ConsoleSession.account_id == account_id))
