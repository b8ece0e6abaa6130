r"""The action language: what an ``action_url`` answers to tell the gateway what to do with a call.

Reference
=========

A script is UTF-8 text with one command per line, run in order from top to bottom::

    # Greet the caller, then hand them to the front desk.
    say en "Thank you for calling. Please hold."
    playback https://example.com/hold-music.mp3
    transfer +81312345678 --caller=+81501234567

Commands
--------
``playback <url>``
    Play an MP3 or WAV file. The format is detected when the file is fetched, so the URL does not
    need to end in ``.mp3`` or ``.wav``.
``transfer <number> [--caller=<number>]``
    Connect the call to ``<number>``. ``--caller=`` sets the caller ID shown to the called party;
    write it as one word, with no space around ``=``. It is the only option, and only
    ``transfer`` accepts it.
``say <lang> "<text>"``
    Speak ``<text>`` with speech synthesis in language ``<lang>``.
``voicemail playback <url>``
    Play ``<url>`` as the greeting, then record a message after the beep.
``voicemail say <lang> "<text>"``
    Speak ``<text>`` as the greeting, then record a message after the beep.
``pause <seconds>``
    Silence, 1 to 60 seconds.
``hangup``
    End the call.
``reject [busy]``
    Refuse the call without answering it; ``busy``: the caller hears busy. Only as the first
    command of a script.
``gather --action=<url> [--digits=<n>] [--timeout=<s>] [--finish=<key>] [--no-input=<url>]``
    Collect keys. The lines after it indented deeper than it (only ``say``, ``playback`` and
    ``pause``, at most 10; blank and comment lines do not end them) are its prompts, played
    until a key is pressed. ``--digits`` (1-32, default none: until the finish key or the
    timeout), ``--timeout`` (1-60 s, default 5: waiting for each next key), ``--finish`` (one
    key of ``0-9*#``, or ``none``; default ``#``). Keys pressed: ``--action`` is fetched and its
    answer runs instead of the rest of the script; none: ``--no-input`` when given, else the
    next line runs. Anywhere else, leading blanks mean nothing.
``record [--max=<s>] [--silence=<s>] [--no-beep] [--action=<url>]``
    Record the caller after a beep until ``#``, ``--silence`` seconds of silence (0-60, default
    5, 0: none) or ``--max`` seconds (1-3600, default 120); the recording is POSTed to
    ``--action`` when given, and the script goes on.

Grammar
-------
::

    script    = line { newline line }            newline = LF | CR LF
    line      = blank* [ command | comment ] blank*
    comment   = "#" { any character }            (the whole line; see below)
    command   = "playback" url
              | "transfer" number [ "--caller=" number ]
              | "say" lang text
              | "voicemail" "playback" url
              | "voicemail" "say" lang text
              | "pause" seconds
              | "hangup"
              | "reject" [ "busy" ]
              | "gather" option*                 (its prompts: the next lines indented deeper)
              | "record" option*
    option    = "--" name [ "=" value ]          (one word; each option at most once, any order)
    blank     = space | tab                      (one or more between words)

Values
------
url
    ``http://`` or ``https://`` followed by a host, as one word of at most 2000 characters. Only
    ASCII letters, digits and ``-._~:/?#[]@!$&()*+,;=%`` are allowed: percent-encode anything else,
    including spaces, both quote characters and non-ASCII characters.
number
    E.164: ``+`` then 7 to 15 digits, the first of which is not ``0`` (``+81312345678``). No spaces,
    dashes, dots or brackets.
lang
    A language tag: 2 or 3 lowercase letters, optionally followed by ``-`` and 2 to 8 letters or
    digits, repeated (``en``, ``ja``, ``en-US``, ``pt-BR``, ``zh-Hant-TW``); at most 35 characters.
text
    Double-quoted, on a single line, at most 1000 characters once unescaped, and not empty or only
    spaces. Inside the quotes write ``\"`` for a quote and ``\\`` for a backslash; any other
    backslash sequence (``\n``, ``\t``, ...) is an error, never a line break. Tabs are not
    allowed inside the quotes.

Other rules
-----------
* Command names (including ``voicemail``'s sub-commands), ``busy`` and option names are case-insensitive:
  ``SAY``, ``Say`` and ``say`` are the same. Only ASCII letters count, so look-alike letters from
  other alphabets never match. Values keep their case.
* Blank lines and lines whose first non-blank character is ``#`` are ignored. A ``#`` after a
  command is not a comment: comments must be on their own line.
* Anything after a complete command is an error, pointing at the first extra word.
* Control characters (NUL, a carriage return not followed by a line feed, vertical tab, form feed,
  escape, delete, C1 controls, ...), the line and paragraph separators U+2028/U+2029 and the bidi
  controls U+202A-U+202E and U+2066-U+2069 are rejected anywhere, comments included. The only
  exception is the tab, allowed as a blank between words.
* A byte order mark at the very start is ignored and does not count toward columns.
* A script holds at most 100 lines (blank and comment lines count) and 65,536 characters, and
  must contain at least one command.

Errors
------
Errors carry a line and a column, both starting at 1; columns count characters (Unicode code
points), not bytes. Every line is checked, and all errors are reported in order, at most one per
line, for example ``line 2, column 10: expected a quoted text after the language``. A script over
the size or line limit gets only that error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .actions import (
    Action,
    Gather,
    HangupCall,
    Pause,
    Playback,
    Prompt,
    Record,
    Reject,
    Say,
    Transfer,
    VoicemailPlayback,
    VoicemailSay,
)
from .chars import describe_char, is_forbidden_char, is_safe_agi_text
from .errors import ActionSyntaxError, ParseErrors, show
from .lexer import BLANKS, Token, tokenize
from .values import (
    E164_HINT,
    Problem,
    e164_problem,
    lang_problem,
    text_problem,
    url_problem,
)

__all__ = ["COMMANDS", "is_safe_agi_text", "parse"]

COMMANDS = (
    "playback",
    "transfer",
    "say",
    "voicemail playback",
    "voicemail say",
    "gather",
    "record",
    "pause",
    "hangup",
    "reject",
)
MAX_PROMPTS = 10  # prompt lines under one gather
PAUSE_MAX = 60  # seconds
GATHER_DIGITS_MAX = 32
GATHER_TIMEOUT_MAX = 60  # seconds
RECORD_MAX = 3600  # seconds
RECORD_SILENCE_MAX = 60  # seconds
DTMF_KEYS = "0123456789*#"
_COMMAND_LIST = ", ".join(COMMANDS)
_CALLER = "--caller="
_BOM = "\ufeff"


def parse(script: str, *, max_lines: int = 100, max_length: int = 64 * 1024) -> list[Action]:
    """Parse a script into actions, or raise ParseErrors listing every problem in line order."""
    if not isinstance(script, str):
        raise TypeError(f"script must be str, not {type(script).__name__}")
    if script.startswith(_BOM):
        script = script[1:]
    if len(script) > max_length:
        raise ParseErrors([_too_long(script, max_length)])
    lines = _split_lines(script)
    if len(lines) > max_lines:
        raise ParseErrors(
            [ActionSyntaxError(f"too many lines; the maximum is {max_lines}", max_lines + 1, 1)]
        )

    actions: list[Action] = []
    errors: list[ActionSyntaxError] = []
    block: _Block | None = None  # the gather whose indented prompt lines may follow
    for number, text in enumerate(lines, start=1):
        indent = len(text) - len(text.lstrip(BLANKS))
        try:
            action = _parse_line(text, number)
        except ActionSyntaxError as exc:
            errors.append(exc)
            if block is not None and indent <= block.indent:
                block.close(actions)
                block = None
            continue
        if action is None:
            continue
        try:
            if block is not None and indent > block.indent:
                block.add(action, number, indent)
                continue
            if block is not None:
                block.close(actions)
                block = None
            if isinstance(action, Reject) and actions:
                raise ActionSyntaxError(
                    "reject must be the first command: it refuses the call before it is answered",
                    number,
                    indent + 1,
                )
        except ActionSyntaxError as exc:
            errors.append(exc)
            continue
        if isinstance(action, Gather):
            block = _Block(len(actions), indent)
        actions.append(action)
    if block is not None:
        block.close(actions)
    if errors:
        raise ParseErrors(errors)
    if not actions:
        raise ParseErrors(
            [ActionSyntaxError(f"the script has no command; use one of: {_COMMAND_LIST}", 1, 1)]
        )
    return actions


def _too_long(script: str, max_length: int) -> ActionSyntaxError:
    """Point at the first character past the limit, so the customer sees where to cut."""
    line = script.count("\n", 0, max_length) + 1
    column = max_length - script.rfind("\n", 0, max_length)
    return ActionSyntaxError(f"the script is longer than {max_length} characters", line, column)


@dataclass
class _Block:
    """A gather being read: the lines indented deeper than it are its prompts."""

    at: int  # its index in the actions
    indent: int
    prompts: list[Prompt] | None = None

    def add(self, action: Action, line: int, indent: int) -> None:
        if not isinstance(action, Say | Playback | Pause):
            raise ActionSyntaxError(
                "only say, playback and pause can be prompts of gather (indented under it); "
                "write other commands without the indentation",
                line,
                indent + 1,
            )
        self.prompts = self.prompts or []
        if len(self.prompts) >= MAX_PROMPTS:
            raise ActionSyntaxError(f"a gather takes at most {MAX_PROMPTS} prompt lines", line, indent + 1)
        self.prompts.append(action)

    def close(self, actions: list[Action]) -> None:
        gather = actions[self.at]
        assert isinstance(gather, Gather)
        actions[self.at] = replace(gather, prompts=tuple(self.prompts or ()))


def _split_lines(script: str) -> list[str]:
    # Only LF separates lines. str.splitlines() would also split on VT, FF, NEL, U+2028 and more,
    # silently turning characters we must reject into line breaks.
    *terminated, last = script.split("\n")
    # Only a CR directly before an LF is a line ending; any other CR is reported as a control
    # character, including one at the very end of the script.
    lines = [line.removesuffix("\r") for line in terminated]
    if last:
        lines.append(last)  # a final newline ends the last line; it does not start an empty one
    return lines


def _parse_line(text: str, line: int) -> Action | None:
    _reject_forbidden(text, line)
    content = text.lstrip(BLANKS)
    if not content or content.startswith("#"):
        return None
    return _command(_Words(tokenize(text, line), line))


def _reject_forbidden(text: str, line: int) -> None:
    for index, ch in enumerate(text):
        if ch == "\t" or not is_forbidden_char(ch):
            continue
        if ch == "\r":
            message = "carriage return not followed by a line feed"
        else:
            message = f"character {describe_char(ch)} is not allowed"
        raise ActionSyntaxError(message, line, index + 1)


class _Words:
    """The tokens of one command line, consumed left to right."""

    def __init__(self, tokens: list[Token], line: int) -> None:
        self._tokens = tokens
        self._next = 0
        self.line = line

    def take(self, what: str) -> Token:
        if self._next >= len(self._tokens):
            raise ActionSyntaxError(f"expected {what}", self.line, self._tokens[-1].end_column)
        token = self._tokens[self._next]
        self._next += 1
        return token

    def peek(self) -> Token | None:
        return self._tokens[self._next] if self._next < len(self._tokens) else None

    def error(self, message: str, column: int) -> ActionSyntaxError:
        return ActionSyntaxError(message, self.line, column)

    def finish(self, command: str) -> None:
        extra = self.peek()
        if extra is None:
            return
        if _is_caller_option(extra):
            message = f"{_CALLER} is only valid for transfer"
        else:
            message = f"unexpected {show(extra.raw)} after a complete {command} command"
            if extra.raw.startswith("#"):
                message += "; comments must be on their own line"
        raise self.error(message, extra.column)

    def check(self, problem: Problem | None, token: Token) -> None:
        if problem is not None:
            at = problem.at
            raise self.error(problem.message, token.column if at is None else token.column_of(at))


def _keyword(token: Token) -> str | None:
    # ASCII only: "ſay".lower() is not "say", but "ſ".upper() is "S", and other look-alikes fold
    # to ASCII too. Refusing non-ASCII keeps the match predictable.
    if token.quoted or not token.value.isascii():
        return None
    return token.value.lower()


def _is_caller_option(token: Token) -> bool:
    prefix = token.value[: len(_CALLER)]
    return not token.quoted and prefix.isascii() and prefix.lower() == _CALLER


def _command(words: _Words) -> Action:
    head = words.take("a command")
    keyword = _keyword(head)
    line = words.line
    action: Action
    if keyword == "playback":
        action = Playback(_url(words, "playback"), line=line)
    elif keyword == "transfer":
        number, caller = _transfer(words)
        action = Transfer(number, caller, line=line)
    elif keyword == "say":
        lang, text = _lang_text(words, "say")
        action = Say(lang, text, line=line)
    elif keyword == "voicemail":
        return _voicemail(words)
    elif keyword == "pause":
        action = Pause(_seconds(words, "pause", 1, PAUSE_MAX), line=line)
    elif keyword == "hangup":
        action = HangupCall(line=line)
    elif keyword == "reject":
        action = Reject(_reject_busy(words), line=line)
    elif keyword == "gather":
        return _gather(words, head)
    elif keyword == "record":
        return _record(words)
    else:
        raise words.error(
            f"unknown command {show(head.raw)}; valid commands are: {_COMMAND_LIST}", head.column
        )
    words.finish(keyword)
    return action


def _voicemail(words: _Words) -> Action:
    sub = words.take("playback or say after voicemail")
    keyword = _keyword(sub)
    action: Action
    if keyword == "playback":
        action = VoicemailPlayback(_url(words, "voicemail playback"), line=words.line)
    elif keyword == "say":
        lang, text = _lang_text(words, "voicemail say")
        action = VoicemailSay(lang, text, line=words.line)
    else:
        raise words.error(f"unknown voicemail command {show(sub.raw)}; expected playback or say", sub.column)
    words.finish(f"voicemail {keyword}")
    return action


def _url(words: _Words, command: str) -> str:
    token = words.take(f"a URL after {command}")
    if token.quoted:
        raise words.error("the URL must not be quoted", token.column)
    words.check(url_problem(token.value), token)
    return token.value


def _lang_text(words: _Words, command: str) -> tuple[str, str]:
    lang = words.take(f"a language after {command} (e.g. en, ja, en-US)")
    if lang.quoted:
        raise words.error("expected a language before the quoted text (e.g. en, ja, en-US)", lang.column)
    words.check(lang_problem(lang.value), lang)
    text = words.take("a quoted text after the language")
    if not text.quoted:
        raise words.error("expected a quoted text after the language", text.column)
    words.check(text_problem(text.value), text)
    return lang.value, text.value


def _transfer(words: _Words) -> tuple[str, str | None]:
    number = words.take(f"the number to transfer to ({E164_HINT})")
    if _is_caller_option(number):
        raise words.error(f"expected the number to transfer to before {_CALLER}", number.column)
    if number.quoted:
        raise words.error("the number must not be quoted", number.column)
    words.check(e164_problem(number.value), number)

    option = words.peek()
    if option is None or option.quoted or not option.value.startswith("--"):
        return number.value, None
    words.take("an option")
    if not _is_caller_option(option):
        if option.value.isascii() and option.value.lower() == _CALLER[:-1]:
            raise words.error(f"write {_CALLER}<number> as one word, with no space around =", option.column)
        name = option.value.split("=", 1)[0]
        raise words.error(
            f"unknown option {show(name)}; transfer accepts only {_CALLER}<number>", option.column
        )
    value = Token(
        value=option.value[len(_CALLER) :],
        column=option.column + len(_CALLER),
        raw=option.raw[len(_CALLER) :],
        quoted=False,
    )
    if not value.value:
        raise words.error(f"expected a number after {_CALLER} ({E164_HINT})", value.column)
    words.check(e164_problem(value.value), value)
    again = words.peek()
    if again is not None and _is_caller_option(again):
        raise words.error(f"{_CALLER} given more than once", again.column)
    return number.value, value.value


def _seconds(words: _Words, command: str, low: int, high: int) -> int:
    token = words.take(f"the number of seconds after {command} ({low} to {high})")
    value = _integer(token.value) if not token.quoted else None
    if value is None or not low <= value <= high:
        raise words.error(f"expected a whole number of seconds from {low} to {high}", token.column)
    return value


def _integer(text: str) -> int | None:
    # ASCII digits only (str.isdigit() takes other scripts' digits); a long run is out of range.
    if not text or len(text) > 9 or any(ch not in "0123456789" for ch in text):
        return None
    return int(text)


def _reject_busy(words: _Words) -> bool:
    token = words.peek()
    if token is not None and _keyword(token) == "busy":
        words.take("busy")
        return True
    return False


@dataclass(frozen=True)
class _Option:
    kind: str  # "int", "url", "key" or "flag"
    low: int = 0
    high: int = 0

    def hint(self, name: str) -> str:
        if self.kind == "flag":
            return f"--{name}"
        what = {"int": f"{self.low}-{self.high}", "url": "url", "key": "key"}[self.kind]
        return f"--{name}=<{what}>"


_GATHER_OPTIONS = {
    "action": _Option("url"),
    "digits": _Option("int", 1, GATHER_DIGITS_MAX),
    "timeout": _Option("int", 1, GATHER_TIMEOUT_MAX),
    "finish": _Option("key"),
    "no-input": _Option("url"),
}
_RECORD_OPTIONS = {
    "max": _Option("int", 1, RECORD_MAX),
    "silence": _Option("int", 0, RECORD_SILENCE_MAX),
    "no-beep": _Option("flag"),
    "action": _Option("url"),
}


def _options(words: _Words, command: str, spec: dict[str, _Option]) -> dict[str, str | int | bool]:
    """`--name=value` words (and `--flag`), each at most once, in any order, to the line's end."""
    accepted = ", ".join(option.hint(name) for name, option in spec.items())
    found: dict[str, str | int | bool] = {}
    while (token := words.peek()) is not None:
        words.take("an option")
        if token.quoted or not token.value.startswith("--"):
            message = f"unexpected {show(token.raw)} after {command}; it takes only options: {accepted}"
            if token.raw.startswith("#"):
                message += "; comments must be on their own line"
            raise words.error(message, token.column)
        name, eq, value = token.value[2:].partition("=")
        key = name.lower() if name.isascii() else ""
        option = spec.get(key)
        if option is None:
            raise words.error(
                f"unknown option {show('--' + name)}; {command} accepts {accepted}", token.column
            )
        if key in found:
            raise words.error(f"--{key} given more than once", token.column)
        at = token.column + 3 + len(name)  # the value's first column
        if option.kind == "flag":
            if eq:
                raise words.error(f"--{key} takes no value", at - 1)
            found[key] = True
            continue
        if not eq:
            after = words.peek()
            if after is not None and after.value.startswith("="):
                raise words.error(
                    f"write {option.hint(key)} as one word, with no space around =", token.column
                )
            raise words.error(f"expected {option.hint(key)}", token.column)
        if not value:
            raise words.error(f"expected a value after --{key}= ({option.hint(key)})", at)
        found[key] = _option_value(words, key, option, Token(value=value, column=at, raw=value, quoted=False))
    return found


