"""Webhook outbox: a row written in the same transaction as the change it reports, so a
committed status change always produces its callback, even across a crash."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import WebhookDelivery, utcnow


def written(session: AsyncSession) -> int:
    """How many deliveries this session's transaction wrote: wake the sender only if any."""
    count: int = session.info.get("outbox_rows", 0)
    return count


# webhook_deliveries.receiver_host is a String(255).
MAX_HOST_KEY = 255


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


def count(session: AsyncSession) -> None:
    """Note a delivery written for the table (not handed to a FastPath): written() wakes the sender."""
    session.info["outbox_rows"] = written(session) + 1


def enqueue(
    session: AsyncSession, *, account_id: int, kind: str, ref: str, url: str, payload: dict[str, Any]
) -> None:
    count(session)
    row = json_row(account_id=account_id, kind=kind, ref=ref, url=url, payload=payload)
    session.add(WebhookDelivery(**row))


class FastPath(Protocol):
    """A sender that takes freshly written deliveries straight from the committing code.

    The row is written already leased to the sender (claimed_until/claimed_by), so no claim
    query stands between the commit and the POST; if the node dies first, the lease runs
    out and any node delivers it from the table as usual.
    """

    def lease(self) -> tuple[datetime, str]: ...

    def offer(self, rows: list[tuple[WebhookDelivery, str]]) -> None:
        """(committed row, the account's webhook secret) pairs."""


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


def sign_legacy(secret: str, timestamp: str, body: bytes) -> str:
    """X-Gateway-Signature, deprecated: remove in the release after the one adding
    X-Gateway-Signature-256. Hex HMAC-SHA256 over the timestamp immediately followed by the
    body: without a separator, timestamp "1700000000" + body "1..." and "17000000001" + "..."
    sign the same bytes."""
    return hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()
