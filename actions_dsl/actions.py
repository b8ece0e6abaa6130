"""The actions a script can produce. All string fields are validated and AGI-safe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class Playback:
    url: str
    line: int = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Transfer:
    number: str
    caller: str | None = None
    line: int = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Say:
    """`text` is unescaped: it may contain `"` and `\\`, which the AGI layer must quote."""

    lang: str
    text: str
    line: int = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class VoicemailPlayback:
    url: str
    line: int = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class VoicemailSay:
    """`text` is unescaped, as for Say."""

    lang: str
    text: str
    line: int = field(kw_only=True)


Action: TypeAlias = Playback | Transfer | Say | VoicemailPlayback | VoicemailSay
