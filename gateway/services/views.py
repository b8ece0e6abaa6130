"""JSON shapes of stored rows, as the Xoxzo API returns them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.db.models import Call, Message, Recording, Template, TrackedLink, Voicemail


def fmt_time(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def message_json(
    msg: Message, base_url: str, links: Sequence[TrackedLink] = (), template_uid: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "msgid": msg.msgid,
        "status": msg.status,
        "recipient": msg.recipient,
        "sender": msg.sender,
        "parts": msg.parts,
        "cost": float(msg.cost),
        "sent_time": fmt_time(msg.sent_time),
        "tags": [t for t in msg.tags.split(",") if t],
        "url": f"{base_url}/sms/messages/{msg.msgid}/",
        "smsc": msg.smsc,  # the connector that took (or refused) it
    }
    if template_uid is not None:
        out["template_id"] = template_uid
    if msg.track_link:
        out["link_tracking"] = [
            {
                "url": link.url,
                "short_url": f"{base_url}/l/{link.code}",
                "first_access_time": fmt_time(link.first_access_at),
                "access_count": link.access_count,
            }
            for link in links
        ]
    return out


def template_json(t: Template) -> dict[str, Any]:
    return {
        "template_id": t.uid,
        "name": t.name,
        "content": t.content,
        "status": t.status,
        "created_at": fmt_time(t.created_at),
        "updated_at": fmt_time(t.updated_at),
    }


def call_json(c: Call) -> dict[str, Any]:
    return {
        "callid": c.uid,
        "direction": c.direction,
        "status": c.status,
        "caller": c.caller,
        "recipient": c.recipient,
        "start_time": fmt_time(c.started_at),
        "answer_time": fmt_time(c.answered_at),
        "end_time": fmt_time(c.ended_at),
        "duration": c.duration,
        "cost": float(c.cost),
        "actions": json.loads(c.actions or "[]"),
        "result": c.result,
        "transfer_status": c.transfer_status,
        "transfer_seconds": None if c.transfer_seconds is None else float(c.transfer_seconds),
        "error": c.error,
        "steps": json.loads(c.steps) if c.steps else [],
    }


def voicemail_json(v: Voicemail, call_uid: str) -> dict[str, Any]:
    return _audio_json("voicemail", v, call_uid, "")


def recording_json(rec: Recording, call_uid: str, base_url: str = "") -> dict[str, Any]:
    """A recording as the API and its webhook show it (`audio_url` absolute in the webhook)."""
    return _audio_json("recording", rec, call_uid, base_url)


def _audio_json(kind: str, row: Voicemail | Recording, call_uid: str, base_url: str) -> dict[str, Any]:
    return {
        f"{kind}_id": row.uid,
        "callid": call_uid,
        "caller": row.caller,
        "recipient": row.recipient,
        "duration": float(row.duration),
        "size": row.size,
        "created_at": fmt_time(row.created_at),
        "audio_url": f"{base_url}/voice/{kind}s/{row.uid}/audio",
    }
