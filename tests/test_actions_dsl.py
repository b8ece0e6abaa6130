"""The action language parser: every command, every error position, and property tests showing it
never crashes and never lets a control character into a produced action."""

from __future__ import annotations

import ast
import pickle
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions_dsl import (
    Action,
    ActionSyntaxError,
    ParseErrors,
    Playback,
    Say,
    Transfer,
    VoicemailPlayback,
    VoicemailSay,
    is_safe_agi_text,
    parse,
)

# ---------------------------------------------------------------------------------------------
# Valid scripts


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("playback http://example.com/a.mp3", Playback("http://example.com/a.mp3", line=1)),
        (
            "playback https://media.example.com:8443/x/hold.wav?v=2&k=a%20b#t",
            Playback("https://media.example.com:8443/x/hold.wav?v=2&k=a%20b#t", line=1),
        ),
        ("playback http://[::1]:8080/a.wav", Playback("http://[::1]:8080/a.wav", line=1)),
        ("playback HTTPS://Example.COM/A.MP3", Playback("HTTPS://Example.COM/A.MP3", line=1)),
        ("transfer +81312345678", Transfer("+81312345678", None, line=1)),
        ("transfer +1234567", Transfer("+1234567", None, line=1)),
        ("transfer +123456789012345", Transfer("+123456789012345", None, line=1)),
        (
            "transfer +81312345678 --caller=+81501234567",
            Transfer("+81312345678", "+81501234567", line=1),
        ),
        ('say en "Hello"', Say("en", "Hello", line=1)),
        ('say en-US "Hello, world."', Say("en-US", "Hello, world.", line=1)),
        ('say pt-BR "Olá"', Say("pt-BR", "Olá", line=1)),
        ('say zh-Hant-TW "你好"', Say("zh-Hant-TW", "你好", line=1)),
        ('say ja "こんにちは、世界"', Say("ja", "こんにちは、世界", line=1)),
        ('say en "#1 is not a comment"', Say("en", "#1 is not a comment", line=1)),
        ('say en "  spaced  "', Say("en", "  spaced  ", line=1)),
        # ZWNJ is required to spell Persian correctly; only bidi controls are refused.
        ('say fa "می\u200cخواهم"', Say("fa", "می\u200cخواهم", line=1)),
        (
            "voicemail playback http://example.com/greet.wav",
            VoicemailPlayback("http://example.com/greet.wav", line=1),
        ),
        ('voicemail say en "Leave a message"', VoicemailSay("en", "Leave a message", line=1)),
        # Keywords are case-insensitive; values are not touched.
        ("PLAYBACK http://example.com/A.mp3", Playback("http://example.com/A.mp3", line=1)),
        ('Say en "x"', Say("en", "x", line=1)),
        ('VOICEMAIL Say en "x"', VoicemailSay("en", "x", line=1)),
        ("TRANSFER +81312345678 --Caller=+81501234567", Transfer("+81312345678", "+81501234567", line=1)),
        # Blanks around and between words, tabs included.
        ('   say\t en \t"x"  \t', Say("en", "x", line=1)),
        ("\tplayback   http://example.com/a.mp3   ", Playback("http://example.com/a.mp3", line=1)),
    ],
)
def test_single_command(script: str, expected: Action) -> None:
    assert parse(script) == [expected]


@pytest.mark.parametrize(
    ("quoted", "text"),
    [
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"\\\""', '\\"'),
        (r'"\\n is literal"', "\\n is literal"),
        (r'"\""', '"'),
        (r'"\\"', "\\"),
    ],
)
def test_escapes(quoted: str, text: str) -> None:
    assert parse(f"say en {quoted}") == [Say("en", text, line=1)]


