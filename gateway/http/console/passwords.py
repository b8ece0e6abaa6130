"""The operator's console password: stored in the configuration as a salted scrypt hash
(`gateway console hash-password` prints one), never as the password itself.

Format: `scrypt$<log2 n>$<r>$<p>$<salt, base64>$<hash, base64>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

LOG2_N, R, P = 15, 8, 1  # about 50 ms and 32 MiB per check: slow for a guesser, fine for a login
_MAXMEM = 64 * 1024 * 1024
_PREFIX = "scrypt"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=1 << log2_n, r=r, p=p, maxmem=_MAXMEM, dklen=32
    )


def hash_password(password: str) -> str:
    if len(password) < 12:
        raise ValueError("the operator password must have at least 12 characters")
    salt = secrets.token_bytes(16)
    return "$".join(
        (_PREFIX, str(LOG2_N), str(R), str(P), _b64(salt), _b64(_derive(password, salt, LOG2_N, R, P)))
    )


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """ValueError for anything that is not a hash this module wrote (checked at start-up)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _PREFIX:
        raise ValueError("not a hash from `gateway console hash-password` (scrypt$...)")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        raise ValueError("malformed scrypt hash") from None
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 4 and len(salt) >= 8 and len(digest) == 32):
        raise ValueError("scrypt hash parameters out of range")
    return log2_n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """Constant time in the password; False for an empty or malformed stored hash."""
    try:
        log2_n, r, p, salt, digest = parse_hash(stored)
    except ValueError:
        return False
    return hmac.compare_digest(_derive(password, salt, log2_n, r, p), digest)
