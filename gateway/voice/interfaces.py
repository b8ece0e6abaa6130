"""Narrow typed seams of the voice bridge, so its parts are built and tested separately:

- the AGI channel (one live call, FastAGI or the per-call pyst2 script) -> agi_channel.py
- media and speech that turn an action's URL or text into a file Asterisk can play
- the HTTP fetcher that honours the URL policy (action_url, media)
- the executor that runs parsed actions on a channel -> executor.py
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from actions_dsl import Action


class Hangup(Exception):
    """The caller hung up (AGI `HANGUP` line, or `511` on a dead channel)."""


class AgiError(Exception):
    """Asterisk answered a command with 510/520, or the AGI stream broke."""


@dataclass(frozen=True)
class AgiResponse:
    code: int  # 200 on success
    result: int  # the result=<n> value
    data: str = ""  # the text after result=<n>, e.g. "endpos=1234" or "(timeout)"


class AgiChannel(Protocol):
    """One call as the AGI bridge sees it."""

    @property
    def env(self) -> Mapping[str, str]:
        """The agi_* header block (keys without the `agi_` prefix: `callerid`, `dnid`, ...)."""

    async def command(self, line: str) -> AgiResponse:
        """Send one already-sanitised AGI command; raises Hangup on a dead channel."""


class MediaError(Exception):
    """A media URL could not be fetched or decoded, or the URL policy refused it.

    str(): the detail, for the operator log only (it may quote what a URL answered, or tell a
    closed port from a silent one). `public`: what the tenant may see in the call record."""

    generic: str | None = None  # the public text of every error of this class, when set

    def __init__(self, detail: str, *, public: str | None = None) -> None:
        super().__init__(detail)
        self.public = public or self.generic or detail


class FetchFailed(MediaError):
    """The fetch itself failed (connection, timeout, policy, size): one public text for all."""

    generic = "media fetch failed"


class FetchRefused(FetchFailed):
    """The URL policy refused the URL (scheme, address, redirect, size)."""


class MediaSource(Protocol):
    async def playback_file(self, url: str) -> str:
        """Fetch (once, cached) and convert to 8 kHz mono 16-bit WAV; returns the path
        without extension, as Asterisk's STREAM FILE wants it."""


class Speech(Protocol):
    async def say_file(self, lang: str, text: str) -> str:
        """Synthesize (cached by lang and text) to 8 kHz mono 16-bit WAV; path without extension."""


@dataclass(frozen=True)
class FetchResult:
    status: int
    content_type: str
    body: bytes


class Fetcher(Protocol):
    async def get(
        self, url: str, *, max_bytes: int, timeout: float, headers: Mapping[str, str] | None = None
    ) -> FetchResult:
        """GET honouring the URL policy (every redirect hop re-checked); raises FetchRefused
        or FetchFailed. `headers` go with the first request only, not to a redirect's target."""


@dataclass(frozen=True)
class NextScript:
    """What a gather's fetch gave: the actions to run next (the fallback when the fetch or
    the script failed, then `error` says why in the tenant's terms), and the record's step."""

    actions: Sequence[Action]
    url: str | None
    status: int | None = None  # the HTTP status answered, None when none was
    error: str | None = None


class CallHooks(Protocol):
    """What the executor asks of the call around it (the call service: database, fetches)."""

    async def answered(self) -> None:
        """The call was answered (ANSWER succeeded)."""

    async def next_script(self, url: str, digits: str) -> NextScript:
        """Fetch the script a gather names with the keys pressed ("" for none)."""

    async def recorded(self, path: str, seconds: float, action_url: str | None) -> None:
        """A `record` wrote `path` (the local WAV, with extension)."""


class NoHooks:
    """For calls with no customer script behind them (outbound playback)."""

    async def answered(self) -> None:
        return None

    async def next_script(self, url: str, digits: str) -> NextScript:
        return NextScript((), url, error="gather is not available on this call")

    async def recorded(self, path: str, seconds: float, action_url: str | None) -> None:
        return None


@dataclass
class CallOutcome:
    """What the executor did, for the call record."""

    actions_run: list[str] = field(default_factory=list)  # the actions started, in order
    # completed | hangup | transferred | voicemail | transfer_busy | transfer_no_answer |
    # transfer_failed | rejected (refused unanswered)
    result: str = "completed"
    # Each gather: the keys pressed and the script fetched with them (url, status, error).
    steps: list[dict[str, Any]] = field(default_factory=list)
    fallback: bool = False  # a script fetched after a gather failed: the fallback ran
    transfer_status: str | None = None  # DIALSTATUS of the last transfer dialled
    transfer_seconds: float | None = None  # an answered transfer: from the callee's answer to the end
    voicemail_path: str | None = None  # recorded file without extension, when voicemail ran
    voicemail_seconds: float = 0.0
    error: str | None = None
