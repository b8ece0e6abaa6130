"""Hostile input on the SMPP side: property tests over every decoder of bytes from a peer.

What an SMSC sends us (deliver_sm header and body, TLVs, UDH, every data_coding, receipt
text and TLVs, submit_sm_resp) and what an ESME sends the built-in simulator must either
decode into a value the core can store, or be refused with the one documented error, never
crash the session or hand the core garbage. The @examples are inputs that once broke a
contract (most found by fuzz/smpp_decode.py, the coverage-guided harness).

Contracts checked everywhere (see check_mo / check_receipt):
- text, addresses and ids hold no NUL (PostgreSQL refuses it; the MO would be redelivered
  forever and take its group-commit batch down with it) and no lone surrogate;
- ids fit the message_parts / orphan_receipts columns (SMPP's 64 characters);
- concatenation numbers are in range (1 <= seq <= total <= 255, ref 8 or 16 bits: the
  Integer column, and a "complete" message that is not).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smpp import dlr, encoding
from smpp import simulator_wire as sim_wire
from smpp.client import SmppClient
from smpp.client_wire import (
    DELIVER_SM,
    ESME_RINVCMDLEN,
    ESME_RINVDSTADR,
    ESME_RINVOPTPARSTREAM,
    ESME_RINVSRCADR,
    ESME_RX_P_APPN,
    ESME_RX_T_APPN,
    MAX_ADDRESS_LENGTH,
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    TAG_NETWORK_ERROR_CODE,
    TAG_RECEIPTED_MESSAGE_ID,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
    MalformedPdu,
    decode_deliver_sm,
    submit_sm_message_id,
)
from smpp.simulator import SmscSimulator
from smpp.types import DeliveryReceipt, MoPart, ReceiptState, SubmitRequest
from tests.conftest import Gateway
from tests.peers.simulator_peer import SimulatorPeer
from tests.test_inbound import CUSTOMER, SIN, Sin, form, hits
from tests.test_inbound import sin as sin  # the fixture: a subscribed SIN with a webhook
from tests.test_smpp_client import HEADER, FakeSmsc, Recorder, fast_config, pdu
from tests.webhook_receiver import Receiver

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FAST = settings(max_examples=200, deadline=None, database=None)
SOCKET = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXCHANGE_TIMEOUT = 20.0  # per example over a socket: far beyond any answer, short of a hang

KNOWN_TAGS = [
    TAG_RECEIPTED_MESSAGE_ID,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_TOTAL_SEGMENTS,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_NETWORK_ERROR_CODE,
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    0x0204,  # user_message_reference
    0x0501,  # ussd_service_op
    0x1403,  # a vendor tag
]
STATS = {
    "DELIVRD": ReceiptState.DELIVERED,
    "UNDELIV": ReceiptState.FAILED,
    "EXPIRED": ReceiptState.FAILED,
    "REJECTD": ReceiptState.FAILED,
    "DELETED": ReceiptState.FAILED,
    "ENROUTE": ReceiptState.PENDING,
    "ACCEPTD": ReceiptState.PENDING,
}
GSM_CHARS = "".join(encoding._CHAR_TO_GSM)  # the basic table and the extension table


# --- the contracts ------------------------------------------------------------------------------


def storable(text: str) -> None:
    assert isinstance(text, str)
    assert "\x00" not in text, text
    text.encode("utf-8")  # raises on a lone surrogate


def check_id(smsc_id: str) -> None:
    storable(smsc_id)
    assert 0 < len(smsc_id) <= dlr.MAX_ID_LENGTH, smsc_id
    assert 0 < len(dlr.normalize_id(smsc_id)) <= dlr.MAX_ID_LENGTH
    for candidate in dlr.candidate_ids(smsc_id):
        storable(candidate)
        assert len(candidate) <= 65  # String(65)


def check_receipt(receipt: DeliveryReceipt) -> None:
    assert isinstance(receipt, DeliveryReceipt)
    check_id(receipt.smsc_id)
    assert isinstance(receipt.state, ReceiptState)
    assert receipt.stat
    storable(receipt.stat)
    if receipt.err is not None:
        storable(receipt.err)
    assert receipt.done_at is None or receipt.done_at.tzinfo is not None


def check_mo(part: MoPart) -> None:
    assert isinstance(part, MoPart)
    for text in (part.text, part.source, part.destination):
        storable(text)
    assert len(part.source) <= MAX_ADDRESS_LENGTH and len(part.destination) <= MAX_ADDRESS_LENGTH
    if part.concat_ref is None:
        assert (part.concat_total, part.concat_seq) == (1, 1)
    else:
        assert 0 <= part.concat_ref <= 0xFFFF
        assert 2 <= part.concat_total <= 255
        assert 1 <= part.concat_seq <= part.concat_total


def check_event(event: object) -> None:
    if isinstance(event, MoPart):
        check_mo(event)
    elif event is not None:
        assert isinstance(event, DeliveryReceipt)
        check_receipt(event)


# --- building deliver_sm ------------------------------------------------------------------------


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def deliver_body(
    short_message: bytes = b"",
    *,
    source: bytes = b"818011112222",
    destination: bytes = b"81312345678",
    esm_class: int = 0,
    data_coding: int = 0,
    tlvs: bytes = b"",
    service_type: bytes = b"",
) -> bytes:
    return (
        service_type
        + b"\x00\x01\x01"
        + source
        + b"\x00\x01\x01"
        + destination
        + b"\x00"
        + bytes([esm_class, 0, 0])
        + b"\x00\x00"  # schedule_delivery_time, validity_period
        + bytes([0, 0, data_coding, 0, len(short_message)])
        + short_message
        + tlvs
    )


def deliver(body: bytes, seq: int = 1) -> bytes:
    return pdu(DELIVER_SM, seq, body)


c_string = st.binary(max_size=24).map(lambda b: b.replace(b"\x00", b"7"))
tlvs_strategy = st.lists(
    st.tuples(st.sampled_from(KNOWN_TAGS) | st.integers(0, 0xFFFF), st.binary(max_size=12)).map(
        lambda t: tlv(*t)
    ),
    max_size=4,
).map(b"".join)


@st.composite
def deliver_bodies(draw: st.DrawFn) -> bytes:
    """A deliver_sm body that is well framed, with arbitrary field contents."""
    return deliver_body(
        draw(st.binary(max_size=254)),
        source=draw(c_string),
        destination=draw(c_string),
        esm_class=draw(st.sampled_from([0, 0x04, 0x08, 0x20, 0x40, 0x44]) | st.integers(0, 255)),
        data_coding=draw(st.sampled_from([0, 1, 3, 5, 8, 0x0A, 0x0E, 0xF4, 0x18]) | st.integers(0, 255)),
        tlvs=draw(tlvs_strategy),
        service_type=draw(c_string),
    )


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """base, then maybe truncated, overwritten or extended at a random spot."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[at:]
        elif op == "overwrite" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


