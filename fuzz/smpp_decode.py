"""Coverage-guided fuzzing (atheris / libFuzzer) of everything the gateway decodes from an SMPP peer.

Install atheris into the virtualenv once (it is not a test dependency), then run one target:

    .venv/bin/pip install atheris
    .venv/bin/python -m fuzz.smpp_decode deliver_sm -max_total_time=60
    .venv/bin/python -m fuzz.smpp_decode client -max_total_time=300 -timeout=20

Targets (the first argument; the rest goes to libFuzzer):

  deliver_sm      a whole deliver_sm PDU -> smpp.client_wire.decode_deliver_sm (MO or receipt)
  submit_sm_resp  a submit_sm_resp PDU -> submit_sm_message_id
  receipt         receipt text + receipted_message_id / message_state / network_error_code TLVs
                  -> smpp.dlr.parse_receipt, normalize_id, candidate_ids
  short_message   data_coding, esm_class, sar_* and octets -> smpp.encoding.decode_short_message
  roundtrip       any text -> plan / submit_parts / decode_short_message gives it back
  client          up to 4 PDUs from an SMSC over a real socket to a bound SmppClient
  simulator       up to 4 PDUs from an ESME over a real socket to the built-in SMSC simulator

Each target checks the decoder's contract: a well-typed value or the one documented error
(MalformedPdu for deliver_sm), nothing the storage refuses (NUL, lone surrogates, ids longer
than SMPP allows), concatenation numbers in range. Over the socket: every request answered
with a matching response (each deliver_sm with exactly the status and event the pure decoder
gives), nothing logged at ERROR, and no connection dropped except for an impossible
command_length or an unbind, after which the session is set up again.

The corpus lives in fuzz/corpus/<target>/ (git-ignored) and is seeded with valid PDUs on
every run; libFuzzer writes reproducers to fuzz/artifacts/<target>-crash-<sha1>. Replay one
with `.venv/bin/python -m fuzz.smpp_decode <target> fuzz/artifacts/<target>-crash-...`; a
finding becomes a fix in smpp/ plus an @example in tests/test_smpp_fuzz.py.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["smpp", "smpplib"]):
    from smpp import client_wire, dlr, encoding
    from smpp import simulator_wire as sim_wire
    from smpp.client import SmppClient, SmppClientConfig
    from smpp.simulator import SimulatorConfig, SmscSimulator
    from smpp.types import DeliveryReceipt, MoPart, ReceiptState

HERE = Path(__file__).resolve().parent
HEADER = struct.Struct(">LLLL")
NOW = datetime(2026, 1, 1, tzinfo=UTC)

logging.basicConfig(level=logging.CRITICAL)  # smpplib warns on every unknown TLV


class Finding(AssertionError):
    """A broken contract; raised so libFuzzer records the input."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Finding(message)


def pdu(command_id: int, seq: int, body: bytes = b"", status: int = 0) -> bytes:
    return HEADER.pack(16 + len(body), command_id, status, seq) + body


# --- what any decoded value must satisfy ---------------------------------------------------------


