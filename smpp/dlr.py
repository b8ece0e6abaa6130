"""Delivery receipt parsing and SMSC message id matching. Pure functions only.

A receipt names its message through the receipted_message_id TLV, through the
`id:` field of the de-facto standard text (SMPP 3.4 appendix B), or both. SMSCs
disagree on the id's radix between submit_sm_resp and the receipt, so matching
goes through normalize_id / candidate_ids rather than string equality.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from smpp.types import DeliveryReceipt, ReceiptState

# esm_class message type bits (bits 5..2) of a deliver_sm.
ESM_TYPE_MASK = 0x3C
ESM_SMSC_RECEIPT = 0x04
ESM_SME_DELIVERY_ACK = 0x08
ESM_INTERMEDIATE = 0x20

# message_state TLV values (SMPP 3.4 5.2.28) -> the stat word a text receipt would carry.
_MESSAGE_STATE_STAT = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
    9: "SKIPPED",  # SMPP 5.0
}

_STAT_STATE = {
    "DELIVRD": ReceiptState.DELIVERED,
    "DELIVERED": ReceiptState.DELIVERED,
    "UNDELIV": ReceiptState.FAILED,
    "UNDELIVERABLE": ReceiptState.FAILED,
    "EXPIRED": ReceiptState.FAILED,
    "REJECTD": ReceiptState.FAILED,
    "REJECTED": ReceiptState.FAILED,
    "DELETED": ReceiptState.FAILED,
    "UNKNOWN": ReceiptState.FAILED,
    "SKIPPED": ReceiptState.FAILED,
    "FAILED": ReceiptState.FAILED,
    "ENROUTE": ReceiptState.PENDING,
    "ACCEPTD": ReceiptState.PENDING,
    "ACCEPTED": ReceiptState.PENDING,
    "BUFFRED": ReceiptState.PENDING,
    "SCHEDULED": ReceiptState.PENDING,
}

# Everything before " text:" holds the fields; the free text may itself contain "id:".
_TEXT_SPLIT = re.compile(r"(?:^|\s)text:", re.IGNORECASE)
_FIELDS = {
    "id": re.compile(r"(?:^|\s)id:\s*(\S+)", re.IGNORECASE),
    "sub": re.compile(r"(?:^|\s)sub:\s*(\S+)", re.IGNORECASE),
    "dlvrd": re.compile(r"(?:^|\s)dlvrd:\s*(\S+)", re.IGNORECASE),
    "submit_date": re.compile(r"(?:^|\s)submit[ _]date:\s*(\d+)", re.IGNORECASE),
    "done_date": re.compile(r"(?:^|\s)done[ _]date:\s*(\d+)", re.IGNORECASE),
    "stat": re.compile(r"(?:^|\s)stat:\s*(\S+)", re.IGNORECASE),
    "err": re.compile(r"(?:^|\s)err:\s*(\S+)", re.IGNORECASE),
}
# Digit ids are at most this long before radix conversion is pointless (and slow).
_MAX_NUMERIC_ID = 40
# SMPP 3.4 message_id / receipted_message_id: C-Octet String of at most 65 octets.
MAX_ID_LENGTH = 64
_ID_STRIP = "\x00 \t\r\n"
_HEX_DIGITS = frozenset("0123456789abcdef")


def is_receipt(esm_class: int) -> bool:
    """True for SMSC delivery receipts, SME delivery acks and intermediate notifications."""
    return (esm_class & ESM_TYPE_MASK) in (ESM_SMSC_RECEIPT, ESM_SME_DELIVERY_ACK, ESM_INTERMEDIATE)


def clean_id(raw: str) -> str:
    """An SMSC message id as the SMSC sent it, trimmed and cut to the SMPP maximum.

    Both submit_sm_resp ids and receipt ids go through here, so an over-long id is cut
    the same way on both sides and still matches; nothing longer reaches storage.
    """
    # A C-Octet String ends at its first NUL.
    return raw.split("\x00", 1)[0].strip(_ID_STRIP)[:MAX_ID_LENGTH].strip(_ID_STRIP)


def receipt_text(
    receipted_id: str, stat: str, err: str, submitted: datetime, done: datetime, preview: str = ""
) -> bytes:
    """The SMPP 3.4 appendix B receipt text an SMSC writes (what parse_receipt_text reads)."""
    return (
        f"id:{receipted_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
        f"submit date:{submitted:%y%m%d%H%M} done date:{done:%y%m%d%H%M} "
        f"stat:{stat} err:{err} text:{preview}"
    ).encode("ascii", "replace")


def parse_receipt_text(text: str) -> dict[str, str]:
    """The key:value fields of a text receipt, keys lowercased with '_' for spaces.

    A NUL separates like a space: some SMSCs terminate the text with one, and no
    field value may carry it on (PostgreSQL cannot store it).
    """
    head = _TEXT_SPLIT.split(text.replace("\x00", " "), maxsplit=1)[0]
    fields: dict[str, str] = {}
    for key, pattern in _FIELDS.items():
        m = pattern.search(head)
        if m:
            fields[key] = m.group(1)
    return fields


def parse_receipt_date(value: str) -> datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss; the SMSC's zone is unknown, UTC is assumed."""
    fmt = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}.get(len(value))
    if fmt is None:
        return None
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    except ValueError:
        return None