def test_several_lines_run_in_order_with_comments_and_blank_lines() -> None:
    script = "\n".join(
        [
            "# greeting",
            'say en "Welcome"',
            "",
            "   # indented comment with \t tab",
            "playback http://example.com/a.mp3",
            "   ",
            'voicemail say ja "メッセージをどうぞ"',
            "transfer +81312345678",
            "voicemail playback http://example.com/b.wav",
        ]
    )
    assert parse(script) == [
        Say("en", "Welcome", line=2),
        Playback("http://example.com/a.mp3", line=5),
        VoicemailSay("ja", "メッセージをどうぞ", line=7),
        Transfer("+81312345678", None, line=8),
        VoicemailPlayback("http://example.com/b.wav", line=9),
    ]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing", ["", "\n", "\r\n"])
def test_line_endings(newline: str, trailing: str) -> None:
    script = newline.join(['say en "a"', "# c", "playback http://e.com/x.mp3"]) + trailing
    assert parse(script) == [Say("en", "a", line=1), Playback("http://e.com/x.mp3", line=3)]


def test_mixed_line_endings() -> None:
    assert parse('say en "a"\r\nsay en "b"\nsay en "c"\r\n') == [
        Say("en", "a", line=1),
        Say("en", "b", line=2),
        Say("en", "c", line=3),
    ]


def test_leading_bom_is_ignored_and_not_counted_in_columns() -> None:
    assert parse('\ufeffsay en "x"') == [Say("en", "x", line=1)]
    with pytest.raises(ParseErrors) as info:
        parse("\ufeffsay en x")
    assert (info.value.line, info.value.column) == (1, 8)


def test_limits_are_inclusive() -> None:
    script = "\n".join(['say en "x"'] * 5)
    assert len(parse(script, max_lines=5)) == 5
    assert parse("playback http://e.com/a", max_length=24) == [Playback("http://e.com/a", line=1)]
    assert parse(f'say en "{"a" * 1000}"') == [Say("en", "a" * 1000, line=1)]
    url = "http://e.com/" + "a" * (2000 - len("http://e.com/"))
    assert parse(f"playback {url}") == [Playback(url, line=1)]
    # The 1000-character limit applies to the unescaped text, not to its source spelling.
    assert parse('say en "' + '\\"' * 1000 + '"') == [Say("en", '"' * 1000, line=1)]


# ---------------------------------------------------------------------------------------------
# Errors: exact line, column and message


def first_error(script: str, **kwargs: int) -> ActionSyntaxError:
    with pytest.raises(ActionSyntaxError) as info:
        parse(script, **kwargs)
    assert isinstance(info.value, ParseErrors)
    return info.value


