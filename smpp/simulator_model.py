"""Values and pure helpers behind the SMSC simulator (smpp/simulator.py).

Nothing here touches sockets, so receipt formatting and id rules can be
tested and reasoned about on their own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from smpp.dlr import receipt_text

DLR_MODES = ("tlv", "text", "both", "none")
ID_FORMATS = ("hex", "dec")

# SMPP 3.4 section 5.2.28 message_state values, keyed by the stat word of the text receipt.
MESSAGE_STATES = {
    "ENROUTE": 1,
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "UNKNOWN": 7,
    "REJECTD": 8,
}


def _check_choice(name: str, value: str | None, choices: tuple[str, ...], optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 2775  # 0 = ephemeral; read SmscSimulator.port after start()
    system_id: str = "gateway"
    password: str | None = "secret"  # None = accept any system_id/password
    dlr_delay: float = 0.05  # seconds between submit_sm_resp and the receipt
    dlr_stat: str = "DELIVRD"
    dlr_mode: str = "both"
    id_format: str = "hex"
    dlr_id_format: str | None = None  # None = same as id_format
    # Destinations whose digits start with this get UNDELIV receipts, so a demo can show FAIL:
    # +81 90 9999 xxxx is a valid mobile range, so the gateway's API accepts it.
    fail_prefix: str | None = "81909999"
    max_stored_submits: int = 100_000
    max_pending_deliveries: int = 100_000  # receipts/MO held while no receiver is bound
    redeliver_delay: float = 0.2  # after a deliver_sm_resp with an error status
    max_deliver_attempts: int = 5
    summary_interval: float = 10.0  # seconds between INFO activity summaries; 0 = never
    smsc_system_id: str = "SMSCSIM"  # what we answer in bind_*_resp
    # submit_sm each bind is served per second, like an SMSC that caps every bind; 0 = no cap.
    # A bind over it is not refused: its next PDU is read only when its turn comes.
    bind_rate: float = 0.0
    first_message_id: int | None = None  # None = a random start (see MessageIds)

    def __post_init__(self) -> None:
        _check_choice("dlr_mode", self.dlr_mode, DLR_MODES)
        _check_choice("id_format", self.id_format, ID_FORMATS)
        _check_choice("dlr_id_format", self.dlr_id_format, ID_FORMATS, optional=True)
        if self.max_deliver_attempts < 1:
            raise ValueError("max_deliver_attempts must be at least 1")


@dataclass
class Behaviour:
    """Runtime knobs (the SmscPeer.configure set); counters are consumed as submits arrive."""

    throttle_next: int = 0
    drop_after: int | None = None
    dlr_mode: str = "both"
    id_format: str = "hex"
    dlr_id_format: str | None = None
    dlr_stat: str = "DELIVRD"
    dlr_delay: float = 0.0
    reject_binds: bool = False
    respond_delay: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("dlr_mode", self.dlr_mode, DLR_MODES)
        _check_choice("id_format", self.id_format, ID_FORMATS)
        _check_choice("dlr_id_format", self.dlr_id_format, ID_FORMATS, optional=True)
        if self.throttle_next < 0 or (self.drop_after is not None and self.drop_after < 1):
            raise ValueError("throttle_next must be >= 0 and drop_after >= 1 (or None)")

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> Behaviour:
        return cls(
            dlr_mode=config.dlr_mode,
            id_format=config.id_format,
            dlr_id_format=config.dlr_id_format,
            dlr_stat=config.dlr_stat,
            dlr_delay=config.dlr_delay,
        )


@dataclass(frozen=True)
class AcceptedSubmit:
    """A submit_sm the simulator accepted (throttled ones are not recorded)."""

    source_addr: str
    source_addr_ton: int
    destination_addr: str
    data_coding: int
    esm_class: int
    registered_delivery: int
    short_message: bytes  # raw octets, UDH included; message_payload when short_message was empty
    message_id: str
    system_id: str
    received_at: datetime
    peer: str = ""  # the bind's address (host:port): which of an ESME's binds sent it


@dataclass
class SimulatorStats:
    """Running counters; SmscSimulator.stats hands out copies."""

    submits: int = 0
    throttled: int = 0
    receipts_delivered: int = 0  # acknowledged with ESME_ROK
    mo_delivered: int = 0
    delivery_errors: int = 0  # deliver_sm answered with an error status
    binds: int = 0


class MessageIds:
    """Unique message numbers, rendered per context.

    The counter starts at a random point so a restarted simulator does not hand
    out ids the gateway already stored for earlier messages (it would match
    receipts to the wrong rows). 40 bits keep hex ids a fixed 10 characters.
    """

    def __init__(self, start: int | None = None) -> None:
        self._next = start if start is not None else (1 << 36) + secrets.randbelow(1 << 38)

    def next_number(self) -> int:
        number = self._next
        self._next += 1
        return number


def format_message_id(number: int, id_format: str) -> str:
    return f"{number:010x}" if id_format == "hex" else str(number)


def wants_receipt(registered_delivery: int, stat: str) -> bool:
    """SMPP 3.4 5.2.17: bit 0 = receipt on any final outcome, bit 1 = on failure only."""
    requested = registered_delivery & 0x03
    return requested == 1 or (requested == 2 and stat != "DELIVRD")


def receipt_stat(destination: str, configured: str, fail_prefix: str | None) -> str:
    if fail_prefix and destination.lstrip("+").startswith(fail_prefix):
        return "UNDELIV"
    return configured


def message_preview(short_message: bytes, data_coding: int, esm_class: int, limit: int = 20) -> str:
    """The `text:` field of a receipt: the first characters of the message, ASCII-safe."""
    body = short_message
    if esm_class & 0x40 and body:
        body = body[1 + body[0] :]  # skip the UDH so concatenated parts preview their text
    text = body.decode("utf-16-be", "replace") if data_coding == 0x08 else body.decode("latin-1")
    return text[:limit].encode("ascii", "replace").decode("ascii")


def address_fields(address: str) -> tuple[str, int, int]:
    """(addr, ton, npi) for an address we originate: digits are international E.164."""
    digits = address.lstrip("+")
    if digits.isdigit():
        return digits, 1, 1
    return address, 5, 0  # alphanumeric sender id


@dataclass(frozen=True)
class Receipt:
    """Everything a delivery receipt needs, captured when the submit was accepted."""

    tlv_id: str  # as returned in submit_sm_resp
    text_id: str  # as written in the text body (may differ: some SMSCs mix hex and decimal)
    stat: str
    mode: str
    handset: str  # the original destination, the receipt's source
    sender: str  # the original source, the receipt's destination
    submitted_at: datetime
    preview: str

    def text(self, done_at: datetime) -> bytes:
        err = "000" if self.stat == "DELIVRD" else "001"
        return receipt_text(self.text_id, self.stat, err, self.submitted_at, done_at, self.preview)

    def deliver_sm_fields(self, done_at: datetime) -> dict[str, object]:
        source, source_ton, source_npi = address_fields(self.handset)
        dest, dest_ton, dest_npi = address_fields(self.sender)
        fields: dict[str, object] = {
            "service_type": "",
            "source_addr_ton": source_ton,
            "source_addr_npi": source_npi,
            "source_addr": source,
            "dest_addr_ton": dest_ton,
            "dest_addr_npi": dest_npi,
            "destination_addr": dest,
            "esm_class": 0x04,  # SMSC delivery receipt
            "data_coding": 0,
            "short_message": self.text(done_at) if self.mode in ("text", "both") else b"",
        }
        if self.mode in ("tlv", "both"):
            fields["receipted_message_id"] = self.tlv_id
            fields["message_state"] = MESSAGE_STATES.get(self.stat, MESSAGE_STATES["UNKNOWN"])
        return fields


def utc_now() -> datetime:
    return datetime.now(UTC)
