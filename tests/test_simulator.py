"""The SMSC simulator as a server, driven by clients that share no code with it.

Most tests use smpplib's own blocking Client (in a thread); framing and
throughput tests use raw sockets so they can send what no library would.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from smpp.simulator import SimulatorConfig, SmscSimulator
from smpp.simulator_model import Behaviour, Receipt, message_preview, wants_receipt
from tests.peers.simulator_peer import SimulatorPeer

RECEIPT_TEXT = re.compile(
    rb"^id:(?P<id>\S+) sub:001 dlvrd:(?P<dlvrd>\d{3}) submit date:\d{10} done date:\d{10} "
    rb"stat:(?P<stat>[A-Z]+) err:(?P<err>\d{3}) text:(?P<text>.*)$"
)
REPO_ROOT = Path(__file__).resolve().parents[1]
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64

StartSimulator = Callable[..., Awaitable[SmscSimulator]]


class Esme:
    """A blocking smpplib client; call its methods through asyncio.to_thread."""

    def __init__(self, port: int) -> None:
        self.client = smpplib.client.Client("127.0.0.1", port, timeout=3, allow_unknown_opt_params=True)
        self.client.connect()
        self.inbox: list[Any] = []  # deliver_sm read while waiting for something else

    def bind(self, mode: str = "transceiver", system_id: str = "gateway", password: str = "secret") -> Any:
        return getattr(self.client, f"bind_{mode}")(system_id=system_id, password=password)

    def submit(
        self, text: bytes = b"Hello from the test suite", destination: str = "818012345678", receipt: int = 1
    ) -> Any:
        self.client.send_message(
            source_addr_ton=5,
            source_addr="Demo",
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=destination,
            short_message=text,
            registered_delivery=receipt,
        )
        while True:
            pdu = self.client.read_pdu()
            if pdu.command == "submit_sm_resp":
                return pdu
            self.inbox.append(pdu)

    def next_deliver(self, status: int = 0) -> Any:
        """The next deliver_sm, answered with `status`."""
        pdu = self.inbox.pop(0) if self.inbox else self.client.read_pdu()
        assert pdu.command == "deliver_sm", pdu.command
        resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=self.client, status=status)
        resp.sequence = pdu.sequence
        self.client.send_pdu(resp)
        return pdu

    def read(self) -> Any:
        return self.client.read_pdu()

    def close(self) -> None:
        self.client.disconnect()


@pytest_asyncio.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    started: list[SmscSimulator] = []

    async def start(**overrides: Any) -> SmscSimulator:
        settings: dict[str, Any] = {"port": 0, "dlr_delay": 0.01, "summary_interval": 0, **overrides}
        simulator = SmscSimulator(SimulatorConfig(**settings))
        await simulator.start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        await simulator.stop()


@pytest_asyncio.fixture
async def esmes() -> AsyncIterator[Callable[[SmscSimulator], Awaitable[Esme]]]:
    opened: list[Esme] = []

    async def connect(simulator: SmscSimulator) -> Esme:
        esme = await asyncio.to_thread(Esme, simulator.port)
        opened.append(esme)
        return esme

    yield connect
    for esme in opened:
        esme.close()


async def bound(connect: Callable[[SmscSimulator], Awaitable[Esme]], simulator: SmscSimulator) -> Esme:
    esme = await connect(simulator)
    await asyncio.to_thread(esme.bind)
    return esme


# -- submit and receipts --------------------------------------------------------------


async def test_submit_returns_id_and_receipt_carries_it_in_tlv_and_text(start_simulator, esmes):
    simulator = await start_simulator()
    esme = await bound(esmes, simulator)

    resp = await asyncio.to_thread(esme.submit, b"Hello from the test suite")
    dlr = await asyncio.to_thread(esme.next_deliver)

    assert resp.status == 0
    message_id = resp.message_id.decode()
    assert re.fullmatch(r"[0-9a-f]{10}", message_id)
    assert dlr.esm_class == 0x04
    assert dlr.receipted_message_id.decode() == message_id
    assert dlr.message_state == 2  # DELIVERED
    assert dlr.source_addr == b"818012345678" and dlr.destination_addr == b"Demo"
    text = RECEIPT_TEXT.match(dlr.short_message)
    assert text is not None, dlr.short_message
    assert text["id"].decode() == message_id
    assert (text["stat"], text["dlvrd"], text["err"]) == (b"DELIVRD", b"001", b"000")
    assert text["text"] == b"Hello from the test "  # first 20 characters

    [submit] = simulator.submits
    assert (submit.message_id, submit.destination_addr, submit.source_addr) == (
        message_id,
        "818012345678",
        "Demo",
    )
    assert (submit.source_addr_ton, submit.registered_delivery, submit.system_id) == (5, 1, "gateway")
    assert submit.short_message == b"Hello from the test suite"
    await asyncio.sleep(0.05)
    assert simulator.delivery_statuses == [0]
    assert simulator.stats.receipts_delivered == 1


async def test_message_ids_are_unique(start_simulator, esmes):
    simulator = await start_simulator(dlr_delay=0)
    esme = await bound(esmes, simulator)
    ids = [(await asyncio.to_thread(esme.submit, receipt=0)).message_id for _ in range(20)]
    assert len(set(ids)) == 20


async def test_decimal_id_in_receipt_text_is_the_same_number_as_the_hex_id(start_simulator, esmes):
    simulator = await start_simulator()
    simulator.configure(id_format="hex", dlr_id_format="dec")
    esme = await bound(esmes, simulator)

    resp = await asyncio.to_thread(esme.submit)
    dlr = await asyncio.to_thread(esme.next_deliver)

    hex_id = resp.message_id.decode()
    text = RECEIPT_TEXT.match(dlr.short_message)
    assert text is not None
    assert int(text["id"]) == int(hex_id, 16)
    assert dlr.receipted_message_id.decode() == hex_id


async def test_tlv_only_and_text_only_receipts(start_simulator, esmes):
    simulator = await start_simulator()
    esme = await bound(esmes, simulator)

    simulator.configure(id_format="dec", dlr_mode="tlv")
    resp = await asyncio.to_thread(esme.submit)
    dlr = await asyncio.to_thread(esme.next_deliver)
    assert resp.message_id.isdigit()
    assert dlr.receipted_message_id == resp.message_id
    assert not dlr.short_message

    simulator.configure(dlr_mode="text")
    resp = await asyncio.to_thread(esme.submit)
    dlr = await asyncio.to_thread(esme.next_deliver)
    assert dlr.receipted_message_id is None and dlr.message_state is None
    text = RECEIPT_TEXT.match(dlr.short_message)
    assert text is not None and text["id"] == resp.message_id


async def test_no_receipt_when_not_requested_or_mode_none(start_simulator, esmes):
    simulator = await start_simulator(dlr_delay=0)
    esme = await bound(esmes, simulator)
    await asyncio.to_thread(esme.submit, receipt=0)
    simulator.configure(dlr_mode="none")
    await asyncio.to_thread(esme.submit, receipt=1)
    await asyncio.sleep(0.05)
    # Had either submit produced a receipt, it would be queued ahead of this MO message.
    await simulator.inject_mo("+818012345678", "+815012345678", b"marker")
    first = await asyncio.to_thread(esme.next_deliver)
    assert first.esm_class == 0 and first.short_message == b"marker"


async def test_fail_prefix_destination_and_configured_stat(start_simulator, esmes):
    simulator = await start_simulator()
    esme = await bound(esmes, simulator)

    await asyncio.to_thread(esme.submit, destination="819099991234")
    dlr = await asyncio.to_thread(esme.next_deliver)
    assert dlr.message_state == 5  # UNDELIVERABLE
    text = RECEIPT_TEXT.match(dlr.short_message)
    assert text is not None and (text["stat"], text["dlvrd"]) == (b"UNDELIV", b"000")

    simulator.configure(dlr_stat="EXPIRED")
    await asyncio.to_thread(esme.submit)
    dlr = await asyncio.to_thread(esme.next_deliver)
    assert dlr.message_state == 3 and b"stat:EXPIRED" in dlr.short_message


async def test_receipts_wait_for_a_receiver_to_bind(start_simulator, esmes):
    simulator = await start_simulator(dlr_delay=0)
    transmitter = await esmes(simulator)
    await asyncio.to_thread(transmitter.bind, "transmitter")
    resp = await asyncio.to_thread(transmitter.submit)
    await asyncio.sleep(0.05)
    assert simulator.pending_deliveries == 1

    receiver = await esmes(simulator)
    await asyncio.to_thread(receiver.bind, "receiver")
    dlr = await asyncio.to_thread(receiver.next_deliver)
    assert dlr.receipted_message_id == resp.message_id

    # A receiver may not submit; smpplib checks that itself, so lie to it to reach the server.
    receiver.client.state = smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX
    refused = await asyncio.to_thread(receiver.submit)
    assert refused.status == smpplib.consts.SMPP_ESME_RINVBNDSTS


async def test_refused_receipt_is_redelivered_and_statuses_recorded(start_simulator, esmes):
    simulator = await start_simulator(redeliver_delay=0.05)
    esme = await bound(esmes, simulator)

    resp = await asyncio.to_thread(esme.submit)
    first = await asyncio.to_thread(esme.next_deliver, ESME_RX_T_APPN)
    second = await asyncio.to_thread(esme.next_deliver)

    assert first.receipted_message_id == second.receipted_message_id == resp.message_id
    assert second.sequence != first.sequence
    await asyncio.sleep(0.05)
    assert simulator.delivery_statuses == [ESME_RX_T_APPN, 0]


async def test_redelivery_stops_after_max_attempts(start_simulator, esmes):
    simulator = await start_simulator(redeliver_delay=0.01, max_deliver_attempts=2)
    esme = await bound(esmes, simulator)
    await asyncio.to_thread(esme.submit)
    await asyncio.to_thread(esme.next_deliver, ESME_RX_T_APPN)
    await asyncio.to_thread(esme.next_deliver, ESME_RX_T_APPN)
    await simulator.inject_mo("+818012345678", "+815012345678", b"marker")
    assert (await asyncio.to_thread(esme.next_deliver)).short_message == b"marker"
    assert simulator.delivery_statuses[:2] == [ESME_RX_T_APPN, ESME_RX_T_APPN]


async def test_unanswered_receipt_is_resent_after_reconnect(start_simulator, esmes):
    simulator = await start_simulator()
    esme = await bound(esmes, simulator)
    resp = await asyncio.to_thread(esme.submit)
    await asyncio.to_thread(esme.read)  # the receipt, deliberately left unanswered
    await asyncio.to_thread(esme.close)

    again = await bound(esmes, simulator)
    dlr = await asyncio.to_thread(again.next_deliver)
    assert dlr.receipted_message_id == resp.message_id


async def test_stored_submits_are_bounded(start_simulator, esmes):
    simulator = await start_simulator(max_stored_submits=3)
    esme = await bound(esmes, simulator)
    ids = [(await asyncio.to_thread(esme.submit, receipt=0)).message_id.decode() for _ in range(5)]
    assert [s.message_id for s in simulator.submits] == ids[2:]
    assert simulator.stats.submits == 5


# -- binds and knobs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("system_id", "password", "reject", "status"),
    [
        ("gateway", "wrong", False, smpplib.consts.SMPP_ESME_RINVPASWD),
        ("someone", "secret", False, smpplib.consts.SMPP_ESME_RINVPASWD),
        ("gateway", "secret", True, smpplib.consts.SMPP_ESME_RBINDFAIL),
    ],
)
async def test_bind_refused(start_simulator, esmes, system_id, password, reject, status):
    simulator = await start_simulator()
    simulator.configure(reject_binds=reject)
    esme = await esmes(simulator)
    with pytest.raises(smpplib.exceptions.PDUError) as refused:
        await asyncio.to_thread(esme.bind, "transceiver", system_id, password)
    assert refused.value.args[1] == status
    assert simulator.bind_count == 0

    simulator.configure()
    await asyncio.to_thread(esme.bind)
    assert simulator.bind_count == 1


async def test_second_bind_on_a_session_is_refused(start_simulator, esmes):
    simulator = await start_simulator()
    esme = await bound(esmes, simulator)
    esme.client.state = smpplib.consts.SMPP_CLIENT_STATE_OPEN  # smpplib would refuse to send it
    with pytest.raises(smpplib.exceptions.PDUError) as refused:
        await asyncio.to_thread(esme.bind)
    assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RALYBND
    assert simulator.bind_count == 1


async def test_any_credentials_when_password_is_none(start_simulator, esmes):
    simulator = await start_simulator(password=None)
    esme = await esmes(simulator)
    await asyncio.to_thread(esme.bind, "transceiver", "whoever", "whatever")
    assert simulator.bind_count == 1


async def test_throttle_next_answers_0x58_then_recovers(start_simulator, esmes):
    simulator = await start_simulator()
    simulator.configure(throttle_next=2)
    esme = await bound(esmes, simulator)
    statuses = [(await asyncio.to_thread(esme.submit, receipt=0)).status for _ in range(3)]
    assert statuses == [ESME_RTHROTTLED, ESME_RTHROTTLED, 0]
    assert len(simulator.submits) == 1
    assert simulator.stats.throttled == 2


async def test_drop_after_closes_the_socket_after_the_nth_submit(start_simulator, esmes):
    simulator = await start_simulator()
    simulator.configure(drop_after=2)
    esme = await bound(esmes, simulator)
    first = await asyncio.to_thread(esme.submit, receipt=0)
    second = await asyncio.to_thread(esme.submit, receipt=0)
    assert first.status == second.status == 0
    with pytest.raises(smpplib.exceptions.ConnectionError):
        await asyncio.to_thread(esme.read)
    assert len(simulator.submits) == 2

    # One-shot: the next session keeps going.
    again = await bound(esmes, simulator)
    for _ in range(3):
        assert (await asyncio.to_thread(again.submit, receipt=0)).status == 0
    assert simulator.bind_count == 2


async def test_respond_delay_delays_submit_sm_resp(start_simulator, esmes):
    simulator = await start_simulator()
    simulator.configure(respond_delay_ms=200)
    esme = await bound(esmes, simulator)
    started = time.monotonic()
    await asyncio.to_thread(esme.submit, receipt=0)
    assert time.monotonic() - started >= 0.19


def test_behaviour_rejects_unknown_modes():
    with pytest.raises(ValueError, match="dlr_mode"):
        Behaviour(dlr_mode="sometimes")
    with pytest.raises(ValueError, match="id_format"):
        SimulatorConfig(id_format="base64")


# -- MO, enquire_link, unbind --------------------------------------------------------------


async def test_inject_mo_reaches_the_bound_receiver(start_simulator, esmes):
    simulator = await start_simulator()
    esme = await esmes(simulator)
    await asyncio.to_thread(esme.bind, "receiver")
    body = "こんにちは".encode("utf-16-be")
    await simulator.inject_mo("+818012345678", "+815012345678", body, data_coding=8)
    mo = await asyncio.to_thread(esme.next_deliver)
    assert (mo.source_addr, mo.source_addr_ton) == (b"818012345678", 1)
    assert mo.destination_addr == b"815012345678"
    assert (mo.esm_class, mo.data_coding, mo.short_message) == (0, 8, body)
    await asyncio.sleep(0.05)
    assert simulator.delivery_statuses == [0]
    assert simulator.stats.mo_delivered == 1


async def test_long_mo_travels_in_message_payload(start_simulator, esmes):
    simulator = await start_simulator()
    esme = await bound(esmes, simulator)
    body = b"x" * 300
    await simulator.inject_mo("+818012345678", "+815012345678", body)
    mo = await asyncio.to_thread(esme.next_deliver)
    assert mo.message_payload == body and not mo.short_message


async def test_enquire_link_and_unbind(start_simulator, esmes):
    simulator = await start_simulator()
    esme = await bound(esmes, simulator)

    def enquire() -> Any:
        esme.client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=esme.client))
        return esme.read()

    assert (await asyncio.to_thread(enquire)).command == "enquire_link_resp"
    assert (await asyncio.to_thread(esme.client.unbind)).command == "unbind_resp"
    with pytest.raises(smpplib.exceptions.ConnectionError):
        await asyncio.to_thread(esme.read)


# -- framing --------------------------------------------------------------


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send data, return whatever comes back until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except TimeoutError:
            received += b"<still open>"
        except ConnectionResetError:
            pass  # closed with our bytes unread: the kernel answers with RST, still a close
        return received


def header(command_id: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    return struct.pack(">LLLL", 16 + len(body), command_id, status, sequence) + body


@pytest.mark.parametrize(
    "data",
    [
        struct.pack(">L", 64 * 1024 + 1) + b"\x00" * 64,
        struct.pack(">LL", 8, 0x15),
        bytes(range(256)) * 4,
        b"GET / HTTP/1.1\r\nHost: smsc\r\n\r\n",
    ],
    ids=["oversize", "undersize", "garbage", "http"],
)
async def test_impossible_length_closes_the_connection_and_server_survives(start_simulator, esmes, data):
    simulator = await start_simulator()
    assert await asyncio.to_thread(raw_exchange, simulator.port, data) == b""

    esme = await bound(esmes, simulator)
    assert (await asyncio.to_thread(esme.submit, receipt=0)).status == 0


async def test_unknown_command_gets_generic_nack_and_session_continues(start_simulator):
    simulator = await start_simulator()

    def exchange() -> list[tuple[int, int, int]]:
        with socket.create_connection(("127.0.0.1", simulator.port), timeout=3) as sock:
            # query_sm (known to SMPP, not served here), a made-up id, then enquire_link.
            sock.sendall(header(0x03, 7, b"1\x00\x00\x00\x00") + header(0x1234, 8) + header(0x15, 9))
            replies = []
            for _ in range(3):
                length, command_id, status, sequence = struct.unpack(">LLLL", recv_exact(sock, 16))
                recv_exact(sock, length - 16)
                replies.append((command_id, status, sequence))
            return replies

    assert await asyncio.to_thread(exchange) == [
        (0x80000000, smpplib.consts.SMPP_ESME_RINVCMDID, 7),
        (0x80000000, smpplib.consts.SMPP_ESME_RINVCMDID, 8),
        (0x80000015, 0, 9),
    ]


async def test_malformed_body_gets_generic_nack(start_simulator):
    simulator = await start_simulator()
    bind = b"gateway\x00secret\x00\x00\x34\x00\x00\x00"
    truncated_tlv = b"\x00\x00\x00Demo\x00\x01\x01123\x00" + bytes(9) + b"\x00" + b"\x07"

    def exchange() -> list[tuple[int, int, int]]:
        with socket.create_connection(("127.0.0.1", simulator.port), timeout=3) as sock:
            sock.sendall(header(0x09, 1, bind) + header(0x04, 2, truncated_tlv) + header(0x15, 3))
            replies = []
            for _ in range(3):
                length, command_id, status, sequence = struct.unpack(">LLLL", recv_exact(sock, 16))
                recv_exact(sock, length - 16)
                replies.append((command_id, status, sequence))
            return replies

    replies = await asyncio.to_thread(exchange)
    assert replies[0] == (0x80000009, 0, 1)
    assert replies[1] == (0x80000000, smpplib.consts.SMPP_ESME_RINVCMDLEN, 2)
    assert replies[2] == (0x80000015, 0, 3)
    assert simulator.submits == []


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


# -- throughput --------------------------------------------------------------


async def test_pipelined_submits_on_one_connection_are_each_answered_once(start_simulator):
    """A window of unanswered submit_sm on one connection, receipts requested and acknowledged:
    every submit gets its own response and its receipt (the rate: bench/smsc_simulator.py)."""
    simulator = await start_simulator(dlr_delay=0)
    total, window = 1000, 100
    reader, writer = await asyncio.open_connection("127.0.0.1", simulator.port)
    writer.write(header(0x09, 1, b"gateway\x00secret\x00\x00\x34\x00\x00\x00"))
    length, _, status, _ = struct.unpack(">LLLL", await reader.readexactly(16))
    await reader.readexactly(length - 16)
    assert status == 0

    slots = asyncio.Semaphore(window)
    answered: list[int] = []
    message_ids: set[bytes] = set()
    receipts: list[bytes] = []
    finished = asyncio.Event()

    async def read_replies() -> None:
        while not finished.is_set():
            length, command_id, status, sequence = struct.unpack(">LLLL", await reader.readexactly(16))
            body = await reader.readexactly(length - 16)
            if command_id == 0x80000004:
                assert status == 0
                answered.append(sequence)
                message_ids.add(body.rstrip(b"\x00"))
                slots.release()
            elif command_id == 0x05:
                receipts.append(body)
                writer.write(header(0x80000005, sequence, b"\x00"))
            if len(answered) == len(receipts) == total:
                finished.set()

    replies = asyncio.create_task(read_replies())
    body = b"\x00\x05\x00Demo\x00\x01\x01818012345678\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05hello"
    for sequence in range(2, total + 2):
        await slots.acquire()
        writer.write(header(0x04, sequence, body))
    async with asyncio.timeout(60):  # a correctness bound, not a rate: generous on a loaded box
        await finished.wait()
    await replies
    writer.close()

    assert sorted(answered) == list(range(2, total + 2))
    assert len(message_ids) == total  # a distinct SMSC id for each submit
    receipt_ids = {m.group(1) for m in (re.search(rb"id:(\S+) sub:", r) for r in receipts) if m}
    assert len(receipt_ids) == total  # one receipt per submit, none twice
    assert len(simulator.submits) == total


# -- pure helpers --------------------------------------------------------------


def test_wants_receipt_follows_registered_delivery_bits():
    assert wants_receipt(1, "DELIVRD") and wants_receipt(1, "UNDELIV")
    assert not wants_receipt(0, "UNDELIV")
    assert wants_receipt(2, "UNDELIV") and not wants_receipt(2, "DELIVRD")


def test_message_preview_skips_udh_and_decodes_ucs2():
    udh = bytes([5, 0, 3, 0x2A, 2, 1])
    assert message_preview(udh + b"A long concatenated message part", 0, 0x40) == "A long concatenated "
    assert message_preview("日本語のテキスト".encode("utf-16-be"), 8, 0) == "????????"


def test_receipt_text_format():
    from datetime import UTC, datetime

    receipt = Receipt(
        tlv_id="00000000ff",
        text_id="255",
        stat="DELIVRD",
        mode="both",
        handset="818012345678",
        sender="Demo",
        submitted_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        preview="hi",
    )
    assert receipt.text(datetime(2026, 1, 2, 3, 5, tzinfo=UTC)) == (
        b"id:255 sub:001 dlvrd:001 submit date:2601020304 done date:2601020305 stat:DELIVRD err:000 text:hi"
    )


# -- SmscPeer wrapper and CLI --------------------------------------------------------------


async def test_sim_smsc_fixture_implements_the_peer_protocol(sim_smsc: SimulatorPeer, esmes):
    await sim_smsc.configure(id_format="dec")
    esme = await esmes(sim_smsc.simulator)
    await asyncio.to_thread(esme.bind, "transceiver", sim_smsc.system_id, sim_smsc.password)
    resp = await asyncio.to_thread(esme.submit, b"peer", "818012345678", 0)

    [received] = await sim_smsc.submits()
    assert received.message_id == resp.message_id.decode() and received.message_id.isdigit()
    assert received.short_message == b"peer" and received.destination_addr == "818012345678"
    assert await sim_smsc.bind_count() == 1

    await sim_smsc.inject_mo("+818012345678", "+815012345678", b"mo")
    assert (await asyncio.to_thread(esme.next_deliver)).short_message == b"mo"


async def test_command_line_runs_until_sigterm(esmes):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smpp.simulator_cli",
        "--port",
        "0",
        "--summary-interval",
        "0",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()  # type: ignore[union-attr]
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        esme = await asyncio.to_thread(Esme, int(match[1]))
        await asyncio.to_thread(esme.bind)
        assert (await asyncio.to_thread(esme.submit, receipt=0)).status == 0
        esme.close()
        process.terminate()
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        assert b"bound as transceiver" in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
