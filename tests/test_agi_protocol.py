"""The AGI wire format: argument checks, command lines as Asterisk parses them, header, answers.

Command lines are checked against tests/peers/asterisk_agi.parse_args, written from Asterisk's
parse_args rather than from the code under test.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.voice.agi_protocol import (
    DEAD_CHANNEL,
    DEAD_CHANNEL_COMMANDS,
    HANGUP_LINE,
    INVALID_COMMAND,
    MAX_COMMAND_BYTES,
    USAGE_BEGIN,
    USAGE_END,
    USAGE_NOT_AVAILABLE,
    AgiStreamError,
    ReplyParser,
    UnsafeArgument,
    check_arg,
    check_line,
    command_name,
    format_command,
    format_header,
    format_result,
    format_usage,
    parse_header,
    parse_header_line,
    parse_reply,
    quote_arg,
    result_endpos,
    result_field,
    result_paren,
    safe_digits,
    safe_number,
    safe_path,
    safe_token,
    split_args,
    split_command,
)
from gateway.voice.interfaces import AgiError, AgiResponse, Hangup
from tests.peers.asterisk_agi import parse_args as asterisk_parse_args

HOSTILE = [
    "a\nHANGUP",
    "a\rb",
    "a\r\nEXEC System x",
    "nul\x00",
    "tab\there",
    "nel\x85",
    "esc\x1b[2J",
    "del\x7f",
    "ls\u2028EXEC",
    "ps\u2029",
    "bidi\u202eevil",
    "isolate\u2066x",
    'quote"x',
    "back\\slash",
    '"',
    "\\",
]


# --- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_check_arg_refuses_control_quote_backslash(value: str) -> None:
    with pytest.raises(UnsafeArgument):
        check_arg(value)
    with pytest.raises(UnsafeArgument):
        quote_arg(value)
    with pytest.raises(UnsafeArgument):
        format_command("STREAM FILE", value, "")


@pytest.mark.parametrize("value", ["/var/voice/tts/abc", "日本語", "Grüße", "a b", "", "x=y", "+8190"])
def test_check_arg_accepts_plain_text(value: str) -> None:
    assert check_arg(value) == value


def test_quote_arg_quotes_only_empty_or_spaced() -> None:
    assert quote_arg("abc") == "abc"
    assert quote_arg("") == '""'
    assert quote_arg("a b") == '"a b"'


def test_format_command_exact_lines() -> None:
    assert format_command("ANSWER") == "ANSWER"
    assert format_command("STREAM FILE", "/var/voice/x", "") == 'STREAM FILE /var/voice/x ""'
    assert format_command("EXEC", "Dial", "PJSIP/+81312345678@trunk,30") == (
        "EXEC Dial PJSIP/+81312345678@trunk,30"
    )
    assert format_command("RECORD FILE", "/vm/ab", "wav", "#", "120000", "beep", "s=5") == (
        "RECORD FILE /vm/ab wav # 120000 beep s=5"
    )
    assert format_command("STREAM FILE", "/my dir/x", "") == 'STREAM FILE "/my dir/x" ""'


@pytest.mark.parametrize("verb", ["stream file", "ANSWER\n", "EXEC;", "", "SET  CALLERID", 'A"B'])
def test_format_command_refuses_odd_verbs(verb: str) -> None:
    with pytest.raises(UnsafeArgument):
        format_command(verb)


def test_safe_number() -> None:
    assert safe_number("+81312345678") == "+81312345678"
    for bad in ["81312345678", "+0312345678", "+81 312", "+8131234567890123", "+813\n", "", "+", "+123456"]:
        with pytest.raises(UnsafeArgument):
            safe_number(bad)


def test_safe_token_digits_path() -> None:
    assert safe_token("trunk") == "trunk"
    assert safe_token("my-trunk_2.a") == "my-trunk_2.a"
    for bad in ["", "a b", "a,b", "a/b", "trunk\n", "-x", "a" * 65, "tr\u0443nk"]:
        with pytest.raises(UnsafeArgument):
            safe_token(bad)
    assert safe_digits("") == ""
    assert safe_digits("#*0123456789") == "#*0123456789"
    with pytest.raises(UnsafeArgument):
        safe_digits('#"')
    assert safe_path("/var/voice/a") == "/var/voice/a"
    for bad in ["", "  ", " /a", "/a ", "/a\n", "/" + "a" * 2000]:
        with pytest.raises(UnsafeArgument):
            safe_path(bad)


def test_check_line() -> None:
    assert check_line("ANSWER") == "ANSWER"
    for bad in ["", "   ", "ANSWER\nHANGUP", "ANSWER\r", 'STREAM FILE "x ""', "NOOP \\", "NOOP \x00"]:
        with pytest.raises(UnsafeArgument):
            check_line(bad)
    check_line("NOOP " + "a" * (MAX_COMMAND_BYTES - 5))
    with pytest.raises(UnsafeArgument):
        check_line("NOOP " + "a" * (MAX_COMMAND_BYTES - 4))
    with pytest.raises(UnsafeArgument):
        check_line("NOOP " + "日" * 700)  # 2100 bytes in UTF-8


@pytest.mark.parametrize(
    "line",
    [
        'STREAM FILE /a ""',
        'STREAM FILE "/a b" ""',
        "RECORD FILE /vm/x wav # 1000 beep s=3",
        'SET CALLERID "+81312345678"',
        'EXEC "Dial" "PJSIP/+81@trunk,30"',
        "  NOOP   a\tb  ",
        'x"y z"w',
        'a \\" b',
        "a\\ b c\\\\d",
        '"" ""',
        "",
    ],
)
def test_split_args_matches_asterisk(line: str) -> None:
    assert split_args(line) == asterisk_parse_args(line)


def test_command_name_and_split_command() -> None:
    assert command_name(["stream", "file", "x"]) == "STREAM FILE"
    assert command_name(["CONTROL", "STREAM", "FILE"]) == "CONTROL STREAM FILE"
    assert command_name(["STREAM"]) is None
    assert command_name(["FOO"]) is None
    assert command_name([]) is None
    assert split_command('stream file "/a b" ""') == ("STREAM FILE", ["/a b", ""])
    assert split_command("EXEC Dial PJSIP/x@t,30") == ("EXEC", ["Dial", "PJSIP/x@t,30"])
    assert split_command("FOO bar") == ("FOO", ["bar"])


safe_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"], blacklist_characters='"\\'),
    max_size=40,
)


@given(st.lists(safe_text, max_size=6))
def test_formatted_commands_parse_back_to_the_same_arguments(args: list[str]) -> None:
    """What Asterisk reads from a formatted line is exactly the verb and the arguments."""
    bidi = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
    args = ["".join(ch for ch in a if ch not in bidi) for a in args]
    args = [a.replace("\t", "") for a in args]
    # Asterisk splits on space and tab only; Python's other whitespace stays inside a word.
    line = format_command("SET VARIABLE", *args)
    assert "\n" not in line and "\r" not in line
    assert asterisk_parse_args(line) == ["SET", "VARIABLE", *args]


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5))
def test_no_argument_can_add_a_command(args: list[str]) -> None:
    """Any text at all: either refused, or one line that parses back to exactly these arguments."""
    try:
        line = format_command("STREAM FILE", *args)
    except UnsafeArgument:
        return
    assert all(ch not in line for ch in "\n\r\x00\x85\u2028\u2029")
    assert asterisk_parse_args(line) == ["STREAM", "FILE", *args]


# --- header ---------------------------------------------------------------------------------


def test_parse_header() -> None:
    env = parse_header(
        [
            "agi_network: yes",
            "agi_network_script: din",
            "agi_request: agi://127.0.0.1:4573/din",
            "agi_callerid: +819012345678",
            "agi_calleridname: Yamada: Taro",
            "agi_accountcode: ",
            "agi_dnid: +81312345678\r\n",
        ]
    )
    assert env == {
        "network": "yes",
        "network_script": "din",
        "request": "agi://127.0.0.1:4573/din",
        "callerid": "+819012345678",
        "calleridname": "Yamada: Taro",
        "accountcode": "",
        "dnid": "+81312345678",
    }


@pytest.mark.parametrize("line", ["no colon here", ": value", "agi bad key: x", "\x00\x01: x", "é: x"])
def test_parse_header_line_refuses_garbage(line: str) -> None:
    with pytest.raises(ValueError):
        parse_header_line(line)


def test_format_header_round_trip() -> None:
    text = format_header({"network": "yes", "agi_callerid": "+8190", "dnid": "123"})
    assert text == "agi_network: yes\nagi_callerid: +8190\nagi_dnid: 123\n\n"
    assert parse_header(text.splitlines()[:-1]) == {"network": "yes", "callerid": "+8190", "dnid": "123"}
    with pytest.raises(ValueError):
        format_header({"x": "a\nagi_y: b"})


# --- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=0", AgiResponse(200, 0, "")),
        ("200 result=1\n", AgiResponse(200, 1, "")),
        ("200 result=0 endpos=12345", AgiResponse(200, 0, "endpos=12345")),
        ("200 result=-1 endpos=0", AgiResponse(200, -1, "endpos=0")),
        ("200 result=0 (timeout) endpos=8000", AgiResponse(200, 0, "(timeout) endpos=8000")),
        ("200 result=-1 (hangup) endpos=16000", AgiResponse(200, -1, "(hangup) endpos=16000")),
        ("200 result=1 (Yamada Taro - 03)", AgiResponse(200, 1, "(Yamada Taro - 03)")),
        ("200 result=*12 (timeout)", AgiResponse(200, 0, "*12 (timeout)")),
        ("200 result=", AgiResponse(200, 0, "")),
        ("200", AgiResponse(200, 0, "")),
    ],
)
def test_parse_200(line: str, expected: AgiResponse) -> None:
    assert parse_reply([line]) == expected


def test_result_helpers() -> None:
    r = parse_reply(["200 result=0 (timeout) endpos=8000"])
    assert result_paren(r) == "timeout"
    assert result_endpos(r) == 8000
    assert result_field(r, "endpos") == "8000"
    assert result_field(r, "nope") is None
    v = parse_reply(["200 result=1 (a (b) c)"])
    assert result_paren(v) == "a (b) c"
    assert result_endpos(v) is None
    assert result_paren(parse_reply(["200 result=0 endpos=1"])) is None


@pytest.mark.parametrize(
    "line",
    [
        HANGUP_LINE,
        "HANGUP\n",
        DEAD_CHANNEL,
        "511 Command Not Permitted on a dead channel",
    ],
)
def test_hangup_answers(line: str) -> None:
    with pytest.raises(Hangup):
        parse_reply([line])


@pytest.mark.parametrize(
    "line", [INVALID_COMMAND, USAGE_NOT_AVAILABLE, "503 result=-2 Memory allocation failure"]
)
def test_error_answers(line: str) -> None:
    with pytest.raises(AgiError) as info:
        parse_reply([line])
    assert not isinstance(info.value, AgiStreamError)
    assert str(info.value) == line


def test_usage_block() -> None:
    parser = ReplyParser()
    assert parser.feed(USAGE_BEGIN + "\n") is None
    assert parser.in_usage_block
    assert parser.feed("Send the given file, allowing playback to be interrupted\n") is None
    assert parser.feed("200 result=0 is an example, not an answer\n") is None
    assert parser.feed("HANGUP is a word too\n") is None
    with pytest.raises(AgiError) as info:
        parser.feed(USAGE_END + "\n")
    assert str(info.value).startswith(USAGE_BEGIN)
    assert str(info.value).endswith(USAGE_END)
    assert "allowing playback" in str(info.value)
    assert not parser.in_usage_block
    assert parser.feed("200 result=0") == AgiResponse(200, 0, "")  # usable again


def test_interim_100_then_answer() -> None:
    assert parse_reply(["100 result=0 Trying...", "200 result=1 (speech) endpos=0"]) == AgiResponse(
        200, 1, "(speech) endpos=0"
    )


@pytest.mark.parametrize("line", ["garbage", "", "20 result=0", "OK", "\x00\x01"])
def test_garbage_breaks_the_stream(line: str) -> None:
    with pytest.raises(AgiStreamError):
        parse_reply([line])


def test_endless_usage_block_is_refused() -> None:
    parser = ReplyParser()
    parser.feed(USAGE_BEGIN)
    with pytest.raises(AgiStreamError):
        for _ in range(1000):
            parser.feed("more usage")


def test_answer_ending_early() -> None:
    with pytest.raises(AgiStreamError):
        parse_reply([USAGE_BEGIN, "usage"])


def test_format_answers_round_trip() -> None:
    assert format_result(0) == "200 result=0\n"
    assert format_result(0, "endpos=5") == "200 result=0 endpos=5\n"
    assert parse_reply([format_result(-1, "(hangup) endpos=3")]) == AgiResponse(200, -1, "(hangup) endpos=3")
    assert format_usage(None) == USAGE_NOT_AVAILABLE + "\n"
    block = format_usage("line one\nline two\n")
    assert block == f"{USAGE_BEGIN}\nline one\nline two\n{USAGE_END}\n"
    with pytest.raises(AgiError):
        parse_reply(block.splitlines(keepends=True))


def test_dead_channel_commands_are_those_the_stand_in_runs_on_a_dead_channel() -> None:
    """The channels send these after a hangup; the stand-in answers every other one with 511,
    as res_agi's command table says (each side read from it separately)."""
    from gateway.voice import asterisk_side

    runs_dead = {" ".join(words).upper() for words, dead_ok in asterisk_side._COMMANDS if dead_ok}
    assert runs_dead == DEAD_CHANNEL_COMMANDS
    assert {"GET VARIABLE", "EXEC", "NOOP"} <= DEAD_CHANNEL_COMMANDS
    assert not {"STREAM FILE", "RECORD FILE", "ANSWER", "HANGUP", "SET CALLERID"} & DEAD_CHANNEL_COMMANDS
