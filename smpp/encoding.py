"""SMS text encoding for SMPP: GSM 03.38, UCS-2, concatenation UDH, MO decoding.

Pure functions only. The SMPP short_message for data_coding 0 carries GSM 7-bit
septets *unpacked*, one septet per octet (packing is the SMSC's job on the air
interface), so a GSM payload's length in octets equals its length in septets.
"""

from __future__ import annotations

import codecs
import zlib
from dataclasses import dataclass, replace
from typing import NamedTuple

DC_DEFAULT = 0x00  # SMSC default alphabet, GSM 03.38 for us
DC_IA5 = 0x01
DC_BINARY = 0x02
DC_LATIN1 = 0x03
DC_BINARY_ALT = 0x04
DC_UCS2 = 0x08
# GSM 03.38 general data coding group (00xx): bit 4 set means bits 1..0 carry the message
# class, bits 3..2 stay the alphabet. Class 0 ("flash") is shown at once and not stored.
DC_CLASS_0 = 0x10

ESM_UDHI = 0x40

GSM_SINGLE_MAX = 160
GSM_PART_MAX = 153  # 160 minus the 6-octet UDH, rounded down to whole septets (7 septets for 6 octets)
UCS2_SINGLE_MAX = 70
UCS2_PART_MAX = 67  # 140 octets minus 6 UDH octets = 134 = 67 UTF-16 units

_ESCAPE = 0x1B

# GSM 03.38 default alphabet; position = septet value. 0x1B is the escape to the
# extension table and has no character of its own.
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_CHAR_TO_GSM: dict[str, bytes] = {ch: bytes([i]) for i, ch in enumerate(_GSM_BASIC) if i != _ESCAPE}
_CHAR_TO_GSM.update({ch: bytes([_ESCAPE, code]) for code, ch in _GSM_EXTENSION.items()})

assert len(_GSM_BASIC) == 128


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM default alphabet or its extension table."""
    return all(ch in _CHAR_TO_GSM for ch in text)


def gsm7_length(text: str) -> int:
    """Septets needed for text; extension-table characters take two (escape + code)."""
    return sum(len(_CHAR_TO_GSM[ch]) for ch in text)


def encode_gsm7(text: str) -> bytes:
    """Unpacked GSM 03.38 septets; raises KeyError for characters outside the alphabet."""
    return b"".join(_CHAR_TO_GSM[ch] for ch in text)


def decode_gsm7(data: bytes) -> str:
    """Unpacked septets to text; octets above 0x7F become U+FFFD, never raises."""
    out: list[str] = []
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b == _ESCAPE and i + 1 < n:
            code = data[i + 1]
            ext = _GSM_EXTENSION.get(code)
            if ext is not None:
                out.append(ext)
            elif code < 0x80 and code != _ESCAPE:
                # 03.38: an unknown extension shows the basic-table character.
                out.append(_GSM_BASIC[code])
            else:
                out.append("\ufffd")
            i += 2
            continue
        if b == _ESCAPE:
            out.append(" ")  # a dangling escape at the end; 03.38 suggests a space
        elif b < 0x80:
            out.append(_GSM_BASIC[b])
        else:
            out.append("\ufffd")
        i += 1
    return "".join(out)


def _utf16_units(ch: str) -> bytes:
    # surrogatepass: a lone surrogate in a Python str must not crash the planner.
    return ch.encode("utf-16-be", "surrogatepass")


@dataclass(frozen=True)
class EncodedMessage:
    """How a text goes on the wire: one data_coding and the part payloads without UDH."""

    data_coding: int
    payloads: tuple[bytes, ...]
    length: int  # septets (GSM) or UTF-16 code units (UCS-2) of the whole text

    @property
    def parts(self) -> int:
        return len(self.payloads)


def _split(units: list[tuple[int, bytes]], max_units: int) -> tuple[bytes, ...]:
    """Greedy split by (size, octets) per character, keeping each character's octets (escape
    pair, surrogate pair) together; size counts against the part's limit."""
    parts: list[bytes] = []
    current = bytearray()
    used = 0
    for size, octets in units:
        if used + size > max_units:
            parts.append(bytes(current))
            current, used = bytearray(), 0
        current += octets
        used += size
    parts.append(bytes(current))
    return tuple(parts)


# data_coding values a GSM-alphabet text may be sent as instead of GSM 03.38 septets, for an
# SMSC whose default alphabet is something else; it recodes them for the air interface, so
# the parts are cut as GSM septets all the same.
_GSM_ALTERNATIVES = {DC_IA5: "ascii", DC_LATIN1: "latin-1"}