any_deliver_body = st.one_of(st.binary(max_size=400), deliver_bodies(), mutated(deliver_bodies()))


# --- deliver_sm: the whole decoder ----------------------------------------------------------------


@FAST
@given(any_deliver_body)
# sar_msg_ref_num of 8 octets: became ref 2**63 (an int32 column overflow, so a poison MO).
@example(
    deliver_body(
        b"part",
        tlvs=tlv(TAG_SAR_MSG_REF_NUM, b"\x80" + bytes(7))
        + tlv(TAG_SAR_TOTAL_SEGMENTS, b"\x03")
        + tlv(TAG_SAR_SEGMENT_SEQNUM, b"\x01"),
    )
)
# A 30-character source_addr (SMPP allows 20) overflowed the String(32) sender column.
@example(deliver_body(b"hi", source=b"1" * 30))
# UCS-2 "a", NUL, "b": PostgreSQL cannot store the NUL.
@example(deliver_body("a\x00b".encode("utf-16-be"), data_coding=8))
# Latin-1 with a NUL inside and NUL padding.
@example(deliver_body(b"x\x00y\x00\x00", data_coding=3))
# UDH part 5 of 2 and part 0 of 2: out-of-range sequence numbers made "complete" messages.
@example(deliver_body(encoding.build_udh(1, 2, 5) + b"a", esm_class=0x40))
@example(deliver_body(encoding.build_udh(1, 2, 0) + b"a", esm_class=0x40))
# A receipt id of 100 characters (message_parts.smsc_id is String(65)) and one with a NUL.
@example(deliver_body(b"id:" + b"7" * 100 + b" stat:DELIVRD", esm_class=0x04))
@example(deliver_body(b"id:ab\x00cd stat:DELIVRD", esm_class=0x04))
@example(deliver_body(esm_class=0x04, tlvs=tlv(TAG_RECEIPTED_MESSAGE_ID, b"f" * 90 + b"\x00")))
# message_state TLV of 5 octets.
@example(
    deliver_body(b"id:1 stat:DELIVRD", esm_class=4, tlvs=tlv(TAG_MESSAGE_STATE, b"\x00\x00\x00\x00\x05"))
)
def test_deliver_sm_decodes_to_a_storable_event_or_is_refused(body: bytes) -> None:
    try:
        event = decode_deliver_sm(deliver(body), NOW)
    except MalformedPdu as exc:
        # Permanent, so the SMSC does not redeliver what can never decode.
        assert exc.status not in (0, ESME_RX_T_APPN)
        return
    check_event(event)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (deliver_body(b"hi")[:5], ESME_RINVCMDLEN),  # cut inside source_addr
        (deliver_body(b"hi")[:-1], ESME_RINVCMDLEN),  # short_message shorter than sm_length
        (deliver_body(tlvs=tlv(TAG_MESSAGE_PAYLOAD, b"hello")[:-2]), ESME_RINVOPTPARSTREAM),
        (deliver_body(b"hi", source=b"1" * 21), ESME_RINVSRCADR),
        (deliver_body(b"hi", destination=b"x" * 40), ESME_RINVDSTADR),
        (deliver_body(b"\x05\x00\x03", esm_class=0x40), ESME_RX_P_APPN),  # UDH overruns
        (deliver_body(b"", esm_class=0x40), ESME_RX_P_APPN),  # UDHI without any UDH
    ],
    ids=["truncated-address", "truncated-sm", "tlv-overrun", "long-source", "long-dest", "udh", "no-udh"],
)
def test_malformed_deliver_sm_is_refused_with_its_status(body: bytes, status: int) -> None:
    with pytest.raises(MalformedPdu) as info:
        decode_deliver_sm(deliver(body), NOW)
    assert info.value.status == status


