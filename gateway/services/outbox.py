"""Webhook outbox: a row written in the same transaction as the change it reports, so a
committed status change always produces its callback, even across a crash. The receipts and
MO held for ESMEs (esme_deliveries) are written the same way; hand_over wakes both."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol, cast
from urllib.parse import urlencode, urlsplit

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.in_list import in_list
from gateway.db.models import Account, WebhookDelivery, utcnow

_COUNT = "outbox_rows"
_FAST = "outbox_fast"
_ESME = "esme_accounts"


def written(session: AsyncSession) -> int:
    """How many deliveries this session's transaction wrote for the table: wake the sender only
    if any."""
    count: int = session.info.get(_COUNT, 0)
    return count


# webhook_deliveries.receiver_host is a String(255).
MAX_HOST_KEY = 255

# Statements every status callback and MO runs, built once (building one and deriving its cache
# key cost more CPU than running it).
_TABLE = cast(Table, WebhookDelivery.__table__)
_INSERT_IDS = insert(_TABLE).returning(_TABLE.c.uid, _TABLE.c.id)
_PENDING_REFS = select(_TABLE.c.ref, _TABLE.c.url).where(
    _TABLE.c.status == "PENDING", in_list(_TABLE.c.ref, "refs")
)
_SECRETS = select(Account.id, Account.webhook_secret).where(in_list(Account.id, "accounts"))


@dataclass(frozen=True)
class Job:
    """A delivery as the sender POSTs it: its row and the account's webhook secret."""

    id: int
    uid: str  # X-Gateway-Delivery-Id
    account_id: int
    host: str  # receiver_host
    kind: str
    ref: str
    url: str
    body: str
    content_type: str
    secret: str
    attempts: int
    created_at: datetime
    from_table: bool = False  # claimed, not offered: later rows of its ref may wait on it

    @classmethod
    def of(cls, row: Mapping[Any, Any], secret: str, from_table: bool = False) -> Job:
        """From a webhook_deliveries row: as form_row/json_row made it (with its id once
        inserted), or as read from the table. No ORM object: building one cost more than the
        rest of handing an MO's webhook over."""
        return cls(
            row["id"],
            row["uid"],
            row["account_id"],
            row["receiver_host"],
            row["kind"],
            row["ref"],
            row["url"],
            row["body"],
            row["content_type"],
            secret,
            row["attempts"] or 0,
            row["created_at"],
            from_table,
        )


@lru_cache(maxsize=4096)
def receiver_host(url: str) -> str:
    """`host:port` a delivery is POSTed to (lower-case host, the scheme's default port filled
    in): the key the sender shares its POST slots by, so one receiver cannot take them all."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"[:MAX_HOST_KEY]


def esme_written(session: AsyncSession, account_id: int) -> None:
    """Note an esme_deliveries row for the account: hand_over wakes its bound receivers."""
    session.info.setdefault(_ESME, set()).add(account_id)


def count(session: AsyncSession) -> None:
    """Note a delivery written for the table (not handed to a FastPath): written() wakes the sender."""
    session.info[_COUNT] = written(session) + 1


def enqueue(
    session: AsyncSession,
    *,
    account_id: int,
    kind: str,
    ref: str,
    url: str,
    payload: dict[str, Any],
    fast: bool = False,
) -> None:
    """A JSON delivery written with the session's transaction. `fast`: staged for lease_fast,
    which the committing code calls before its commit (it writes the staged rows, leased to the
    fast path where the order allows); without `fast` the row is added to the session."""
    count(session)
    row = json_row(account_id=account_id, kind=kind, ref=ref, url=url, payload=payload)
    if fast:
        session.info.setdefault(_FAST, []).append(row)
    else:
        session.add(WebhookDelivery(**row))


async def lease_fast(session: AsyncSession, fast_path: FastPath | None) -> list[Job]:
    """In the transaction, before its commit: write the deliveries enqueued with `fast`, each
    leased to the fast path only if nothing earlier for the same subject and receiver (ref, url)
    is still pending, here or in the table (in flight, or waiting for a retry): the table's
    claims keep those in order (a DELIVERED callback never overtakes its DELIVERING one), so a
    delivery behind one goes to the table, and the fast path is told to look there when the one
    in front is done. Returns what to offer() once the transaction has committed.

    Staged as rows and written with one INSERT: the ORM's objects and unit of work cost more
    than the rest of writing a status callback."""
    rows: list[dict[str, Any]] = session.info.pop(_FAST, [])
    if not rows:
        return []
    if fast_path is None:
        await insert_rows(session, rows)
        return []
    earlier = await session.execute(_PENDING_REFS, {"refs": sorted({r["ref"] for r in rows})})
    pending = {(ref, url) for ref, url in earlier}
    secrets = await webhook_secrets(session, {r["account_id"] for r in rows})
    until, token = fast_path.lease()
    leased: list[dict[str, Any]] = []
    behind: list[tuple[str, str]] = []
    for row in rows:
        key = (row["ref"], row["url"])
        if key in pending:
            behind.append(key)
            continue
        pending.add(key)  # a later one for the same subject in this transaction waits for it
        row["claimed_until"], row["claimed_by"] = until, token
        leased.append(row)
    await insert_rows(session, rows)
    session.info[_COUNT] = written(session) - len(leased)
    if behind:
        fast_path.wait_behind(behind)
    return [Job.of(row, secrets[row["account_id"]]) for row in leased]


async def insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Writes deliveries made by form_row/json_row, in order, and sets each row's "id"."""
    # Matched by uid: asking RETURNING for row order would make SQLite insert one row at a time.
    ids: dict[str, int] = {uid: row_id for uid, row_id in await session.execute(_INSERT_IDS, rows)}
    for row in rows:
        row["id"] = ids[row["uid"]]