ERROR_CASES = [
    # Commands
    ("play http://e.com/a.mp3", 1, 1, "unknown command 'play'; valid commands are: playback, transfer, say,"),
    ("dial +81312345678", 1, 1, "voicemail playback, voicemail say"),
    ('"say" en "x"', 1, 1, "unknown command '\"say\"'"),
    ('ſay en "x"', 1, 1, "unknown command 'ſay'"),
    ("voicemail", 1, 10, "expected playback or say after voicemail"),
    ("voicemail record", 1, 11, "unknown voicemail command 'record'; expected playback or say"),
    ("  voicemail  transfer +81312345678", 1, 14, "unknown voicemail command 'transfer'"),
    # Missing arguments point just past the last word.
    ("playback", 1, 9, "expected a URL after playback"),
    ("playback   ", 1, 9, "expected a URL after playback"),
    ("voicemail playback", 1, 19, "expected a URL after voicemail playback"),
    ("transfer", 1, 9, "expected the number to transfer to"),
    ("say", 1, 4, "expected a language after say"),
    ("voicemail say", 1, 14, "expected a language after voicemail say"),
    ("say en", 1, 7, "expected a quoted text after the language"),
    ("voicemail say en", 1, 17, "expected a quoted text after the language"),
    # Wrong kind of argument
    ("say en hello", 1, 8, "expected a quoted text after the language"),
    ('say "hello"', 1, 5, "expected a language before the quoted text"),
    ('playback "http://e.com/a.mp3"', 1, 10, "the URL must not be quoted"),
    ('transfer "+81312345678"', 1, 10, "the number must not be quoted"),
    (
        "transfer --caller=+81312345678 +81312345679",
        1,
        10,
        "expected the number to transfer to before --caller=",
    ),
    # URLs
    ("playback ftp://e.com/a.mp3", 1, 10, "URL must start with http:// or https://"),
    ("playback e.com/a.mp3", 1, 10, "URL must start with http:// or https://"),
    ("playback javascript:alert(1)", 1, 10, "URL must start with http:// or https://"),
    ("playback http:///a.mp3", 1, 10, "URL must have a host"),
    ("playback https://", 1, 10, "URL must have a host"),
    ("playback http://e.com:99999/a", 1, 10, "malformed URL"),
    ("playback http://e.com:port/a", 1, 10, "malformed URL"),
    ("playback http://[::1/a", 1, 10, "malformed URL"),
    ("playback http://e.com/it's.mp3", 1, 25, "quotes are not allowed in a URL"),
    ("playback http://e.com/a<b", 1, 24, "character '<' is not allowed in a URL"),
    ("playback http://e.com/a\\b", 1, 24, "character '\\\\' is not allowed in a URL"),
    ("playback http://e.com/é.mp3", 1, 23, "URL must be ASCII; percent-encode character U+00E9"),
    ("playback http://e.com/" + "a" * 2000, 1, 2010, "URL is longer than 2000 characters"),
    # Numbers
    ("transfer 81312345678", 1, 10, "expected an E.164 number"),
    ("transfer +81-3-1234-5678", 1, 13, "unexpected '-' in number"),
    ("transfer +8131234567x", 1, 21, "unexpected 'x' in number"),
    ("transfer +８1312345678", 1, 11, "unexpected '８' in number"),
    ("transfer +01312345678", 1, 11, "cannot start with 0"),
    ("transfer +123456", 1, 10, "too few digits (6)"),
    ("transfer +", 1, 10, "too few digits (0)"),
    ("transfer +1234567890123456", 1, 26, "too many digits (16)"),
    # --caller=
    ("transfer +81312345678 --caller=", 1, 32, "expected a number after --caller="),
    ("transfer +81312345678 --caller=0312345678", 1, 32, "expected an E.164 number"),
    ("transfer +81312345678 --caller=+81 50", 1, 32, "too few digits (2)"),
    ("transfer +81312345678 --caller=+8150-1234", 1, 37, "unexpected '-' in number"),
    ("transfer +81312345678 --caller +81501234567", 1, 23, "write --caller=<number> as one word"),
    (
        "transfer +81312345678 --timeout=30",
        1,
        23,
        "unknown option '--timeout'; transfer accepts only --caller=",
    ),
    ("transfer +81312345678 --caller=+81501234567 --caller=+81501234568", 1, 45, "given more than once"),
    ('say en "x" --caller=+81501234567', 1, 12, "--caller= is only valid for transfer"),
    ("playback http://e.com/a --caller=+81501234567", 1, 25, "--caller= is only valid for transfer"),
    # Languages
    ('say EN "x"', 1, 5, "invalid language 'EN'"),
    ('say en_US "x"', 1, 5, "invalid language 'en_US'"),
    ('say e "x"', 1, 5, "invalid language 'e'"),
    ('say english "x"', 1, 5, "invalid language 'english'"),
    ('say en- "x"', 1, 5, "invalid language"),
    ('say en-US-toolongsubtag "x"', 1, 5, "invalid language"),
    ("say " + "en" + "-abcdefgh" * 4 + ' "x"', 1, 5, "invalid language"),
    # Quoted text
    ('say en ""', 1, 8, "must not be empty or only spaces"),
    ('say en "   "', 1, 8, "must not be empty or only spaces"),
    ('say en "abc', 1, 8, 'unterminated quoted text: missing closing "'),
    ('say en "abc\\', 1, 8, "unterminated quoted text"),
    ('say en "a\\nb"', 1, 10, 'unknown escape \\n in quoted text; only \\" and \\\\ are allowed'),
    ('say en "a\\tb"', 1, 10, "unknown escape \\t"),
    ('say en "a\\\'b"', 1, 10, "unknown escape \\'"),
    ('say en "a\\u000ab"', 1, 10, "unknown escape \\u"),
    ('say en "a\\\tb"', 1, 10, "unknown escape \\ followed by U+0009"),
    ('say en "a\tb"', 1, 10, "tab is not allowed inside a quoted text"),
    ('say en "' + "a" * 1001 + '"', 1, 1009, "longer than 1000 characters"),
    # The 1001st unescaped character is reported where it is written, past the escapes.
    ('say en "' + '\\"' * 1000 + 'x"', 1, 2009, "longer than 1000 characters"),
    ('say en"hi"', 1, 7, "unexpected quote inside a word"),
    ('say en "hi"there', 1, 12, "expected a space after the closing quote"),
    ('say en "hi" "there"', 1, 13, "unexpected '\"there\"' after a complete say command"),
    # Extra words
    ("playback http://e.com/a.mp3 now", 1, 29, "unexpected 'now' after a complete playback command"),
    ("playback http://e.com/a.mp3 # hold music", 1, 29, "comments must be on their own line"),
    ("transfer +81312345678 +81312345679", 1, 23, "after a complete transfer command"),
    ("voicemail playback http://e.com/a x", 1, 35, "after a complete voicemail playback command"),
    ('voicemail say en "x" y', 1, 22, "after a complete voicemail say command"),
    # Forbidden characters, anywhere, with their own position.
    ("playback http://e.com/a\x00.mp3", 1, 24, "character U+0000 is not allowed"),
    ('say en "a\x00b"', 1, 10, "U+0000"),
    ("# comment \x1b[31m", 1, 11, "U+001B"),
    ('say en "a\rb"', 1, 10, "carriage return not followed by a line feed"),
    ('say en "a"\r', 1, 11, "carriage return not followed by a line feed"),
    ('say en "a\x0bb"', 1, 10, "U+000B"),
    ('say en "a\x0cb"', 1, 10, "U+000C"),
    ('say en "a\x85b"', 1, 10, "U+0085"),
    ('say en "a\x7fb"', 1, 10, "U+007F"),
    ('say en "a\u2028b"', 1, 10, "U+2028 (LINE SEPARATOR)"),
    ('say en "a\u2029b"', 1, 10, "U+2029 (PARAGRAPH SEPARATOR)"),
    ('say en "a\u202eb"', 1, 10, "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ('say en "a\u2066b"', 1, 10, "U+2066"),
    ('say en "a\ud800b"', 1, 10, "U+D800"),
    ("\x00", 1, 1, "U+0000"),
    # Errors on later lines carry their line number.
    ('say en "ok"\nsay en nope', 2, 8, "expected a quoted text after the language"),
    ('# c\r\n\r\nsay en "ok"\r\nplayback gopher://x', 4, 10, "URL must start with http"),
    # Whole-script problems
    ("", 1, 1, "the script has no command; use one of: playback, transfer, say,"),
    ("\n\n   \n", 1, 1, "the script has no command"),
    ("# just a comment\n# and another", 1, 1, "the script has no command"),
    ("\ufeff", 1, 1, "the script has no command"),
]


@pytest.mark.parametrize(("script", "line", "column", "message"), ERROR_CASES)
def test_error_position_and_message(script: str, line: int, column: int, message: str) -> None:
    error = first_error(script)
    assert (error.line, error.column) == (line, column), str(error)
    assert message in error.message
    assert str(error).startswith(f"line {line}, column {column}: ")
    assert is_safe_agi_text(error.message)


def test_too_many_lines_points_at_the_first_extra_line() -> None:
    error = first_error("\n".join(['say en "x"'] * 6), max_lines=5)
    assert (error.line, error.column) == (6, 1)
    assert error.message == "too many lines; the maximum is 5"
    # Blank and comment lines count: they still cost work to scan.
    error = first_error("\n" * 100 + 'say en "x"')
    assert (error.line, error.column) == (101, 1)


def test_too_long_points_at_the_first_character_past_the_limit() -> None:
    error = first_error('say en "a"\nsay en "bcdef"', max_length=15)
    assert (error.line, error.column) == (2, 5)
    assert error.message == "the script is longer than 15 characters"
    assert len(first_error("#" * (64 * 1024) + "\nsay en x").errors) == 1
    assert parse("#" * (64 * 1024 - 11) + '\nsay en "x"')[0] == Say("en", "x", line=2)


def test_all_bad_lines_are_reported_in_order() -> None:
    script = 'say en "ok"\nsay en nope\n# fine\nplay x\ntransfer +81312345678\ntransfer 123'
    error = first_error(script)
    assert [(e.line, e.column) for e in error.errors] == [(2, 8), (4, 1), (6, 10)]
    assert (error.line, error.column, error.message) == (2, 8, error.errors[0].message)
    assert str(error).splitlines() == [str(e) for e in error.errors]
    assert str(error.errors[0]) == "line 2, column 8: expected a quoted text after the language"


def test_only_one_error_per_line() -> None:
    error = first_error('say EN x "y" extra\x00')
    assert [(e.line, e.column) for e in error.errors] == [(1, 19)]


def test_error_types() -> None:
    single = ActionSyntaxError("expected a quoted text after the language", 2, 10)
    assert str(single) == "line 2, column 10: expected a quoted text after the language"
    assert (single.line, single.column) == (2, 10)
    errors = ParseErrors([single, ActionSyntaxError("x", 3, 1)])
    assert isinstance(errors, ActionSyntaxError)
    assert str(errors) == "line 2, column 10: expected a quoted text after the language\nline 3, column 1: x"
    copy = pickle.loads(pickle.dumps(errors))
    assert str(copy) == str(errors)
    assert str(pickle.loads(pickle.dumps(single))) == str(single)
    with pytest.raises(ValueError):
        ParseErrors([])


def test_non_str_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse(b'say en "x"')  # type: ignore[arg-type]


def test_long_echoed_tokens_are_cut_in_messages() -> None:
    error = first_error("x" * 5000)
    assert "unknown command 'xxxxxxxx" in error.message
    assert len(error.message) < 200


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("hello", True),
        ('quote " and \\ backslash', True),
        ("日本語 with ZWJ \u200d and LRM \u200e", True),
        ("", True),
        ("a\nb", False),
        ("a\rb", False),
        ("a\tb", False),
        ("\x00", False),
        ("\x1b", False),
        ("\x7f", False),
        ("\x85", False),
        ("\u2028", False),
        ("\u2029", False),
        ("\u202a", False),
        ("\u202e", False),
        ("\u2069", False),
        ("\ud83d", False),
    ],
)
def test_is_safe_agi_text(text: str, safe: bool) -> None:
    assert is_safe_agi_text(text) is safe


