from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp.dlr import candidate_ids, is_receipt, normalize_id, parse_receipt, parse_receipt_text
from smpp.types import ReceiptState

STANDARD = (
    b"id:0A1B2C sub:001 dlvrd:001 submit date:2611011200 done date:2611011201 "
    b"stat:DELIVRD err:000 text:Hello id:999 stat:UNDELIV"
)


@pytest.mark.parametrize(
    ("esm_class", "expected"),
    [
        (0x00, False),
        (0x04, True),  # SMSC delivery receipt
        (0x08, True),  # SME delivery acknowledgement
        (0x20, True),  # intermediate delivery notification
        (0x10, False),  # manual/user ack carries user text
        (0x40, False),  # UDHI only
        (0x44, True),  # receipt with UDHI set
    ],
)
def test_is_receipt(esm_class: int, expected: bool) -> None:
    assert is_receipt(esm_class) is expected


def test_parse_standard_text_ignores_fields_inside_text() -> None:
    fields = parse_receipt_text(STANDARD.decode())
    assert fields["id"] == "0A1B2C"
    assert fields["stat"] == "DELIVRD"
    assert fields["sub"] == "001"
    assert fields["err"] == "000"
    receipt = parse_receipt(STANDARD)
    assert receipt is not None
    assert receipt.smsc_id == "0A1B2C"
    assert receipt.state is ReceiptState.DELIVERED
    assert receipt.stat == "DELIVRD"
    assert receipt.err == "000"
    assert receipt.done_at == datetime(2026, 11, 1, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stat", "state"),
    [
        ("DELIVRD", ReceiptState.DELIVERED),
        ("UNDELIV", ReceiptState.FAILED),
        ("EXPIRED", ReceiptState.FAILED),
        ("REJECTD", ReceiptState.FAILED),
        ("DELETED", ReceiptState.FAILED),
        ("UNKNOWN", ReceiptState.FAILED),
        ("ENROUTE", ReceiptState.PENDING),
        ("ACCEPTD", ReceiptState.PENDING),
        ("delivrd", ReceiptState.DELIVERED),
    ],
)
def test_stat_words(stat: str, state: ReceiptState) -> None:
    receipt = parse_receipt(f"id:1 stat:{stat}".encode())
    assert receipt is not None
    assert receipt.state is state
    assert receipt.stat == stat.upper()


def test_case_insensitive_keys_seconds_and_missing_fields() -> None:
    receipt = parse_receipt(b"ID:77 Done Date:261101120159 STAT:UNDELIV")
    assert receipt is not None
    assert (receipt.smsc_id, receipt.state, receipt.err) == ("77", ReceiptState.FAILED, None)
    assert receipt.done_at == datetime(2026, 11, 1, 12, 1, 59, tzinfo=UTC)


def test_bad_date_is_none_not_error() -> None:
    receipt = parse_receipt(b"id:5 done date:2613991299 stat:DELIVRD")
    assert receipt is not None
    assert receipt.done_at is None


@pytest.mark.parametrize(
    ("state_tlv", "state", "stat"),
    [
        (2, ReceiptState.DELIVERED, "DELIVRD"),
        (3, ReceiptState.FAILED, "EXPIRED"),
        (4, ReceiptState.FAILED, "DELETED"),
        (5, ReceiptState.FAILED, "UNDELIV"),
        (6, ReceiptState.PENDING, "ACCEPTD"),
        (8, ReceiptState.FAILED, "REJECTD"),
        (1, ReceiptState.PENDING, "ENROUTE"),
    ],
)
def test_tlv_only(state_tlv: int, state: ReceiptState, stat: str) -> None:
    receipt = parse_receipt(b"", receipted_message_id="ab12\x00", message_state=state_tlv)
    assert receipt is not None
    assert (receipt.smsc_id, receipt.state, receipt.stat) == ("ab12", state, stat)


def test_tlv_id_wins_and_tlv_state_overrides_contradicting_text() -> None:
    receipt = parse_receipt(b"id:43981 stat:DELIVRD err:000", receipted_message_id="abcd", message_state=5)
    assert receipt is not None
    assert receipt.smsc_id == "abcd"
    assert receipt.state is ReceiptState.FAILED
    assert receipt.stat == "UNDELIV"


def test_network_error_code_used_when_no_text_err() -> None:
    receipt = parse_receipt(
        b"", receipted_message_id="1", message_state=5, network_error_code=b"\x03\x00\x22"
    )
    assert receipt is not None
    assert receipt.err == "3:34"


def test_no_id_gives_none() -> None:
    assert parse_receipt(b"stat:DELIVRD") is None
    assert parse_receipt(b"", receipted_message_id="\x00") is None


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [("00ABcd", "abcd"), (" 123\x00", "123"), ("000", "0"), ("", ""), ("msg-Id-1", "msg-id-1")],
)
def test_normalize_id(raw: str, normalized: str) -> None:
    assert normalize_id(raw) == normalized


@pytest.mark.parametrize(
    ("submit_id", "receipt_id"),
    [
        ("1a2b", "6699"),  # hex in submit_sm_resp, decimal in the DLR
        ("6699", "1A2B"),  # and the other way round
        ("0000ff", "255"),
        ("12345", "12345"),
        ("12345", "3039"),  # digit-only hex
        ("3039", "12345"),
        ("c0ffee-1", "C0FFEE-1"),  # opaque ids still match case-insensitively
    ],
)
def test_candidate_ids_match_across_radix(submit_id: str, receipt_id: str) -> None:
    assert normalize_id(submit_id) in candidate_ids(receipt_id)


def test_candidate_ids_do_not_overmatch() -> None:
    assert normalize_id("1a2c") not in candidate_ids("6699")
    assert candidate_ids("zz") == frozenset({"zz"})


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200),
    st.one_of(st.none(), st.text(max_size=70)),
    st.one_of(st.none(), st.integers(0, 255)),
)
def test_parse_receipt_never_raises(sm: bytes, rid: str | None, state: int | None) -> None:
    receipt = parse_receipt(sm, receipted_message_id=rid, message_state=state)
    if receipt is not None:
        assert normalize_id(receipt.smsc_id) in candidate_ids(receipt.smsc_id)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**64))
def test_hex_decimal_candidates_round_trip(n: int) -> None:
    assert normalize_id(format(n, "X")) in candidate_ids(str(n))
    assert normalize_id(str(n)) in candidate_ids(format(n, "x"))
