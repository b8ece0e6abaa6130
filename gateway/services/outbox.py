"""Webhook outbox: a row written in the same transaction as the change it reports, so a
committed status change always produces its callback, even across a crash."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import WebhookDelivery


def enqueue(
    session: AsyncSession, *, account_id: int, kind: str, ref: str, url: str, payload: dict[str, Any]
) -> None:
    session.add(
        WebhookDelivery(
            account_id=account_id,
            kind=kind,
            ref=ref,
            url=url,
            body=json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        )
    )


def enqueue_form(
    session: AsyncSession, *, account_id: int, kind: str, ref: str, url: str, fields: dict[str, str]
) -> None:
    """Form-encoded webhook, as Xoxzo posts inbound SMS to action_url."""
    session.add(
        WebhookDelivery(
            account_id=account_id,
            kind=kind,
            ref=ref,
            url=url,
            body=urlencode(fields),
            content_type="application/x-www-form-urlencoded",
        )
    )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """X-Gateway-Signature: hex HMAC-SHA256 over the timestamp header value followed by the raw body."""
    return hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).hexdigest()
