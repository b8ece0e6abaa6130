"""Asyncio SMPP 3.4 ESME, one bind (transceiver, transmitter or receiver, over TCP or TLS), on
smpplib's PDU codec. smpp/connector.py puts several of them to one SMSC together.

smpplib's own Client is a blocking socket loop; here only its PDU classes are
used (make_pdu / parse_pdu) and all I/O is asyncio streams: one reader task per
connection resolves submit_sm_resp futures by sequence number, so many callers
can keep a shared window of submit_sm in flight without thread hops.

Delivery guarantees: a deliver_sm is acknowledged only after the core's handler
returned (it stores first), and a handler error is answered with
ESME_RX_T_APPN so the SMSC redelivers. A deliver_sm that cannot be decoded
(client_wire.MalformedPdu) never reaches the handler and is refused with a
permanent status, so it is neither lost silently nor redelivered forever.
At most `max_inbound_in_flight` deliver_sm are handled at once: at the bound the socket is not
read until one is answered, so an SMSC flooding deliver_sm without waiting for the answers
fills its own window and the socket buffers, not the gateway's memory and event loop. While
reading stands still, no response timeout fires (the answer may be in the unread bytes).
A submit whose connection died before its submit_sm_resp raises
ConnectionLost: the outcome is unknown and the core retries, which makes
outbound delivery at-least-once. For a long message the exception names the
parts the SMSC did accept, and the retry skips them under the same
concatenation reference, so only the part that was on the wire can go twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smpp.client_wire import (
    ALERT_NOTIFICATION,
    BIND_COMMAND_IDS,
    DELIVER_SM,
    ENQUIRE_LINK,
    ESME_RINVCMDID,
    ESME_ROK,
    ESME_RX_P_APPN,
    ESME_RX_T_APPN,
    HEADER,
    MAX_PDU_LENGTH,
    RESPONSE_BIT,
    RETRYABLE_SUBMIT_STATUSES,
    SUBMIT_SM_RESP,
    TRANSIENT_SUBMIT_STATUSES,
    UNBIND,
    MalformedPdu,
    SequenceGenerator,
    absolute_time,
    decode_deliver_sm,
    encode_request,
    encode_response,
    status_description,
    submit_sm_message_id,
)
from smpp.encoding import concat_ref_for, flash, plan, plan_binary, submit_parts
from smpp.types import (
    ConnectionLost,
    Deferred,
    MoPart,
    NotBound,
    SmppEvents,
    StoreUnavailable,
    SubmitRejected,
    SubmitRequest,
    SubmitResult,
)

log = logging.getLogger(__name__)

WRITE_HIGH_WATER = 256 * 1024  # buffered bytes above which a submitter waits for the socket
BIND_MODES = ("transceiver", "transmitter", "receiver")

# Awaited before each submit_sm goes out: the connector's sending-rate cap.
Pace = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class SmppClientConfig:
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    name: str = ""  # for the logs: which connector and bind this is
    bind_mode: str = "transceiver"  # one of BIND_MODES; a receiver never submits
    tls: ssl.SSLContext | None = None  # set: the connection is TLS with this context
    data_coding: int = 0  # for text in the GSM alphabet (smpp.encoding.plan)
    window: int = 10  # outstanding submit_sm shared by all callers
    enquire_link_interval: float = 30.0
    response_timeout: float = 10.0
    max_inbound_in_flight: int = 100  # deliver_sm being handled; at the bound reading stops
    connect_timeout: float = 10.0
    reconnect_backoff_min: float = 0.5
    reconnect_backoff_max: float = 30.0
    throttle_backoff_min: float = 0.2
    throttle_backoff_max: float = 5.0
    alnum_source_ton: int = 5
    alnum_source_npi: int = 0
    numeric_source_ton: int = 1
    numeric_source_npi: int = 1
    dest_ton: int = 1
    dest_npi: int = 1


def _strip_plus(address: str) -> str:
    address = address.strip()
    return address[1:] if address.startswith("+") else address


def source_address(source: str, config: SmppClientConfig) -> tuple[int, int, str]:
    """(ton, npi, addr) for a sender: digits are international, anything else alphanumeric."""
    digits = _strip_plus(source)
    if digits.isascii() and digits.isdigit():
        return config.numeric_source_ton, config.numeric_source_npi, digits
    # smpplib encodes C-octet strings as latin-1; keep the PDU encodable whatever the core passes.
    safe = source.strip().encode("ascii", "replace").decode("ascii")
    return config.alnum_source_ton, config.alnum_source_npi, safe


def destination_address(destination: str, config: SmppClientConfig) -> tuple[int, int, str]:
    return config.dest_ton, config.dest_npi, _strip_plus(destination)


# --- one TCP connection ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    command_id: int
    status: int
    data: bytes


class _Session:
    """One connection: the writer, and the requests waiting for their response."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response_timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.response_timeout = response_timeout
        self.bound = False
        self.closed = False
        self.close_reason = ""
        self.reading_paused = False  # not reading: deliver_sm handlers are at their bound
        self._pending: dict[int, tuple[asyncio.Future[_Response], asyncio.TimerHandle]] = {}
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionLost(f"connection closed: {self.close_reason}")
        self.writer.write(data)

    async def flush(self) -> None:
        """Wait for the socket only when a lot is buffered; per-PDU drains cost throughput.

        A failed write aborts the session, which fails the pending futures; the
        callers learn it from them, so nothing is raised here.
        """
        if self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            try:
                await self.writer.drain()
            except (ConnectionError, OSError) as exc:
                self.abort(f"write failed: {exc!r}")

    def request(self, seq: int, data: bytes) -> asyncio.Future[_Response]:
        """Send a request; the future fails with ConnectionLost if the session ends or times out."""
        if self.closed:
            raise ConnectionLost(f"connection closed: {self.close_reason}")
        future: asyncio.Future[_Response] = self._loop.create_future()
        timer = self._loop.call_later(self.response_timeout, self._timed_out, seq)
        self._pending[seq] = (future, timer)
        self.writer.write(data)
        return future

    def forget(self, seq: int) -> None:
        entry = self._pending.pop(seq, None)
        if entry is not None:
            entry[1].cancel()

    def resolve(self, seq: int, response: _Response) -> None:
        entry = self._pending.pop(seq, None)
        if entry is None:
            log.debug("response 0x%08x for unknown sequence %d", response.command_id, seq)
            return
        future, timer = entry
        timer.cancel()
        if not future.done():
            future.set_result(response)

    def _timed_out(self, seq: int) -> None:
        entry = self._pending.get(seq)
        if self.reading_paused and entry is not None:
            # The answer may be among the bytes we are not reading yet: wait on.
            timer = self._loop.call_later(self.response_timeout, self._timed_out, seq)
            self._pending[seq] = (entry[0], timer)
            return
        # An SMSC that stops answering is treated as a dead link: reconnecting is
        # the only way to learn the state of the window again.
        self.abort(f"no response to sequence {seq} within {self.response_timeout}s")

    def abort(self, reason: str, *, graceful: bool = False) -> None:
        """Fail everything pending and drop the connection (a FIN after unbind, else a reset)."""
        if self.closed:
            return
        self.closed = True
        self.bound = False
        self.close_reason = reason
        pending, self._pending = self._pending, {}
        for future, timer in pending.values():
            timer.cancel()
            if not future.done():
                future.set_exception(ConnectionLost(reason))
        if graceful:
            self.writer.close()
        else:
            self.writer.transport.abort()


