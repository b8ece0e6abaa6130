"""An account's login to the SMPP server for ESMEs: a system_id and a password the operator
issues (`gateway accounts smpp-credentials SID`, or the console's account page), rotates and
revokes. Only a scrypt hash of the password is stored; the password is shown once, when issued.
The server checks binds against it (gateway/workers/esme.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Account, SmppCredential

# SMPP 3.4 caps system_id at 15 characters and password at 8 (C-octet strings of 16 and 9).
SYSTEM_ID_LENGTH = 15
PASSWORD_LENGTH = 8
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"  # nothing to misread
# scrypt: an 8-character password is ~48 bits; stretching makes a stolen hash expensive to
# search, and the bind throttle makes guessing online slow.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
        again = hash_password(password, base64.b64decode(salt)).split("$")[2]
    except (ValueError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(again, digest)


@dataclass(frozen=True)
class IssuedCredentials:
    system_id: str
    password: str


@dataclass(frozen=True)
class CredentialInfo:
    """What may be shown of an account's credentials: never the hash."""

    system_id: str
    issued_at: datetime


async def issue_credentials(sessions: async_sessionmaker[AsyncSession], sid: str) -> IssuedCredentials | None:
    """New SMPP credentials for the account (replacing any it had: the old password no longer
    binds); None for an unknown SID. The password is only ever shown here."""
    system_id = "e" + secrets.token_hex((SYSTEM_ID_LENGTH - 1) // 2)
    password = "".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH))
    digest = await asyncio.to_thread(hash_password, password)
    async with sessions.begin() as s:
        account_id = await s.scalar(select(Account.id).where(Account.sid == sid))
        if account_id is None:
            return None
        await s.execute(delete(SmppCredential).where(SmppCredential.account_id == account_id))
        s.add(SmppCredential(account_id=account_id, system_id=system_id, password_hash=digest))
    return IssuedCredentials(system_id, password)


async def revoke_credentials(sessions: async_sessionmaker[AsyncSession], sid: str) -> bool:
    """The account's credentials removed (binds with them are refused from now on); False for
    an unknown SID. Sessions already bound stay until they unbind or drop."""
    async with sessions.begin() as s:
        account_id = await s.scalar(select(Account.id).where(Account.sid == sid))
        if account_id is None:
            return False
        await s.execute(delete(SmppCredential).where(SmppCredential.account_id == account_id))
    return True


async def credential_info(sessions: async_sessionmaker[AsyncSession], sid: str) -> CredentialInfo | None:
    """The account's system_id and when it was issued; None when it has none."""
    async with sessions() as s:
        row = (
            await s.execute(
                select(SmppCredential.system_id, SmppCredential.created_at)
                .join(Account, Account.id == SmppCredential.account_id)
                .where(Account.sid == sid)
            )
        ).one_or_none()
    return None if row is None else CredentialInfo(row[0], row[1])
