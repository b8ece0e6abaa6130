"""The AGI wire protocol, pure: no I/O, shared by the FastAGI channel, the per-call pyst2 script and
the tests.

What Asterisk does with a command line (res_agi.c, `parse_args` and `find_command`) decides what
is safe to send:

* a command is one line of at most 2047 bytes ending in LF; a longer line is cut and the rest runs
  as a second command, and only the LF is stripped (a CR stays in the last argument);
* arguments are split on spaces and tabs; `"` toggles quoting and `\\` escapes the next character,
  anywhere in the line;
* the first words select the command (`STREAM FILE`, `SET CALLERID`, ...), case-insensitively.

So every argument built here must be free of control characters (line breaks first of all),
quotes and backslashes; an argument that is empty or holds a space is wrapped in double quotes,
which then cannot be unbalanced. On top of that, numbers are E.164 (`+` and digits only) and
names (trunk, application, file format, variable) are plain tokens. Anything else raises
`UnsafeArgument` before a byte is written.

Answers (one line each unless noted):

* `200 result=<n> [data]`: success; data is e.g. `endpos=1234` or `(timeout) endpos=1234`;
* `510 Invalid or unknown command`;
* `511 Command Not Permitted on a dead channel or intercept routine` (older versions stop after
  "channel"): the caller hung up -> `Hangup`;
* `520 Invalid command syntax.  Proper usage not available.`, or the block
  `520-Invalid command syntax.  Proper usage follows:` / usage lines / `520 End of proper usage.`;
* the bare line `HANGUP`, which FastAGI sends on its own when the caller hangs up, twice (once
  when Asterisk notices, once when AGI() ends); it may sit in front of the answer to the next
  command, which still follows (`GET VARIABLE DIALSTATUS` -> `200 result=1 (CANCEL)`). The
  parser raises `Hangup` for it; the FastAGI channel notes it and reads on;
* `100 result=0 Trying...`, an interim line some commands send before their real answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from actions_dsl import is_safe_agi_text

from .interfaces import AgiError, AgiResponse, Hangup

# Asterisk reads a command into a 2048-byte buffer (AGI_BUF_LEN) including the LF and a NUL.
MAX_COMMAND_BYTES = 2000
MAX_PATH_CHARS = 1024
MAX_USAGE_LINES = 200
MAX_USAGE_CHARS = 64 * 1024

HANGUP_LINE = "HANGUP"
INVALID_COMMAND = "510 Invalid or unknown command"
DEAD_CHANNEL = "511 Command Not Permitted on a dead channel or intercept routine"
USAGE_NOT_AVAILABLE = "520 Invalid command syntax.  Proper usage not available."
USAGE_BEGIN = "520-Invalid command syntax.  Proper usage follows:"
USAGE_END = "520 End of proper usage."

# Every AGI command name Asterisk registers (res_agi.c `commands[]`), upper case, longest first so
# that a prefix search finds `CONTROL STREAM FILE` before anything shorter.
KNOWN_COMMANDS: tuple[str, ...] = tuple(
    sorted(
        (
            "ANSWER",
            "ASYNCAGI BREAK",
            "CHANNEL STATUS",
            "CONTROL STREAM FILE",
            "DATABASE DEL",
            "DATABASE DELTREE",
            "DATABASE GET",
            "DATABASE PUT",
            "EXEC",
            "GET DATA",
            "GET FULL VARIABLE",
            "GET OPTION",
            "GET VARIABLE",
            "GOSUB",
            "HANGUP",
            "NOOP",
            "RECEIVE CHAR",
            "RECEIVE TEXT",
            "RECORD FILE",
            "SAY ALPHA",
            "SAY DATE",
            "SAY DATETIME",
            "SAY DIGITS",
            "SAY NUMBER",
            "SAY PHONETIC",
            "SAY TIME",
            "SEND IMAGE",
            "SEND TEXT",
            "SET AUTOHANGUP",
            "SET CALLERID",
            "SET CONTEXT",
            "SET EXTENSION",
            "SET MUSIC",
            "SET PRIORITY",
            "SET VARIABLE",
            "SPEECH ACTIVATE GRAMMAR",
            "SPEECH CREATE",
            "SPEECH DEACTIVATE GRAMMAR",
            "SPEECH DESTROY",
            "SPEECH LOAD GRAMMAR",
            "SPEECH RECOGNIZE",
            "SPEECH SET",
            "SPEECH UNLOAD GRAMMAR",
            "STREAM FILE",
            "TDD MODE",
            "VERBOSE",
            "WAIT FOR DIGIT",
        ),
        key=lambda name: (-len(name.split()), name),
    )
)

# Commands that block for as long as the call does something (play, record, bridge, wait): the
# channel gives them the long timeout.
LONG_COMMANDS = frozenset(
    {
        "CONTROL STREAM FILE",
        "EXEC",
        "GET DATA",
        "GET OPTION",
        "RECEIVE CHAR",
        "RECEIVE TEXT",
        "RECORD FILE",
        "SAY ALPHA",
        "SAY DATE",
        "SAY DATETIME",
        "SAY DIGITS",
        "SAY NUMBER",
        "SAY PHONETIC",
        "SAY TIME",
        "SPEECH RECOGNIZE",
        "STREAM FILE",
        "WAIT FOR DIGIT",
        "GOSUB",
    }
)

# Commands res_agi still runs once the caller is gone (its table's `dead` flag); every other
# command then answers 511.
DEAD_CHANNEL_COMMANDS = frozenset(
    {
        "ASYNCAGI BREAK",
        "DATABASE DEL",
        "DATABASE DELTREE",
        "DATABASE GET",
        "DATABASE PUT",
        "EXEC",
        "GET FULL VARIABLE",
        "GET VARIABLE",
        "NOOP",
        "SET VARIABLE",
        "SPEECH DESTROY",
        "SPEECH UNLOAD GRAMMAR",
        "VERBOSE",
    }
)

_VERB = re.compile(r"[A-Z]+(?: [A-Z]+)*")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DIGITS = re.compile(r"[0-9*#A-Da-d]*")
_REPLY = re.compile(r"(\d{3})(?:([ -])(.*))?")
_RESULT = re.compile(r"result=(\S*)(?:[ \t]+(.*))?")
_KEY_VALUE = re.compile(r"(\w+)=(\S*)")
_PAREN = re.compile(r"\((.*)\)(?:\s+\w+=\S*)*")
_HEADER_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")


class UnsafeArgument(ValueError):
    """An argument would change the meaning of the AGI command line (injection) or is malformed."""


class AgiStreamError(AgiError):
    """The AGI stream is unusable: an answer that is not AGI, a line too long, a timeout.

    Unlike a plain AgiError (510/520: that command failed, the call goes on), nothing more can be
    sent on the channel afterwards."""


# --------------------------------------------------------------------------------------------
# Arguments


def _describe(value: str) -> str:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return repr(shown)


def check_arg(value: str, what: str = "argument") -> str:
    """`value` unchanged, or UnsafeArgument if it holds a control, bidi-control or line/paragraph
    separator character, a double quote or a backslash."""
    if not isinstance(value, str):
        raise UnsafeArgument(f"{what}: expected text, got {type(value).__name__}")
    if not is_safe_agi_text(value):
        raise UnsafeArgument(f"{what} {_describe(value)} contains a control character")
    if '"' in value or "\\" in value:
        raise UnsafeArgument(f"{what} {_describe(value)} contains a quote or backslash")
    return value


def safe_path(path: str, what: str = "path") -> str:
    """A file path for STREAM FILE / RECORD FILE (without extension)."""
    check_arg(path, what)
    if not path.strip():
        raise UnsafeArgument(f"{what} is empty")
    if path != path.strip():
        raise UnsafeArgument(f"{what} {_describe(path)} starts or ends with a space")
    if len(path) > MAX_PATH_CHARS:
        raise UnsafeArgument(f"{what} is longer than {MAX_PATH_CHARS} characters")
    return path


def is_e164(number: str) -> bool:
    return isinstance(number, str) and _E164.fullmatch(number) is not None


def safe_number(number: str, what: str = "number") -> str:
    """An E.164 number: `+`, then 7 to 15 digits, the first not 0."""
    if not is_e164(number):
        raise UnsafeArgument(f"{what} {_describe(str(number))} is not an E.164 number")
    return number


def safe_token(token: str, what: str = "name") -> str:
    """A plain name (trunk, application, file format, channel variable)."""
    if not isinstance(token, str) or _TOKEN.fullmatch(token) is None:
        raise UnsafeArgument(f"{what} {_describe(str(token))} is not a plain name")
    return token


def safe_digits(digits: str, what: str = "escape digits") -> str:
    """DTMF digits (0-9, *, #, A-D), possibly none."""
    if not isinstance(digits, str) or _DIGITS.fullmatch(digits) is None:
        raise UnsafeArgument(f"{what} {_describe(str(digits))} are not DTMF digits")
    return digits


def safe_int(value: int, what: str = "number") -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsafeArgument(f"{what}: expected an integer, got {value!r}")
    return str(value)


class Quoted(str):
    """An argument `format_command` always wraps in double quotes (`"#"`, `"+8190..."`)."""

    __slots__ = ()


def quote_arg(value: str) -> str:
    """`value` as one AGI argument: bare, or in double quotes when empty, holding a space, or
    marked `Quoted`."""
    check_arg(value)
    if value == "" or " " in value or isinstance(value, Quoted):
        return f'"{value}"'
    return value


def format_command(verb: str, *args: str) -> str:
    """One command line without the trailing LF, e.g. `format_command("STREAM FILE", p, "")` ->
    `STREAM FILE /var/x ""`. Every argument is checked; the result is checked as a whole."""
    if _VERB.fullmatch(verb) is None:
        raise UnsafeArgument(f"command {_describe(verb)} is not an upper-case AGI command name")
    line = " ".join([verb, *(quote_arg(a) for a in args)])
    return check_line(line)


def check_line(line: str) -> str:
    """`line` unchanged if it can go on the wire as exactly one command, else UnsafeArgument."""
    if not isinstance(line, str) or not line.strip():
        raise UnsafeArgument("empty command")
    if not is_safe_agi_text(line):
        raise UnsafeArgument(f"command {_describe(line)} contains a control character")
    try:
        size = len(line.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafeArgument(f"command {_describe(line)} cannot be encoded") from None
    if size > MAX_COMMAND_BYTES:
        raise UnsafeArgument(f"command is {size} bytes, more than {MAX_COMMAND_BYTES}")
    if line.count('"') % 2:
        raise UnsafeArgument(f"command {_describe(line)} has an unbalanced quote")
    if "\\" in line:
        raise UnsafeArgument(f"command {_describe(line)} contains a backslash")
    return line


def split_args(line: str) -> list[str]:
    """Split a command line the way Asterisk's `parse_args` does (quotes and backslashes)."""
    args: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    in_word = False
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and not in_word:
                in_word = True  # an opening quote after blanks starts a (possibly empty) word
            continue
        if ch in " \t" and not quoted and not escaped:
            if in_word:
                args.append("".join(current))
                current = []
                in_word = False
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        current.append(ch)
        in_word = True
        escaped = False
    if in_word:
        args.append("".join(current))
    return args


def command_name(words: Iterable[str]) -> str | None:
    """The AGI command the leading `words` select (upper case), or None when Asterisk knows none."""
    upper = [w.upper() for w in words]
    for name in KNOWN_COMMANDS:
        parts = name.split()
        if upper[: len(parts)] == parts:
            return name
    return None


def split_command(line: str) -> tuple[str, list[str]]:
    """(`STREAM FILE`, [path, ""]) for a known command; unknown ones give their first word."""
    words = split_args(line)
    name = command_name(words)
    if name is None:
        return (words[0].upper() if words else "", words[1:])
    return name, words[len(name.split()) :]


# --------------------------------------------------------------------------------------------
# The header block


def parse_header_line(line: str) -> tuple[str, str]:
    """`agi_callerid: +8190...` -> (`callerid`, `+8190...`); raises ValueError on anything else.

    Keys lose their `agi_` prefix; the value is everything after the first colon, stripped."""
    key, sep, value = line.partition(":")
    key = key.strip()
    if not sep or _HEADER_KEY.fullmatch(key) is None:
        raise ValueError(f"not an AGI header line: {_describe(line)}")
    if key.startswith("agi_"):
        key = key[4:]
    return key, value.strip()


def parse_header(lines: Iterable[str]) -> dict[str, str]:
    """The header block (without its blank terminator) as a dict; later duplicates win."""
    env: dict[str, str] = {}
    for line in lines:
        key, value = parse_header_line(line.rstrip("\r\n"))
        env[key] = value
    return env


def format_header(env: Mapping[str, str]) -> str:
    """`agi_<key>: <value>` lines and the blank line, as Asterisk sends them."""
    out = []
    for key, value in env.items():
        name = key if key.startswith("agi_") else f"agi_{key}"
        if _HEADER_KEY.fullmatch(name) is None or not is_safe_agi_text(value):
            raise ValueError(f"cannot send header {name!r}: {value!r}")
        out.append(f"{name}: {value}\n")
    return "".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Answers


def format_result(result: int, data: str = "") -> str:
    """`200 result=<n> [data]` with its LF."""
    return f"200 result={result}{' ' + data if data else ''}\n"


def format_usage(usage: str | None) -> str:
    """The 520 answer for a usage error, with every LF."""
    if not usage:
        return USAGE_NOT_AVAILABLE + "\n"
    return f"{USAGE_BEGIN}\n{usage.rstrip(chr(10))}\n{USAGE_END}\n"


def result_field(response: AgiResponse, key: str) -> str | None:
    """A `key=value` field of the data (`endpos`, ...), or None."""
    for m in _KEY_VALUE.finditer(response.data):
        if m.group(1) == key:
            return str(m.group(2))
    return None


def result_endpos(response: AgiResponse) -> int | None:
    value = result_field(response, "endpos")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def result_paren(response: AgiResponse) -> str | None:
    """The value in parentheses: `(timeout)` -> `timeout`, GET VARIABLE's `(ANSWER)` -> `ANSWER`."""
    m = _PAREN.fullmatch(response.data)
    return str(m.group(1)) if m else None


class ReplyParser:
    """Turns the lines Asterisk writes after a command into one answer.

    `feed(line)` returns the AgiResponse for a 200, None while more lines are needed (inside a
    520 block, after an interim 100), and raises Hangup (HANGUP line, 511), AgiError (510, 520,
    other codes) or AgiStreamError (not AGI at all, oversized usage block). One parser per
    command; `reset()` makes it reusable."""

    def __init__(self) -> None:
        self._usage: list[str] | None = None
        self._usage_chars = 0

    def reset(self) -> None:
        self._usage = None
        self._usage_chars = 0

    @property
    def in_usage_block(self) -> bool:
        return self._usage is not None

    def feed(self, line: str) -> AgiResponse | None:
        line = line.rstrip("\r\n")
        if self._usage is not None:
            self._feed_usage(line)
            return None
        if line.strip() == HANGUP_LINE:
            raise Hangup("Asterisk sent HANGUP")
        m = _REPLY.fullmatch(line)
        if m is None:
            raise AgiStreamError(f"not an AGI answer: {_describe(line)}")
        code = int(m.group(1))
        sep = m.group(2) or " "
        rest = m.group(3) or ""
        if code == 200:
            return _parse_200(rest)
        if 100 <= code < 200:
            return None
        if code == 511:
            raise Hangup(line)
        if code == 520 and sep == "-":
            self._usage = [line]
            self._usage_chars = len(line)
            return None
        raise AgiError(line)

    def _feed_usage(self, line: str) -> None:
        assert self._usage is not None
        self._usage.append(line)
        self._usage_chars += len(line) + 1
        if line.startswith("520 "):
            text = "\n".join(self._usage)
            self.reset()
            raise AgiError(text)
        if len(self._usage) > MAX_USAGE_LINES or self._usage_chars > MAX_USAGE_CHARS:
            self.reset()
            raise AgiStreamError("520 usage block without an end")
        return None


def _parse_200(rest: str) -> AgiResponse:
    m = _RESULT.fullmatch(rest)
    if m is None:
        # `200` alone or without result=: keep what there is.
        return AgiResponse(code=200, result=0, data=rest.strip())
    raw, data = m.group(1), (m.group(2) or "").strip()
    try:
        result = int(raw)
    except ValueError:
        # GET DATA answers digits such as `*12#`; keep them in front of the data.
        return AgiResponse(code=200, result=0, data=f"{raw} {data}".strip())
    return AgiResponse(code=200, result=result, data=data)


def parse_reply(lines: Iterable[str]) -> AgiResponse:
    """The answer in `lines` (for tests and one-shot use); raises like ReplyParser.feed, and
    AgiStreamError when the lines end before an answer is complete."""
    parser = ReplyParser()
    for line in lines:
        response = parser.feed(line)
        if response is not None:
            return response
    raise AgiStreamError("the answer ended early")