def test_is_safe_agi_text_agrees_with_the_character_predicate_on_every_code_point() -> None:
    from actions_dsl.chars import is_forbidden_char

    disagree = [
        f"U+{c:04X}" for c in range(0x110000) if is_safe_agi_text(chr(c)) == is_forbidden_char(chr(c))
    ]
    assert disagree == []


def test_package_is_pure() -> None:
    """Only the standard library: the parser must be usable without the gateway's dependencies."""
    package = Path(__file__).resolve().parent.parent / "actions_dsl"
    imported: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    assert imported, "expected at least the standard-library imports"
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


# ---------------------------------------------------------------------------------------------
# Property tests


def string_fields(action: Action) -> list[str]:
    return [v for f in fields(action) if isinstance(v := getattr(action, f.name), str)]


def assert_outcome_is_sane(script: str) -> list[Action] | ParseErrors:
    """Parse, and check the invariants that must hold whatever the input."""
    try:
        actions = parse(script)
    except ParseErrors as errors:
        line_count = script.count("\n") + 1
        for error in errors.errors:
            assert 1 <= error.line <= line_count
            assert error.column >= 1
            assert is_safe_agi_text(error.message)
        assert [e.line for e in errors.errors] == sorted({e.line for e in errors.errors})
        return errors
    assert actions
    for action in actions:
        for value in string_fields(action):
            assert is_safe_agi_text(value), action
    return actions


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.text())
def test_arbitrary_text_never_crashes(script: str) -> None:
    assert_outcome_is_sane(script)