def test_incomplete_or_misfitting_sar_tlvs_make_a_single_message() -> None:
    sar = tlv(TAG_SAR_MSG_REF_NUM, b"\x01\x2c") + tlv(TAG_SAR_TOTAL_SEGMENTS, b"\x03")
    # Before: a missing seqnum read as 1, so parts 2 and 3 were dropped as duplicates of 1.
    without_seq = decode_deliver_sm(deliver(deliver_body(b"p", tlvs=sar)), NOW)
    wide_ref = tlv(TAG_SAR_MSG_REF_NUM, b"\x00\x00\x01\x2c") + tlv(0x020E, b"\x03") + tlv(0x020F, b"\x02")
    wrong_size = decode_deliver_sm(deliver(deliver_body(b"p", tlvs=wide_ref)), NOW)
    seq_beyond = decode_deliver_sm(deliver(deliver_body(b"p", tlvs=sar + tlv(0x020F, b"\x04"))), NOW)
    complete = decode_deliver_sm(deliver(deliver_body(b"p", tlvs=sar + tlv(0x020F, b"\x02"))), NOW)
    for single in (without_seq, wrong_size, seq_beyond):
        assert isinstance(single, MoPart)
        assert (single.text, single.concat_ref, single.concat_total, single.concat_seq) == ("p", None, 1, 1)
    assert isinstance(complete, MoPart)
    assert (complete.concat_ref, complete.concat_total, complete.concat_seq) == (300, 3, 2)


# --- MO text: round trips through a real deliver_sm -------------------------------------------------

text_without_nul = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


def smsc_deliver_sm(short_message: bytes, data_coding: int, esm_class: int = 0, **fields: Any) -> bytes:
    """A deliver_sm as an SMSC builds it, through smpplib (not our own builder)."""
    _, data = sim_wire.request(
        "deliver_sm",
        sim_wire.SequenceGenerator(),
        source_addr="818011112222",
        destination_addr="81312345678",
        esm_class=esm_class,
        data_coding=data_coding,
        **(
            {"message_payload": short_message}
            if len(short_message) > 254
            else {"short_message": short_message}
        ),
        **fields,
    )
    return data


@FAST
@given(st.text(GSM_CHARS, max_size=200))
@example("{[€]}^~\\|\f")
def test_gsm7_mo_round_trips(text: str) -> None:
    assert encoding.decode_gsm7(encoding.encode_gsm7(text)) == text
    part = decode_deliver_sm(smsc_deliver_sm(encoding.encode_gsm7(text), 0), NOW)
    assert isinstance(part, MoPart)
    assert part.text == text and part.source == "818011112222" and part.destination == "81312345678"


@FAST
@given(text_without_nul.filter(lambda t: len(t.encode("utf-16-be")) <= 600))
@example("日本語 😀👍🏽 \U0010fffd")  # surrogate pairs, one astral private-use character
def test_ucs2_mo_round_trips(text: str) -> None:
    part = decode_deliver_sm(smsc_deliver_sm(text.encode("utf-16-be"), 8), NOW)
    assert isinstance(part, MoPart)
    assert part.text == text


@FAST
@given(st.text(max_size=100), st.sampled_from([3, 8]))
@example("NUL\x00inside\x00\x00", 8)
def test_mo_text_never_carries_nul(text: str, data_coding: int) -> None:
    codec = "latin-1" if data_coding == 3 else "utf-16-be"
    raw = text.encode(codec, "replace" if data_coding == 3 else "surrogatepass")
    part = decode_deliver_sm(smsc_deliver_sm(raw, data_coding), NOW)
    assert isinstance(part, MoPart)
    check_mo(part)
    # Trailing NULs (C padding) go, inner ones show as U+FFFD; everything else is kept.
    assert part.text == encoding.decode_text(data_coding, raw).rstrip("\x00").replace("\x00", "\ufffd")


@FAST
@given(st.binary(max_size=300))
def test_decode_gsm7_takes_any_octets(data: bytes) -> None:
    text = encoding.decode_gsm7(data)
    storable(text)
    assert len(text) <= len(data)