def _option_value(words: _Words, key: str, option: _Option, token: Token) -> str | int:
    if option.kind == "url":
        words.check(url_problem(token.value), token)
        return token.value
    if option.kind == "key":
        if token.value.lower() == "none":
            return ""
        if len(token.value) != 1 or token.value not in DTMF_KEYS:
            raise words.error(f"--{key} takes one key: 0-9, * or #, or none", token.column)
        return token.value
    number = _integer(token.value)
    if number is None or not option.low <= number <= option.high:
        raise words.error(f"--{key} must be a whole number from {option.low} to {option.high}", token.column)
    return number


def _gather(words: _Words, head: Token) -> Gather:
    options = _options(words, "gather", _GATHER_OPTIONS)
    if "action" not in options:
        raise words.error(
            "gather needs --action=<url>, the script to fetch with the keys pressed", head.column
        )
    digits = options.get("digits")
    timeout = options.get("timeout", 5)
    no_input = options.get("no-input")
    assert isinstance(timeout, int) and (digits is None or isinstance(digits, int))
    return Gather(
        str(options["action"]),
        digits,
        timeout,
        str(options.get("finish", "#")),
        None if no_input is None else str(no_input),
        line=words.line,
    )


def _record(words: _Words) -> Record:
    options = _options(words, "record", _RECORD_OPTIONS)
    max_seconds, silence, action = options.get("max", 120), options.get("silence", 5), options.get("action")
    assert isinstance(max_seconds, int) and isinstance(silence, int)
    return Record(
        max_seconds,
        silence,
        not options.get("no-beep"),
        None if action is None else str(action),
        line=words.line,
    )
