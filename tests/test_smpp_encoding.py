from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpp.encoding import (
    DC_DEFAULT,
    DC_UCS2,
    ESM_UDHI,
    build_udh,
    decode_gsm7,
    decode_short_message,
    encode_gsm7,
    gsm7_length,
    is_gsm7,
    plan,
    split_udh,
    submit_parts,
)

EXTENSION_CHARS = "^{}\\[~]|€\f"


@pytest.mark.parametrize(
    ("text", "gsm", "length"),
    [
        ("", True, 0),
        ("Hello @ £$¥ èé", True, 14),
        ("ÄÖÑÜ§¿äöñüà Δ_ΦΓΛΩΠΨΣΘΞ", True, 23),
        (EXTENSION_CHARS, True, 20),
        ("price: 5€", True, 10),
        ("日本語", False, None),
        ("emoji 😀", False, None),
        ("ç lowercase c-cedilla is not GSM", False, None),  # only uppercase Ç is
        ("`backtick", False, None),
    ],
)
def test_is_gsm7_and_length(text: str, gsm: bool, length: int | None) -> None:
    assert is_gsm7(text) is gsm
    if length is not None:
        assert gsm7_length(text) == length


def test_gsm7_bytes_known_values() -> None:
    assert encode_gsm7("@£$") == b"\x00\x01\x02"
    assert encode_gsm7("A a") == b"\x41\x20\x61"
    assert encode_gsm7("{}[]~|€^\\") == bytes.fromhex("1b28 1b29 1b3c 1b3e 1b3d 1b40 1b65 1b14 1b2f")
    assert encode_gsm7("\f") == b"\x1b\x0a"
    assert decode_gsm7(encode_gsm7(EXTENSION_CHARS + "Ünicode?")) == EXTENSION_CHARS + "Ünicode?"


def test_decode_gsm7_garbage_never_raises() -> None:
    assert decode_gsm7(b"\xff\x80A") == "\ufffd\ufffdA"
    assert decode_gsm7(b"A\x1b") == "A "  # dangling escape
    assert decode_gsm7(b"\x1b\x41") == "A"  # unknown extension falls back to the basic table
    assert decode_gsm7(b"\x1b\xff") == "\ufffd"


@pytest.mark.parametrize(
    ("text", "dc", "parts", "sizes"),
    [
        ("a" * 160, DC_DEFAULT, 1, [160]),
        ("a" * 161, DC_DEFAULT, 2, [153, 8]),
        ("a" * 306, DC_DEFAULT, 2, [153, 153]),
        ("a" * 307, DC_DEFAULT, 3, [153, 153, 1]),
        ("€" * 80, DC_DEFAULT, 1, [160]),  # 80 extension chars = 160 septets
        ("€" * 81, DC_DEFAULT, 2, [152, 10]),  # never split 1B|65: 76 pairs fit in 153
        ("あ" * 70, DC_UCS2, 1, [140]),
        ("あ" * 71, DC_UCS2, 2, [134, 8]),
        ("あ" * 100, DC_UCS2, 2, [134, 66]),
        ("😀" * 35, DC_UCS2, 1, [140]),  # 70 UTF-16 units
        ("😀" * 36, DC_UCS2, 2, [132, 12]),  # 33 surrogate pairs = 66 units, never 67
        ("a" * 66 + "😀" * 3, DC_UCS2, 2, [132, 12]),  # the pair that would straddle 67 moves on
    ],
)
def test_plan_splits(text: str, dc: int, parts: int, sizes: list[int]) -> None:
    encoded = plan(text)
    assert encoded.data_coding == dc
    assert encoded.parts == parts
    assert [len(p) for p in encoded.payloads] == sizes


def test_plan_ucs2_is_utf16_big_endian() -> None:
    encoded = plan("日本😀")
    assert encoded.payloads == ("日本😀".encode("utf-16-be"),)
    assert encoded.length == 4


def test_plan_split_never_breaks_escape_or_surrogate() -> None:
    for text in ("a" + "€" * 200, "b" + "😀" * 100, "€a" * 120):
        encoded = plan(text)
        assert encoded.parts > 1
        for payload in encoded.payloads:
            if encoded.data_coding == DC_DEFAULT:
                assert not payload.endswith(b"\x1b")
                assert payload[:1] != b"\x65"  # an orphaned second half of 1B 65
            else:
                payload.decode("utf-16-be")  # a broken surrogate pair would raise
        assert "".join(decode_short_message(encoded.data_coding, 0, p).text for p in encoded.payloads) == text


def test_build_udh() -> None:
    assert build_udh(0x42, 3, 2) == bytes.fromhex("050003420302")
    assert build_udh(256 + 7, 2, 1) == bytes.fromhex("050003070201")


def test_submit_parts_single_and_multi() -> None:
    assert submit_parts(plan("hi"), 9) == [(0x00, b"hi")]
    multi = submit_parts(plan("あ" * 100), 9)
    assert [esm for esm, _ in multi] == [ESM_UDHI, ESM_UDHI]
    assert [sm[:6] for _, sm in multi] == [build_udh(9, 2, 1), build_udh(9, 2, 2)]
    assert b"".join(sm[6:] for _, sm in multi) == ("あ" * 100).encode("utf-16-be")