@FAST
@given(
    text_without_nul.filter(lambda t: 1 <= len(t) <= 400),
    st.integers(0, 0xFFFF),
    st.sampled_from(["udh8", "udh16", "sar"]),
)
@example("€" * 81, 200, "udh8")  # an escape pair must not straddle parts
@example("😀" * 36, 0x1234, "udh16")  # nor a surrogate pair
@example("a" * 161, 65535, "sar")
def test_concatenated_mo_reassembles(text: str, ref: int, carrier: str) -> None:
    """Split as we send (plan + submit_parts), deliver each part as an SMSC would, put together."""
    message = encoding.plan(text)
    parts = []
    for esm_class, short_message in encoding.submit_parts(message, ref):
        fields: dict[str, Any] = {}
        if carrier == "udh16" and esm_class:
            udh, payload = short_message[:6], short_message[6:]
            short_message = bytes([6, 0x08, 4, ref >> 8, ref & 0xFF, udh[4], udh[5]]) + payload
        elif carrier == "sar" and esm_class:
            udh, short_message, esm_class = short_message[:6], short_message[6:], 0
            fields = {"sar_msg_ref_num": ref, "sar_total_segments": udh[4], "sar_segment_seqnum": udh[5]}
        event = decode_deliver_sm(
            smsc_deliver_sm(short_message, message.data_coding, esm_class, **fields), NOW
        )
        assert isinstance(event, MoPart)
        check_mo(event)
        parts.append(event)
    if message.parts > 1:
        expected_ref = ref & 0xFF if carrier == "udh8" else ref
        assert {(p.concat_ref, p.concat_total) for p in parts} == {(expected_ref, message.parts)}
        assert [p.concat_seq for p in parts] == list(range(1, message.parts + 1))
    assert "".join(p.text for p in sorted(parts, key=lambda p: p.concat_seq)) == text


@FAST
@given(st.binary(max_size=200), st.sampled_from([0, 0x40]), st.integers(0, 255))
@example(bytes([5, 0, 3, 9, 2, 0]) + b"x", 0x40, 0)  # seq 0
@example(bytes([6, 8, 4, 0, 9, 0, 1]) + b"x", 0x40, 0)  # 16-bit ref, total 0
def test_decode_short_message_concat_numbers_are_valid(short_message: bytes, esm_class: int, dc: int) -> None:
    decoded = encoding.decode_short_message(dc, esm_class, short_message)
    decoded.text.encode("utf-8")
    if decoded.concat_ref is None:
        assert (decoded.concat_total, decoded.concat_seq) == (1, 1)
    else:
        assert 1 <= decoded.concat_seq <= decoded.concat_total <= 255


# --- receipts -------------------------------------------------------------------------------------

hex_or_decimal_id = st.integers(1, 2**64).flatmap(
    lambda n: st.sampled_from([format(n, "x"), format(n, "X"), str(n), f"{n:012x}"])
)
receipt_date = st.datetimes(datetime(2000, 1, 1), datetime(2068, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0)
)


@FAST
@given(
    hex_or_decimal_id,
    st.sampled_from(sorted(STATS)),
    receipt_date,
    st.sampled_from(["", "\x00", "\x00\x00\x00"]),
    st.none() | st.text(max_size=30),
)
# NUL-terminated, and no text: field, so the NUL follows the last field's value.
@example("1a", "DELIVRD", datetime(2026, 1, 1, 12, 0), "\x00", None)
def test_text_receipt_gives_back_its_id_state_and_date(
    smsc_id: str, stat: str, done: datetime, padding: str, free_text: str | None
) -> None:
    text = (
        f"id:{smsc_id} sub:001 dlvrd:001 submit date:{done:%y%m%d%H%M} done date:{done:%y%m%d%H%M} "
        f"stat:{stat} err:000{'' if free_text is None else ' text:' + free_text}{padding}"
    )
    receipt = dlr.parse_receipt(text.encode("latin-1", "replace"))
    assert receipt is not None
    check_receipt(receipt)
    assert receipt.smsc_id == smsc_id
    assert (receipt.stat, receipt.state, receipt.err) == (stat, STATS[stat], "000")
    assert receipt.done_at == done.replace(tzinfo=UTC)


@FAST
@given(st.integers(0, 2**128))
def test_hex_and_decimal_forms_of_an_id_match(n: int) -> None:
    """A submit_sm_resp id in one radix finds the receipt that quotes it in the other."""
    hex_id, dec_id = format(n, "x"), str(n)
    if len(dec_id) <= 40:  # longer digit strings are not converted (dlr._MAX_NUMERIC_ID)
        assert dlr.normalize_id(hex_id) in dlr.candidate_ids(dec_id)
        assert dlr.normalize_id(dec_id) in dlr.candidate_ids(hex_id.upper().zfill(20))


@FAST
@given(hex_or_decimal_id, st.sampled_from([1, 2, 3, 5, 6, 8]), st.booleans())
def test_tlv_receipt_over_a_pdu(smsc_id: str, message_state: int, nul: bool) -> None:
    value = smsc_id.encode() + (b"\x00" if nul else b"")
    data = smsc_deliver_sm(b"", 0, 0x04)[:16] + deliver_body(
        esm_class=0x04,
        tlvs=tlv(TAG_RECEIPTED_MESSAGE_ID, value) + tlv(TAG_MESSAGE_STATE, bytes([message_state])),
    )
    receipt = decode_deliver_sm(struct.pack(">L", len(data)) + data[4:], NOW)
    assert isinstance(receipt, DeliveryReceipt)
    check_receipt(receipt)
    assert receipt.smsc_id == smsc_id
    expected = {2: ReceiptState.DELIVERED, 1: ReceiptState.PENDING, 6: ReceiptState.PENDING}
    assert receipt.state is expected.get(message_state, ReceiptState.FAILED)


