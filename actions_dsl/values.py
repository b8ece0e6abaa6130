"""Validation of argument values.

Each check returns None for a good value, or a Problem whose `at` is the offending character
in the value (None when the value as a whole is wrong); the parser turns that into a column.
Keeping positions out of here keeps these rules readable and testable on plain strings.
"""

from __future__ import annotations

import re
import string
from typing import NamedTuple
from urllib.parse import urlsplit

from .chars import describe_char, is_forbidden_char
from .errors import show

URL_MAX = 2000
TEXT_MAX = 1000
LANG_MAX = 35  # the longest tag RFC 5646 asks implementations to support

# RFC 3986 characters minus the apostrophe: values end up inside quoted AGI arguments and
# shell-like contexts, so both quote characters must arrive percent-encoded.
_URL_CHARS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&()*+,;=%")
_DIGITS = frozenset(string.digits)  # str.isdigit() would accept fullwidth and other scripts' digits
_LANG = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
E164_HINT = "+ followed by 7 to 15 digits, e.g. +81312345678"


class Problem(NamedTuple):
    at: int | None
    message: str


def url_problem(url: str) -> Problem | None:
    for i, ch in enumerate(url):
        if i >= URL_MAX:
            return Problem(i, f"URL is longer than {URL_MAX} characters")
        if ch not in _URL_CHARS:
            if ch in "'\"":
                return Problem(i, "quotes are not allowed in a URL; percent-encode them")
            if not ch.isascii():
                return Problem(i, f"URL must be ASCII; percent-encode character {describe_char(ch)}")
            return Problem(i, f"character {ch!r} is not allowed in a URL; percent-encode it")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- evaluated only because it raises ValueError on a bad port
    except ValueError as exc:
        return Problem(None, f"malformed URL: {exc}")
    if parts.scheme.lower() not in ("http", "https"):
        return Problem(None, "URL must start with http:// or https://")
    if not parts.hostname:
        return Problem(None, "URL must have a host")
    return None


def e164_problem(number: str) -> Problem | None:
    if not number.startswith("+"):
        return Problem(0, f"expected an E.164 number: {E164_HINT}")
    for i, ch in enumerate(number[1:], start=1):
        if ch not in _DIGITS:
            return Problem(i, f"unexpected {ch!r} in number; use digits only, no spaces or dashes")
    if number[1:2] == "0":
        return Problem(1, "an E.164 number cannot start with 0 after the +")
    digits = len(number) - 1
    if digits > 15:
        return Problem(16, f"too many digits ({digits}); an E.164 number has at most 15")
    if digits < 7:
        return Problem(None, f"too few digits ({digits}); an E.164 number has at least 7")
    return None


def lang_problem(lang: str) -> Problem | None:
    if len(lang) > LANG_MAX or not _LANG.fullmatch(lang):
        return Problem(None, f"invalid language {show(lang)}; expected a tag such as en, ja, en-US, pt-BR")
    return None


def text_problem(text: str) -> Problem | None:
    if not text.strip():
        return Problem(None, "the quoted text must not be empty or only spaces")
    if len(text) > TEXT_MAX:
        return Problem(TEXT_MAX, f"the quoted text is longer than {TEXT_MAX} characters")
    for i, ch in enumerate(text):
        # The line scan already rejects these; checked again so this module is safe on its own.
        if is_forbidden_char(ch):
            return Problem(i, f"character {describe_char(ch)} is not allowed in text")
    return None
