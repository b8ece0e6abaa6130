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
* Command names (including ``voicemail``'s sub-commands) and ``--caller=`` are case-insensitive:
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

from .actions import Action, Playback, Say, Transfer, VoicemailPlayback, VoicemailSay
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

COMMANDS = ("playback", "transfer", "say", "voicemail playback", "voicemail say")
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
    for number, text in enumerate(lines, start=1):
        try:
            action = _parse_line(text, number)
        except ActionSyntaxError as exc:
            errors.append(exc)
            continue
        if action is not None:
            actions.append(action)
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