@FAST
@given(
    st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.none() | st.text(max_size=90),
    st.none() | st.integers(0, 2**32),
    st.none() | st.binary(max_size=5),
)
@example(b"id:" + b"9" * 70 + b" stat:DELIVRD", None, None, None)
@example(b"id:\x00 stat:DELIVRD", None, None, None)  # an id that is only a NUL
@example(b"stat:DELIVRD", " \x00abc", 2, None)
@example(b"stat:DELIVRD", "ab\x00cd", 2, None)  # a TLV id read without stopping at its NUL
def test_parse_receipt_never_raises_and_stays_storable(
    text: bytes, tlv_id: str | None, message_state: int | None, network_error: bytes | None
) -> None:
    receipt = dlr.parse_receipt(text, tlv_id, message_state, network_error)
    if receipt is not None:
        check_receipt(receipt)


# --- submit_sm_resp ---------------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=120))
# SMPP 5.0 SMSCs append TLVs to submit_sm_resp; smpplib raised KeyError on these, so an
# accepted submit looked failed and the core sent the message again (and again).
@example(b"0a1b2c\x00" + tlv(TAG_NETWORK_ERROR_CODE, b"\x03\x00\x01"))
@example(b"0a1b2c\x00" + tlv(0x0425, b"\x01"))  # delivery_failure_reason
@example(b"0a1b2c\x00" + tlv(0x001D, b"ok\x00"))  # additional_status_info_text
@example(b"7")  # no NUL, and smpplib read a TLV header from it (struct.error)
@example(b"f" * 80 + b"\x00")  # longer than SMPP allows
def test_submit_sm_resp_message_id_never_raises(body: bytes) -> None:
    message_id = submit_sm_message_id(pdu(0x80000004, 1, body))
    storable(message_id)
    assert len(message_id) <= dlr.MAX_ID_LENGTH
    if message_id:
        check_id(message_id)


@FAST
@given(hex_or_decimal_id, tlvs_strategy)
def test_submit_sm_resp_id_survives_trailing_tlvs(smsc_id: str, tlvs: bytes) -> None:
    assert submit_sm_message_id(pdu(0x80000004, 1, smsc_id.encode() + b"\x00" + tlvs)) == smsc_id


def test_over_long_ids_are_cut_alike_on_both_sides() -> None:
    long_id = "A1" * 50
    submitted = submit_sm_message_id(pdu(0x80000004, 1, long_id.encode() + b"\x00"))
    receipt = dlr.parse_receipt(f"id:{long_id} stat:DELIVRD".encode())
    assert receipt is not None
    assert len(submitted) == dlr.MAX_ID_LENGTH
    assert dlr.normalize_id(submitted) in dlr.candidate_ids(receipt.smsc_id)


# --- over a real socket: the client against a hostile SMSC ----------------------------------------


@dataclass(frozen=True)
class Frame:
    command_id: int  # -1: an impossible command_length, the stream cannot be resynchronised
    body: bytes


bad_length = st.sampled_from([0, 1, 15, 64 * 1024 + 1, 2**32 - 1]).map(
    lambda n: Frame(-1, struct.pack(">L", n) + bytes(12))
)
to_client = st.one_of(
    mutated(deliver_bodies()).map(lambda b: Frame(DELIVER_SM, b)),
    deliver_bodies().map(lambda b: Frame(DELIVER_SM, b)),
    st.tuples(
        st.sampled_from([0x15, 0x102, 0x103, 0x0B, 0x80000000, 0x80000004, 0x80000005, 0x80000009])
        | st.integers(0, 2**32 - 1).filter(lambda c: c not in (DELIVER_SM, 0x06)),
        st.binary(max_size=40),
    ).map(lambda t: Frame(*t)),
)


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(EXCHANGE_TIMEOUT):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"hung: {what}") from None


def expected_outcome(data: bytes) -> tuple[int, object]:
    """(deliver_sm_resp status, event for the handler) as the pure decoder has it."""
    try:
        return 0, decode_deliver_sm(data, NOW)
    except MalformedPdu as exc:
        return exc.status, None


def same_event(got: object, want: object) -> bool:
    if isinstance(got, MoPart) and isinstance(want, MoPart):
        return got == MoPart(**{**want.__dict__, "received_at": got.received_at})
    return got == want