def plan(text: str, gsm_data_coding: int = DC_DEFAULT) -> EncodedMessage:
    """Pick GSM 7-bit when every character fits, else UCS-2, and split into parts.

    gsm_data_coding DC_IA5 or DC_LATIN1 sends a GSM text in that charset when every character
    has a place in it (else as GSM, data_coding 0); the parts are the same either way.
    """
    units: list[tuple[int, bytes]]
    if is_gsm7(text):
        single, part = GSM_SINGLE_MAX, GSM_PART_MAX
        data_coding = DC_DEFAULT
        units = [(len(_CHAR_TO_GSM[ch]), _CHAR_TO_GSM[ch]) for ch in text]
        codec = _GSM_ALTERNATIVES.get(gsm_data_coding)
        if codec is not None:
            try:
                units = [(size, ch.encode(codec)) for (size, _), ch in zip(units, text, strict=True)]
                data_coding = gsm_data_coding
            except UnicodeEncodeError:
                pass
    else:
        single, part = UCS2_SINGLE_MAX, UCS2_PART_MAX
        data_coding = DC_UCS2
        units = [(len(u) // 2, u) for u in map(_utf16_units, text)]
    length = sum(size for size, _ in units)
    if length <= single:
        payloads: tuple[bytes, ...] = (b"".join(octets for _, octets in units),)
    else:
        payloads = _split(units, part)
    return EncodedMessage(data_coding=data_coding, payloads=payloads, length=length)


def flash(message: EncodedMessage) -> EncodedMessage:
    """The same parts as message class 0: 0x10 for GSM 7-bit, 0x18 for UCS-2.

    Only those two alphabets have a class-0 coding: `message` must come from plan() with the
    default GSM data_coding, not an SMSC-specific charset (IA5, Latin-1)."""
    if message.data_coding not in (DC_DEFAULT, DC_UCS2):
        raise ValueError(f"data_coding 0x{message.data_coding:02x} has no message class")
    return replace(message, data_coding=DC_CLASS_0 | message.data_coding)


BINARY_SINGLE_MAX = 140  # octets of one SMS
BINARY_PART_MAX = 134  # less the 6-octet concatenation UDH


def plan_binary(data: bytes, data_coding: int = DC_BINARY_ALT) -> EncodedMessage:
    """8-bit data as it is (data_coding 2 or 4), split into parts of 134 octets when it does
    not fit one SMS."""
    if len(data) <= BINARY_SINGLE_MAX:
        payloads: tuple[bytes, ...] = (data,)
    else:
        payloads = tuple(data[i : i + BINARY_PART_MAX] for i in range(0, len(data), BINARY_PART_MAX))
    return EncodedMessage(data_coding=data_coding, payloads=payloads, length=len(data))


def concat_ref_for(seed: str) -> int:
    """A concatenation reference (1..255) that depends only on `seed` (a message id): every
    attempt at one message gets the same one, in any process, so parts of a retry assemble
    with the parts an earlier attempt got through."""
    return zlib.crc32(seed.encode("utf-8", "surrogatepass")) % 255 + 1


def build_udh(ref: int, total: int, seq: int) -> bytes:
    """Concatenation UDH with the 8-bit reference IE (IEI 0x00), UDHL included."""
    return bytes([0x05, 0x00, 0x03, ref & 0xFF, total & 0xFF, seq & 0xFF])


def submit_parts(message: EncodedMessage, ref: int) -> list[tuple[int, bytes]]:
    """(esm_class, short_message) per submit_sm; multipart messages carry a UDH and UDHI."""
    if message.parts == 1:
        return [(0x00, message.payloads[0])]
    total = message.parts
    return [
        (ESM_UDHI, build_udh(ref, total, seq) + payload)
        for seq, payload in enumerate(message.payloads, start=1)
    ]


class DecodedText(NamedTuple):
    text: str
    concat_ref: int | None
    concat_total: int
    concat_seq: int


class _Concat(NamedTuple):
    ref: int
    total: int
    seq: int


def udh_fits(short_message: bytes) -> bool:
    """True when a short_message flagged UDHI has a UDH whose length octet fits in it."""
    return bool(short_message) and 1 + short_message[0] <= len(short_message)


def _valid_concat(concat: _Concat) -> bool:
    # 3GPP 23.040 9.2.3.24.1: a zero total or a sequence number of zero or beyond the total
    # makes the receiver ignore the whole IE (else parts 0 and 5 of 2 would "complete" a message).
    return 1 <= concat.seq <= concat.total


def split_udh(short_message: bytes) -> tuple[_Concat | None, bytes]:
    """Separate a UDH from the body and pull out a valid concatenation IE if there is one.

    A UDH that overruns the message leaves an empty body (udh_fits tells that case apart).
    """
    if not short_message:
        return None, b""
    udhl = short_message[0]
    header = short_message[1 : 1 + udhl]
    body = short_message[1 + udhl :]
    concat: _Concat | None = None
    i = 0
    while i + 1 < len(header):
        iei, iel = header[i], header[i + 1]
        data = header[i + 2 : i + 2 + iel]
        if len(data) < iel:
            break  # truncated IE: the rest of the header is garbage
        candidate = None
        if iei == 0x00 and iel == 3:
            candidate = _Concat(data[0], data[1], data[2])
        elif iei == 0x08 and iel == 4:
            candidate = _Concat((data[0] << 8) | data[1], data[2], data[3])
        if candidate is not None and _valid_concat(candidate):
            concat = candidate
        i += 2 + iel
    return concat, body


# SMPP 3.4 5.2.19 data_coding values that name a character set we can decode.
_SMPP_CODECS = {
    DC_IA5: "ascii",
    DC_LATIN1: "latin-1",
    0x05: "shift_jis",  # JIS X 0208; in practice Shift-JIS
    0x06: "iso8859-5",
    0x07: "iso8859-8",
    0x0A: "iso2022_jp",
    0x0E: "euc_kr",
}


def _alphabet(data_coding: int) -> str:
    """Map a data_coding byte to 'gsm', 'ucs2', 'latin-1' (8-bit data) or a codec name."""
    if data_coding == DC_DEFAULT:
        return "gsm"
    if data_coding == DC_UCS2:
        return "ucs2"
    if data_coding in _SMPP_CODECS:
        return _SMPP_CODECS[data_coding]
    if data_coding < 0x10:
        return "latin-1"  # binary or unknown SMPP values: lossless octets
    group = data_coding & 0xF0
    if group == 0xF0:  # message class group: bit 2 picks 8-bit data over GSM
        return "latin-1" if data_coding & 0x04 else "gsm"
    if group in (0xC0, 0xD0):
        return "gsm"
    if group == 0xE0:
        return "ucs2"
    if data_coding & 0xC0 == 0x00:  # 03.38 general data coding group, bits 3..2
        return ("gsm", "latin-1", "ucs2", "latin-1")[(data_coding >> 2) & 0x03]
    return "latin-1"


def decode_text(data_coding: int, body: bytes) -> str:
    """Decode a message body; garbage yields replacement characters, never an exception.

    The result is valid Unicode (no lone surrogates) but may hold any other code point,
    NUL included: this is a faithful decoder, cleaning is the caller's business.
    """
    alphabet = _alphabet(data_coding)
    if alphabet == "gsm":
        return decode_gsm7(body)
    if alphabet == "ucs2":
        return body.decode("utf-16-be", "replace")
    try:
        codecs.lookup(alphabet)
    except LookupError:  # a Python build without the CJK codecs
        alphabet = "latin-1"
    return body.decode(alphabet, "replace")


def decode_short_message(
    data_coding: int,
    esm_class: int,
    short_message: bytes,
    sar_msg_ref_num: int | None = None,
    sar_total_segments: int | None = None,
    sar_segment_seqnum: int | None = None,
) -> DecodedText:
    """Decode an MO short_message, with concatenation info from a UDH or the sar_* TLVs."""
    concat: _Concat | None = None
    body = short_message
    if esm_class & ESM_UDHI:
        concat, body = split_udh(short_message)
    if (
        concat is None
        and sar_msg_ref_num is not None
        and sar_total_segments is not None
        and sar_segment_seqnum is not None
    ):
        # SMPP 3.4 5.3.2.22-24: the three sar_* TLVs come together; one missing or out of
        # range and the part is taken as a message of its own rather than misfiled.
        sar = _Concat(sar_msg_ref_num, sar_total_segments, sar_segment_seqnum)
        concat = sar if _valid_concat(sar) else None
    text = decode_text(data_coding, body)
    if concat is None or concat.total <= 1:
        # A "1 of 1" concatenation is just a single message.
        return DecodedText(text, None, 1, 1)
    return DecodedText(text, concat.ref, concat.total, concat.seq)
