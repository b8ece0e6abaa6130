"""AgiChannel over an asyncio stream (one FastAGI connection).

One command at a time (a lock), each with a timeout: short for commands that answer at once,
long for the ones that last as long as the caller listens, records or talks (STREAM FILE,
RECORD FILE, EXEC Dial...). After a timeout, an answer that is not AGI or a line over the size
limit the stream is out of step, so the channel refuses everything after it (AgiStreamError).

The bare `HANGUP` line is no answer: Asterisk writes it on its own when the caller hangs up, and
it may arrive in front of the answer to the command just sent (GET VARIABLE DIALSTATUS after a
Dial the caller abandoned still answers `CANCEL`). The channel notes the hangup and reads on for
the real answer, for at most the short timeout from then. Once the caller is gone (that line or
a `511` answer) a command Asterisk refuses on a dead channel raises Hangup without touching the
socket, the ones it still runs (GET VARIABLE, ...) are sent; once the connection is closed every
command raises Hangup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import MappingProxyType

from .agi_protocol import (
    DEAD_CHANNEL_COMMANDS,
    HANGUP_LINE,
    LONG_COMMANDS,
    AgiStreamError,
    ReplyParser,
    check_line,
    command_name,
    split_args,
)
from .interfaces import AgiResponse, Hangup

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
DEFAULT_LONG_TIMEOUT = 4 * 3600.0  # a bridged call (EXEC Dial) lasts as long as the conversation
DEFAULT_MAX_LINE = 8192


class StreamAgiChannel:
    """One live call over FastAGI. `env` is the header block without the `agi_` prefixes."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        env: Mapping[str, str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        long_timeout: float = DEFAULT_LONG_TIMEOUT,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._env: Mapping[str, str] = MappingProxyType(dict(env))
        self._timeout = timeout
        self._long_timeout = long_timeout
        self._max_line = max_line
        self._lock = asyncio.Lock()
        self._dead = False  # the caller is gone (HANGUP line, 511); the socket may still work
        self._closed = False  # nothing more can be read or written
        self._hangup_reason: str | None = None
        self._broken: str | None = None

    @property
    def env(self) -> Mapping[str, str]:
        return self._env

    @property
    def hung_up(self) -> bool:
        return self._dead

    @property
    def hangup_reason(self) -> str | None:
        """`HANGUP`, the 511 line, or `EOF`, once the call is over."""
        return self._hangup_reason

    def timeout_for(self, line: str) -> float:
        name = command_name(split_args(line))
        return self._long_timeout if name in LONG_COMMANDS else self._timeout

    async def command(self, line: str) -> AgiResponse:
        check_line(line)  # raises UnsafeArgument before anything is written
        name = command_name(split_args(line))
        async with self._lock:
            if self._broken is not None:
                raise AgiStreamError(f"AGI stream unusable: {self._broken}")
            if self._closed or (self._dead and name not in DEAD_CHANNEL_COMMANDS):
                raise Hangup(self._hangup_reason or "hung up")
            timeout = self.timeout_for(line)
            try:
                async with asyncio.timeout(timeout) as deadline:
                    self._writer.write(line.encode("utf-8") + b"\n")
                    await self._writer.drain()
                    return await self._read_answer(deadline)
            except asyncio.CancelledError:
                self._broken = "a command was cancelled mid-answer"
                raise
            except TimeoutError:
                self._broken = f"no answer to {line.split(' ', 1)[0]} within {timeout:g} s"
                if self._dead:  # the caller is gone and Asterisk stopped answering: over
                    raise Hangup(self._hangup_reason or "hung up") from None
                raise AgiStreamError(self._broken) from None
            except Hangup as exc:
                self._dead = True
                self._hangup_reason = self._hangup_reason or str(exc)
                raise
            except AgiStreamError as exc:
                self._broken = str(exc)
                raise
            except (ConnectionError, OSError) as exc:
                self._dead = self._closed = True
                self._hangup_reason = self._hangup_reason or f"connection lost: {exc}"
                raise Hangup(f"connection lost: {exc}") from None

    async def _read_answer(self, deadline: asyncio.Timeout) -> AgiResponse:
        parser = ReplyParser()
        while True:
            try:
                raw = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                self._closed = True
                self._hangup_reason = self._hangup_reason or "EOF"
                raise Hangup("Asterisk closed the connection") from exc
            except asyncio.LimitOverrunError as exc:
                raise AgiStreamError("answer line too long") from exc
            if len(raw) > self._max_line:
                raise AgiStreamError("answer line too long")
            line = raw.decode("utf-8", errors="replace")
            if line.strip() == HANGUP_LINE and not parser.in_usage_block:
                self._note_hangup(deadline)
                continue
            response = parser.feed(line)
            if response is not None:
                return response

    def _note_hangup(self, deadline: asyncio.Timeout) -> None:
        """The caller is gone; the answer still comes, at once: a long command's hours of
        timeout no longer apply."""
        if not self._dead:
            log.debug("Asterisk sent HANGUP; reading on for the answer")
        self._dead = True
        self._hangup_reason = self._hangup_reason or "Asterisk sent HANGUP"
        soon = asyncio.get_running_loop().time() + self._timeout
        when = deadline.when()
        if when is None or when > soon:
            deadline.reschedule(soon)

    async def close(self) -> None:
        """Close the connection (Asterisk then goes on with the dialplan)."""
        self._dead = self._closed = True
        if self._hangup_reason is None:
            self._hangup_reason = "closed"
        writer = self._writer
        if writer.is_closing():
            return
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
