"""The IVR commands of the action language (gather, record, pause, hangup, reject): what each
parses to, where each mistake is reported, and that the old commands keep their meaning
around them (indentation only means something under a gather)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions_dsl import (
    Action,
    Gather,
    HangupCall,
    ParseErrors,
    Pause,
    Playback,
    Record,
    Reject,
    Say,
    Transfer,
    is_safe_agi_text,
    parse,
)

MENU = "https://example.com/menu"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("pause 3", [Pause(3, line=1)]),
        ("PAUSE\t60", [Pause(60, line=1)]),
        ("hangup", [HangupCall(line=1)]),
        ("reject", [Reject(False, line=1)]),
        ("Reject BUSY", [Reject(True, line=1)]),
        (f"gather --action={MENU}", [Gather(MENU, line=1)]),
        (
            f"gather --DIGITS=4 --timeout=9 --finish=* --no-input={MENU}?again=1 --action={MENU}",
            [Gather(MENU, 4, 9, "*", f"{MENU}?again=1", line=1)],
        ),
        (f"gather --finish=none --action={MENU}", [Gather(MENU, finish="", line=1)]),
        ("record", [Record(line=1)]),
        (
            f"record --max=30 --silence=0 --no-beep --action={MENU}/rec",
            [Record(30, 0, False, f"{MENU}/rec", line=1)],
        ),
    ],
)
def test_each_new_command(script: str, expected: list[Action]) -> None:
    assert parse(script) == expected


def test_a_menu_with_prompts_and_what_follows() -> None:
    script = (
        'say en "Welcome."\n'
        f"gather --digits=1 --action={MENU}\n"
        '  say en "For sales press 1."\n'
        "\n"
        "  # comments and blank lines do not end the prompts\n"
        "\tpause 1\n"
        f"    playback {MENU}/jingle.mp3\n"
        'say en "We did not get your choice."\n'
        '  say en "indented, but under a say: an ordinary command"\n'
        "hangup\n"
    )
    assert parse(script) == [
        Say("en", "Welcome.", line=1),
        Gather(
            MENU,
            1,
            prompts=(
                Say("en", "For sales press 1.", line=3),
                Pause(1, line=6),
                Playback(f"{MENU}/jingle.mp3", line=7),
            ),
            line=2,
        ),
        Say("en", "We did not get your choice.", line=8),
        Say("en", "indented, but under a say: an ordinary command", line=9),
        HangupCall(line=10),
    ]


def test_an_indented_gather_takes_the_lines_indented_deeper() -> None:
    script = f'  gather --action={MENU}\n  say en "same depth: not a prompt"\n'
    assert parse(script) == [Gather(MENU, line=1), Say("en", "same depth: not a prompt", line=2)]
    two = f"gather --action={MENU}\n  pause 1\ngather --action={MENU}/b\n  pause 2\n"
    assert parse(two) == [
        Gather(MENU, prompts=(Pause(1, line=2),), line=1),
        Gather(f"{MENU}/b", prompts=(Pause(2, line=4),), line=3),
    ]


def test_old_scripts_keep_their_meaning() -> None:
    script = '  say en "a"\n\ttransfer +81312345678\n voicemail say en "b"\n'
    assert [type(a) for a in parse(script)] == [Say, Transfer, type(parse('voicemail say en "b"')[0])]


ERRORS = [
    ("pause", 1, 6, "expected the number of seconds after pause (1 to 60)"),
    ("pause 0", 1, 7, "expected a whole number of seconds from 1 to 60"),
    ("pause 61", 1, 7, "from 1 to 60"),
    ("pause 1.5", 1, 7, "from 1 to 60"),
    ("pause ３", 1, 7, "from 1 to 60"),
    ('pause "3"', 1, 7, "from 1 to 60"),
    ("pause 3 4", 1, 9, "unexpected '4' after a complete pause command"),
    ("hangup now", 1, 8, "unexpected 'now' after a complete hangup command"),
    ("reject politely", 1, 8, "unexpected 'politely' after a complete reject command"),
    ('say en "hi"\nreject', 2, 1, "reject must be the first command"),
    ("gather", 1, 1, "gather needs --action=<url>"),
    ("gather --digits=1", 1, 1, "gather needs --action=<url>"),
    (f"gather --action={MENU} --digits=0", 1, 51, "--digits must be a whole number from 1 to 32"),
    (f"gather --action={MENU} --digits=33", 1, 51, "from 1 to 32"),
    (f"gather --action={MENU} --timeout=61", 1, 52, "--timeout must be a whole number from 1 to 60"),
    (f"gather --action={MENU} --finish=##", 1, 51, "--finish takes one key: 0-9, * or #, or none"),
    (f"gather --action={MENU} --finish=A", 1, 51, "--finish takes one key"),
    (f"gather --action={MENU} --digits=1 --digits=2", 1, 53, "--digits given more than once"),
    (f"gather --action={MENU} --caller=+81312345678", 1, 42, "unknown option '--caller'; gather accepts"),
    (f"gather --action={MENU} --digits", 1, 42, "expected --digits=<1-32>"),
    ("gather --action = https://e.com", 1, 8, "write --action=<url> as one word"),
    ("gather --action=", 1, 17, "expected a value after --action="),
    ("gather --action=ftp://e.com/x", 1, 17, "URL must start with http:// or https://"),
    ("gather --action=https://e.com/a'b", 1, 32, "quotes are not allowed in a URL"),
    (f"gather --no-input=https://e.com/ü --action={MENU}", 1, 33, "URL must be ASCII"),
    (f'gather --action={MENU} "x"', 1, 42, "unexpected '\"x\"' after gather; it takes only options"),
    (f"gather --action={MENU} # menu", 1, 42, "comments must be on their own line"),
    (f"gather --action={MENU}\n  transfer +81312345678", 2, 3, "only say, playback and pause can be prompts"),
    (f"gather --action={MENU}\n  gather --action={MENU}", 2, 3, "only say, playback and pause"),
    (f"gather --action={MENU}\n  reject", 2, 3, "only say, playback and pause"),
    ("record --max=0", 1, 14, "--max must be a whole number from 1 to 3600"),
    ("record --silence=61", 1, 18, "--silence must be a whole number from 0 to 60"),
    ("record --no-beep=yes", 1, 17, "--no-beep takes no value"),
    ("record --beep", 1, 8, "unknown option '--beep'; record accepts --max=<1-3600>, --silence=<0-60>"),
    ("record 30", 1, 8, "unexpected '30' after record"),
    ("record --action=javascript:x", 1, 17, "URL must start with http:// or https://"),
]


@pytest.mark.parametrize(("script", "line", "column", "message"), ERRORS)
def test_errors_name_line_and_column(script: str, line: int, column: int, message: str) -> None:
    with pytest.raises(ParseErrors) as info:
        parse(script)
    error = info.value
    assert (error.line, error.column) == (line, column), str(error)
    assert message in error.message, str(error)


def test_too_many_prompts_and_every_bad_line_reported() -> None:
    prompts = "".join(f"  pause {n}\n" for n in range(1, 12))
    with pytest.raises(ParseErrors) as info:
        parse(f"gather --action={MENU}\n{prompts}  pause 0\nhangup x\n")
    assert [(e.line, e.column) for e in info.value.errors] == [(12, 3), (13, 9), (14, 8)]
    assert "at most 10 prompt lines" in info.value.errors[0].message


def test_a_broken_prompt_line_keeps_the_block_open() -> None:
    with pytest.raises(ParseErrors) as info:
        parse(f"gather --action={MENU}\n  say en hello\n  transfer +81312345678\n")
    assert [e.line for e in info.value.errors] == [2, 3]


KEYWORDS = st.sampled_from(
    [
        "gather",
        "record",
        "pause",
        "hangup",
        "reject",
        "busy",
        "say",
        "--action=",
        "--digits=",
        "--finish=",
        "--no-beep",
        "--max=",
        f"--action={MENU}",
        "  ",
        "\n",
        "\n  ",
        '"x"',
        "1",
        "#",
        "en",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(KEYWORDS, st.text(max_size=4)), max_size=30).map("".join))
def test_soup_of_new_words_never_crashes(script: str) -> None:
    try:
        actions = parse(script)
    except ParseErrors as errors:
        assert all(e.line >= 1 and e.column >= 1 and is_safe_agi_text(e.message) for e in errors.errors)
        assert [e.line for e in errors.errors] == sorted({e.line for e in errors.errors})
        return
    for action in actions:
        for value in vars(action).values() if hasattr(action, "__dict__") else ():
            assert not isinstance(value, str) or is_safe_agi_text(value)
        if isinstance(action, Gather):
            assert len(action.prompts) <= 10 and all(
                isinstance(p, Say | Playback | Pause) for p in action.prompts
            )
            assert is_safe_agi_text(action.action) and action.finish in ("", *"0123456789*#")


def test_the_menu_example_of_the_docs_parses() -> None:
    """docs/action-language.md's menu is meant to be copied: every script it serves is valid."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "action-language.md").read_text()
    code = doc.split("## A menu to copy", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code.replace("web.run_app(app, port=8080)", ""), namespace)  # the module, not the server
    menu = parse(namespace["MENU"])
    assert isinstance(menu[0], Gather) and len(menu[0].prompts) == 2 and menu[0].no_input
    for script in namespace["CHOICES"].values():
        assert parse(script)
    assert any(isinstance(a, Record) for a in parse(namespace["CHOICES"]["3"]))