@dataclass
class ClientUnderFire:
    smsc: FakeSmsc
    client: SmppClient
    events: Recorder
    task: asyncio.Task[None]
    seqs: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def handled_since(self, mark: tuple[int, int]) -> list[object]:
        return [*self.events.mos[mark[0] :], *self.events.receipts[mark[1] :]]

    async def exchange(self, frames: list[Frame]) -> None:
        """Send frames; each request must get its answer, each deliver_sm exactly what the pure
        decoder says (refused with its status, or handed over and acknowledged), and an
        impossible command_length must end in a new bind."""
        start, connections = len(self.smsc.received), self.smsc.connections
        mark = (len(self.events.mos), len(self.events.receipts))
        expected: dict[int, int] = {}  # seq -> response command_id
        outcomes: dict[int, tuple[int, object]] = {}
        desync = False
        for frame in frames:
            seq = next(self.seqs)
            if frame.command_id == -1:
                self.smsc.send(frame.body)
                desync = True
                break
            data = pdu(frame.command_id, seq, frame.body)
            self.smsc.send(data)
            if frame.command_id == DELIVER_SM:
                expected[seq] = 0x80000005
                outcomes[seq] = expected_outcome(data)
            elif frame.command_id == 0x15:
                expected[seq] = 0x80000015
            elif not frame.command_id & 0x80000000 and frame.command_id != 0x102:
                expected[seq] = 0x80000000  # generic_nack for what an ESME does not take
        if desync:
            await wait_until(
                lambda: self.smsc.connections > connections and self.client.bound, "rebind after desync"
            )
        else:
            ping = next(self.seqs)
            self.smsc.send(pdu(0x15, ping))
            expected[ping] = 0x80000015
            await wait_until(lambda: {r[2] for r in self.smsc.received[start:]} >= set(expected), "answers")
        assert not self.task.done(), "SmppClient.run() ended"
        for event in self.handled_since(mark):
            check_event(event)
        if desync:
            return  # what was read before the bad header may or may not have been answered
        answers = [r for r in self.smsc.received[start:] if r[2] in expected]
        assert sorted(r[2] for r in answers) == sorted(expected), "a PDU answered twice"
        for command_id, status, seq, _ in answers:
            assert command_id == expected[seq]
            if command_id == 0x80000000:
                assert status == 0x03  # ESME_RINVCMDID
            if seq in outcomes:
                assert status == outcomes[seq][0]
        delivered = [event for status, event in outcomes.values() if status == 0 and event is not None]
        got = self.handled_since(mark)
        assert len(got) == len(delivered)
        for want in delivered:
            assert any(same_event(g, want) for g in got), (want, got)


class ScriptedSmsc(FakeSmsc):
    """FakeSmsc (tests/test_smpp_client.py) whose bind answers and submit_sm_resp bodies the
    test writes; by default it binds anyone and answers submits with fresh ids."""

    def __init__(self) -> None:
        super().__init__()
        self.submit_bodies: list[bytes] = []
        self.bind_answers: list[tuple[int, int, bytes]] = []  # command_id, status, body

    def next_submit_body(self) -> bytes:
        return self.submit_bodies.pop(0) if self.submit_bodies else b"%x\x00" % len(self.received)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        answers = {0x04: self.next_submit_body, 0x15: bytes, 0x06: bytes}
        try:
            while True:
                length, command_id, status, seq = HEADER.unpack(await reader.readexactly(16))
                self.received.append((command_id, status, seq, await reader.readexactly(length - 16)))
                if command_id == 0x09:
                    answer = self.bind_answers.pop(0) if self.bind_answers else (0x80000009, 0, b"fake\x00")
                    writer.write(pdu(answer[0], seq, answer[2], answer[1]))
                elif command_id in answers:
                    writer.write(pdu(command_id | 0x80000000, seq, answers[command_id]()))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@pytest_asyncio.fixture
async def scripted_smsc() -> AsyncIterator[ScriptedSmsc]:
    async with ScriptedSmsc() as smsc:
        yield smsc


@pytest_asyncio.fixture
async def bound_client(scripted_smsc: ScriptedSmsc) -> AsyncIterator[tuple[SmppClient, Recorder]]:
    events = Recorder()
    config = fast_config("127.0.0.1", scripted_smsc.port, "esme", "pw", reconnect_backoff_min=0.01)
    client = SmppClient(config, events)
    task = asyncio.create_task(client.run())
    assert await client.wait_bound(10)
    yield client, events
    await asyncio.wait_for(client.stop(), 10)
    await asyncio.wait_for(task, 10)
    assert task.done() and not task.cancelled()


@pytest_asyncio.fixture
async def under_fire(
    scripted_smsc: ScriptedSmsc, bound_client: tuple[SmppClient, Recorder]
) -> ClientUnderFire:
    client, events = bound_client
    assert client._run_task is not None
    return ClientUnderFire(scripted_smsc, client, events, client._run_task)


def run_examples(
    loop: asyncio.AbstractEventLoop, exchange: Callable[[list[Frame]], Awaitable[None]]
) -> Callable[[list[Frame], Frame | None], None]:
    """A sync function Hypothesis can drive from a worker thread while the loop runs the sockets."""

    def one(frames: list[Frame], desync: Frame | None) -> None:
        coroutine = exchange([*frames, desync] if desync else frames)
        asyncio.run_coroutine_threadsafe(coroutine, loop).result(EXCHANGE_TIMEOUT * 2)  # type: ignore[arg-type]

    return one


