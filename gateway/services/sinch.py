"""The Sinch XMS JSON shapes of stored rows (batches, delivery reports, inbound SMS), used by the
/xms/ routes and by the callbacks alike, and how a message's state reads as a Sinch delivery
status and code.

Numbers are digits without +, times ISO-8601 UTC with milliseconds, as Sinch writes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, get_args

from gateway.db.models import Batch, InboundMessage, Message

MAX_RECIPIENTS = 1000
REPORT_TYPES = ("none", "summary", "full", "per_recipient", "per_recipient_final")
PER_RECIPIENT = ("per_recipient", "per_recipient_final")
BATCH_REPORT = ("summary", "full")

# The codes of the failures the gateway decides itself (messages.fail_code), as Sinch numbers them.
UNROUTABLE = 402  # the recipient opted out of the account's messages
UNMATCHED_PARAMETER = 405
EXPIRED = 406
CANCELLED = 407
REJECTED = 408  # the SMSC refused the submit
PARTS_LIMIT = 411
QUEUED_CODE = 400
DISPATCHED_CODE = 401
DELIVERED_CODE = 0

# Sinch's own codes go with one status each (its table of delivery report error codes): every
# one of them is Aborted but Cancelled, Internal Expiry and Internal Reject included.
_OWN_STATUS = {CANCELLED: "Cancelled"}
# A FAIL an SMSC receipt decided: its stat word gives the status; its error code (SMPP 3.4
# appendix B `err:`, or the network_error_code TLV) is the code, as Sinch passes it on.
_RECEIPT_STATUS = {
    "EXPIRED": "Expired",
    "REJECTD": "Rejected",
    "REJECTED": "Rejected",
    "DELETED": "Deleted",
    "UNKNOWN": "Unknown",
}
# A receipt without an error code (or with 0) gets the own code closest to its stat: never 0,
# which is Delivered's.
_RECEIPT_FALLBACK = {"Expired": EXPIRED, "Rejected": REJECTED}
_ERROR_CODE = re.compile(r"(?:[0-9]{1,3}:)?([0-9]{1,9})")
SinchStatus = Literal[
    "Queued",
    "Dispatched",
    "Aborted",
    "Cancelled",
    "Rejected",
    "Deleted",
    "Delivered",
    "Failed",
    "Expired",
    "Unknown",
]
STATUSES: tuple[str, ...] = get_args(SinchStatus)
FINAL_STATUSES = frozenset(STATUSES) - {"Queued", "Dispatched"}


class Outcome(NamedTuple):
    status: str  # one of STATUSES
    code: int


class Receipt(NamedTuple):
    """A failed part's receipt, as stored (message_parts.stat, .err)."""

    stat: str
    err: str | None


def receipt_outcome(receipt: Receipt) -> Outcome:
    status = _RECEIPT_STATUS.get(receipt.stat, "Failed")
    found = _ERROR_CODE.fullmatch(receipt.err or "")
    code = int(found.group(1)) if found else 0
    return Outcome(status, code or _RECEIPT_FALLBACK.get(status, UNROUTABLE))


def outcome(msg: Message, receipts: Sequence[Receipt] = ()) -> Outcome:
    """A batch message's Sinch status and code. `receipts`: its parts' failed receipts, which
    say how a FAIL the SMSC reported went (the first one tells)."""
    if msg.status == "QUEUED":
        return Outcome("Queued", QUEUED_CODE)
    if msg.status == "DELIVERING":
        return Outcome("Dispatched", DISPATCHED_CODE)
    if msg.status == "DELIVERED":
        return Outcome("Delivered", DELIVERED_CODE)
    if msg.fail_code is not None:
        return Outcome(_OWN_STATUS.get(msg.fail_code, "Aborted"), msg.fail_code)
    if not receipts:  # failed before any part reached the SMSC: the submit was refused
        return Outcome("Aborted", REJECTED)
    return receipt_outcome(receipts[0])


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def digits(number: str) -> str:
    return number.removeprefix("+")


def recipients_of(batch: Batch) -> list[str]:
    out: list[str] = json.loads(batch.recipients)
    return out


