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


@dataclass(frozen=True, slots=True)
class Pause:
    """Silence for `seconds`; inside a gather, a key pressed ends it (barge-in)."""

    seconds: int
    line: int = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class HangupCall:
    """End the call now."""

    line: int = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the call without answering it (only as a script's first command); `busy`: the
    caller hears busy instead of a refusal."""

    busy: bool = False
    line: int = field(kw_only=True)


Prompt: TypeAlias = Say | Playback | Pause


@dataclass(frozen=True, slots=True)
class Gather:
    """Collect keys while `prompts` play. Digits: fetch `action` with them and run its answer
    instead of the rest of the script. None: fetch `no_input` when given, else go on.

    `digits`: stop after that many keys (None: only the finish key or the timeout ends it);
    `finish`: the key that ends the input ("" for none); `timeout`: seconds of waiting for the
    next key once the prompts are over."""

    action: str
    digits: int | None = None
    timeout: int = 5
    finish: str = "#"
    no_input: str | None = None
    prompts: tuple[Prompt, ...] = ()
    line: int = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Record:
    """Record the caller after an optional beep until `#`, `silence` seconds of silence (0: no
    silence cut-off) or `max_seconds`; then POST the recording to `action` if given, and go on."""

    max_seconds: int = 120
    silence: int = 5
    beep: bool = True
    action: str | None = None
    line: int = field(kw_only=True)


Action: TypeAlias = (
    Playback
    | Transfer
    | Say
    | VoicemailPlayback
    | VoicemailSay
    | Pause
    | HangupCall
    | Reject
    | Gather
    | Record
)