async def webhook_secrets(session: AsyncSession, account_ids: set[int]) -> dict[int, str]:
    """Each account's webhook secret, for deliveries handed to a FastPath (offer() takes it)."""
    rows = await session.execute(_SECRETS, {"accounts": sorted(account_ids)})
    return {account_id: secret for account_id, secret in rows}


def hand_over(
    session: AsyncSession,
    leased: Sequence[Job],
    fast_path: FastPath | None,
    wake: Callable[[], None],
    wake_esme: Callable[[Iterable[int]], None] = lambda accounts: None,
) -> None:
    """After the commit of `session`: its leased deliveries to the fast path, a wake-up for
    the sender if it wrote any for the table, and one for the bound receivers of the accounts
    it wrote ESME deliveries for (the SMPP server's, on this node)."""
    if leased and fast_path is not None:
        fast_path.offer(list(leased))
    if written(session):
        wake()
    if accounts := session.info.pop(_ESME, None):
        wake_esme(accounts)


class FastPath(Protocol):
    """A sender that takes freshly written deliveries straight from the committing code.

    The row is written already leased to the sender (claimed_until/claimed_by), so no claim
    query stands between the commit and the POST; if the node dies first, the lease runs
    out and any node delivers it from the table as usual.
    """

    def lease(self) -> tuple[datetime, str]: ...

    def offer(self, jobs: list[Job]) -> None:
        """Committed deliveries leased to this sender."""

    def wait_behind(self, keys: list[tuple[str, str]]) -> None:
        """(ref, url) of deliveries written for the table behind one leased to the fast path:
        the sender looks in the table once that one is recorded."""


def form_row(
    *,
    account_id: int,
    kind: str,
    ref: str,
    url: str,
    fields: dict[str, str],
    lease: tuple[datetime, str] | None = None,
) -> dict[str, Any]:
    """A form-encoded delivery (as Xoxzo posts inbound SMS to action_url), as the row to insert:
    every column set, so the caller knows the whole row without reading it back. A leased row
    goes to the FastPath after the commit; any other, the caller counts (count())."""
    body = urlencode(fields)
    return _row(account_id, kind, ref, url, body, "application/x-www-form-urlencoded", lease)


def json_row(
    *,
    account_id: int,
    kind: str,
    ref: str,
    url: str,
    payload: dict[str, Any],
    lease: tuple[datetime, str] | None = None,
) -> dict[str, Any]:
    """`form_row` for a JSON delivery (Sinch's mo_text)."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return _row(account_id, kind, ref, url, body, "application/json", lease)


def _row(
    account_id: int,
    kind: str,
    ref: str,
    url: str,
    body: str,
    content_type: str,
    lease: tuple[datetime, str] | None,
) -> dict[str, Any]:
    now = utcnow()
    return {
        "uid": uuid.uuid4().hex,
        "account_id": account_id,
        "kind": kind,
        "ref": ref,
        "url": url,
        "receiver_host": receiver_host(url),
        "body": body,
        "content_type": content_type,
        "status": "PENDING",
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_until": lease[0] if lease else None,
        "claimed_by": lease[1] if lease else None,
        "created_at": now,
        "done_at": None,
        "last_status_code": None,
        "last_error": None,
    }


def sign(secret: str, timestamp: str, delivery_id: str, body: bytes) -> str:
    """X-Gateway-Signature-256: `v1=` and the hex HMAC-SHA256 of `{timestamp}.{delivery_id}.{body}`
    (the X-Gateway-Timestamp and X-Gateway-Delivery-Id header values, then the raw body).

    The dots make the split unambiguous (the timestamp is digits, the id hex), and the id is
    signed so that a receiver deduplicating by it also rejects a replay under a fresh id."""
    signed = b".".join((timestamp.encode(), delivery_id.encode(), body))
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_headers(secret: str, delivery_id: str, body: bytes) -> dict[str, str]:
    """X-Gateway-Timestamp (now), X-Gateway-Delivery-Id and X-Gateway-Signature-256 for `body`."""
    ts = str(int(time.time()))
    return {
        "X-Gateway-Timestamp": ts,
        "X-Gateway-Delivery-Id": delivery_id,
        "X-Gateway-Signature-256": sign(secret, ts, delivery_id, body),
    }


def sign_legacy(secret: str, timestamp: str, body: bytes) -> str:
    """X-Gateway-Signature, deprecated: remove in the release after the one adding
    X-Gateway-Signature-256. Hex HMAC-SHA256 over the timestamp immediately followed by the
    body: without a separator, timestamp "1700000000" + body "1..." and "17000000001" + "..."
    sign the same bytes."""
    return hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()
