"""Which characters may never reach an AGI command.

AGI is a line protocol: a newline inside an argument ends the command early and lets the rest of
the string run as a second, attacker-chosen command. Every field the parser produces is therefore
checked with the same predicate the tests use, so the two cannot drift apart.
"""

from __future__ import annotations

import re
import unicodedata

# Cc covers C0/C1 controls including NUL, TAB, LF, CR and NEL; Cs are lone surrogates that cannot be
# encoded to UTF-8 on the way to Asterisk; Zl/Zp (U+2028/U+2029) are treated as line breaks by
# some readers of the logs and call records.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

# Bidi embeddings, overrides and isolates make a script display differently from how it parses
# ("Trojan Source"). Other format characters (ZWJ, ZWNJ, LRM, soft hyphen) are kept: real
# languages such as Persian and Hindi need them inside spoken text.
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def is_forbidden_char(ch: str) -> bool:
    """True for a character that must never appear in a produced action field."""
    return unicodedata.category(ch) in _FORBIDDEN_CATEGORIES or ch in _BIDI_CONTROLS


# The same characters as one class, for whole strings: a category lookup per character cost
# ~100 us per AGI command line, on the event loop. Cc is U+0000-001F and U+007F-009F, Cs the
# surrogates, Zl U+2028, Zp U+2029; a test checks this agrees with is_forbidden_char on every
# code point (and so catches a Unicode update that moves one).
_FORBIDDEN_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def is_safe_agi_text(s: str) -> bool:
    """True when `s` holds no newline, carriage return, other control or bidi-control character."""
    return _FORBIDDEN_RE.search(s) is None


def describe_char(ch: str) -> str:
    """A printable description such as `U+000A` or `U+202E (RIGHT-TO-LEFT OVERRIDE)`."""
    code = f"U+{ord(ch):04X}"
    name = unicodedata.name(ch, "")
    return f"{code} ({name})" if name else code
