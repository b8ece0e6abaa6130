"""The narrow typed interface between the SMPP adapter and the gateway core.

The core never sees PDUs: it hands the adapter a SubmitRequest and gets back
SMSC message ids, and it receives DeliveryReceipt / MoPart events through the
SmppEvents protocol. Everything here is plain data so both sides can be tested
without the other.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """One message to submit; a retry of a long message sends the same request again with the
    parts the SMSC already accepted in `skip_parts`, so only the rest goes out, under the same
    concatenation reference (the handset assembles parts from both attempts)."""

    ref: str  # our msgid, used for logging and, without concat_ref, to derive the reference
    source: str  # alphanumeric sender id or digits (a leading + is stripped for the PDU)
    destination: str  # E.164 with leading +
    text: str
    want_receipt: bool = True
    # 8-bit UDH concatenation reference (1..255) for a long message; None derives it from
    # `ref`. Either way every attempt at one message must use the same one.
    concat_ref: int | None = None
    skip_parts: frozenset[int] = frozenset()  # part numbers (from 1) accepted by an earlier attempt
    flash: bool = False  # message class 0: the handset shows it at once and need not store it
    # validity_period: the SMSC gives up delivering after this moment (timezone-aware).
    valid_until: datetime | None = None
    # 8-bit data (an ESME's binary submit): these octets go out as they are with this
    # data_coding, and `text` is not used.
    binary: bytes | None = None
    binary_coding: int = 0x04


@dataclass(frozen=True)
class SubmitResult:
    smsc_ids: tuple[str, ...]  # one per part this call sent, in part order, as the SMSC returned them
    seqs: tuple[int, ...] = ()  # their part numbers (from 1); () means parts 1..len(smsc_ids)

    def numbered(self) -> tuple[tuple[int, str], ...]:
        """(part number, SMSC id) for each part this call sent."""
        seqs = self.seqs or tuple(range(1, len(self.smsc_ids) + 1))
        return tuple(zip(seqs, self.smsc_ids, strict=True))


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
    """The session dropped with this submit in flight; outcome unknown, retry it.

    `accepted` maps the part numbers the SMSC did accept before the drop (in this call) to their
    SMSC ids: a retry passes them as SubmitRequest.skip_parts. The part that was on the wire is
    not among them; the SMSC may or may not have taken it.
    """

    def __init__(self, reason: str, accepted: Mapping[int, str] | None = None) -> None:
        super().__init__(reason)
        self.accepted: dict[int, str] = dict(accepted or {})


class Deferred(SmppError):
    """A submit given up at once because another connector may take it: the SMSC throttled it
    or answered with a transient error, or this bind is pausing after a throttling answer.
    Nothing of the message was accepted by this call."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class StoreUnavailable(SmppError):
    """Raised by an SmppEvents handler that cannot store the PDU right now (its database is
    unreachable) and has reported that itself: the SMSC is asked to redeliver, without a
    traceback per PDU."""


class SubmitRejected(SmppError):
    """The SMSC answered submit_sm with a permanent error status."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(f"submit_sm rejected: 0x{status:08x} {description}")
        self.status = status
        self.description = description