def parameters_of(batch: Batch) -> dict[str, dict[str, str]] | None:
    out: dict[str, dict[str, str]] | None = json.loads(batch.parameters) if batch.parameters else None
    return out


def batch_json(batch: Batch) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": batch.uid,
        "to": [digits(n) for n in recipients_of(batch)],
        "from": digits(batch.sender),
        "canceled": batch.canceled,
        "body": batch.body,
        "type": "mt_text",
        "created_at": iso(batch.created_at),
        "modified_at": iso(batch.modified_at),
        "delivery_report": batch.delivery_report,
        "expire_at": iso(batch.expire_at),
        "flash_message": batch.flash_message,
        "feedback_enabled": batch.feedback_enabled,
        "truncate_concat": batch.truncate_concat,
    }
    if (parameters := parameters_of(batch)) is not None:
        out["parameters"] = parameters
    if batch.send_at is not None:
        out["send_at"] = iso(batch.send_at)
    if batch.callback_url is not None:
        out["callback_url"] = batch.callback_url
    if batch.client_reference is not None:
        out["client_reference"] = batch.client_reference
    if batch.max_parts is not None:
        out["max_number_of_message_parts"] = batch.max_parts
    return out


def status_time(msg: Message) -> datetime:
    """When the message reached its present status."""
    return msg.done_at or msg.sent_time or msg.created_at


def recipient_report(batch: Batch, msg: Message, result: Outcome) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "recipient_delivery_report_sms",
        "batch_id": batch.uid,
        "recipient": digits(msg.recipient),
        "code": result.code,
        "status": result.status,
        "at": iso(status_time(msg)),
    }
    if batch.client_reference is not None:
        out["client_reference"] = batch.client_reference
    if batch.max_parts is not None:
        out["number_of_message_parts"] = msg.parts
    return out


def batch_report(
    batch: Batch, results: Iterable[tuple[str, Outcome]], *, full: bool, total: int
) -> dict[str, Any]:
    """`results`: (recipient, outcome) of the messages to count; `total`: the batch's messages."""
    groups: dict[Outcome, list[str]] = {}
    for recipient, result in results:
        groups.setdefault(result, []).append(digits(recipient))
    statuses = []
    for result in sorted(groups, key=lambda r: (STATUSES.index(r.status), r.code)):
        entry: dict[str, Any] = {"code": result.code, "status": result.status, "count": len(groups[result])}
        if full:
            entry["recipients"] = groups[result]
        statuses.append(entry)
    out: dict[str, Any] = {
        "type": "delivery_report_sms",
        "batch_id": batch.uid,
        "total_message_count": total,
        "statuses": statuses,
    }
    if batch.client_reference is not None:
        out["client_reference"] = batch.client_reference
    return out


def inbound_json(row: InboundMessage) -> dict[str, Any]:
    return mo_text(
        row.uid, row.sender, row.recipient, row.body, row.received_at, row.operator_id, row.client_reference
    )


def mo_text(
    uid: str,
    sender: str,
    recipient: str,
    body: str,
    received_at: datetime,
    operator_id: str | None,
    client_reference: str | None,
) -> dict[str, Any]:
    """An inbound SMS as Sinch lists it and POSTs it (`mo_text`)."""
    return {
        "type": "mo_text",
        "id": uid,
        "from": digits(sender),
        "to": digits(recipient),
        "body": body,
        "received_at": iso(received_at),
        "sent_at": iso(received_at),
        "operator_id": operator_id,
        "client_reference": client_reference,
    }


_PARAMETER = re.compile(r"\$\{([^${}]+)\}")


def render(body: str, recipient: str, parameters: Mapping[str, Mapping[str, str]] | None) -> str | None:
    """The body for one recipient, each `${name}` replaced by that parameter's value for the
    recipient (its E.164 key with or without +) or else its `default`; None when a parameter
    the body uses has neither. A name the parameters do not define is left as written."""
    if not parameters:
        return body
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        values = parameters.get(match.group(1))
        if values is None:
            return match.group(0)
        for key in (recipient, digits(recipient), "default"):
            if key in values:
                return values[key]
        missing = True
        return ""

    out = _PARAMETER.sub(value, body)
    return None if missing else out
