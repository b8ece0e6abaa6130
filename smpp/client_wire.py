"""PDU-level helpers for the ESME: command ids, statuses, smpplib encode/parse, deliver_sm.

This is the only module that touches smpplib's untyped PDU objects; everything
it returns is bytes, ints or plain dataclasses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from smpplib import consts as smpp_consts
from smpplib import smpp as smpp_codec

# Command ids, used to dispatch on the raw header without a full parse.
GENERIC_NACK = 0x80000000
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER_RESP = 0x80000009
ENQUIRE_LINK = 0x00000015
ALERT_NOTIFICATION = 0x00000102
RESPONSE_BIT = 0x80000000

ESME_ROK = 0x00
ESME_RINVCMDID = 0x03
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RX_P_APPN = 0x65
RETRYABLE_SUBMIT_STATUSES = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})

# TLV tags read from deliver_sm (SMPP 3.4 5.3.2).
TAG_RECEIPTED_MESSAGE_ID = 0x001E
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F
TAG_NETWORK_ERROR_CODE = 0x0423
TAG_MESSAGE_PAYLOAD = 0x0424
TAG_MESSAGE_STATE = 0x0427

HEADER = struct.Struct(">LLLL")
MAX_PDU_LENGTH = 64 * 1024  # far above any legal PDU; larger means a desynchronised stream


class SequenceGenerator:
    """The `client=` object smpplib's PDU classes draw sequence numbers from."""

    def __init__(self) -> None:
        self.sequence = 0

    def next_sequence(self) -> int:
        # 0x7FFFFFFF is the largest sequence_number SMPP allows.
        self.sequence = self.sequence + 1 if self.sequence < 0x7FFFFFFF else 1
        return self.sequence


def encode_request(sequence: SequenceGenerator, command: str, **fields: Any) -> tuple[int, bytes]:
    pdu = smpp_codec.make_pdu(command, client=sequence, **fields)
    return int(pdu.sequence), bytes(pdu.generate())


def encode_response(command: str, seq: int, status: int = ESME_ROK) -> bytes:
    pdu = smpp_codec.make_pdu(command, status=status)
    # make_pdu ignores a sequence= keyword for responses (its setter only fills None
    # attributes and the property never reads None), so set it explicitly.
    pdu.sequence = seq
    return bytes(pdu.generate())


def submit_sm_message_id(data: bytes) -> str:
    """message_id of a submit_sm_resp."""
    pdu = smpp_codec.parse_pdu(data, sequence=0, allow_unknown_opt_params=True)
    raw = pdu.message_id
    if isinstance(raw, bytes):
        return raw.decode("latin-1")
    return str(raw or "")


def status_description(status: int) -> str:
    return str(smpp_consts.DESCRIPTIONS.get(status, "unknown status"))


@dataclass(frozen=True)
class DeliverSm:
    """The fields of a deliver_sm the adapter needs, TLVs as raw octets by tag."""

    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]

    def tlv_int(self, tag: int) -> int | None:
        value = self.tlvs.get(tag)
        return int.from_bytes(value, "big") if value else None

    def tlv_cstr(self, tag: int) -> str | None:
        value = self.tlvs.get(tag)
        # Tolerate a missing NUL: some SMSCs send the id without one.
        return value.split(b"\x00", 1)[0].decode("latin-1") if value is not None else None


def _deliver_sm_mandatory_end(body: bytes) -> int:
    """Offset in the body where the TLVs of a deliver_sm start; ValueError if malformed."""
    pos = 0

    def skip_cstring() -> None:
        nonlocal pos
        pos = body.index(b"\x00", pos) + 1

    skip_cstring()  # service_type
    pos += 2  # source ton, npi
    skip_cstring()  # source_addr
    pos += 2  # dest ton, npi
    skip_cstring()  # destination_addr
    pos += 3  # esm_class, protocol_id, priority_flag
    skip_cstring()  # schedule_delivery_time
    skip_cstring()  # validity_period
    pos += 4  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    if pos >= len(body):
        raise ValueError("deliver_sm truncated before sm_length")
    pos += 1 + body[pos]
    if pos > len(body):
        raise ValueError("deliver_sm short_message overruns the PDU")
    return pos


def _parse_tlvs(data: bytes) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        tag, length = struct.unpack_from(">HH", data, pos)
        tlvs[tag] = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
    return tlvs


def parse_deliver_sm(data: bytes) -> DeliverSm:
    """Mandatory fields through smpplib, TLVs by our own scan.

    smpplib raises on TLVs it knows globally but not for deliver_sm and drops
    the last octet of a C-string TLV that lacks its NUL; neither must lose a
    receipt, so it only ever sees the mandatory part.
    """
    body = data[16:]
    end = _deliver_sm_mandatory_end(body)
    mandatory = struct.pack(">L", 16 + end) + data[4:16] + body[:end]
    pdu = smpp_codec.parse_pdu(mandatory, sequence=0, allow_unknown_opt_params=True)

    def text(value: Any) -> str:
        return value.decode("latin-1") if isinstance(value, bytes) else str(value or "")

    return DeliverSm(
        source_addr=text(pdu.source_addr),
        destination_addr=text(pdu.destination_addr),
        esm_class=int(pdu.esm_class or 0),
        data_coding=int(pdu.data_coding or 0),
        short_message=bytes(pdu.short_message or b""),
        tlvs=_parse_tlvs(body[end:]),
    )
