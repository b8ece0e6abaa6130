"""FastAGI server: Asterisk's `AGI(agi://host:4573/<script>)` connects here, once per call.

Only peers on the allow-list (the Asterisk servers; loopback by default) get in, at most
`max_connections` at once: a ListenerGuard closes any other connection before a byte of it is
read. With a `secret`, the AGI URL must also carry it (`agi://gw:4573/din?key=<secret>`, which
Asterisk passes on as agi_network_script and agi_request); a request without the right key is
closed before the handler sees it, so nothing is recorded or fetched for it. The key is removed
from both fields before the handler (and any log line) sees them.

Each connection gets its own task: read the `agi_*` header block (bounded: line length, number
of lines, bytes, time), wrap the connection in a StreamAgiChannel and await the handler with it.
Garbage in the header, a client that closes early or a handler that raises never takes the
server down: the connection is logged and closed. The server keeps no state between calls, so
any number of gateway nodes can sit behind Asterisk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from gateway.net.guard import IPNetwork, ListenerGuard, parse_networks
from gateway.net.throttled_log import ThrottledLog

from .agi_channel import DEFAULT_LONG_TIMEOUT, DEFAULT_TIMEOUT, StreamAgiChannel
from .agi_protocol import parse_header_line
from .interfaces import AgiChannel

log = logging.getLogger(__name__)

Handler = Callable[[AgiChannel], Awaitable[None]]
LOOPBACK = parse_networks("127.0.0.1/8,::1")


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
        max_connections: int = 1000,
        allowed_peers: Sequence[IPNetwork] = LOOPBACK,
        secret: str = "",
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
        self._guard = ListenerGuard(
            "FastAGI (voice.fastagi_allowed_peers, voice.fastagi_max_connections)",
            max_connections=max_connections,
            allowed_peers=allowed_peers,
        )
        self._secret = secret.encode()
        self._bad_key = ThrottledLog(
            log, logging.WARNING, "FastAGI %s: request without the right key (voice.fastagi_secret); closed"
        )
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

        def protocol() -> asyncio.Protocol:  # what asyncio.start_server would make
            return asyncio.StreamReaderProtocol(asyncio.StreamReader(self._max_line), self._on_connection)

        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(protocol),
            self._host,
            self._requested_port,
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
            if not self._key_ok(env):
                self._bad_key.hit(peer)
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

    def _key_ok(self, env: dict[str, str]) -> bool:
        """Take the key out of the script and request fields; True if it is the one required."""
        keys = []
        for field in ("network_script", "request"):
            if field in env:
                env[field], key = _without_key(env[field])
                keys.append(key)
        if not self._secret:
            return True
        # Asterisk sends the same URL in both fields; a forged header must not tell them apart.
        given = keys[0] if keys and len(set(keys)) == 1 else None
        return given is not None and hmac.compare_digest(given.encode(), self._secret)

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


def _without_key(value: str) -> tuple[str, str | None]:
    """("din?key=s&x=1", ...) -> ("din?x=1", "s"): the value without its `key` parameter, and the
    key (None unless exactly one). Compared as written in the URL: no percent-decoding."""
    base, sep, query = value.partition("?")
    if not sep:
        return value, None
    params = [p.partition("=") for p in query.split("&") if p]
    keys = [v for k, _, v in params if k == "key"]
    rest = "&".join(k + eq + v for k, eq, v in params if k != "key")
    return (f"{base}?{rest}" if rest else base), (keys[0] if len(keys) == 1 else None)


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