def storable(text: str, what: str) -> None:
    check(isinstance(text, str), f"{what} is {type(text).__name__}")
    check("\x00" not in text, f"NUL in {what}: {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Finding(f"{what} is not valid Unicode: {text!r}") from exc


def check_id(smsc_id: str, what: str) -> None:
    storable(smsc_id, what)
    check(0 < len(smsc_id) <= dlr.MAX_ID_LENGTH, f"{what} of {len(smsc_id)} characters")
    normalized = dlr.normalize_id(smsc_id)
    check(0 < len(normalized) <= dlr.MAX_ID_LENGTH, f"normalized {what} {normalized!r}")
    for candidate in dlr.candidate_ids(smsc_id):
        storable(candidate, "candidate id")
        check(len(candidate) <= 65, f"candidate id of {len(candidate)} characters")  # String(65)


def check_receipt(receipt: DeliveryReceipt) -> None:
    check(isinstance(receipt, DeliveryReceipt), repr(receipt))
    check_id(receipt.smsc_id, "receipt id")
    check(isinstance(receipt.state, ReceiptState), repr(receipt.state))
    storable(receipt.stat, "stat")
    check(bool(receipt.stat), "empty stat")
    if receipt.err is not None:
        storable(receipt.err, "err")
    check(receipt.done_at is None or receipt.done_at.tzinfo is not None, "naive done_at")


def check_mo(part: MoPart) -> None:
    check(isinstance(part, MoPart), repr(part))
    storable(part.text, "MO text")
    storable(part.source, "MO source")
    storable(part.destination, "MO destination")
    limit = client_wire.MAX_ADDRESS_LENGTH
    check(len(part.source) <= limit and len(part.destination) <= limit, "address too long")
    if part.concat_ref is None:
        check((part.concat_total, part.concat_seq) == (1, 1), f"single part numbered {part}")
    else:
        check(0 <= part.concat_ref <= 0xFFFF, f"concat ref {part.concat_ref}")
        check(2 <= part.concat_total <= 255, f"concat total {part.concat_total}")
        check(1 <= part.concat_seq <= part.concat_total, f"concat seq {part.concat_seq}/{part.concat_total}")


def check_event(event: object) -> None:
    if isinstance(event, MoPart):
        check_mo(event)
    elif event is not None:
        check_receipt(event)  # type: ignore[arg-type]


# --- pure decoders ------------------------------------------------------------------------------


def fuzz_deliver_sm(data: bytes) -> None:
    try:
        event = client_wire.decode_deliver_sm(pdu(client_wire.DELIVER_SM, 1, data), NOW)
    except client_wire.MalformedPdu as exc:
        check(exc.status not in (0, client_wire.ESME_RX_T_APPN), f"refused with 0x{exc.status:x}")
        return
    check_event(event)


def fuzz_submit_sm_resp(data: bytes) -> None:
    message_id = client_wire.submit_sm_message_id(pdu(client_wire.SUBMIT_SM_RESP, 1, data))
    storable(message_id, "message_id")
    check(len(message_id) <= dlr.MAX_ID_LENGTH, f"message_id of {len(message_id)} characters")
    if message_id:
        check_id(message_id, "message_id")


class Cursor:
    """Reads an input front to back, so seeds can be written by hand; zeros once exhausted."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self, n: int) -> int:
        return int.from_bytes(self.take(n).ljust(n, b"\x00"), "big")

    def rest(self) -> bytes:
        return self.take(len(self.data))

    @property
    def exhausted(self) -> bool:
        return self.pos >= len(self.data)


def fuzz_receipt(data: bytes) -> None:
    """flags, [len, receipted_message_id], [message_state], [len, network_error_code], text."""
    c = Cursor(data)
    flags = c.int(1)
    tlv_id = c.take(c.int(1)).decode("latin-1") if flags & 1 else None
    state = c.int(1) if flags & 2 else None
    network_error = c.take(c.int(1) % 5) if flags & 4 else None
    receipt = dlr.parse_receipt(c.rest(), tlv_id, state, network_error)
    if receipt is not None:
        check_receipt(receipt)
    elif tlv_id is not None:
        check(dlr.clean_id(tlv_id) == "", f"receipted_message_id {tlv_id!r} ignored")


def fuzz_short_message(data: bytes) -> None:
    """data_coding, esm_class, flags, [sar ref (2)], [sar total], [sar seq], octets."""
    c = Cursor(data)
    data_coding, esm_class, flags = c.int(1), c.int(1), c.int(1)
    sar = [c.int(2) if flags & 1 else None, c.int(1) if flags & 2 else None, c.int(1) if flags & 4 else None]
    body = c.rest()
    decoded = encoding.decode_short_message(data_coding, esm_class, body, *sar)
    check(isinstance(decoded.text, str), "text")
    decoded.text.encode("utf-8")  # no lone surrogates
    if decoded.concat_ref is None:
        check((decoded.concat_total, decoded.concat_seq) == (1, 1), repr(decoded))
    else:
        check(1 <= decoded.concat_seq <= decoded.concat_total, repr(decoded))
    if esm_class & encoding.ESM_UDHI and not encoding.udh_fits(body):
        check(decoded.text == "", "text from a UDH that overruns the message")


def fuzz_roundtrip(data: bytes) -> None:
    """concatenation ref, then UTF-8 text (lone surrogates cannot travel in UTF-16: not a text)."""
    ref, text = (data[0], data[1:].decode("utf-8", "replace")) if data else (0, "")
    message = encoding.plan(text)
    parts = encoding.submit_parts(message, ref)
    got = []
    for seq, (esm_class, short_message) in enumerate(parts, start=1):
        check(len(short_message) <= 140 or message.data_coding == encoding.DC_DEFAULT, "part over 140")
        check(len(short_message) <= 160, "part over 160 octets")
        decoded = encoding.decode_short_message(message.data_coding, esm_class, short_message)
        if len(parts) > 1:
            check(
                (decoded.concat_ref, decoded.concat_total, decoded.concat_seq) == (ref, len(parts), seq), ""
            )
        got.append(decoded.text)
    check("".join(got) == text, f"round trip {text!r} -> {got!r}")


# --- over a real socket -------------------------------------------------------------------------

LOOP = asyncio.new_event_loop()
PING_SEQ = 0x7FFFFFF0
DEADLINE = 10.0  # seconds for an answer before the input counts as a hang


RAW_ID, BAD_LENGTH = 0xFF, 0xFE


def frames(data: bytes, command_ids: list[int]) -> list[tuple[int, bytes]]:
    """Up to 4 PDUs, each: selector, [raw command_id (4)], status (4), body length (2), body.

    The selector picks from command_ids (mostly known ones) unless it is RAW_ID; BAD_LENGTH
    sends a header with an impossible command_length (2 octets pick it) and ends the input.
    Sequence numbers are 1, 2, ... so responses can be matched.
    """
    c = Cursor(data)
    out: list[tuple[int, bytes]] = []
    while not c.exhausted and len(out) < 4:
        selector = c.int(1)
        if selector == BAD_LENGTH:
            value = c.int(2)
            length = value % 16 if value < 0x8000 else 0x10001 + value
            out.append((-1, struct.pack(">L", length) + b"\x00" * 12))
            break
        command_id = c.int(4) if selector == RAW_ID else command_ids[selector % len(command_ids)]
        status = c.int(4)
        body = c.take(min(c.int(2), 2000))
        out.append((command_id, pdu(command_id, len(out) + 1, body, status)))
    return out


def record(selector: int, body: bytes) -> bytes:
    """One frames() record with status 0 (for seeds)."""
    return bytes([selector]) + b"\x00" * 4 + len(body).to_bytes(2, "big") + body


async def read_pdu(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    header = await asyncio.wait_for(reader.readexactly(16), DEADLINE)
    length, command_id, status, seq = HEADER.unpack(header)
    body = await asyncio.wait_for(reader.readexactly(length - 16), DEADLINE)
    return command_id, status, seq, body


class ClientTarget:
    """A bound SmppClient and the raw SMSC end of its socket."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.violations: list[str] = []
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.server = LOOP.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        port = self.server.sockets[0].getsockname()[1]
        config = SmppClientConfig(
            "127.0.0.1", port, "esme", "pw", enquire_link_interval=3600, reconnect_backoff_min=0.0
        )
        self.client = SmppClient(config, self)
        self.task = LOOP.create_task(self.client.run())
        self.reader, self.writer = LOOP.run_until_complete(self._bind())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.accepted.put((reader, writer))

    async def _bind(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(self.accepted.get(), DEADLINE)
        command_id, _, seq, _ = await read_pdu(reader)
        check(command_id == 0x09, f"expected bind_transceiver, got 0x{command_id:08x}")
        writer.write(pdu(0x80000009, seq, b"fuzz\x00"))
        return reader, writer

    # SmppEvents
    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        self._record(receipt)

    async def on_mo(self, part: MoPart) -> None:
        self._record(part)

    def on_bind_state(self, bound: bool) -> None:
        pass

    def _record(self, event: object) -> None:
        try:
            check_event(event)
        except Finding as exc:
            self.violations.append(str(exc))
        self.events.append(event)

    def run(self, data: bytes) -> None:
        sent = frames(
            data,
            [client_wire.DELIVER_SM] * 4 + [0x15, 0x06, 0x102, 0x103, 0x80000000, 0x80000004, 0x0B],
        )
        LOOP.run_until_complete(self._exchange(sent))
        check(not self.task.done(), "SmppClient.run() ended")
        if self.violations:
            raise Finding("; ".join(self.violations))

    async def _exchange(self, sent: list[tuple[int, bytes]]) -> None:
        """Each request answered; each deliver_sm exactly as the pure decoder has it (refused
        with its MalformedPdu status, or handed over and acknowledged); only an impossible
        command_length or an unbind may end the connection, and then the client binds again."""
        self.events.clear()
        expect: dict[int, int] = {}  # seq -> response command_id
        predicted: dict[int, tuple[int, object]] = {}  # deliver_sm seq -> (status, event)
        drops = False
        for seq, (command_id, data) in enumerate(sent, start=1):
            self.writer.write(data)
            if command_id == -1 or command_id == 0x06:
                drops = True  # desynchronised stream / unbind: the client hangs up and rebinds
                if command_id == 0x06:
                    expect[seq] = 0x80000006
                break
            if command_id & client_wire.RESPONSE_BIT or command_id == client_wire.ALERT_NOTIFICATION:
                continue
            if command_id == client_wire.DELIVER_SM:
                try:
                    predicted[seq] = (0, client_wire.decode_deliver_sm(data, NOW))
                except client_wire.MalformedPdu as exc:
                    predicted[seq] = (exc.status, None)
            known = command_id in (client_wire.DELIVER_SM, client_wire.ENQUIRE_LINK)
            expect[seq] = command_id | client_wire.RESPONSE_BIT if known else client_wire.GENERIC_NACK
        if not drops:
            self.writer.write(pdu(client_wire.ENQUIRE_LINK, PING_SEQ))
            expect[PING_SEQ] = 0x80000015
        while expect:
            try:
                command_id, status, seq, _ = await read_pdu(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                check(drops, f"client dropped the connection with {sorted(expect)} unanswered")
                break
            check(seq in expect, f"unexpected 0x{command_id:08x} seq {seq}")
            check(command_id == expect.pop(seq), f"0x{command_id:08x} answered seq {seq}")
            if command_id == 0x80000005 and not drops:
                want = predicted[seq][0]
                check(status == want, f"deliver_sm {seq} answered 0x{status:x}, decoder says 0x{want:x}")
        if drops:
            self.writer.close()
            self.reader, self.writer = await self._bind()
            return
        wanted = [event for status, event in predicted.values() if status == 0 and event is not None]
        got = [replace(e, received_at=NOW) if isinstance(e, MoPart) else e for e in self.events]
        check(sorted(map(repr, got)) == sorted(map(repr, wanted)), f"handed over {got}, decoder: {wanted}")


class SimulatorTarget:
    """The built-in SMSC simulator and a raw, bound ESME socket to it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        handler = logging.Handler(logging.ERROR)
        handler.emit = lambda record: self.errors.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("smpp.simulator").addHandler(handler)
        self.sim = SmscSimulator(SimulatorConfig(port=0, password=None, dlr_delay=0, summary_interval=0))
        LOOP.run_until_complete(self.sim.start())
        self.reader, self.writer = LOOP.run_until_complete(self._connect())

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.sim.port)
        writer.write(pdu(sim_wire.BIND_TRANSCEIVER, 0x7FFFFFF1, b"esme\x00pw\x00\x00\x34\x00\x00\x00"))
        command_id, status, _, _ = await read_pdu(reader)
        check((command_id, status) == (0x80000009, 0), "bind refused")
        return reader, writer

    def run(self, data: bytes) -> None:
        sent = frames(
            data,
            [sim_wire.SUBMIT_SM] * 4
            + [1, 2, 9, 0x80000005, 0x80000000, 0x15, 0x80000015, 0x06, 0x80000006, 0x05, 0x103],
        )
        LOOP.run_until_complete(self._exchange(sent))
        if self.errors:
            raise Finding("simulator logged: " + "; ".join(self.errors))

    async def _exchange(self, sent: list[tuple[int, bytes]]) -> None:
        expect: dict[int, set[int]] = {}
        optional: dict[int, set[int]] = {}
        drops = False
        for seq, (command_id, data) in enumerate(sent, start=1):
            self.writer.write(data)
            if command_id == -1 or command_id == sim_wire.UNBIND:
                drops = True
                if command_id == sim_wire.UNBIND:
                    expect[seq] = {sim_wire.UNBIND_RESP}
                break
            if command_id & sim_wire.RESPONSE_BIT:
                # A response we do not know is nacked like any unknown command_id (SMPP 3.4 3.3).
                if command_id not in sim_wire.HANDLED:
                    optional[seq] = {sim_wire.GENERIC_NACK}
                continue
            expect[seq] = {command_id | sim_wire.RESPONSE_BIT, sim_wire.GENERIC_NACK}
        if not drops:
            self.writer.write(pdu(sim_wire.ENQUIRE_LINK, PING_SEQ))
            expect[PING_SEQ] = {sim_wire.ENQUIRE_LINK_RESP}
        while expect:
            try:
                command_id, _, seq, _ = await read_pdu(self.reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                check(drops, f"simulator dropped the connection with {sorted(expect)} unanswered")
                break
            if command_id == 0x00000005:  # a receipt for an accepted submit_sm: acknowledge it
                self.writer.write(pdu(0x80000005, seq, b"\x00"))
                continue
            allowed = expect.pop(seq, None) or optional.pop(seq, None)
            check(allowed is not None, f"unexpected 0x{command_id:08x} seq {seq}")
            check(command_id in (allowed or ()), f"0x{command_id:08x} answered seq {seq}")
        if drops:
            self.writer.close()
            self.reader, self.writer = await self._connect()


# --- entry point --------------------------------------------------------------------------------


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs each target starts from (so the fuzzer need not discover the PDU layout)."""
    gen = sim_wire.SequenceGenerator()

    def body(command: str, **fields: Any) -> bytes:
        return sim_wire.request(command, gen, **fields)[1][16:]

    mo = {"source_addr": "818011112222", "destination_addr": "81312345678", "source_addr_ton": 1}
    udh = encoding.build_udh(7, 2, 1)
    receipt_text = b"id:0a1b2c sub:001 dlvrd:001 submit date:2601011200 done date:2601011201 stat:DELIVRD"
    deliver = [
        body("deliver_sm", short_message=b"Hello \x1b\x65", **mo),
        body(
            "deliver_sm", short_message=udh + "日本".encode("utf-16-be"), esm_class=0x40, data_coding=8, **mo
        ),
        body(
            "deliver_sm",
            short_message=b"part",
            sar_msg_ref_num=300,
            sar_total_segments=3,
            sar_segment_seqnum=2,
            **mo,
        ),
        body("deliver_sm", message_payload=b"x" * 300, data_coding=3, **mo),
        body("deliver_sm", short_message=receipt_text, esm_class=4, **mo),
        body("deliver_sm", esm_class=4, receipted_message_id="0a1b2c", message_state=2, **mo),
        body("deliver_sm", short_message=bytes.fromhex("0608040102020148"), esm_class=0x40, **mo),
    ]
    submit = [
        body(
            "submit_sm",
            source_addr="Demo",
            destination_addr="818012345678",
            short_message=b"Hi",
            registered_delivery=1,
        ),
        body(
            "submit_sm",
            destination_addr="99912",
            short_message=udh + b"ab",
            esm_class=0x40,
            data_coding=8,
            registered_delivery=1,
        ),
    ]

    return {
        "deliver_sm": deliver,
        "submit_sm_resp": [b"0a1b2c\x00", b"12345\x00" + struct.pack(">HHB", 0x0425, 1, 0)],
        "receipt": [b"\x07\x060a1b2c\x02\x03\x03\x00\x01" + receipt_text, b"\x00" + receipt_text],
        "short_message": [
            b"\x00\x40\x00" + udh + b"Hi",
            b"\x08\x00\x07" + b"\x01\x2c\x03\x02" + "日".encode("utf-16-be"),
        ],
        "roundtrip": [b"\x07Hello {world} \xe2\x82\xac", b"\x01" + ("日本語" * 30).encode()],
        "client": [record(0, d) for d in deliver] + [record(0, deliver[0]) + record(4, b"")],
        "simulator": [record(0, s) for s in submit] + [record(6, b"esme\x00pw\x00\x00\x34\x00\x00\x00")],
    }


TARGETS: dict[str, Callable[[], Callable[[bytes], None]]] = {
    "deliver_sm": lambda: fuzz_deliver_sm,
    "submit_sm_resp": lambda: fuzz_submit_sm_resp,
    "receipt": lambda: fuzz_receipt,
    "short_message": lambda: fuzz_short_message,
    "roundtrip": lambda: fuzz_roundtrip,
    "client": lambda: ClientTarget().run,
    "simulator": lambda: SimulatorTarget().run,
}


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.smpp_decode {{{','.join(TARGETS)}}} [libFuzzer options]")
    name, rest = args[0], args[1:]
    corpus = HERE / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()[name]):
        (corpus / f"seed-{i}").write_bytes(seed)
    artifacts = HERE / "artifacts"
    artifacts.mkdir(exist_ok=True)
    if not any(a.startswith("-artifact_prefix=") for a in rest):
        rest.append(f"-artifact_prefix={artifacts}/{name}-")
    if not any(not a.startswith("-") for a in rest):
        rest.append(str(corpus))  # no corpus or reproducer given: use (and grow) ours
    target = TARGETS[name]()
    atheris.Setup([sys.argv[0], *rest], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