# Characters that matter to the grammar or to AGI safety, so random scripts hit them often.
TRICKY = st.sampled_from(
    [*' \t\n\r"\\#-+=:/.\x00\x0b\x0c\x1b\x7f\x85\u2028\u2029\u202e\u2066\ufeff\u200dé日', "\r\n"]
)
KEYWORDS = st.sampled_from(["playback", "transfer", "say", "voicemail", "--caller=", "SAY", "Voicemail"])


@FAST
@given(st.lists(st.one_of(TRICKY, KEYWORDS, st.text(max_size=5)), max_size=40).map("".join))
def test_token_soup_never_crashes(script: str) -> None:
    assert_outcome_is_sane(script)


# Valid building blocks. They are written here independently of the parser so the round trip
# checks the parser against the grammar, not against itself.
HOSTS = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z]{2,6}){0,2}|\[::1\]|127\.0\.0\.1", fullmatch=True)
URL_PATH = st.text(
    alphabet="ABCXYZabcxyz0189-._~:/?#[]@!$&()*+,;=%",
    max_size=30,
)
URLS = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    HOSTS,
    st.sampled_from(["", ":80", ":8443", ":"]),
    URL_PATH,
)
NUMBERS = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
LANGS = st.from_regex(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}", fullmatch=True)
SPEAKABLE = st.characters(
    exclude_categories=("Cc", "Cs", "Zl", "Zp"),
    exclude_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
)
TEXTS = st.text(alphabet=st.one_of(SPEAKABLE, st.sampled_from('"\\ #')), min_size=1, max_size=60).filter(
    lambda t: t.strip() != ""
)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def keyword(draw: st.DrawFn, word: str) -> str:
    return draw(st.sampled_from([word, word.upper(), word.capitalize()]))