async def test_client_answers_or_rebinds_whatever_the_smsc_sends(
    under_fire: ClientUnderFire, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="smpp")
    one = run_examples(asyncio.get_running_loop(), under_fire.exchange)
    hostile = SOCKET(given(st.lists(to_client, min_size=1, max_size=4), st.none() | bad_length)(one))
    await asyncio.to_thread(hostile)
    assert under_fire.client.bound
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # The strategies reach both sides: MOs handed over, deliver_sm refused, binds renewed.
    statuses = {status for command_id, status, _, _ in under_fire.smsc.received if command_id == 0x80000005}
    assert under_fire.events.mos and 0 in statuses and statuses - {0}
    assert under_fire.smsc.connections > 1


async def test_submit_sm_resp_bodies_over_the_socket(
    scripted_smsc: ScriptedSmsc, bound_client: tuple[SmppClient, Recorder]
) -> None:
    """Whatever body an ROK submit_sm_resp has, submit() returns the id submit_sm_message_id reads
    from it: the SMSC took the message, and a failure here would make the core send it again."""
    client, _ = bound_client
    loop = asyncio.get_running_loop()

    @SOCKET
    @given(st.binary(max_size=100))
    @example(b"0a1b2c\x00" + tlv(TAG_NETWORK_ERROR_CODE, b"\x03\x00\x01"))  # raised KeyError before
    @example(b"")  # header only: no id at all
    def one(body: bytes) -> None:
        scripted_smsc.submit_bodies.append(body)
        request = SubmitRequest("m", "Demo", "+818012345678", "hi")
        result = asyncio.run_coroutine_threadsafe(client.submit(request), loop).result(EXCHANGE_TIMEOUT)
        assert result.smsc_ids == (submit_sm_message_id(pdu(0x80000004, 1, body)),)
        storable(result.smsc_ids[0])

    await asyncio.to_thread(one)
    assert client.bound


async def test_any_bind_answer_ends_bound_or_in_a_new_attempt(
    scripted_smsc: ScriptedSmsc, bound_client: tuple[SmppClient, Recorder]
) -> None:
    """Only bind_transceiver_resp with ESME_ROK binds (whatever its body); any other answer to
    bind_transceiver is a refusal: the client connects again and binds on the next good answer."""
    client, events = bound_client
    loop = asyncio.get_running_loop()

    async def rebind(answer: tuple[int, int, bytes]) -> None:
        connections = scripted_smsc.connections
        scripted_smsc.bind_answers.append(answer)
        scripted_smsc.writers[-1].close()  # the SMSC hangs up: the next bind gets `answer`
        accepted = answer[:2] == (0x80000009, 0)
        expected = connections + (1 if accepted else 2)
        await wait_until(lambda: client.bound and scripted_smsc.connections == expected, "rebind")
        assert not scripted_smsc.bind_answers

    @SOCKET
    @given(
        st.sampled_from([0x80000009, 0x80000000, 0x80000002, 0x80000001, 0x80000015])
        | st.integers(0x80000000, 0xFFFFFFFF),
        st.sampled_from([0, 0x0D, 0x0E, 0x05]) | st.integers(0, 2**32 - 1),
        st.binary(max_size=40),
    )
    @example(0x80000009, 0, b"")  # no system_id at all
    @example(0x80000009, 0, b"\xff" * 40)  # no NUL
    def one(command_id: int, status: int, body: bytes) -> None:
        asyncio.run_coroutine_threadsafe(rebind((command_id, status, body)), loop).result(EXCHANGE_TIMEOUT)

    await asyncio.to_thread(one)
    assert events.bind_states[0] is True and events.bind_states[-1] is True
    assert (await client.submit(SubmitRequest("m", "Demo", "+818012345678", "after all that"))).smsc_ids


# --- over a real socket: the simulator against a hostile ESME -------------------------------------

to_simulator = st.one_of(
    mutated(deliver_bodies()).map(
        lambda b: Frame(sim_wire.SUBMIT_SM, b)
    ),  # submit_sm's layout is deliver_sm's
    deliver_bodies().map(lambda b: Frame(sim_wire.SUBMIT_SM, b)),
    st.tuples(
        st.sampled_from([1, 2, 9, 0x15, 0x03, 0x05, 0x103, 0x80000000, 0x80000005, 0x80000015, 0x80000006])
        | st.integers(0, 2**32 - 1).filter(lambda c: c != sim_wire.UNBIND),
        st.binary(max_size=60) | c_string.map(lambda s: s + b"\x00pw\x00\x00\x34\x00\x00\x00"),
    ).map(lambda t: Frame(*t)),
    st.just(Frame(sim_wire.UNBIND, b"")),
)


