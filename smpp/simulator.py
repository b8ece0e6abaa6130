"""Built-in SMSC simulator: an SMPP 3.4 server for development, demos and tests.

The gateway's run command starts it in-process on embedded defaults, the test
suite drives it through tests/peers/simulator_peer.py, and
`python -m smpp.simulator_cli` runs it standalone (e.g. as a docker-compose service).

It accepts binds, answers submit_sm with unique message ids, sends delivery
receipts as deliver_sm after a delay, injects mobile-originated messages, and
can misbehave on request (throttling, dropped connections, odd id formats) so
the gateway's client can be tested against the failures real SMSCs produce.
Receipts and MO messages are store-and-forward: held while no receiver is
bound, re-sent when an ESME answers with an error or disconnects unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from smpp import simulator_wire as wire
from smpp.simulator_model import (
    AcceptedSubmit,
    Behaviour,
    MessageIds,
    Receipt,
    SimulatorConfig,
    SimulatorStats,
    address_fields,
    format_message_id,
    message_preview,
    receipt_stat,
    utc_now,
    wants_receipt,
)

__all__ = ["AcceptedSubmit", "Behaviour", "SimulatorConfig", "SimulatorStats", "SmscSimulator"]

log = logging.getLogger("smpp.simulator")


@dataclass(eq=False)
class _Delivery:
    """A deliver_sm (receipt or MO) on its way to an ESME, kept until it is acknowledged."""

    kind: str  # "receipt" | "mo"
    fields: dict[str, Any]
    system_id: str | None  # only sessions bound with this system_id may take it; None = any
    origin: _Session | None = None  # receipts prefer the session that submitted the message
    attempts: int = 0


@dataclass(frozen=True)
class _SubmitOutcome:
    status: int
    message_id: str = ""
    drop: bool = False  # close the connection once the response is out
    respond_delay: float = 0.0


class _Session:
    """One ESME connection; its run() is the only task reading the socket."""

    def __init__(self, sim: SmscSimulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._sim = sim
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.mode: str | None = None  # bind mode once bound
        self.system_id = ""
        self.closed = False
        self._sequences = wire.SequenceGenerator()
        self._awaiting: dict[int, _Delivery] = {}  # deliver_sm sequence -> delivery
        self._next_submit_at = 0.0  # loop time before which the next submit_sm waits (bind_rate)

    @property
    def can_receive(self) -> bool:
        return not self.closed and self.mode in ("receiver", "transceiver")

    @property
    def can_transmit(self) -> bool:
        return self.mode in ("transmitter", "transceiver")

    async def run(self) -> None:
        try:
            while await self._handle(await wire.read_frame(self._reader)):
                # Only blocks when the ESME stops reading; keeps our buffer bounded.
                await self._writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except wire.FrameError as exc:
            log.warning("%s: %s; closing the connection", self.peer, exc)
        except Exception:
            log.exception("%s: unexpected error; closing the connection", self.peer)
        finally:
            self.close()

    def send(self, data: bytes) -> None:
        if not self.closed:
            self._writer.write(data)

    def deliver(self, delivery: _Delivery) -> None:
        sequence, data = wire.request("deliver_sm", self._sequences, **delivery.fields)
        delivery.attempts += 1
        self._awaiting[sequence] = delivery
        self.send(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        unanswered, self._awaiting = list(self._awaiting.values()), {}
        self._sim._session_closed(self, unanswered)

    async def _handle(self, frame: bytes) -> bool:
        """Act on one PDU; False ends the session."""
        command_id, status, sequence = wire.header(frame)
        if command_id not in wire.HANDLED:
            self.send(wire.generic_nack(sequence, wire.ESME_RINVCMDID))
            return True
        if command_id in (wire.DELIVER_SM_RESP, wire.GENERIC_NACK):
            delivery = self._awaiting.pop(sequence, None)
            if delivery is not None:
                self._sim._delivery_answered(delivery, status)
            return True
        if command_id == wire.ENQUIRE_LINK:
            self.send(wire.response("enquire_link_resp", sequence))
            return True
        if command_id == wire.UNBIND:
            self.send(wire.response("unbind_resp", sequence))
            log.info("%s: unbind (system_id=%s)", self.peer, self.system_id)
            return False
        if command_id in (wire.ENQUIRE_LINK_RESP, wire.UNBIND_RESP):
            return True
        try:
            pdu = wire.parse(frame, self._sequences)
        except Exception:  # smpplib raises assorted errors (struct, Key, Unicode...) on bad bodies
            log.warning("%s: malformed PDU 0x%08x seq %d", self.peer, command_id, sequence)
            self.send(wire.generic_nack(sequence, wire.ESME_RINVCMDLEN))
            return True
        if command_id == wire.SUBMIT_SM:
            return await self._on_submit(pdu, sequence)
        self._on_bind(command_id, pdu, sequence)
        return True

    def _on_bind(self, command_id: int, pdu: Any, sequence: int) -> None:
        mode = wire.BIND_MODES[command_id]
        system_id = wire.text_field(pdu.system_id)
        if self.mode is not None:
            status = wire.ESME_RALYBND
        else:
            status = self._sim._bind_status(system_id, wire.text_field(pdu.password))
        if status != wire.ESME_ROK:
            log.info("%s: bind_%s as %r refused (0x%02x)", self.peer, mode, system_id, status)
            self.send(wire.error_response(command_id, sequence, status))
            return
        self.mode, self.system_id = mode, system_id
        self.send(
            wire.response(
                f"bind_{mode}_resp",
                sequence,
                system_id=self._sim.config.smsc_system_id,
                sc_interface_version=0x34,
            )
        )
        self._sim._session_bound(self)

    async def _on_submit(self, pdu: Any, sequence: int) -> bool:
        if not self.can_transmit:
            self.send(wire.error_response(wire.SUBMIT_SM, sequence, wire.ESME_RINVBNDSTS))
            return True
        rate = self._sim.config.bind_rate
        if rate > 0:
            # Reading stops meanwhile: this bind's window fills, as with a capped real SMSC.
            now = asyncio.get_running_loop().time()
            at = max(now, self._next_submit_at)
            self._next_submit_at = at + 1 / rate
            if at > now:
                await asyncio.sleep(at - now)
        outcome = self._sim._accept_submit(self, pdu)
        if outcome.status != wire.ESME_ROK:
            self.send(wire.error_response(wire.SUBMIT_SM, sequence, outcome.status))
            return True
        resp = wire.response("submit_sm_resp", sequence, message_id=outcome.message_id)
        if outcome.drop:
            if outcome.respond_delay > 0:
                await asyncio.sleep(outcome.respond_delay)
            self.send(resp)
            log.info(
                "%s: dropping the connection after submit %s (drop_after)", self.peer, outcome.message_id
            )
            return False
        if outcome.respond_delay > 0:
            # Scheduled rather than awaited: a slow SMSC still reads the rest of the window.
            self._sim._later(outcome.respond_delay, self.send, resp)
        else:
            self.send(resp)
        return True


class SmscSimulator:
    """An SMPP 3.4 SMSC on asyncio. Not thread-safe: use it from the loop that started it."""

    def __init__(self, config: SimulatorConfig | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.config = config or SimulatorConfig()
        self._tls = tls  # set: binds come over TLS (a server context)
        self.behaviour = Behaviour.from_config(self.config)
        self.port = self.config.port  # the real one once start() has bound the socket
        self._stats = SimulatorStats()
        self._submits: deque[AcceptedSubmit] = deque(maxlen=self.config.max_stored_submits)
        self._delivery_statuses: deque[int] = deque(maxlen=self.config.max_stored_submits)
        self._pending: deque[_Delivery] = deque(maxlen=self.config.max_pending_deliveries)
        self._ids = MessageIds(self.config.first_message_id)
        self._sessions: set[_Session] = set()
        self._connection_tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.Handle] = set()
        self._server: asyncio.Server | None = None
        self._summary_task: asyncio.Task[None] | None = None
        self._running = False
        self._receiver_bound = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            raise RuntimeError("simulator already started")
        self._running = True
        self._server = await asyncio.start_server(
            self._serve, self.config.host, self.config.port, ssl=self._tls
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("SMSC simulator listening on %s:%d", self.config.host, self.port)
        if self.config.summary_interval > 0:
            self._summary_task = asyncio.create_task(self._log_summaries(self.config.summary_interval))

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._summary_task is not None:
            self._summary_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._summary_task
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.close()
        if self._connection_tasks:
            await asyncio.wait(self._connection_tasks, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
        self._pending.clear()
        log.info("SMSC simulator stopped: %s", self.stats)

    # -- observation -----------------------------------------------------------------------

    @property
    def submits(self) -> list[AcceptedSubmit]:
        """Accepted submit_sm, oldest first (the last max_stored_submits of them)."""
        return list(self._submits)

    @property
    def delivery_statuses(self) -> list[int]:
        """command_status of every deliver_sm_resp (or generic_nack) to our deliver_sm, in order."""
        return list(self._delivery_statuses)

    @property
    def bind_count(self) -> int:
        return self._stats.binds

    @property
    def stats(self) -> SimulatorStats:
        return replace(self._stats)

    @property
    def pending_deliveries(self) -> int:
        """Receipts and MO messages waiting for a receiver to bind."""
        return len(self._pending)

    def has_receiver(self, system_id: str | None = None) -> bool:
        return any(s.can_receive and system_id in (None, s.system_id) for s in self._sessions)

    async def wait_for_receiver(self) -> None:
        """Until an ESME is bound as receiver or transceiver (wrap in asyncio.timeout)."""
        while not self.has_receiver():
            self._receiver_bound.clear()
            await self._receiver_bound.wait()

    # -- control -----------------------------------------------------------------------

    def configure(
        self,
        *,
        throttle_next: int = 0,
        drop_after: int | None = None,
        dlr_mode: str = "both",
        id_format: str = "hex",
        dlr_id_format: str | None = None,
        dlr_stat: str = "DELIVRD",
        dlr_delay_ms: int = 0,
        reject_binds: bool = False,
        respond_delay_ms: int = 0,
    ) -> None:
        """Replace the runtime behaviour; omitted knobs go back to these defaults (SmscPeer semantics)."""
        self.behaviour = Behaviour(
            throttle_next=throttle_next,
            drop_after=drop_after,
            dlr_mode=dlr_mode,
            id_format=id_format,
            dlr_id_format=dlr_id_format,
            dlr_stat=dlr_stat,
            dlr_delay=dlr_delay_ms / 1000,
            reject_binds=reject_binds,
            respond_delay=respond_delay_ms / 1000,
        )

    async def inject_mo(
        self,
        source: str,
        destination: str,
        short_message: bytes,
        data_coding: int = 0,
        esm_class: int = 0,
    ) -> None:
        """Send a mobile-originated deliver_sm to a bound receiver (held until one binds)."""
        source_addr, source_ton, source_npi = address_fields(source)
        dest_addr, dest_ton, dest_npi = address_fields(destination)
        fields: dict[str, Any] = {
            "service_type": "",
            "source_addr_ton": source_ton,
            "source_addr_npi": source_npi,
            "source_addr": source_addr,
            "dest_addr_ton": dest_ton,
            "dest_addr_npi": dest_npi,
            "destination_addr": dest_addr,
            "esm_class": esm_class,
            "data_coding": data_coding,
        }
        # short_message holds at most 254 octets; longer bodies travel in message_payload.
        fields["message_payload" if len(short_message) > 254 else "short_message"] = short_message
        self._dispatch(_Delivery("mo", fields, system_id=None))

    # -- internals used by _Session ---------------------------------------------------------

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        """Run callback after delay, unless stop() comes first."""
        loop = asyncio.get_running_loop()
        handle: asyncio.Handle

        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = loop.call_later(delay, fire) if delay > 0 else loop.call_soon(fire)
        self._timers.add(handle)

    def _bind_status(self, system_id: str, password: str) -> int:
        if self.behaviour.reject_binds:
            return wire.ESME_RBINDFAIL
        expected = self.config.password
        if expected is not None and (system_id != self.config.system_id or password != expected):
            return wire.ESME_RINVPASWD
        return wire.ESME_ROK

    def _session_bound(self, session: _Session) -> None:
        self._stats.binds += 1
        log.info("%s: bound as %s (system_id=%s)", session.peer, session.mode, session.system_id)
        if session.can_receive:
            self._receiver_bound.set()
        if session.can_receive and self._pending:
            waiting = list(self._pending)
            self._pending.clear()
            for delivery in waiting:
                self._dispatch(delivery)

    def _session_closed(self, session: _Session, unanswered: list[_Delivery]) -> None:
        self._sessions.discard(session)
        if session.mode is not None:
            log.info("%s: session closed (system_id=%s)", session.peer, session.system_id)
        # Unacknowledged deliver_sm may never have reached the ESME: send them again elsewhere/later.
        for delivery in unanswered:
            self._dispatch(delivery)

    def _accept_submit(self, session: _Session, pdu: Any) -> _SubmitOutcome:
        behaviour = self.behaviour
        if behaviour.throttle_next > 0:
            behaviour.throttle_next -= 1
            self._stats.throttled += 1
            return _SubmitOutcome(wire.ESME_RTHROTTLED)
        number = self._ids.next_number()
        message_id = format_message_id(number, behaviour.id_format)
        source = wire.text_field(pdu.source_addr)
        destination = wire.text_field(pdu.destination_addr)
        body = pdu.short_message or pdu.message_payload or b""
        esm_class, data_coding = int(pdu.esm_class or 0), int(pdu.data_coding or 0)
        registered_delivery = int(pdu.registered_delivery or 0)
        now = utc_now()
        self._submits.append(
            AcceptedSubmit(
                source_addr=source,
                source_addr_ton=int(pdu.source_addr_ton or 0),
                destination_addr=destination,
                data_coding=data_coding,
                esm_class=esm_class,
                registered_delivery=registered_delivery,
                short_message=bytes(body),
                message_id=message_id,
                system_id=session.system_id,
                received_at=now,
                peer=session.peer,
            )
        )
        self._stats.submits += 1
        stat = receipt_stat(destination, behaviour.dlr_stat, self.config.fail_prefix)
        if behaviour.dlr_mode != "none" and wants_receipt(registered_delivery, stat):
            receipt = Receipt(
                tlv_id=message_id,
                text_id=format_message_id(number, behaviour.dlr_id_format or behaviour.id_format),
                stat=stat,
                mode=behaviour.dlr_mode,
                handset=destination,
                sender=source,
                submitted_at=now,
                preview=message_preview(bytes(body), data_coding, esm_class),
            )
            self._later(behaviour.dlr_delay, self._send_receipt, receipt, session)
        drop = False
        if behaviour.drop_after is not None:
            behaviour.drop_after -= 1
            if behaviour.drop_after == 0:
                behaviour.drop_after, drop = None, True
        return _SubmitOutcome(wire.ESME_ROK, message_id, drop, behaviour.respond_delay)

    def _send_receipt(self, receipt: Receipt, session: _Session) -> None:
        fields = receipt.deliver_sm_fields(utc_now())
        self._dispatch(_Delivery("receipt", fields, system_id=session.system_id, origin=session))

    def _dispatch(self, delivery: _Delivery) -> None:
        if not self._running:
            return
        session = self._receiver_for(delivery)
        if session is not None:
            session.deliver(delivery)
            return
        if len(self._pending) == self._pending.maxlen:
            log.warning(
                "no receiver bound and %d deliveries pending: dropping the oldest", len(self._pending)
            )
        self._pending.append(delivery)

    def _receiver_for(self, delivery: _Delivery) -> _Session | None:
        origin = delivery.origin
        if origin is not None and origin.can_receive:
            return origin
        for session in self._sessions:
            if session.can_receive and delivery.system_id in (None, session.system_id):
                return session
        return None

    def _delivery_answered(self, delivery: _Delivery, status: int) -> None:
        self._delivery_statuses.append(status)
        if status == wire.ESME_ROK:
            if delivery.kind == "receipt":
                self._stats.receipts_delivered += 1
            else:
                self._stats.mo_delivered += 1
            return
        self._stats.delivery_errors += 1
        if delivery.attempts >= self.config.max_deliver_attempts:
            log.warning(
                "%s refused %d times (last 0x%x); giving up", delivery.kind, delivery.attempts, status
            )
            return
        self._later(self.config.redeliver_delay, self._dispatch, delivery)

    # -- plumbing -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._running:
            writer.close()
            return
        session = _Session(self, reader, writer)
        task = asyncio.current_task()
        if task is not None:
            self._connection_tasks.add(task)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            if task is not None:
                self._connection_tasks.discard(task)

    async def _log_summaries(self, interval: float) -> None:
        last = self.stats
        while True:
            await asyncio.sleep(interval)
            current = self.stats
            if current != last:
                log.info(
                    "%d submits (+%d), %d throttled, %d receipts and %d MO delivered, %d bound sessions",
                    current.submits,
                    current.submits - last.submits,
                    current.throttled,
                    current.receipts_delivered,
                    current.mo_delivered,
                    sum(1 for s in self._sessions if s.mode is not None),
                )
            last = current
