"""Asterisk Manager Interface (AMI) client on asyncio.

The wire format (Asterisk's main/manager.c): on connect the server sends one greeting line,
`Asterisk Call Manager/<version>`; after that both sides exchange messages made of
`Key: Value` lines ended by CR LF, a message ending with an empty line. We send actions
(`Action: <name>`, `ActionID: <id>`, headers); Asterisk answers each with a message carrying
`Response: Success|Error|Goodbye|...` and the same ActionID, and sends `Event: <name>` messages
as things happen (events may carry an ActionID too: OriginateResponse does).

This client:

* connects, checks the greeting, logs in (`Login` with Username/Secret, an `Events` mask) and
  keeps reconnecting with exponential backoff (jittered, capped) whenever the connection or the
  login fails;
* sends actions with a unique ActionID and awaits their Response (`send_action`); an action is
  refused with AmiNotConnected when nothing was written, and fails with AmiConnectionLost when
  the connection went after it was written (Asterisk may or may not have run it);
* hands every event to listeners (`add_listener`) or to an async iterator (`events()`);
* pings the server now and then, so a half-open connection is noticed and replaced;
* logs off on close.

Every header value goes through `sanitise_value`: CR, LF and every other control character
become a space, so no caller-supplied text can end a header early and inject a header or a
whole action of its own. Header names are ours and are checked, not cleaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType

from actions_dsl.chars import is_forbidden_char

log = logging.getLogger(__name__)

GREETING_PREFIX = b"Asterisk Call Manager/"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")
_RESERVED = frozenset({"action", "actionid"})

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Listener = Callable[["AmiMessage"], None]


class AmiError(Exception):
    """Something went wrong talking to Asterisk."""


class AmiNotConnected(AmiError):
    """Not connected and logged in: the action was not sent."""


class AmiConnectionLost(AmiError):
    """The connection went after the action was written; whether Asterisk ran it is unknown."""


class AmiLoginError(AmiError):
    """Asterisk refused the Login (wrong username or secret, or not permitted from here)."""


def sanitise_value(value: object) -> str:
    """One header value, on one line: control characters (CR, LF, NUL, ...), line and paragraph
    separators and lone surrogates become a space."""
    text = str(value)
    return "".join(" " if is_forbidden_char(ch) else ch for ch in text)


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid AMI header name {name!r}")
    return name


def _pairs(headers: Headers) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]


def format_action(action: str, action_id: str, headers: Headers = ()) -> bytes:
    """The bytes of one action: `Action`, `ActionID`, the headers in order, a blank line.

    Repeated names are allowed (Originate takes one `Variable` header per variable)."""
    lines = [f"Action: {sanitise_value(_check_name(action))}", f"ActionID: {sanitise_value(action_id)}"]
    for name, value in _pairs(headers):
        if _check_name(name).lower() in _RESERVED:
            raise ValueError(f"{name} is set by the client, not by the caller")
        lines.append(f"{name}: {sanitise_value(value)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


@dataclass(frozen=True)
class AmiMessage:
    """One message from Asterisk: its header lines in order (names as sent)."""

    headers: tuple[tuple[str, str], ...]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name` (case-insensitive, as Asterisk reads headers)."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def event(self) -> str | None:
        return self.get("Event")

    @property
    def response(self) -> str | None:
        return self.get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def message(self) -> str:
        return self.get("Message") or ""

    @property
    def success(self) -> bool:
        return (self.response or "").lower() == "success"


def parse_message(lines: Iterable[str]) -> AmiMessage:
    """`Key: Value` lines to a message; a line without a colon is kept with an empty name
    (older `Response: Follows` output), never dropped silently."""
    headers: list[tuple[str, str]] = []
    for line in lines:
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and not any(ch.isspace() for ch in key):
            headers.append((key, value.strip()))
        else:
            headers.append(("", line))
    return AmiMessage(tuple(headers))


class AmiClient:
    """One AMI connection, kept up in the background; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        events: str = "call",
        connect_timeout: float = 5.0,
        action_timeout: float = 10.0,
        ping_interval: float = 20.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_line: int = 64 * 1024,
        max_headers: int = 512,
    ) -> None:
        self.host = host
        self.port = port
        self._username = username
        self._secret = secret
        self._events_mask = events
        self._connect_timeout = connect_timeout
        self._action_timeout = action_timeout
        self._ping_interval = ping_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_line = max_line
        self._max_headers = max_headers
        self._listeners: list[Listener] = []
        self._pending: dict[str, asyncio.Future[AmiMessage]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
        self._logged_in = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._ids = itertools.count(1)
        self._id_prefix = f"gw-{secrets.token_hex(4)}-"
        self.logins = 0  # successful logins so far (a reconnect shows as +1)
        self.last_error: str | None = None

    # -- state ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected and logged in: actions can be sent."""
        return self._logged_in.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._logged_in.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every event (in the reader task: it must not block); returns a
        function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    async def events(self, maxsize: int = 1000) -> AsyncIterator[AmiMessage]:
        """Every event from now on, as an async iterator; when the consumer falls `maxsize`
        events behind, newer events are dropped (and logged) rather than buffered forever."""
        queue: asyncio.Queue[AmiMessage] = asyncio.Queue(maxsize)

        def put(msg: AmiMessage) -> None:
            try:
                queue.put_nowait(msg)
            except asyncio.QueueFull:
                log.warning("AMI event consumer is behind; dropped %s", msg.event)

        remove = self.add_listener(put)
        try:
            while True:
                yield await queue.get()
        finally:
            remove()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background (returns at once; see wait_connected)."""
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=f"ami {self.host}:{self.port}")

    async def close(self, timeout: float = 2.0) -> None:
        """Log off (when logged in), close the connection and stop reconnecting."""
        self._closing = True
        if self.connected:
            with contextlib.suppress(AmiError, TimeoutError, OSError):
                await self._send("Logoff", (), None, timeout)
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> AmiClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- actions ----------------------------------------------------------------------------

    def new_action_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    async def send_action(
        self,
        action: str,
        headers: Headers = (),
        *,
        action_id: str | None = None,
        timeout: float | None = None,
    ) -> AmiMessage:
        """Send one action and return Asterisk's Response to it (Success or Error: check
        `.success`). Raises AmiNotConnected (nothing sent), AmiConnectionLost (sent, no
        answer before the connection went) or TimeoutError (sent, no answer in time)."""
        if not self.connected:
            raise AmiNotConnected("not connected to Asterisk")
        return await self._send(action, headers, action_id, timeout)

    async def _send(
        self, action: str, headers: Headers, action_id: str | None, timeout: float | None
    ) -> AmiMessage:
        aid = sanitise_value(action_id) if action_id is not None else self.new_action_id()
        if aid in self._pending:
            raise ValueError(f"ActionID {aid!r} is already waiting for its response")
        data = format_action(action, aid, headers)
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._pending[aid] = future
        try:
            async with self._write_lock:
                writer = self._writer
                if writer is None or writer.is_closing():
                    raise AmiNotConnected("not connected to Asterisk")
                writer.write(data)
                try:
                    await writer.drain()
                except (ConnectionError, OSError) as exc:
                    raise AmiConnectionLost(f"connection lost while sending {action}: {exc}") from exc
            return await asyncio.wait_for(future, self._action_timeout if timeout is None else timeout)
        finally:
            self._pending.pop(aid, None)

    # -- connection -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff_initial
        while not self._closing:
            before = self.logins
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except AmiLoginError as exc:
                self.last_error = f"login refused: {exc}"
                log.error("AMI %s:%d: %s", self.host, self.port, self.last_error)
            except (OSError, TimeoutError, AmiError, asyncio.IncompleteReadError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("AMI %s:%d: %s", self.host, self.port, self.last_error)
            if self._closing:
                return
            if self.logins > before:
                delay = self._backoff_initial  # it worked for a while: start over
            pause = delay * random.uniform(0.5, 1.0)
            log.info("AMI %s:%d: reconnecting in %.1f s", self.host, self.port, pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, self._backoff_max)

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=self._max_line), self._connect_timeout
        )
        reader_task: asyncio.Task[None] | None = None
        pinger: asyncio.Task[None] | None = None
        try:
            greeting = await asyncio.wait_for(reader.readuntil(b"\n"), self._connect_timeout)
            if not greeting.startswith(GREETING_PREFIX):
                raise AmiError(f"not an Asterisk manager: {greeting[:80]!r}")
            self._writer = writer
            reader_task = asyncio.create_task(self._read_loop(reader), name="ami reader")
            login = await self._send(
                "Login",
                [("Username", self._username), ("Secret", self._secret), ("Events", self._events_mask)],
                None,
                self._action_timeout,
            )
            if not login.success:
                raise AmiLoginError(login.message or "authentication failed")
            self.logins += 1
            self.last_error = None
            self._logged_in.set()
            log.info("AMI %s:%d: logged in as %s", self.host, self.port, self._username)
            if self._ping_interval > 0:
                pinger = asyncio.create_task(self._ping_loop(writer), name="ami ping")
            await reader_task
            if not self._closing:
                raise AmiError("connection closed by Asterisk")
        finally:
            self._logged_in.clear()
            self._writer = None
            for task in (pinger, reader_task):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(t for t in (pinger, reader_task) if t is not None), return_exceptions=True)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(AmiConnectionLost("connection to Asterisk lost"))
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _ping_loop(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            try:
                await self._send("Ping", (), None, self._action_timeout)
            except TimeoutError:
                log.warning("AMI %s:%d: no answer to Ping; reconnecting", self.host, self.port)
                writer.transport.abort()
                return
            except AmiError:
                return

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        lines: list[str] = []
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return  # EOF (a partial message at EOF is of no use)
            except asyncio.LimitOverrunError:
                log.warning("AMI %s:%d: line longer than %d bytes", self.host, self.port, self._max_line)
                return
            except (ConnectionError, OSError):
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if line:
                if len(lines) >= self._max_headers:
                    log.warning("AMI %s:%d: message with too many lines", self.host, self.port)
                    return
                lines.append(line)
                continue
            if lines:
                self._dispatch(parse_message(lines))
                lines = []

    def _dispatch(self, msg: AmiMessage) -> None:
        if msg.event is not None:
            for listener in list(self._listeners):
                try:
                    listener(msg)
                except Exception:
                    log.exception("AMI event listener failed on %s", msg.event)
            return
        aid = msg.action_id
        future = self._pending.get(aid) if aid is not None else None
        if future is not None and not future.done():
            future.set_result(msg)
        elif msg.response is not None:
            log.debug("AMI response nobody waits for: %s", msg.headers)