def state_for_stat(stat: str) -> ReceiptState:
    # An unrecognised word keeps the part in flight rather than failing it on a guess.
    return _STAT_STATE.get(stat.upper(), ReceiptState.PENDING)


def _network_error(code: bytes | None) -> str | None:
    if not code or len(code) < 3:
        return None
    return f"{code[0]}:{int.from_bytes(code[1:3], 'big')}"


def parse_receipt(
    short_message: bytes,
    receipted_message_id: str | None = None,
    message_state: int | None = None,
    network_error_code: bytes | None = None,
) -> DeliveryReceipt | None:
    """Build a receipt from TLVs and/or text; None when no message id can be found.

    TLVs win over the text where both are present: they are the standard
    carriers and not subject to free-text formatting quirks.
    """
    fields = parse_receipt_text(short_message.decode("latin-1"))
    smsc_id = clean_id(receipted_message_id or "") or clean_id(fields.get("id", ""))
    if not smsc_id:
        return None
    stat = fields.get("stat", "")
    if message_state is not None and message_state in _MESSAGE_STATE_STAT:
        tlv_stat = _MESSAGE_STATE_STAT[message_state]
        if not stat or state_for_stat(stat) is not state_for_stat(tlv_stat):
            stat = tlv_stat
    if not stat:
        stat = "UNKNOWN"
    err = fields.get("err") or _network_error(network_error_code)
    done = fields.get("done_date")
    return DeliveryReceipt(
        smsc_id=smsc_id,
        state=state_for_stat(stat),
        stat=stat.upper(),
        err=err,
        done_at=parse_receipt_date(done) if done else None,
    )


def normalize_id(smsc_id: str) -> str:
    """Canonical form of an SMSC message id: trimmed, lowercase, no leading zeros."""
    s = smsc_id.strip(_ID_STRIP).lower()
    stripped = s.lstrip("0")
    if s and not stripped:
        return "0"
    return stripped


def candidate_ids(smsc_id: str) -> frozenset[str]:
    """Every normalized id a receipt id may have been issued as in submit_sm_resp.

    An all-digit id may be decimal or hex, and a hex id may come back in decimal,
    so the set holds the id itself plus its other-radix readings.
    """
    n = normalize_id(smsc_id)
    out = {n}
    if n and len(n) <= _MAX_NUMERIC_ID:
        if n.isdigit() and n.isascii():
            out.add(format(int(n), "x"))
        if _HEX_DIGITS.issuperset(n):
            out.add(str(int(n, 16)))
    return frozenset(out)