def test_split_udh_16bit_ref_and_other_ies() -> None:
    # A port-addressing IE (0x05) before a 16-bit concat IE (0x08).
    udh = bytes.fromhex("0c 05 04 0b84 23f0 08 04 1234 03 02".replace(" ", ""))
    concat, body = split_udh(udh + b"body")
    assert concat is not None
    assert (concat.ref, concat.total, concat.seq) == (0x1234, 3, 2)
    assert body == b"body"


@pytest.mark.parametrize(
    ("dc", "esm", "sm", "expected"),
    [
        (0, 0, b"Hello \x1b\x65", ("Hello €", None, 1, 1)),
        (1, 0, b"ASCII @", ("ASCII @", None, 1, 1)),
        (3, 0, "café".encode("latin-1"), ("café", None, 1, 1)),
        (8, 0, "日本".encode("utf-16-be"), ("日本", None, 1, 1)),
        (8, 0x40, build_udh(5, 2, 2) + "語".encode("utf-16-be"), ("語", 5, 2, 2)),
        (0, 0x40, bytes.fromhex("0608040102") + b"\x02\x01" + b"Hi", ("Hi", 0x0102, 2, 1)),
        (0xF0, 0, b"class 0", ("class 0", None, 1, 1)),
        (0x18, 0, "Ω".encode("utf-16-be"), ("Ω", None, 1, 1)),  # 03.38 general group, UCS-2
        (0, 0x40, build_udh(1, 1, 1) + b"one", ("one", None, 1, 1)),  # 1-of-1 is a single message
    ],
)
def test_decode_short_message(dc: int, esm: int, sm: bytes, expected: tuple[object, ...]) -> None:
    assert tuple(decode_short_message(dc, esm, sm)) == expected


def test_decode_uses_sar_tlvs() -> None:
    decoded = decode_short_message(
        0, 0, b"part", sar_msg_ref_num=300, sar_total_segments=3, sar_segment_seqnum=2
    )
    assert decoded == ("part", 300, 3, 2)


@pytest.mark.parametrize(
    ("dc", "esm", "sm"),
    [
        (8, 0, b"\xd8\x3d"),  # a lone high surrogate
        (8, 0, b"\x00"),  # odd length
        (0, 0x40, b"\xff\x00\x03"),  # UDHL beyond the data
        (0, 0x40, b""),
        (0, 0x40, b"\x05\x00\x03"),  # IE truncated
        (0x24, 0, b"\x01\x02"),  # compressed, cannot decode
        (0x05, 0, b"\x81"),  # half a Shift-JIS character
    ],
)
def test_decode_garbage_never_raises(dc: int, esm: int, sm: bytes) -> None:
    assert isinstance(decode_short_message(dc, esm, sm).text, str)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_plan_then_decode_round_trips(text: str) -> None:
    encoded = plan(text)
    limit = 160 if encoded.data_coding == DC_DEFAULT else 140
    per_part = 153 if encoded.data_coding == DC_DEFAULT else 134
    assert all(len(p) <= (limit if encoded.parts == 1 else per_part) for p in encoded.payloads)
    texts = []
    for seq, (esm, sm) in enumerate(submit_parts(encoded, 77), start=1):
        decoded = decode_short_message(encoded.data_coding, esm, sm)
        if encoded.parts > 1:
            assert (decoded.concat_ref, decoded.concat_total, decoded.concat_seq) == (77, encoded.parts, seq)
        texts.append(decoded.text)
    assert "".join(texts) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300))
def test_decode_random_bytes_never_raises(dc: int, esm: int, sm: bytes) -> None:
    decoded = decode_short_message(dc, esm, sm)
    assert isinstance(decoded.text, str)
    assert decoded.concat_total >= 1


@pytest.mark.parametrize(("dc", "codec"), [(1, "ascii"), (3, "latin-1")])
def test_gsm_text_as_ia5_or_latin1_keeps_the_gsm_parts(dc: int, codec: str) -> None:
    """For an SMSC whose default alphabet is not GSM: the same text and parts, other octets."""
    text = "Price {99} EUR " * 20  # extension characters: two septets each, one octet here
    gsm, other = plan(text), plan(text, dc)
    assert (other.data_coding, other.parts) == (dc, gsm.parts)
    assert b"".join(other.payloads).decode(codec) == text
    assert [len(p.decode(codec)) for p in other.payloads] == [
        len(decode_gsm7(p)) for p in gsm.payloads
    ]  # each part holds the same characters
    for seq, (esm, sm) in enumerate(submit_parts(other, 9), start=1):
        assert decode_short_message(dc, esm, sm).concat_seq == seq


def test_gsm_text_the_chosen_charset_cannot_hold_goes_as_gsm() -> None:
    assert plan("café", 1).data_coding == DC_DEFAULT  # é is GSM, not ASCII
    assert plan("Ω 5€", 3).data_coding == DC_DEFAULT  # neither is Latin-1
    assert plan("café", 3).payloads == (b"caf\xe9",)
    assert plan("日本", 3).data_coding == DC_UCS2