@dataclass
class SimulatorUnderFire:
    peer: SimulatorPeer
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    seqs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    seen: set[int] = field(default_factory=set)  # command_ids of the simulator's answers

    async def connect(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader, self.writer = await asyncio.open_connection(self.peer.host, self.peer.port)
        credentials = f"{self.peer.system_id}\x00{self.peer.password}\x00\x00".encode() + b"\x34\x00\x00\x00"
        self.writer.write(pdu(sim_wire.BIND_TRANSCEIVER, next(self.seqs), credentials))
        command_id, status, _, _ = await self.read()
        assert (command_id, status) == (0x80000009, 0)

    async def read(self) -> tuple[int, int, int, bytes]:
        assert self.reader is not None
        async with asyncio.timeout(EXCHANGE_TIMEOUT):
            length, command_id, status, seq = HEADER.unpack(await self.reader.readexactly(16))
            return command_id, status, seq, await self.reader.readexactly(length - 16)

    async def exchange(self, frames: list[Frame]) -> None:
        """Each request answered (its response or generic_nack), the session kept, unless the
        ESME unbinds or sends an impossible command_length."""
        assert self.writer is not None
        expected: dict[int, set[int]] = {}
        maybe: dict[int, set[int]] = {}  # unknown responses may be nacked like unknown requests
        ends = False
        for frame in frames:
            seq = next(self.seqs)
            if frame.command_id == -1:
                self.writer.write(frame.body)
                ends = True
                break
            self.writer.write(pdu(frame.command_id, seq, frame.body))
            if frame.command_id == sim_wire.UNBIND:
                expected[seq] = {sim_wire.UNBIND_RESP}
                ends = True
                break
            if not frame.command_id & sim_wire.RESPONSE_BIT:
                expected[seq] = {frame.command_id | sim_wire.RESPONSE_BIT, sim_wire.GENERIC_NACK}
            elif frame.command_id not in sim_wire.HANDLED:
                maybe[seq] = {sim_wire.GENERIC_NACK}
        if not ends:
            ping = next(self.seqs)
            self.writer.write(pdu(sim_wire.ENQUIRE_LINK, ping))
            expected[ping] = {sim_wire.ENQUIRE_LINK_RESP}
        while expected:
            try:
                command_id, _, seq, _ = await self.read()
            except (asyncio.IncompleteReadError, ConnectionError):
                assert ends, f"the simulator hung up with {sorted(expected)} unanswered"
                break
            except TimeoutError:
                raise AssertionError(f"hung: {sorted(expected)} unanswered") from None
            if command_id == 0x00000005:  # a receipt for a submit it accepted
                self.writer.write(pdu(0x80000005, seq, b"\x00"))
                continue
            allowed = expected.pop(seq, None) or maybe.pop(seq, None)
            assert allowed is not None and command_id in allowed, (hex(command_id), seq)
            self.seen.add(command_id)
        if ends:
            await self.connect()


async def test_simulator_answers_whatever_an_esme_sends(
    sim_smsc: SimulatorPeer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="smpp.simulator")
    target = SimulatorUnderFire(sim_smsc)
    await target.connect()
    one = run_examples(asyncio.get_running_loop(), target.exchange)
    hostile = SOCKET(given(st.lists(to_simulator, min_size=1, max_size=4), st.none() | bad_length)(one))
    await asyncio.to_thread(hostile)
    simulator: SmscSimulator = sim_smsc.simulator
    assert [r.getMessage() for r in caplog.records if "unexpected error" in r.getMessage()] == []
    # Still serving: a well-formed submit_sm on the battered session gets its id.
    assert target.writer is not None
    target.writer.write(pdu(sim_wire.SUBMIT_SM, 0x7FFFFFF0, deliver_body(b"still here", source=b"Demo")))
    while (answer := await target.read())[2] != 0x7FFFFFF0:
        pass
    assert answer[:2] == (0x80000004, 0) and answer[3].rstrip(b"\x00")
    assert simulator.submits[-1].short_message == b"still here"
    # The strategies reach both sides: fuzzed submit_sm accepted, others nacked.
    assert len(simulator.submits) > 1 and {0x80000004, 0x80000000} <= target.seen


# --- end to end: an MO with NUL through the gateway into both databases ---------------------------


async def test_mo_with_nul_is_stored_and_delivered(
    gateway: Gateway, sim_smsc: SimulatorPeer, receiver: Receiver, sin: Sin
) -> None:
    """Before: the NUL reached PostgreSQL, the insert failed, the MO was answered 0x64 and
    redelivered until the SMSC gave up (and every MO in the same group commit with it)."""
    await sim_smsc.inject_mo(CUSTOMER[1:], SIN[1:], "a\x00b".encode("utf-16-be"), data_coding=8)
    await sim_smsc.inject_mo(CUSTOMER[1:], SIN[1:], b"padded\x00\x00", data_coding=3)
    bodies = sorted(form(hit)["message"] for hit in await hits(receiver, "/mo", 2))
    assert bodies == ["a\ufffdb", "padded"]
    assert sim_smsc.simulator.delivery_statuses == [0, 0]
    stored = await gateway.sql("SELECT body FROM inbound_messages ORDER BY body")
    assert [row[0] for row in stored] == bodies
