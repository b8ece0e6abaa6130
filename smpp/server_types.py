"""The narrow typed interface between the SMPP server (smpp/server.py) and the gateway.

The server speaks SMPP 3.4 to customers' own SMPP clients (ESMEs) and never sees the gateway:
it asks an EsmeBackend to check a bind, to queue a submit (which answers our message id only
once the message is durably stored, or refuses it with an SMPP status), for the state of a
message (query_sm), and for the receipts and MO waiting for a bound receiver, which it
acknowledges one by one. Plain data both ways.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# SMPP 3.4 command_status values a backend answers with (5.1.3).
ESME_RINVMSGLEN = 0x01
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RINVMSGID = 0x0C
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RSUBMITFAIL = 0x45
ESME_RTHROTTLED = 0x58
ESME_RINVSCHED = 0x61
ESME_RINVEXPIRY = 0x62
ESME_RX_T_APPN = 0x64
ESME_RX_P_APPN = 0x65


class EsmeRefused(Exception):
    """A bind or submit refused with this SMPP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class EsmeSubmit:
    """One submit_sm, decoded. A part of a long message carries its concatenation (UDH or
    sar_* TLVs); reassembly is the backend's job."""

    source: str
    destination: str
    text: str
    receipt: int  # registered_delivery: 0 none, 1 a final receipt, 2 only a failure
    binary_coding: int | None = None  # data_coding 2 or 4: `text` is the octets in hex
    concat_ref: int | None = None
    concat_total: int = 1
    concat_seq: int = 1
    schedule_at: datetime | None = None  # schedule_delivery_time, absolute or relative, in UTC
    expire_at: datetime | None = None  # validity_period


@dataclass(frozen=True)
class EsmeDelivery:
    """A deliver_sm waiting for a bound receiver: a delivery receipt or an MO."""

    id: int  # the backend's, handed back when the ESME acknowledged it
    source: str
    destination: str
    text: str
    # A receipt: our message id, its final state (SMPP message_state: 2 DELIVERED, 5
    # UNDELIVERABLE, 3 EXPIRED...) and the receipt text's stat word and dates.
    receipted_id: str | None = None
    message_state: int | None = None
    stat: str = ""
    err: str = "000"
    submitted_at: datetime | None = None
    done_at: datetime | None = None


@dataclass(frozen=True)
class EsmeMessageState:
    """A query_sm's answer: SMPP message_state (1 ENROUTE, 2 DELIVERED, 3 EXPIRED, 5
    UNDELIVERABLE) and, once final, when it became so."""

    state: int
    final_at: datetime | None = None


class EsmeBackend(Protocol):
    async def authenticate(self, system_id: str, password: str) -> object:
        """The bound account, opaque to the server; EsmeRefused (ESME_RINVPASWD...) otherwise."""
        ...

    def account_key(self, account: object) -> Hashable:
        """The same for every bind of one account: its sessions share the account's caps, and
        EsmeServer.wake(key) reaches its receivers."""
        ...

    async def submit(self, account: object, submit: EsmeSubmit) -> str:
        """Our message id once the message is committed; EsmeRefused for a refusal."""
        ...

    async def query(self, account: object, message_id: str) -> EsmeMessageState:
        """The state of the account's message; EsmeRefused (ESME_RINVMSGID) for any other id."""
        ...

    async def claim(self, account: object, session: str, limit: int) -> list[EsmeDelivery]:
        """Up to `limit` deliveries for this account's receiver `session`, which holds them
        until it acknowledges (done) or gives them back (release)."""
        ...

    async def done(self, account: object, delivery_ids: list[int]) -> None: ...

    async def release(self, account: object, delivery_ids: list[int]) -> None: ...
