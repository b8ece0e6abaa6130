"""AgiChannel over an asyncio stream (one FastAGI connection).

One command at a time (a lock), each with a timeout: short for commands that answer at once,
long for the ones that last as long as the caller listens, records or talks (STREAM FILE,
RECORD FILE, EXEC Dial...). After a timeout, an answer that is not AGI or a line over the size
limit the stream is out of step, so the channel refuses everything after it (AgiStreamError).
After a hangup (the `HANGUP` line, a `511` answer, or the connection closing) every command
raises Hangup without touching the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import MappingProxyType

from .agi_protocol import LONG_COMMANDS, AgiStreamError, ReplyParser, check_line, command_name, split_args
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
        self._dead = False
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
        async with self._lock:
            if self._broken is not None:
                raise AgiStreamError(f"AGI stream unusable: {self._broken}")
            if self._dead:
                raise Hangup(self._hangup_reason or "hung up")
            timeout = self.timeout_for(line)
            try:
                async with asyncio.timeout(timeout):
                    self._writer.write(line.encode("utf-8") + b"\n")
                    await self._writer.drain()
                    return await self._read_answer()
            except asyncio.CancelledError:
                self._broken = "a command was cancelled mid-answer"
                raise
            except TimeoutError:
                self._broken = f"no answer to {line.split(' ', 1)[0]} within {timeout:g} s"
                raise AgiStreamError(self._broken) from None
            except Hangup as exc:
                self._dead = True
                self._hangup_reason = self._hangup_reason or str(exc)
                raise
            except AgiStreamError as exc:
                self._broken = str(exc)
                raise
            except (ConnectionError, OSError) as exc:
                self._dead = True
                self._hangup_reason = f"connection lost: {exc}"
                raise Hangup(self._hangup_reason) from None

    async def _read_answer(self) -> AgiResponse:
        parser = ReplyParser()
        while True:
            try:
                raw = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                self._hangup_reason = "EOF"
                raise Hangup("Asterisk closed the connection") from exc
            except asyncio.LimitOverrunError as exc:
                raise AgiStreamError("answer line too long") from exc
            if len(raw) > self._max_line:
                raise AgiStreamError("answer line too long")
            response = parser.feed(raw.decode("utf-8", errors="replace"))
            if response is not None:
                return response

    async def close(self) -> None:
        """Close the connection (Asterisk then goes on with the dialplan)."""
        self._dead = True
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
