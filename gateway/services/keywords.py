"""Opt-out keywords (docs/api.md, "SMS in"). The gateway handles them itself, so auto-reply rules
may not claim them."""

from __future__ import annotations

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP"})
RESERVED_KEYWORDS = STOP_WORDS | START_WORDS | HELP_WORDS
