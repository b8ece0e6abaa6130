"""FastAGI server: Asterisk's `AGI(agi://host:4573/<script>)` connects here, once per call.

Each connection gets its own task: read the `agi_*` header block (bounded: line length, number
of lines, bytes, time), wrap the connection in a StreamAgiChannel and await the handler with it.
Garbage in the header, a client that closes early or a handler that raises never takes the
server down: the connection is logged and closed. The server keeps no state between calls, so
any number of gateway nodes can sit behind Asterisk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from .agi_channel import DEFAULT_LONG_TIMEOUT, DEFAULT_TIMEOUT, StreamAgiChannel
from .agi_protocol import parse_header_line
from .interfaces import AgiChannel

log = logging.getLogger(__name__)

Handler = Callable[[AgiChannel], Awaitable[None]]


class HeaderError(Exception):
    """The connection did not start with a valid AGI header block."""


class FastAgiServer:
    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 4573,
        *,
        max_line: int = 8192,
        max_header_lines: int = 128,
        max_header_bytes: int = 32 * 1024,
        header_timeout: float = 10.0,
        command_timeout: float = DEFAULT_TIMEOUT,
        long_command_timeout: float = DEFAULT_LONG_TIMEOUT,
        backlog: int = 1024,
    ) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._max_line = max_line
        self._max_header_lines = max_header_lines
        self._max_header_bytes = max_header_bytes
        self._header_timeout = header_timeout
        self._command_timeout = command_timeout
        self._long_command_timeout = long_command_timeout
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls_handled = 0  # connections whose handler ran to the end (or raised)

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def active_calls(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._on_connection,
            self._host,
            self._requested_port,
            limit=self._max_line,
            backlog=self._backlog,
            reuse_address=True,
        )
        log.info("FastAGI listening on %s:%d", self._host, self.port)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give calls in progress `grace` seconds, then cancel them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=grace)

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = _peername(writer)
        channel: StreamAgiChannel | None = None
        try:
            try:
                env = await asyncio.wait_for(self._read_header(reader), timeout=self._header_timeout)
            except HeaderError as exc:
                log.warning("FastAGI %s: bad header: %s", peer, exc)
                return
            except TimeoutError:
                log.warning("FastAGI %s: no complete header within %g s", peer, self._header_timeout)
                return
            except (ConnectionError, OSError) as exc:
                log.info("FastAGI %s: connection lost during the header: %s", peer, exc)
                return
            channel = StreamAgiChannel(
                reader,
                writer,
                env,
                timeout=self._command_timeout,
                long_timeout=self._long_command_timeout,
                max_line=self._max_line,
            )
            try:
                await self._handler(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "FastAGI %s: handler failed (script %r, uniqueid %r)",
                    peer,
                    env.get("network_script"),
                    env.get("uniqueid"),
                )
            finally:
                self.calls_handled += 1
        finally:
            if channel is not None:
                await _quietly(channel.close())
            else:
                await _quietly(_close_writer(writer))
            if task is not None:
                self._tasks.discard(task)

    async def _read_header(self, reader: asyncio.StreamReader) -> dict[str, str]:
        lines: list[str] = []
        size = 0
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial and not lines:
                    raise HeaderError("closed before sending anything") from None
                raise HeaderError("closed in the middle of the header") from None
            except asyncio.LimitOverrunError:
                raise HeaderError(f"header line longer than {self._max_line} bytes") from None
            size += len(raw)
            if size > self._max_header_bytes:
                raise HeaderError(f"header larger than {self._max_header_bytes} bytes")
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.strip():
                break
            if len(lines) >= self._max_header_lines:
                raise HeaderError(f"more than {self._max_header_lines} header lines")
            lines.append(line)
        env: dict[str, str] = {}
        for line in lines:
            try:
                key, value = parse_header_line(line)
            except ValueError as exc:
                raise HeaderError(str(exc)) from None
            env[key] = value
        if not env:
            raise HeaderError("empty header block")
        return env


def _peername(writer: asyncio.StreamWriter) -> str:
    try:
        peer = writer.get_extra_info("peername")
    except Exception:  # pragma: no cover - transport already gone
        return "?"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    await writer.wait_closed()


async def _quietly(aw: Awaitable[None]) -> None:
    try:
        await aw
    except (ConnectionError, OSError):
        pass