@st.composite
def command(draw: st.DrawFn) -> tuple[list[str], type[Action], tuple[str | None, ...]]:
    """Words of one command plus the class and fields it must parse to."""
    kind = draw(st.sampled_from([Playback, Transfer, Say, VoicemailPlayback, VoicemailSay]))
    prefix = [draw(keyword("voicemail"))] if kind in (VoicemailPlayback, VoicemailSay) else []
    if kind in (Playback, VoicemailPlayback):
        url = draw(URLS)
        return [*prefix, draw(keyword("playback")), url], kind, (url,)
    if kind in (Say, VoicemailSay):
        lang, text = draw(LANGS), draw(TEXTS)
        return [*prefix, draw(keyword("say")), lang, quote(text)], kind, (lang, text)
    number, caller = draw(NUMBERS), draw(st.none() | NUMBERS)
    words = [draw(keyword("transfer")), number]
    if caller is not None:
        words.append(draw(keyword("--caller")) + "=" + caller)
    return words, kind, (number, caller)


BLANK = st.sampled_from([" ", "  ", "\t", " \t "])
MARGIN = st.sampled_from(["", " ", "\t", "  \t"])
FILLER = st.sampled_from(["", "   ", "# comment", '  # say en "commented out"', "#"])


@st.composite
def valid_script(draw: st.DrawFn) -> tuple[str, list[Action]]:
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines: list[str] = []
    expected: list[Action] = []
    for _ in range(draw(st.integers(1, 8))):
        lines.extend(draw(st.lists(FILLER, max_size=2)))
        words, kind, values = draw(command())
        text = draw(MARGIN) + "".join(w + draw(BLANK) for w in words[:-1]) + words[-1] + draw(MARGIN)
        lines.append(text)
        expected.append(kind(*values, line=len(lines)))  # type: ignore[arg-type]
    bom = draw(st.sampled_from(["", "\ufeff"]))
    trailing = draw(st.sampled_from(["", newline]))
    return bom + newline.join(lines) + trailing, expected


