"""The narrow typed interface between the SMPP adapter and the gateway core.

The core never sees PDUs: it hands the adapter a SubmitRequest and gets back
SMSC message ids, and it receives DeliveryReceipt / MoPart events through the
SmppEvents protocol. Everything here is plain data so both sides can be tested
without the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol


class ReceiptState(Enum):
    """Where a delivery receipt leaves a message part."""

    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    # Intermediate receipts (ENROUTE, ACCEPTED...) keep the part in flight.
    PENDING = "PENDING"


@dataclass(frozen=True)
class SubmitRequest:
    ref: str  # our msgid, used for logging and the concatenation reference seed
    source: str  # alphanumeric sender id or digits (a leading + is stripped for the PDU)
    destination: str  # E.164 with leading +
    text: str
    want_receipt: bool = True


@dataclass(frozen=True)
class SubmitResult:
    smsc_ids: tuple[str, ...]  # one per part, in part order, as the SMSC returned them


@dataclass(frozen=True)
class DeliveryReceipt:
    smsc_id: str  # the id as it arrived (receipted_message_id TLV, else text `id:`)
    state: ReceiptState
    stat: str  # raw stat word, e.g. DELIVRD, UNDELIV, EXPIRED
    err: str | None = None
    done_at: datetime | None = None


@dataclass(frozen=True)
class MoPart:
    """One mobile-originated deliver_sm, decoded; reassembly is the core's job."""

    source: str
    destination: str
    text: str
    concat_ref: int | None = None  # UDH / sar reference, None for a single part
    concat_total: int = 1
    concat_seq: int = 1
    received_at: datetime | None = None


class SmppEvents(Protocol):
    async def on_receipt(self, receipt: DeliveryReceipt) -> None: ...

    async def on_mo(self, part: MoPart) -> None: ...

    def on_bind_state(self, bound: bool) -> None: ...


class SmppError(Exception):
    """Base for adapter errors the core reacts to."""


class NotBound(SmppError):
    """No bound session right now; the message stays queued and is retried."""


class ConnectionLost(SmppError):
    """The session dropped with this submit in flight; outcome unknown, retry it."""


class SubmitRejected(SmppError):
    """The SMSC answered submit_sm with a permanent error status."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(f"submit_sm rejected: 0x{status:08x} {description}")
        self.status = status
        self.description = description