# --- the client --------------------------------------------------------------------------------


class _BindRejected(Exception):
    pass


class SmppClient:
    """One self-healing bind (transceiver, transmitter or receiver): run() keeps one session up
    until stop(). `pace`, when given, is awaited before every submit_sm (a rate cap)."""

    def __init__(self, config: SmppClientConfig, events: SmppEvents, pace: Pace | None = None) -> None:
        if config.bind_mode not in BIND_MODES:
            raise ValueError(f"bind_mode must be one of {', '.join(BIND_MODES)}")
        self.config = config
        self.events = events
        self._pace = pace
        self.submitting = 0  # submit() calls in progress: the connector sends to the least busy bind
        self._sequence = SequenceGenerator()
        self._window = asyncio.Semaphore(config.window)
        self._session: _Session | None = None
        self._bound_event = asyncio.Event()
        self._reported_bound = False
        self._stopping = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        if config.max_inbound_in_flight < 1:
            raise ValueError("max_inbound_in_flight must be at least 1")
        self._handlers: set[asyncio.Task[None]] = set()  # deliver_sm being handled
        self._handler_done = asyncio.Event()
        self.inbound_peak = 0  # most deliver_sm ever handled at once
        self._throttle_delay = config.throttle_backoff_min
        self._resume_at = 0.0  # loop time before which no submit_sm is sent (throttling)

    @property
    def bound(self) -> bool:
        session = self._session
        return session is not None and session.bound and not self._stopping.is_set()

    @property
    def can_submit(self) -> bool:
        return self.bound and self.config.bind_mode != "receiver"

    @property
    def _where(self) -> str:
        cfg = self.config
        return f"{cfg.name + ' ' if cfg.name else ''}{cfg.host}:{cfg.port}"

    @property
    def inbound_in_flight(self) -> int:
        """deliver_sm read and not answered yet."""
        return len(self._handlers)

    async def wait_bound(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._bound_event.wait(), timeout)
        except TimeoutError:
            return False
        return self.bound

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, bind and serve; reconnect with exponential backoff until stop()."""
        self._run_task = asyncio.current_task()
        backoff = self.config.reconnect_backoff_min
        while not self._stopping.is_set():
            try:
                if await self._serve_once():
                    backoff = self.config.reconnect_backoff_min
            except _BindRejected as exc:
                log.warning("bind to %s rejected: %s", self._where, exc)
            except (OSError, TimeoutError, ConnectionLost, asyncio.IncompleteReadError) as exc:
                log.warning("SMPP connection to %s failed: %r", self._where, exc)
            except Exception:
                # run() must outlive any bug or odd PDU; a crash here would silently stop all SMS.
                log.exception("SMPP session to %s crashed", self._where)
            if self._stopping.is_set():
                break
            log.info("reconnecting to %s in %.1fs", self._where, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, self.config.reconnect_backoff_max)

    async def stop(self) -> None:
        """Unbind gracefully, let running handlers finish briefly, and end run()."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        session = self._session
        self._set_bound(False)
        if self._handlers:
            # Handlers store before acking; give them a moment so the SMSC gets its resp.
            await asyncio.wait(set(self._handlers), timeout=min(self.config.response_timeout, 2.0))
        if session is not None and session.bound:
            session.bound = False
            await self._unbind(session)
        if session is not None:
            session.abort("client stopped", graceful=True)
        for task in list(self._handlers):
            task.cancel()
        run_task = self._run_task
        if run_task is not None and run_task is not asyncio.current_task() and not run_task.done():
            done, _ = await asyncio.wait({run_task}, timeout=1.0)
            if not done:
                run_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run_task

    async def _unbind(self, session: _Session) -> None:
        try:
            seq, data = encode_request(self._sequence, "unbind")
            future = session.request(seq, data)
            await asyncio.wait_for(future, min(self.config.response_timeout, 5.0))
        except (ConnectionLost, TimeoutError, OSError) as exc:
            log.info("unbind not acknowledged: %r", exc)

    async def _serve_once(self) -> bool:
        """One connection's life; True if it got bound."""
        cfg = self.config
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(cfg.host, cfg.port, ssl=cfg.tls), cfg.connect_timeout
        )
        session = _Session(reader, writer, cfg.response_timeout)
        self._session = session
        reader_task = asyncio.create_task(self._read_loop(session))
        keepalive: asyncio.Task[None] | None = None
        try:
            seq, data = encode_request(
                self._sequence,
                f"bind_{cfg.bind_mode}",
                system_id=cfg.system_id,
                password=cfg.password,
                system_type=cfg.system_type,
            )
            response = await session.request(seq, data)
            expected = BIND_COMMAND_IDS[cfg.bind_mode] | RESPONSE_BIT
            if response.command_id != expected or response.status != ESME_ROK:
                raise _BindRejected(f"0x{response.status:08x} {status_description(response.status)}")
            if self._stopping.is_set():
                await self._unbind(session)
                return True
            session.bound = True
            log.info("bound to %s as %s (%s)", self._where, cfg.system_id, cfg.bind_mode)
            self._set_bound(True)
            keepalive = asyncio.create_task(self._keepalive(session))
            await reader_task
            level = logging.INFO if self._stopping.is_set() else logging.WARNING
            log.log(level, "SMPP session to %s ended: %s", self._where, session.close_reason)
            return True
        finally:
            session.abort(session.close_reason or "session ended")
            if self._session is session:
                self._session = None
            self._set_bound(False)
            for task in (reader_task, keepalive):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def _set_bound(self, bound: bool) -> None:
        if bound:
            self._bound_event.set()
        else:
            self._bound_event.clear()
        if bound == self._reported_bound:
            return
        self._reported_bound = bound
        try:
            self.events.on_bind_state(bound)
        except Exception:
            log.exception("on_bind_state handler failed")

    async def _keepalive(self, session: _Session) -> None:
        while not session.closed:
            await asyncio.sleep(self.config.enquire_link_interval)
            if session.closed:
                return
            seq, data = encode_request(self._sequence, "enquire_link")
            try:
                # No answer within response_timeout aborts the session (dead link).
                await session.request(seq, data)
            except ConnectionLost:
                return

    # --- reading -------------------------------------------------------------------------------

    async def _read_loop(self, session: _Session) -> None:
        reader = session.reader
        try:
            while True:
                await self._inbound_room(session)
                header = await reader.readexactly(16)
                length, command_id, status, seq = HEADER.unpack(header)
                if length < 16 or length > MAX_PDU_LENGTH:
                    session.abort(f"invalid command_length {length}")
                    return
                data = header + await reader.readexactly(length - 16) if length > 16 else header
                self._dispatch(session, command_id, status, seq, data)
        except asyncio.IncompleteReadError:
            session.abort("closed by peer")
        except (ConnectionError, OSError) as exc:
            session.abort(f"read failed: {exc!r}")

    async def _inbound_room(self, session: _Session) -> None:
        """Wait while max_inbound_in_flight deliver_sm are being handled: SMPP windowing is
        the SMSC's back-pressure, and our unread socket is what makes it apply."""
        while len(self._handlers) >= self.config.max_inbound_in_flight:
            session.reading_paused = True
            self._handler_done.clear()
            await self._handler_done.wait()
        session.reading_paused = False

    def _handler_finished(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._handler_done.set()

    def _dispatch(self, session: _Session, command_id: int, status: int, seq: int, data: bytes) -> None:
        if command_id & RESPONSE_BIT:
            session.resolve(seq, _Response(command_id, status, data))
        elif command_id == DELIVER_SM:
            task = asyncio.create_task(self._handle_deliver_sm(session, seq, data))
            self._handlers.add(task)
            task.add_done_callback(self._handler_finished)
            self.inbound_peak = max(self.inbound_peak, len(self._handlers))
        elif command_id == ENQUIRE_LINK:
            self._reply(session, "enquire_link_resp", seq)
        elif command_id == UNBIND:
            log.warning("SMSC %s unbinds; reconnecting", self._where)
            session.bound = False
            self._set_bound(False)
            self._reply(session, "unbind_resp", seq)
            # Let the resp reach the SMSC before the connection goes away.
            session.writer.close()
        elif command_id == ALERT_NOTIFICATION:
            pass  # has no response; nothing for the gateway in it
        else:
            log.warning("unsupported command 0x%08x from SMSC; generic_nack", command_id)
            self._reply(session, "generic_nack", seq, ESME_RINVCMDID)

    def _reply(self, session: _Session, command: str, seq: int, status: int = ESME_ROK) -> None:
        if session.closed:
            return
        try:
            session.write(encode_response(command, seq, status))
        except (ConnectionLost, OSError) as exc:
            log.info("could not send %s: %r", command, exc)

    async def _handle_deliver_sm(self, session: _Session, seq: int, data: bytes) -> None:
        try:
            event = decode_deliver_sm(data, datetime.now(UTC))
        except MalformedPdu as exc:
            # Redelivering a PDU we cannot decode would loop forever: refuse it permanently.
            log.warning("malformed deliver_sm %d refused with 0x%02x: %s", seq, exc.status, exc)
            self._reply(session, "deliver_sm_resp", seq, exc.status)
            return
        except Exception:
            log.exception("deliver_sm %d could not be decoded; refused", seq)
            self._reply(session, "deliver_sm_resp", seq, ESME_RX_P_APPN)
            return
        if event is None:
            log.warning("delivery receipt without a message id dropped: %r", data[16:])
            self._reply(session, "deliver_sm_resp", seq, ESME_ROK)
            return
        status = ESME_ROK
        try:
            # The handler stores before it returns; only then is the SMSC told ROK.
            if isinstance(event, MoPart):
                await self.events.on_mo(event)
            else:
                await self.events.on_receipt(event)
        except StoreUnavailable:
            status = ESME_RX_T_APPN  # redelivered later; the handler has logged the outage
        except Exception:
            log.exception("deliver_sm handler failed; asking the SMSC to redeliver")
            status = ESME_RX_T_APPN
        self._reply(session, "deliver_sm_resp", seq, status)

    # --- submitting ----------------------------------------------------------------------------

    async def submit(self, req: SubmitRequest, *, fail_fast: bool = False) -> SubmitResult:
        """Send every part not in req.skip_parts; returns their SMSC ids in part order.

        A long message's parts all carry one concatenation reference, req.concat_ref or one
        derived from req.ref, so a retry that skips the parts an earlier attempt got accepted
        completes the same concatenation.

        NotBound: nothing was sent. ConnectionLost: the session died with a part unanswered;
        its `accepted` holds the parts of this call the SMSC had answered. SubmitRejected:
        permanent. A throttled part is sent again after a pause, unless `fail_fast` (another
        connector could take the message) and no part was accepted yet: then Deferred, as for
        a transient refusal or a pause already running.
        """
        session = self._session
        if session is None or not session.bound or self._stopping.is_set():
            raise NotBound("no bound SMPP session")
        if self.config.bind_mode == "receiver":
            raise NotBound("a receiver bind does not submit")
        self.submitting += 1
        try:
            return await self._submit(session, req, fail_fast)
        finally:
            self.submitting -= 1

    async def _submit(self, session: _Session, req: SubmitRequest, fail_fast: bool) -> SubmitResult:
        if req.binary is not None:
            message = plan_binary(req.binary, req.binary_coding)
        else:
            # Message class 0 exists only for GSM 7-bit and UCS-2, not the SMSC's own charsets.
            message = flash(plan(req.text)) if req.flash else plan(req.text, self.config.data_coding)
        concat_ref = concat_ref_for(req.ref) if req.concat_ref is None else req.concat_ref
        if not 0 <= concat_ref <= 0xFF:
            raise ValueError(f"concat_ref {concat_ref} is not an 8-bit reference")
        source_ton, source_npi, source = source_address(req.source, self.config)
        dest_ton, dest_npi, destination = destination_address(req.destination, self.config)
        fields: dict[str, Any] = {
            "source_addr_ton": source_ton,
            "source_addr_npi": source_npi,
            "source_addr": source,
            "dest_addr_ton": dest_ton,
            "dest_addr_npi": dest_npi,
            "destination_addr": destination,
            "registered_delivery": 1 if req.want_receipt else 0,
            "data_coding": message.data_coding,
        }
        if req.valid_until is not None:
            fields["validity_period"] = absolute_time(req.valid_until)
        accepted: dict[int, str] = {}
        try:
            for seq, (esm_class, short_message) in enumerate(submit_parts(message, concat_ref), start=1):
                if seq in req.skip_parts:
                    continue
                give_up = fail_fast and not accepted
                accepted[seq] = await self._submit_part(session, esm_class, short_message, fields, give_up)
        except ConnectionLost as exc:
            if not accepted:
                raise
            raise ConnectionLost(str(exc), accepted) from exc
        log.debug("submitted %s part(s) %s: %s", req.ref, list(accepted), list(accepted.values()))
        return SubmitResult(tuple(accepted.values()), tuple(accepted))

    async def _submit_part(
        self, session: _Session, esm_class: int, short_message: bytes, fields: dict[str, Any], give_up: bool
    ) -> str:
        while True:
            if give_up and self._resume_at > asyncio.get_running_loop().time():
                raise Deferred(f"{self._where} is pausing after a throttling answer")
            await self._throttle_pause()
            async with self._window:
                if self._pace is not None:
                    await self._pace()
                # The session may have died while this part queued for a slot.
                if session is not self._session or not session.bound:
                    raise ConnectionLost(session.close_reason or "session ended before the part was sent")
                seq, data = encode_request(
                    self._sequence, "submit_sm", esm_class=esm_class, short_message=short_message, **fields
                )
                future = session.request(seq, data)
                try:
                    await session.flush()
                    response = await future
                finally:
                    session.forget(seq)
            if response.status == ESME_ROK and response.command_id == SUBMIT_SM_RESP:
                self._throttle_delay = self.config.throttle_backoff_min
                return submit_sm_message_id(response.data)
            if response.status in RETRYABLE_SUBMIT_STATUSES:
                self._throttled(response.status)
                if not give_up:
                    continue
            if give_up and response.status in TRANSIENT_SUBMIT_STATUSES:
                raise Deferred(
                    f"0x{response.status:08x} {status_description(response.status)}", response.status
                )
            raise SubmitRejected(response.status, status_description(response.status))

    async def _throttle_pause(self) -> None:
        loop = asyncio.get_running_loop()
        # Loop because a later refusal can push the deadline while we sleep.
        while (delay := self._resume_at - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    def _throttled(self, status: int) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._resume_at:
            return  # a pause is already running; all in-flight refusals count as one
        delay = self._throttle_delay
        self._resume_at = now + delay
        self._throttle_delay = min(delay * 2, self.config.throttle_backoff_max)
        log.info(
            "SMSC %s refused submit_sm with 0x%02x; pausing submits for %.2fs", self._where, status, delay
        )