@FAST
@given(valid_script())
def test_round_trip(case: tuple[str, list[Action]]) -> None:
    script, expected = case
    assert parse(script) == expected


@st.composite
def mutated_script(draw: st.DrawFn) -> str:
    script, _ = draw(valid_script())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(script)))
        match draw(st.sampled_from(["insert", "delete", "duplicate", "swap"])):
            case "insert":
                script = script[:at] + draw(st.one_of(TRICKY, st.characters())) + script[at:]
            case "delete":
                script = script[:at] + script[at + 1 :]
            case "duplicate":
                end = draw(st.integers(at, len(script)))
                script = script[:at] + script[at:end] * 2 + script[end:]
            case "swap" if at + 1 < len(script):
                script = script[:at] + script[at + 1] + script[at] + script[at + 2 :]
    return script


@FAST
@given(mutated_script())
def test_mutated_scripts_never_crash(script: str) -> None:
    assert_outcome_is_sane(script)


# Balanced across kinds: drawn from all four categories at once, lone surrogates would dominate.
FORBIDDEN = st.one_of(
    st.characters(categories=["Cc"], exclude_characters="\t\n\r"),
    st.characters(categories=["Cs"]),
    st.sampled_from("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"),
)


@FAST
@given(valid_script(), FORBIDDEN, st.data())
def test_injected_control_character_is_reported_where_it_is(
    case: tuple[str, list[Action]], bad: str, data: st.DataObject
) -> None:
    script = case[0].removeprefix("\ufeff").replace("\r\n", "\n")
    at = data.draw(st.integers(0, len(script)))
    error = first_error(script[:at] + bad + script[at:])
    line = script.count("\n", 0, at) + 1
    column = at - script.rfind("\n", 0, at)
    assert (error.line, error.column) == (line, column)
    assert f"U+{ord(bad):04X}" in error.message


# Any character at all, with the dangerous ones drawn far more often than st.characters() would.
# Exactly one dangerous character inside otherwise good text, so a single gap in the checks shows;
# and a soup of everything, for combinations.
DANGEROUS = st.one_of(FORBIDDEN, st.sampled_from("\t\n\r"))
GOOD_TEXT = st.text(alphabet=st.one_of(SPEAKABLE, st.sampled_from('"\\ ')), max_size=8)
HOSTILE = st.one_of(
    st.builds(lambda before, bad, after: before + bad + after, GOOD_TEXT, DANGEROUS, GOOD_TEXT),
    st.lists(st.one_of(TRICKY, FORBIDDEN, st.characters()), max_size=20).map("".join),
)
SLOTS = st.sampled_from(
    [
        "playback {raw}",
        "voicemail playback http://e.com/{raw}",
        "transfer +8131234{raw}",
        "transfer +81312345678 --caller={raw}",
        'say {raw} "x"',
        "say en {quoted}",
        "voicemail say ja {quoted}",
    ]
)


@FAST
@given(st.lists(st.tuples(SLOTS, HOSTILE), min_size=1, max_size=4))
def test_hostile_values_in_every_slot_never_get_through(commands: list[tuple[str, str]]) -> None:
    assert_outcome_is_sane("\n".join(slot.format(raw=value, quoted=quote(value)) for slot, value in commands))


@FAST
@given(LANGS, HOSTILE)
def test_quoted_text_is_kept_exactly_or_rejected(lang: str, text: str) -> None:
    acceptable = text.strip() != "" and is_safe_agi_text(text) and len(text) <= 1000
    try:
        actions = parse(f"say {lang} {quote(text)}")
    except ParseErrors:
        assert not acceptable
    else:
        assert acceptable
        assert actions == [Say(lang, text, line=1)]
