"""SMPP 3.4 server for ESMEs: customers' own SMPP clients bind to us as to an SMSC.

Each connection is a `_Session` with one task reading it. Binds (transmitter, receiver,
transceiver) are checked by the EsmeBackend (smpp/server_types.py); a submit_sm is decoded
here, queued by the backend, and answered with our message id only once the backend returns,
which it does after the commit. A query_sm is answered with the state the backend gives for
one of the account's messages. Receipts and MO for a bound receiver are claimed from the
backend up to the session's window and acknowledged one by one by deliver_sm_resp; whoever
commits new ones for an account calls `wake(account keys)`, and its receivers look at once
(the poll is for deliveries committed by other nodes).

Defences against a hostile peer (docs/security.md, "SMPP server"): a connection cap; a bind
deadline and an idle deadline; command_length checked before the body is read; bind failures
throttled per address; per session at most `window` submit_sm in progress and `window`
deliver_sm unanswered: reading stops while its submits are full, so a flooding session waits
on itself. Per account, at most `account_binds` sessions, and at most `account_window` of its
submits with the backend at once across all of them: an account that opens many sessions
still has no more than that many rows ahead of another account's submit at the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from smpp import simulator_wire as wire
from smpp.client_wire import (
    ESME_RINVDSTADR,
    ESME_RINVSRCADR,
    MAX_ADDRESS_LENGTH,
    MalformedPdu,
    decode_message,
    parse_deliver_sm,
    storable_text,
)
from smpp.dlr import receipt_text
from smpp.encoding import plan
from smpp.server_types import (
    ESME_RBINDFAIL,
    ESME_RINVEXPIRY,
    ESME_RINVSCHED,
    ESME_RSYSERR,
    EsmeBackend,
    EsmeDelivery,
    EsmeRefused,
    EsmeSubmit,
)
from smpp.simulator_model import address_fields

log = logging.getLogger("smpp.server")

ESME_RINVBNDSTS = wire.ESME_RINVBNDSTS
ESME_RALYBND = wire.ESME_RALYBND
ESM_SMSC_RECEIPT = 0x04
QUERY_SM = 0x00000003
BINARY_DATA_CODINGS = frozenset({0x02, 0x04})


@dataclass(frozen=True)
class EsmeServerConfig:
    host: str = "127.0.0.1"
    port: int = 2776
    tls: ssl.SSLContext | None = None
    system_id: str = "gateway"  # ours, in bind responses
    max_connections: int = 100
    bind_timeout: float = 10.0  # from accept to a successful bind
    idle_timeout: float = 60.0  # no PDU for half of it: enquire_link; for all of it: closed
    window: int = 10  # per session: submit_sm in progress, and deliver_sm unanswered
    account_window: int = 10  # per account, across its sessions: submit_sm with the backend
    account_binds: int = 10  # sessions per account
    response_timeout: float = 10.0  # for a deliver_sm_resp; then the delivery goes back
    max_pdu_length: int = 16 * 1024  # a submit_sm with a long message_payload fits
    poll_interval: float = 1.0  # how often a receiver looks for deliveries without a wake-up
    bind_failures: int = 5  # per peer address and minute; past it, binds from it are refused


def smpp_time(value: str, now: datetime) -> datetime | None:
    """An SMPP 3.4 time (7.1.1): absolute `YYMMDDhhmmsstnn+`/`-` (nn quarter hours from UTC) or
    relative `YYMMDDhhmmss000R`; "" is None. ValueError for anything else."""
    if value == "":
        return None
    if len(value) != 16 or not value[:15].isascii() or not value[:15].isdigit() or value[15] not in "+-R":
        raise ValueError(f"not an SMPP time: {value[:20]!r}")
    yy, mo, dd, hh, mi, ss = (int(value[i : i + 2]) for i in range(0, 12, 2))
    if value[15] == "R":
        return now + timedelta(days=yy * 365 + mo * 30 + dd, hours=hh, minutes=mi, seconds=ss)
    offset = timedelta(minutes=15 * int(value[13:15]))
    local = datetime(2000 + yy, mo, dd, hh, mi, ss, int(value[12]) * 100_000)
    return (local - offset if value[15] == "+" else local + offset).replace(tzinfo=UTC)


def smpp_absolute(value: datetime | None) -> str:
    """An SMPP 3.4 absolute time in UTC (`YYMMDDhhmmsst00+`); "" for None."""
    if value is None:
        return ""
    utc = value.astimezone(UTC)
    return f"{utc:%y%m%d%H%M%S}{utc.microsecond // 100_000}00+"


def decode_submit(frame: bytes, now: datetime) -> EsmeSubmit:
    """A submit_sm as the backend sees it; MalformedPdu or EsmeRefused with the status to answer."""
    pdu = parse_deliver_sm(frame)  # same body layout
    if not 0 < len(pdu.source_addr) <= MAX_ADDRESS_LENGTH:
        raise MalformedPdu(ESME_RINVSRCADR, "source_addr empty or too long")
    if not 0 < len(pdu.destination_addr) <= MAX_ADDRESS_LENGTH:
        raise MalformedPdu(ESME_RINVDSTADR, "destination_addr empty or too long")
    decoded = decode_message(pdu)
    try:
        schedule = smpp_time(pdu.schedule_delivery_time, now)
    except ValueError as exc:
        raise EsmeRefused(ESME_RINVSCHED, str(exc)) from None
    try:
        expire = smpp_time(pdu.validity_period, now)
    except ValueError as exc:
        raise EsmeRefused(ESME_RINVEXPIRY, str(exc)) from None
    binary = pdu.data_coding in BINARY_DATA_CODINGS
    return EsmeSubmit(
        source=pdu.source_addr,
        destination=pdu.destination_addr,
        # 8-bit data decodes as Latin-1, octet for octet: back to the octets, carried as hex.
        text=decoded.text.encode("latin-1").hex() if binary else storable_text(decoded.text),
        binary_coding=pdu.data_coding if binary else None,
        receipt=pdu.registered_delivery & 0x03 if pdu.registered_delivery & 0x03 in (1, 2) else 0,
        concat_ref=decoded.concat_ref,
        concat_total=decoded.concat_total,
        concat_seq=decoded.concat_seq,
        schedule_at=schedule,
        expire_at=expire,
    )


def deliver_sm_fields(d: EsmeDelivery) -> dict[str, Any]:
    """The deliver_sm for a receipt (`id:... stat:...` text plus receipted_message_id and
    message_state) or an MO (GSM 03.38 or UCS-2; message_payload when it is long)."""
    source, source_ton, source_npi = address_fields(d.source)
    dest, dest_ton, dest_npi = address_fields(d.destination)
    fields: dict[str, Any] = {
        "service_type": "",
        "source_addr_ton": source_ton,
        "source_addr_npi": source_npi,
        "source_addr": source,
        "dest_addr_ton": dest_ton,
        "dest_addr_npi": dest_npi,
        "destination_addr": dest,
    }
    if d.receipted_id is not None:
        done = d.done_at or datetime.now(UTC)
        submitted = d.submitted_at or done
        fields.update(
            esm_class=ESM_SMSC_RECEIPT,
            data_coding=0,
            short_message=receipt_text(d.receipted_id, d.stat, d.err, submitted, done),
            receipted_message_id=d.receipted_id,
            message_state=d.message_state or 0,
        )
        return fields
    encoded = plan(d.text)
    body = b"".join(encoded.payloads)
    fields.update(esm_class=0, data_coding=encoded.data_coding)
    # short_message holds at most 254 octets; a longer MO travels whole in message_payload.
    fields["message_payload" if len(body) > 254 else "short_message"] = body
    return fields


class _BindThrottle:
    """Failed binds per peer address in the last minute; bounded memory."""

    WINDOW = 60.0
    MAX_PEERS = 10_000

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, peer: str) -> deque[float]:
        times = self._failures.get(peer, deque())
        cutoff = self._clock() - self.WINDOW
        while times and times[0] < cutoff:
            times.popleft()
        return times

    def blocked(self, peer: str) -> bool:
        return len(self._recent(peer)) >= self._limit

    def failed(self, peer: str) -> None:
        if len(self._failures) >= self.MAX_PEERS and peer not in self._failures:
            del self._failures[next(iter(self._failures))]
        times = self._recent(peer)
        times.append(self._clock())
        self._failures[peer] = times


class _Account:
    """What the sessions of one account on this node share."""

    def __init__(self, window: int) -> None:
        self.sessions: set[_Session] = set()
        self.submits = asyncio.Semaphore(window)


class _Session:
    """One ESME connection; run() is the only task reading its socket."""

    def __init__(
        self, server: EsmeServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._server = server
        self._config = server.config
        self._backend = server.backend
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.id = secrets.token_hex(8)
        self.account: object | None = None
        self.key: Hashable = None
        self.shared: _Account | None = None  # with the other sessions of the account, once bound
        self.system_id = ""
        self.mode: str | None = None
        self.closed = False
        self._sequences = wire.SequenceGenerator()
        self._submits = asyncio.Semaphore(self._config.window)
        self._submit_tasks: set[asyncio.Task[None]] = set()
        self._awaiting: dict[int, tuple[int, float]] = {}  # deliver_sm sequence -> (delivery id, sent at)
        self._wake = asyncio.Event()
        self._deliverer: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        bind_deadline = loop.time() + self._config.bind_timeout
        pinged = False
        try:
            while not self.closed:
                bound = self.mode is not None
                timeout = self._config.idle_timeout / 2 if bound else bind_deadline - loop.time()
                try:
                    frame = await asyncio.wait_for(
                        wire.read_frame(self._reader, self._config.max_pdu_length), max(timeout, 0.0)
                    )
                except TimeoutError:
                    if not bound:
                        log.info("%s: no bind within %.0f s; closing", self.peer, self._config.bind_timeout)
                        return
                    if pinged:
                        log.info("%s: idle for %.0f s; closing", self.peer, self._config.idle_timeout)
                        return
                    pinged = True
                    self.send(wire.request("enquire_link", self._sequences)[1])
                    continue
                pinged = False
                if not await self._handle(frame):
                    return
                await self._writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except wire.FrameError as exc:
            log.warning("%s: %s; closing the connection", self.peer, exc)
        except Exception:
            log.exception("%s: unexpected error; closing the connection", self.peer)
        finally:
            await self.close()

    def send(self, data: bytes) -> None:
        if not self.closed:
            self._writer.write(data)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        if self._deliverer is not None:
            self._deliverer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deliverer
        unanswered = [delivery_id for delivery_id, _ in self._awaiting.values()]
        self._awaiting.clear()
        if unanswered and self.account is not None:
            with contextlib.suppress(Exception):
                await self._backend.release(self.account, unanswered)
        self._server._closed(self)

    async def _handle(self, frame: bytes) -> bool:
        """Act on one PDU; False ends the session."""
        command_id, status, sequence = wire.header(frame)
        if command_id == wire.ENQUIRE_LINK:
            self.send(wire.response("enquire_link_resp", sequence))
            return True
        if command_id in (wire.ENQUIRE_LINK_RESP, wire.UNBIND_RESP):
            return True
        if command_id == wire.UNBIND:
            self.send(wire.response("unbind_resp", sequence))
            log.info("%s: unbind (system_id=%s)", self.peer, self.system_id)
            return False
        if command_id in (wire.DELIVER_SM_RESP, wire.GENERIC_NACK):
            await self._answered(sequence, status)
            return True
        if command_id in wire.BIND_MODES:
            return await self._on_bind(command_id, frame, sequence)
        if command_id == wire.SUBMIT_SM:
            if self.mode not in ("transmitter", "transceiver"):
                self.send(wire.error_response(command_id, sequence, ESME_RINVBNDSTS))
                return True
            # Reading waits while this session's window of submits is full: its own flood
            # slows only itself.
            await self._submits.acquire()
            task = asyncio.create_task(self._on_submit(frame, sequence))
            self._submit_tasks.add(task)
            task.add_done_callback(self._submit_tasks.discard)
            return True
        if command_id == QUERY_SM:
            # SMPP 3.4 has transmitters ask, smpplib receivers: any bind of the account may.
            if self.mode is None:
                self.send(wire.error_response(command_id, sequence, ESME_RINVBNDSTS))
            else:
                await self._on_query(frame, sequence)
            return True
        if command_id & wire.RESPONSE_BIT:
            return True  # a response to nothing we sent: ignored, as SMPP allows
        self.send(wire.generic_nack(sequence, wire.ESME_RINVCMDID))
        return True

    async def _on_bind(self, command_id: int, frame: bytes, sequence: int) -> bool:
        mode = wire.BIND_MODES[command_id]
        if self.mode is not None:
            self.send(wire.error_response(command_id, sequence, ESME_RALYBND))
            return True
        throttle = self._server._throttle
        if throttle.blocked(self.address):
            log.warning("%s: too many failed binds; refused", self.peer)
            self.send(wire.error_response(command_id, sequence, ESME_RBINDFAIL))
            return False
        try:
            pdu = wire.parse(frame, self._sequences)
            system_id, password = wire.text_field(pdu.system_id), wire.text_field(pdu.password)
        except Exception:  # smpplib raises assorted errors on a bad body
            self.send(wire.error_response(command_id, sequence, wire.ESME_RINVCMDLEN))
            return True
        try:
            account = await self._backend.authenticate(system_id, password)
        except EsmeRefused as exc:
            throttle.failed(self.address)
            log.info(
                "%s: bind_%s as %r refused (0x%02x): %s", self.peer, mode, system_id[:16], exc.status, exc
            )
            self.send(wire.error_response(command_id, sequence, exc.status))
            return True
        self.key = self._backend.account_key(account)
        self.shared = self._server._join(self.key, self)
        if self.shared is None:
            log.warning(
                "%s: %s has %d sessions; bind refused", self.peer, system_id, self._config.account_binds
            )
            self.send(wire.error_response(command_id, sequence, ESME_RBINDFAIL))
            return True
        self.account, self.system_id, self.mode = account, system_id, mode
        self.send(
            wire.response(
                f"bind_{mode}_resp", sequence, system_id=self._config.system_id, sc_interface_version=0x34
            )
        )
        log.info("%s: bound %s as %s", self.peer, mode, system_id)
        if mode in ("receiver", "transceiver"):
            self._deliverer = asyncio.create_task(self._deliver_loop())
        return True

    async def _on_submit(self, frame: bytes, sequence: int) -> None:
        try:
            try:
                submit = decode_submit(frame, datetime.now(UTC))
                assert self.shared is not None
                async with self.shared.submits:  # the account's turn, whichever session it came on
                    msgid = await self._backend.submit(self.account, submit)
            except (MalformedPdu, EsmeRefused) as exc:
                self.send(wire.error_response(wire.SUBMIT_SM, sequence, exc.status))
                return
            except Exception:  # a bug, or a backend that could not say better
                log.exception("%s: submit_sm failed", self.peer)
                self.send(wire.error_response(wire.SUBMIT_SM, sequence, ESME_RSYSERR))
                return
            self.send(wire.response("submit_sm_resp", sequence, message_id=msgid))
        finally:
            self._submits.release()

    async def _on_query(self, frame: bytes, sequence: int) -> None:
        """One database read, awaited in the reading task: a session's queries wait on each
        other, as its submits do on its window."""
        try:
            message_id = wire.text_field(wire.parse(frame, self._sequences).message_id)
        except Exception:  # smpplib raises assorted errors on a bad body
            self.send(wire.error_response(QUERY_SM, sequence, wire.ESME_RINVCMDLEN))
            return
        try:
            state = await self._backend.query(self.account, message_id)
        except EsmeRefused as exc:
            self.send(wire.error_response(QUERY_SM, sequence, exc.status))
            return
        except Exception:
            log.exception("%s: query_sm failed", self.peer)
            self.send(wire.error_response(QUERY_SM, sequence, ESME_RSYSERR))
            return
        self.send(
            wire.response(
                "query_sm_resp",
                sequence,
                message_id=message_id,
                final_date=smpp_absolute(state.final_at),
                message_state=state.state,
                error_code=0,
            )
        )

    async def _answered(self, sequence: int, status: int) -> None:
        entry = self._awaiting.pop(sequence, None)
        if entry is None or self.account is None:
            return
        if status == wire.ESME_ROK:
            await self._backend.done(self.account, [entry[0]])
        else:
            await self._backend.release(self.account, [entry[0]])
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def _deliver_loop(self) -> None:
        """Receipts and MO for this receiver, at most `window` unanswered at a time."""
        assert self.account is not None
        loop = asyncio.get_running_loop()
        while not self.closed:
            self._wake.clear()
            now = loop.time()
            late = [s for s, (_, at) in self._awaiting.items() if now - at > self._config.response_timeout]
            if late:
                ids = [self._awaiting.pop(s)[0] for s in late]
                await self._backend.release(self.account, ids)
            free = self._config.window - len(self._awaiting)
            if free > 0:
                try:
                    deliveries = await self._backend.claim(self.account, self.id, free)
                except Exception:
                    log.exception("%s: claiming deliveries failed", self.peer)
                    deliveries = []
                for d in deliveries:
                    seq, data = wire.request("deliver_sm", self._sequences, **deliver_sm_fields(d))
                    self._awaiting[seq] = (d.id, loop.time())
                    self.send(data)
                if deliveries and len(deliveries) == free:
                    continue  # maybe more waiting: go on once answers free the window
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.poll_interval)


class EsmeServer:
    """The listener: sessions, the connection cap, the bind-failure throttle."""

    def __init__(self, config: EsmeServerConfig, backend: EsmeBackend) -> None:
        self.config = config
        self.backend = backend
        self._sessions: set[_Session] = set()
        self._accounts: dict[Hashable, _Account] = {}  # of the bound sessions
        self._server: asyncio.base_events.Server | None = None
        self._throttle = _BindThrottle(config.bind_failures)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def bound(self) -> int:
        return sum(1 for s in self._sessions if s.mode is not None)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, ssl=self.config.tls
        )
        log.info("SMPP server listening on %s:%d", self.config.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._sessions) >= self.config.max_connections:
            log.warning("SMPP server: %d connections; refusing another", len(self._sessions))
            writer.close()
            return
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        await session.run()

    def _join(self, key: Hashable, session: _Session) -> _Account | None:
        """The account's shared state for a session binding; None past `account_binds`."""
        shared = self._accounts.setdefault(key, _Account(self.config.account_window))
        if len(shared.sessions) >= self.config.account_binds:
            return None
        shared.sessions.add(session)
        return shared

    def _closed(self, session: _Session) -> None:
        self._sessions.discard(session)
        shared = self._accounts.get(session.key)
        if shared is not None and session.shared is shared:
            shared.sessions.discard(session)
            if not shared.sessions:
                del self._accounts[session.key]

    def wake(self, keys: Iterable[Hashable]) -> None:
        """New deliveries were committed for these accounts (EsmeBackend.account_key): their
        receivers on this node look now rather than at their next poll."""
        for key in keys:
            if shared := self._accounts.get(key):
                for session in shared.sessions:
                    session.wake()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self._sessions):
            await s.close()
        if self._server is not None:
            await self._server.wait_closed()
