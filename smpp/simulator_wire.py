"""PDU framing and encoding for the SMSC simulator, on smpplib's codec.

smpplib's PDU classes expect a `client` that hands out sequence numbers; a
SequenceGenerator per session plays that part, so no blocking smpplib Client
is involved.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from smpplib import consts
from smpplib import smpp as smpplib_smpp

HEADER = struct.Struct(">LLLL")
MIN_PDU_LENGTH = HEADER.size
# Far above any legal PDU (a submit_sm tops out near 1 KiB with TLVs) yet small
# enough that a garbage length prefix cannot make us buffer megabytes.
MAX_PDU_LENGTH = 64 * 1024

RESPONSE_BIT = 0x80000000
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015

BIND_MODES = {
    BIND_RECEIVER: "receiver",
    BIND_TRANSMITTER: "transmitter",
    BIND_TRANSCEIVER: "transceiver",
}
# Command ids we parse; anything else is answered with generic_nack before smpplib sees it,
# because smpplib raises on ids it has no class for.
HANDLED = frozenset(
    {
        *BIND_MODES,
        SUBMIT_SM,
        DELIVER_SM_RESP,
        UNBIND,
        UNBIND_RESP,
        ENQUIRE_LINK,
        ENQUIRE_LINK_RESP,
        GENERIC_NACK,
    }
)

ESME_ROK: int = consts.SMPP_ESME_ROK
ESME_RINVCMDLEN: int = consts.SMPP_ESME_RINVCMDLEN
ESME_RINVCMDID: int = consts.SMPP_ESME_RINVCMDID
ESME_RINVBNDSTS: int = consts.SMPP_ESME_RINVBNDSTS
ESME_RALYBND: int = consts.SMPP_ESME_RALYBND
ESME_RBINDFAIL: int = consts.SMPP_ESME_RBINDFAIL
ESME_RINVPASWD: int = consts.SMPP_ESME_RINVPASWD
ESME_RTHROTTLED: int = consts.SMPP_ESME_RTHROTTLED


class FrameError(Exception):
    """The peer sent a length prefix no SMPP PDU can have; the stream cannot be resynchronised."""


class SequenceGenerator:
    """smpplib's `client` duck type: sequence numbers 1..0x7FFFFFFF, wrapping (SMPP 3.4 3.2)."""

    def __init__(self) -> None:
        self._sequence = 0

    @property
    def sequence(self) -> int:
        return self._sequence

    def next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_PDU_LENGTH) -> bytes:
    """One whole PDU; IncompleteReadError at EOF, FrameError on a length outside
    MIN_PDU_LENGTH..limit, checked before a byte of the body is read (a hostile length costs
    nothing)."""
    prefix = await reader.readexactly(4)
    (length,) = struct.unpack(">L", prefix)
    if not MIN_PDU_LENGTH <= length <= limit:
        raise FrameError(f"command_length {length} outside {MIN_PDU_LENGTH}..{limit}")
    return prefix + await reader.readexactly(length - 4)


def header(frame: bytes) -> tuple[int, int, int]:
    """(command_id, command_status, sequence_number)."""
    _, command_id, status, sequence = HEADER.unpack_from(frame)
    return command_id, status, sequence


def parse(frame: bytes, sequences: SequenceGenerator) -> Any:
    return smpplib_smpp.parse_pdu(frame, client=sequences, allow_unknown_opt_params=True)


def response(command: str, sequence: int, status: int = ESME_ROK, **fields: Any) -> bytes:
    pdu = smpplib_smpp.make_pdu(command, client=_NO_SEQUENCES, status=status, **fields)
    # smpplib only honours sequence= when the client has none, so set it afterwards as its Client does.
    pdu.sequence = sequence
    data: bytes = pdu.generate()
    return data


def generic_nack(sequence: int, status: int) -> bytes:
    return response("generic_nack", sequence, status)


def error_response(request_id: int, sequence: int, status: int) -> bytes:
    """A header-only response: SMPP 3.4 omits the body of bind/submit responses that carry an error."""
    return HEADER.pack(MIN_PDU_LENGTH, request_id | RESPONSE_BIT, status, sequence)


def request(command: str, sequences: SequenceGenerator, **fields: Any) -> tuple[int, bytes]:
    """(sequence_number, encoded PDU) for a PDU we originate."""
    pdu = smpplib_smpp.make_pdu(command, client=sequences, **fields)
    data: bytes = pdu.generate()
    return int(pdu.sequence), data


def text_field(value: bytes | str | None) -> str:
    """A C-octet string as parsed by smpplib (bytes), decoded losslessly."""
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _ResponseSequences:
    """Responses carry the request's sequence, so they must never draw a fresh one."""

    sequence = 0

    def next_sequence(self) -> int:
        raise RuntimeError("a response PDU asked for a new sequence number")


_NO_SEQUENCES = _ResponseSequences()
