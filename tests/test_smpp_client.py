"""SmppClient against both SMSC test peers (ours and node-smpp), plus a scripted raw SMSC.

The peers cover what the SmscPeer protocol can show; FakeSmsc below covers what
no peer can be told to do (stop answering enquire_link, unbind us, send an
unknown command) and the throughput check.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import pytest_asyncio

from smpp.client import SmppClient, SmppClientConfig
from smpp.dlr import candidate_ids, normalize_id
from smpp.encoding import build_udh
from smpp.types import (
    ConnectionLost,
    DeliveryReceipt,
    MoPart,
    NotBound,
    ReceiptState,
    SubmitRejected,
    SubmitRequest,
    SubmitResult,
)
from tests.peers.base import SmscPeer

TIMEOUT = 10.0


@dataclass
class Recorder:
    """SmppEvents that records everything and can be told to fail."""

    receipts: list[DeliveryReceipt] = field(default_factory=list)
    mos: list[MoPart] = field(default_factory=list)
    mo_attempts: int = 0
    bind_states: list[bool] = field(default_factory=list)
    fail_next_mo: int = 0  # raise in on_mo this many times

    async def on_receipt(self, receipt: DeliveryReceipt) -> None:
        self.receipts.append(receipt)

    async def on_mo(self, part: MoPart) -> None:
        self.mo_attempts += 1
        if self.fail_next_mo > 0:
            self.fail_next_mo -= 1
            raise RuntimeError("store unavailable")
        self.mos.append(part)

    def on_bind_state(self, bound: bool) -> None:
        self.bind_states.append(bound)


async def eventually(predicate: Callable[[], Awaitable[bool]], within: float = TIMEOUT) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def fast_config(host: str, port: int, system_id: str, password: str, **overrides: Any) -> SmppClientConfig:
    base = SmppClientConfig(
        host=host,
        port=port,
        system_id=system_id,
        password=password,
        response_timeout=3.0,
        reconnect_backoff_min=0.05,
        reconnect_backoff_max=0.4,
        throttle_backoff_min=0.02,
        throttle_backoff_max=0.2,
    )
    return replace(base, **overrides)


ClientFactory = Callable[..., Awaitable[tuple[SmppClient, Recorder]]]


@pytest_asyncio.fixture
async def start_client() -> AsyncIterator[ClientFactory]:
    """Start SmppClient.run() against host/port; stop every started client afterwards."""
    started: list[tuple[SmppClient, asyncio.Task[None]]] = []

    async def start(
        host: str, port: int, system_id: str, password: str, *, wait: bool = True, **overrides: Any
    ) -> tuple[SmppClient, Recorder]:
        events = Recorder()
        client = SmppClient(fast_config(host, port, system_id, password, **overrides), events)
        task = asyncio.create_task(client.run())
        started.append((client, task))
        if wait:
            assert await client.wait_bound(TIMEOUT), "client did not bind"
        return client, events

    yield start
    for client, task in started:
        await asyncio.wait_for(client.stop(), TIMEOUT)
        await asyncio.wait_for(task, TIMEOUT)


@pytest.fixture(params=["node_smsc", "sim_smsc"])
def peer(request: pytest.FixtureRequest) -> SmscPeer:
    smsc: SmscPeer = request.getfixturevalue(request.param)
    return smsc


async def connect(
    peer: SmscPeer, start_client: ClientFactory, **overrides: Any
) -> tuple[SmppClient, Recorder]:
    return await start_client(peer.host, peer.port, peer.system_id, peer.password, **overrides)


async def deliver_resp_statuses(peer: SmscPeer) -> list[int]:
    """command_status of our deliver_sm_resps; each peer shows it outside the shared protocol."""
    node_statuses = getattr(peer, "deliver_resp_statuses", None)
    if node_statuses is not None:
        statuses: list[int] = await node_statuses()
        return statuses
    statuses_of_sim: Any = peer.simulator.delivery_statuses  # type: ignore[attr-defined]
    return list(statuses_of_sim() if callable(statuses_of_sim) else statuses_of_sim)


def request(
    text: str, destination: str = "+818012345678", source: str = "Gateway", **kw: Any
) -> SubmitRequest:
    return SubmitRequest(ref="m1", source=source, destination=destination, text=text, **kw)


# --- against both peers --------------------------------------------------------------------------


async def test_bind_and_simple_submit(peer: SmscPeer, start_client: ClientFactory) -> None:
    client, events = await connect(peer, start_client)
    assert client.bound
    assert events.bind_states == [True]
    assert await peer.bind_count() == 1

    result = await client.submit(request("Hello world"))
    numeric = await client.submit(request("x", source="+81312345678", want_receipt=False))

    submits = await peer.submits()
    assert [s.message_id for s in submits] == [result.smsc_ids[0], numeric.smsc_ids[0]]
    alpha, digits = submits
    assert (alpha.source_addr, alpha.source_addr_ton) == ("Gateway", 5)
    assert alpha.destination_addr == "818012345678"
    assert (alpha.data_coding, alpha.esm_class, alpha.registered_delivery) == (0, 0, 1)
    assert alpha.short_message == b"Hello world"
    assert (digits.source_addr, digits.source_addr_ton, digits.registered_delivery) == ("81312345678", 1, 0)


async def test_japanese_ucs2_multipart(peer: SmscPeer, start_client: ClientFactory) -> None:
    client, _ = await connect(peer, start_client)
    text = ("日本語のテキストメッセージです。" * 7)[:100]
    result = await client.submit(request(text))
    assert len(result.smsc_ids) == 2

    submits = await peer.submits()
    assert len(submits) == 2
    assert [s.message_id for s in submits] == list(result.smsc_ids)
    assert all(s.data_coding == 8 and s.esm_class & 0x40 for s in submits)
    udhs = [s.short_message[:6] for s in submits]
    ref = udhs[0][3]
    assert udhs == [build_udh(ref, 2, 1), build_udh(ref, 2, 2)]
    assert b"".join(s.short_message[6:] for s in submits) == text.encode("utf-16-be")


async def test_gsm7_extension_characters(peer: SmscPeer, start_client: ClientFactory) -> None:
    client, _ = await connect(peer, start_client)
    text = "{}[]~|€^\\"
    await client.submit(request(text))
    # 9 extension characters count double: 80 of them fill one part, 81 need two.
    await client.submit(request("€" * 81))

    first, *rest = await peer.submits()
    assert (first.data_coding, first.esm_class) == (0, 0)
    assert first.short_message == bytes.fromhex("1b28 1b29 1b3c 1b3e 1b3d 1b40 1b65 1b14 1b2f")
    assert len(rest) == 2
    assert all(s.data_coding == 0 and s.esm_class == 0x40 for s in rest)
    assert [len(s.short_message) - 6 for s in rest] == [152, 10]


@pytest.mark.parametrize(
    ("id_format", "dlr_id_format", "dlr_mode"),
    [
        ("hex", "dec", "text"),
        ("dec", "hex", "text"),
        ("hex", None, "tlv"),
        ("hex", "dec", "both"),
        ("dec", None, "both"),
    ],
)
async def test_receipt_ids_match_submit_ids(
    peer: SmscPeer, start_client: ClientFactory, id_format: str, dlr_id_format: str | None, dlr_mode: str
) -> None:
    await peer.configure(id_format=id_format, dlr_id_format=dlr_id_format, dlr_mode=dlr_mode)
    client, events = await connect(peer, start_client)
    results = [await client.submit(request(f"receipt {i}")) for i in range(3)]

    async def three_receipts() -> bool:
        return len(events.receipts) >= 3

    await eventually(three_receipts)
    submitted = {normalize_id(r.smsc_ids[0]) for r in results}
    matched = set()
    for receipt in events.receipts:
        assert receipt.state is ReceiptState.DELIVERED
        hits = submitted & candidate_ids(receipt.smsc_id)
        assert len(hits) == 1, (receipt.smsc_id, submitted)
        matched |= hits
    assert matched == submitted


@pytest.mark.parametrize(
    ("stat", "state"), [("DELIVRD", ReceiptState.DELIVERED), ("UNDELIV", ReceiptState.FAILED)]
)
async def test_receipt_states(
    peer: SmscPeer, start_client: ClientFactory, stat: str, state: ReceiptState
) -> None:
    await peer.configure(dlr_stat=stat)
    client, events = await connect(peer, start_client)
    result = await client.submit(request("state"))

    async def got_receipt() -> bool:
        return bool(events.receipts)

    await eventually(got_receipt)
    (receipt,) = events.receipts
    assert receipt.state is state
    assert receipt.stat == stat
    assert normalize_id(result.smsc_ids[0]) in candidate_ids(receipt.smsc_id)


async def test_smsc_drop_mid_burst(peer: SmscPeer, start_client: ClientFactory) -> None:
    client, events = await connect(peer, start_client)
    await peer.configure(drop_after=20, dlr_mode="none")
    texts = [f"burst message {i}" for i in range(50)]
    outcomes = await asyncio.gather(*(client.submit(request(t)) for t in texts), return_exceptions=True)

    for outcome in outcomes:
        assert isinstance(outcome, SubmitResult | ConnectionLost), repr(outcome)
    lost = [t for t, o in zip(texts, outcomes, strict=True) if isinstance(o, ConnectionLost)]
    assert 0 < len(lost) < 50

    async def rebound() -> bool:
        return await peer.bind_count() >= 2 and client.bound

    await eventually(rebound)
    assert events.bind_states[:3] == [True, False, True]
    for text in lost:
        await client.submit(request(text))
    received = {s.short_message.decode() for s in await peer.submits()}
    assert received == set(texts)


async def test_throttled_submit_is_retried(peer: SmscPeer, start_client: ClientFactory) -> None:
    client, _ = await connect(peer, start_client)
    await peer.configure(throttle_next=5)
    started = time.monotonic()
    result = await client.submit(request("patience"))
    elapsed = time.monotonic() - started

    submits = await peer.submits()
    assert [s.message_id for s in submits] == list(result.smsc_ids)
    # Backoff 0.02, 0.04, 0.08, 0.16, 0.2 (capped): the client did wait between attempts.
    assert elapsed >= 0.45


async def test_rejected_bind_is_retried(peer: SmscPeer, start_client: ClientFactory) -> None:
    await peer.configure(reject_binds=True)
    client, events = await connect(peer, start_client, wait=False)
    await asyncio.sleep(0.6)  # several attempts at 0.05, 0.1, 0.2, 0.4 s backoff
    assert not client.bound
    assert await peer.bind_count() == 0
    with pytest.raises(NotBound):
        await client.submit(request("too early"))

    await peer.configure(reject_binds=False)
    assert await client.wait_bound(TIMEOUT)
    assert await peer.bind_count() == 1
    assert events.bind_states == [True]


async def test_response_timeout_forces_reconnect(peer: SmscPeer, start_client: ClientFactory) -> None:
    client, _ = await connect(peer, start_client, response_timeout=0.3)
    await peer.configure(respond_delay_ms=1500, dlr_mode="none")
    with pytest.raises(ConnectionLost):
        await client.submit(request("slow"))
    await peer.configure(dlr_mode="none")

    async def rebound() -> bool:
        return await peer.bind_count() >= 2 and client.bound

    await eventually(rebound)
    await client.submit(request("fast again"))


# 700 septets of distinct text: five GSM parts (4 x 153 + 88).
FIVE_PARTS = "".join(f"{i:03d} " for i in range(175))


def concat(submit: Any) -> tuple[int, int, int, bytes]:
    """(reference, total, part number, body) of a submit_sm carrying an 8-bit concatenation UDH."""
    udh = submit.short_message[:6]
    assert submit.esm_class & 0x40 and udh[:3] == b"\x05\x00\x03", udh
    return udh[3], udh[4], udh[5], submit.short_message[6:]


async def test_long_message_keeps_its_reference_and_skips_accepted_parts(
    peer: SmscPeer, start_client: ClientFactory
) -> None:
    client, _ = await connect(peer, start_client)
    whole = await client.submit(request(FIVE_PARTS))
    again = await client.submit(request(FIVE_PARTS))
    chosen = await client.submit(request(FIVE_PARTS, concat_ref=200, skip_parts=frozenset({1, 2})))
    other = await client.submit(SubmitRequest("m2", "Gateway", "+818012345678", FIVE_PARTS))

    assert len(whole.smsc_ids) == 5 and whole.seqs == (1, 2, 3, 4, 5)
    assert chosen.seqs == (3, 4, 5) and len(chosen.smsc_ids) == 3
    assert chosen.numbered() == tuple(zip((3, 4, 5), chosen.smsc_ids, strict=True))
    submits = await peer.submits()
    assert [s.message_id for s in submits] == [
        *whole.smsc_ids,
        *again.smsc_ids,
        *chosen.smsc_ids,
        *other.smsc_ids,
    ]
    parts = [concat(s) for s in submits]
    first, second, third, fourth = parts[:5], parts[5:10], parts[10:13], parts[13:]
    # The reference is a function of the request: the same on every attempt at one message.
    ref = first[0][0]
    assert [p[:3] for p in first] == [(ref, 5, n) for n in range(1, 6)]
    assert second == first
    assert b"".join(p[3] for p in first) == FIVE_PARTS.encode()
    # Given explicitly, it is used; skipped parts are not sent; the total stays 5.
    assert [p[:3] for p in third] == [(200, 5, 3), (200, 5, 4), (200, 5, 5)]
    assert [p[3] for p in third] == [p[3] for p in first[2:]]
    assert [p[:3] for p in fourth] == [(fourth[0][0], 5, n) for n in range(1, 6)]


async def test_drop_mid_long_message_reports_the_accepted_parts(
    peer: SmscPeer, start_client: ClientFactory
) -> None:
    client, _ = await connect(peer, start_client)
    await peer.configure(drop_after=2, dlr_mode="none")  # closes right after answering part 2
    with pytest.raises(ConnectionLost) as lost:
        await client.submit(request(FIVE_PARTS))
    accepted = lost.value.accepted
    assert sorted(accepted) == [1, 2]
    first = await peer.submits()
    assert [s.message_id for s in first] == [accepted[1], accepted[2]]

    async def rebound() -> bool:
        return await peer.bind_count() >= 2 and client.bound

    await eventually(rebound)
    rest = await client.submit(request(FIVE_PARTS, skip_parts=frozenset(accepted)))
    assert rest.seqs == (3, 4, 5)
    submits = await peer.submits()
    assert [s.message_id for s in submits] == [accepted[1], accepted[2], *rest.smsc_ids]
    parts = [concat(s) for s in submits]
    ref = parts[0][0]
    # Parts 1-2 once, 3-5 once: one concatenation the handset can assemble.
    assert [p[:3] for p in parts] == [(ref, 5, n) for n in range(1, 6)]
    assert b"".join(p[3] for p in parts) == FIVE_PARTS.encode()


async def test_mo_decoding(peer: SmscPeer, start_client: ClientFactory) -> None:
    _, events = await connect(peer, start_client)
    await peer.inject_mo("+818011112222", "+81501234567", b"Hi \x1b\x65")
    await peer.inject_mo(
        "818011112222",
        "81501234567",
        build_udh(9, 2, 2) + "日本".encode("utf-16-be"),
        data_coding=8,
        esm_class=0x40,
    )

    async def two() -> bool:
        return len(events.mos) >= 2

    await eventually(two)
    gsm, ucs2 = sorted(events.mos, key=lambda m: m.concat_seq)
    assert gsm.text == "Hi €"
    assert gsm.source.endswith("818011112222") and gsm.destination.endswith("81501234567")
    assert (gsm.concat_ref, gsm.concat_total, gsm.concat_seq) == (None, 1, 1)
    assert (ucs2.text, ucs2.concat_ref, ucs2.concat_total, ucs2.concat_seq) == ("日本", 9, 2, 2)
    assert ucs2.received_at is not None


async def test_handler_failure_answers_0x64_and_peer_redelivers(
    peer: SmscPeer, start_client: ClientFactory
) -> None:
    _, events = await connect(peer, start_client)
    events.fail_next_mo = 1
    await peer.inject_mo("818011112222", "81501234567", b"store me")

    async def stored() -> bool:
        return len(events.mos) == 1

    await eventually(stored)
    assert events.mo_attempts == 2
    assert events.mos[0].text == "store me"

    async def both_answers() -> bool:
        return len(await deliver_resp_statuses(peer)) >= 2

    await eventually(both_answers)
    assert (await deliver_resp_statuses(peer))[:2] == [0x64, 0x00]


async def test_not_bound_and_stop(peer: SmscPeer, start_client: ClientFactory) -> None:
    events = Recorder()
    idle = SmppClient(fast_config(peer.host, peer.port, peer.system_id, peer.password), events)
    with pytest.raises(NotBound):
        await idle.submit(request("nobody home"))

    client, events = await connect(peer, start_client)
    await client.stop()
    assert not client.bound
    assert events.bind_states == [True, False]
    with pytest.raises(NotBound):
        await client.submit(request("after stop"))


# --- a scripted raw SMSC for what the peers cannot be told to do ---------------------------------

HEADER = struct.Struct(">LLLL")


def pdu(command_id: int, seq: int, body: bytes = b"", status: int = 0) -> bytes:
    return HEADER.pack(16 + len(body), command_id, status, seq) + body


def deliver_sm_body(
    short_message: bytes, esm_class: int = 0, data_coding: int = 0, tlvs: bytes = b""
) -> bytes:
    return (
        b"\x00"
        + b"\x01\x01818011112222\x00"
        + b"\x01\x0181501234567\x00"
        + bytes([esm_class, 0, 0])
        + b"\x00\x00"
        + bytes([0, 0, data_coding, 0, len(short_message)])
        + short_message
        + tlvs
    )


class FakeSmsc:
    """Binds anyone, answers submit_sm at once, records every PDU it gets."""

    def __init__(self) -> None:
        self.received: list[tuple[int, int, int, bytes]] = []  # command_id, status, seq, body
        self.connections = 0
        self.answer_enquire_link = True
        self.submit_statuses: list[int] = []  # statuses for the next submit_sm answers
        self.answer_submits: int | None = None  # answer only this many more submit_sm (None: all)
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._ids = 0

    async def __aenter__(self) -> FakeSmsc:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    def commands(self) -> list[int]:
        return [r[0] for r in self.received]

    def send(self, data: bytes) -> None:
        self.writers[-1].write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                header = await reader.readexactly(16)
                length, command_id, status, seq = HEADER.unpack(header)
                body = await reader.readexactly(length - 16)
                self.received.append((command_id, status, seq, body))
                if command_id == 0x09:
                    writer.write(pdu(0x80000009, seq, b"fake\x00"))
                elif command_id == 0x04 and self.answer_submits is not None and self.answer_submits <= 0:
                    pass  # left unanswered: the ESME's response timeout ends the session
                elif command_id == 0x04 and self.submit_statuses:
                    writer.write(pdu(0x80000004, seq, status=self.submit_statuses.pop(0)))
                elif command_id == 0x04:
                    if self.answer_submits is not None:
                        self.answer_submits -= 1
                    self._ids += 1
                    writer.write(pdu(0x80000004, seq, b"%x\x00" % self._ids))
                elif command_id == 0x15 and self.answer_enquire_link:
                    writer.write(pdu(0x80000015, seq))
                elif command_id == 0x06:
                    writer.write(pdu(0x80000006, seq))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


@pytest_asyncio.fixture
async def fake_smsc() -> AsyncIterator[FakeSmsc]:
    async with FakeSmsc() as smsc:
        yield smsc


async def fake_client(
    fake: FakeSmsc, start_client: ClientFactory, **overrides: Any
) -> tuple[SmppClient, Recorder]:
    return await start_client("127.0.0.1", fake.port, "esme", "pw", **overrides)


async def test_dead_link_detected_by_enquire_link(fake_smsc: FakeSmsc, start_client: ClientFactory) -> None:
    fake_smsc.answer_enquire_link = False
    _, events = await fake_client(fake_smsc, start_client, enquire_link_interval=0.1, response_timeout=0.2)

    async def reconnected() -> bool:
        return fake_smsc.connections >= 2

    await eventually(reconnected, within=3)
    assert 0x15 in fake_smsc.commands()
    assert events.bind_states[:2] == [True, False]


async def test_enquire_link_answered_keeps_session(fake_smsc: FakeSmsc, start_client: ClientFactory) -> None:
    await fake_client(fake_smsc, start_client, enquire_link_interval=0.05, response_timeout=0.2)
    fake_smsc.send(pdu(0x15, 4242))
    await asyncio.sleep(0.5)
    assert fake_smsc.connections == 1
    assert fake_smsc.commands().count(0x15) >= 3
    assert (0x80000015, 0, 4242, b"") in fake_smsc.received


async def test_smsc_unbind_is_answered_then_rebinds(fake_smsc: FakeSmsc, start_client: ClientFactory) -> None:
    client, events = await fake_client(fake_smsc, start_client)
    fake_smsc.send(pdu(0x06, 77))

    async def rebound() -> bool:
        return fake_smsc.connections == 2 and client.bound

    await eventually(rebound)
    assert (0x80000006, 0, 77, b"") in fake_smsc.received
    assert events.bind_states[:3] == [True, False, True]


async def test_unknown_command_gets_generic_nack(fake_smsc: FakeSmsc, start_client: ClientFactory) -> None:
    await fake_client(fake_smsc, start_client)
    fake_smsc.send(pdu(0x00000103, 99, b"\x00"))  # data_sm, which this ESME does not take

    async def nacked() -> bool:
        return any(r[0] == 0x80000000 for r in fake_smsc.received)

    await eventually(nacked)
    assert (0x80000000, 0x03, 99, b"") in fake_smsc.received


async def test_deliver_sm_resp_waits_for_handler(fake_smsc: FakeSmsc, start_client: ClientFactory) -> None:
    _, events = await fake_client(fake_smsc, start_client)
    release = asyncio.Event()
    original = events.on_receipt

    async def slow_store(receipt: DeliveryReceipt) -> None:
        await release.wait()
        await original(receipt)

    events.on_receipt = slow_store  # type: ignore[method-assign]
    # A receipt whose id comes only from a NUL-less TLV and state TLV (smpplib would cut the id).
    tlvs = struct.pack(">HH", 0x001E, 4) + b"ab12" + struct.pack(">HHB", 0x0427, 1, 5)
    fake_smsc.send(pdu(0x05, 500, deliver_sm_body(b"", esm_class=0x04, tlvs=tlvs)))
    await asyncio.sleep(0.2)
    assert not any(r[0] == 0x80000005 for r in fake_smsc.received)
    release.set()

    async def answered() -> bool:
        return any(r[0] == 0x80000005 for r in fake_smsc.received)

    await eventually(answered)
    resp = next(r for r in fake_smsc.received if r[0] == 0x80000005)
    assert (resp[1], resp[2]) == (0, 500)
    (receipt,) = events.receipts
    assert (receipt.smsc_id, receipt.state, receipt.stat) == ("ab12", ReceiptState.FAILED, "UNDELIV")


async def test_submit_error_statuses(fake_smsc: FakeSmsc, start_client: ClientFactory) -> None:
    client, _ = await fake_client(fake_smsc, start_client)
    fake_smsc.submit_statuses = [0x0B]  # ESME_RINVDSTADR: permanent
    with pytest.raises(SubmitRejected) as excinfo:
        await client.submit(request("to nowhere"))
    assert excinfo.value.status == 0x0B

    fake_smsc.submit_statuses = [0x14, 0x58]  # queue full, throttled: both retried
    result = await client.submit(request("eventually"))
    assert result.smsc_ids
    assert fake_smsc.commands().count(0x04) == 4


async def test_response_timeout_mid_long_message_resends_only_the_unanswered_part(
    fake_smsc: FakeSmsc, start_client: ClientFactory
) -> None:
    client, _ = await fake_client(fake_smsc, start_client, response_timeout=0.3)
    fake_smsc.answer_submits = 2  # parts 1 and 2 answered, part 3 never
    with pytest.raises(ConnectionLost) as lost:
        await client.submit(request(FIVE_PARTS))
    assert sorted(lost.value.accepted) == [1, 2]
    fake_smsc.answer_submits = None

    async def rebound() -> bool:
        return fake_smsc.connections >= 2 and client.bound

    await eventually(rebound)
    rest = await client.submit(request(FIVE_PARTS, skip_parts=frozenset(lost.value.accepted)))
    assert rest.seqs == (3, 4, 5)
    bodies = [body for command, _, _, body in fake_smsc.received if command == 0x04]
    udhs = [bytes(b[b.index(b"\x05\x00\x03") :][:6]) for b in bodies]
    ref = udhs[0][3]
    # Part 3 was on the wire when the session was given up: the only part that can go twice.
    assert udhs == [build_udh(ref, 5, n) for n in (1, 2, 3, 3, 4, 5)]


async def test_thousands_of_concurrent_submits_each_get_their_own_answer(
    fake_smsc: FakeSmsc, start_client: ClientFactory
) -> None:
    """Many callers share the window; each gets the SMSC id of its own submit (the rate:
    bench/smsc_simulator.py)."""
    # 3,000 tasks and the fake SMSC share one loop: on a busy machine the first answer can take
    # longer than the suite's 3 s response timeout, which this test is not about.
    client, _ = await fake_client(fake_smsc, start_client, response_timeout=15.0)
    count = 3000
    results = await asyncio.gather(*(client.submit(request(f"load {i}")) for i in range(count)))
    assert len({r.smsc_ids[0] for r in results}) == count


async def test_stop_unbinds_gracefully(fake_smsc: FakeSmsc, start_client: ClientFactory) -> None:
    client, events = await fake_client(fake_smsc, start_client)
    await client.stop()
    assert fake_smsc.commands()[-1] == 0x06
    assert not client.bound
    assert events.bind_states == [True, False]
    await asyncio.sleep(0.2)
    assert fake_smsc.connections == 1  # stopped means no reconnect
