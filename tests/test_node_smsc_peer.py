"""Tests of the node-smpp SMSC test peer itself, driven by smpplib's blocking client in a thread.

Everything our SMPP client tests rely on is checked here against an independent ESME (smpplib),
so a failure in those tests can be blamed on our client, not on the peer.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from tests.peers.node_smsc import NodeSmsc, NodeSmscError

SRC = "12025550100"
DST = "818012345678"


def _connect(peer: NodeSmsc, password: str | None = None, mode: str = "transceiver") -> smpplib.client.Client:
    client = smpplib.client.Client(peer.host, peer.port, timeout=5, allow_unknown_opt_params=True)
    client.connect()
    try:
        getattr(client, f"bind_{mode}")(system_id=peer.system_id, password=password or peer.password)
    except BaseException:
        client.disconnect()
        raise
    return client


def _submit(client: smpplib.client.Client, short_message: bytes, **kwargs: Any) -> None:
    fields: dict[str, Any] = {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": SRC,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": DST,
        "data_coding": 0,
        "esm_class": 0,
        "registered_delivery": 0,
        "short_message": short_message,
    }
    fields.update(kwargs)
    client.send_message(**fields)


def _read(client: smpplib.client.Client, command: str) -> Any:
    """Read PDUs until one named `command` arrives (answering enquire_link on the way)."""
    while True:
        pdu = client.read_pdu()
        if pdu.command == "enquire_link":
            client._enquire_link_received(pdu)
            continue
        assert pdu.command == command, f"expected {command}, got {pdu.command} (status {pdu.status})"
        return pdu


def _answer(client: smpplib.client.Client, deliver: Any, status: int = 0) -> None:
    resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=client, status=status)
    resp.sequence = deliver.sequence
    client.send_pdu(resp)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _in_thread(func: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(func)


def _ucs2_parts() -> list[bytes]:
    """Two UCS-2 segments with concat UDH; the emoji's surrogate pair is split across them."""
    body = "Hello 😀 world — multipart".encode("utf-16-be")
    cut = body.index("😀".encode("utf-16-be")) + 2  # right between the high and the low surrogate
    return [
        bytes.fromhex("0500037f0201") + body[:cut],
        bytes.fromhex("0500037f0202") + body[cut:],
    ]


async def test_raw_short_message_bytes_round_trip(node_smsc: NodeSmsc) -> None:
    parts = _ucs2_parts()
    gsm = bytes.fromhex("00401b65ff")  # '@', '¡', escape+'€', and an octet no GSM table defines

    def run() -> list[str]:
        client = _connect(node_smsc)
        try:
            ids = []
            for part in parts:
                _submit(client, part, data_coding=0x08, esm_class=0x40)
                ids.append(_text(_read(client, "submit_sm_resp").message_id))
            _submit(client, gsm)
            ids.append(_text(_read(client, "submit_sm_resp").message_id))
            return ids
        finally:
            client.disconnect()

    ids = await _in_thread(run)
    submits = await node_smsc.submits()
    assert [s.short_message for s in submits] == [*parts, gsm]
    assert [s.message_id for s in submits] == ids
    assert [(s.data_coding, s.esm_class) for s in submits] == [(8, 0x40), (8, 0x40), (0, 0)]
    assert submits[0].source_addr == SRC and submits[0].destination_addr == DST
    assert submits[0].source_addr_ton == 1
    assert len(set(ids)) == 3
    for message_id in ids:  # hex ids that contain letters, so hex/decimal mix-ups show
        assert re.fullmatch(r"[0-9a-f]+", message_id) and re.search(r"[a-f]", message_id)


async def test_dlr_carries_tlv_and_text(node_smsc: NodeSmsc) -> None:
    await node_smsc.configure(dlr_id_format="dec", dlr_delay_ms=50)

    def run() -> tuple[str, Any]:
        client = _connect(node_smsc)
        try:
            _submit(client, b"hello dlr", registered_delivery=1)
            message_id = _text(_read(client, "submit_sm_resp").message_id)
            deliver = _read(client, "deliver_sm")
            _answer(client, deliver)
            return message_id, deliver
        finally:
            client.disconnect()

    message_id, dlr = await _in_thread(run)
    assert dlr.esm_class == 0x04
    assert _text(dlr.receipted_message_id).rstrip("\0") == message_id
    assert dlr.message_state == 2
    assert _text(dlr.source_addr) == DST and _text(dlr.destination_addr) == SRC
    text = dlr.short_message.decode("ascii")
    match = re.fullmatch(
        r"id:(\d+) sub:001 dlvrd:001 submit date:\d{10} done date:\d{10} stat:DELIVRD err:000 text:(.*)",
        text,
    )
    assert match, text
    assert int(match.group(1)) == int(message_id, 16)  # dlr_id_format="dec" of a hex id
    assert match.group(2) == "hello dlr"
    await asyncio.sleep(0.05)  # the deliver_sm_resp travels on its own
    assert await node_smsc.deliver_resp_statuses() == [0]


async def test_dlr_text_only_undeliv_and_redelivery_after_error(node_smsc: NodeSmsc) -> None:
    await node_smsc.configure(dlr_mode="text", dlr_stat="UNDELIV", id_format="dec")

    def run() -> tuple[str, list[Any]]:
        client = _connect(node_smsc)
        try:
            _submit(client, b"x", registered_delivery=1)
            message_id = _text(_read(client, "submit_sm_resp").message_id)
            first = _read(client, "deliver_sm")
            _answer(client, first, status=smpplib.consts.SMPP_ESME_RX_T_APPN)
            second = _read(client, "deliver_sm")  # redelivered once, ~200 ms later
            _answer(client, second)
            return message_id, [first, second]
        finally:
            client.disconnect()

    message_id, dlrs = await _in_thread(run)
    assert message_id.isdigit()
    for dlr in dlrs:
        assert dlr.receipted_message_id in (None, b"", "")
        text = dlr.short_message.decode("ascii")
        assert text.startswith(f"id:{message_id} sub:001 dlvrd:000 ") and " stat:UNDELIV err:000 " in text
    await asyncio.sleep(0.05)
    assert await node_smsc.deliver_resp_statuses() == [0x64, 0]


async def test_throttle_next_answers_0x58_and_is_not_recorded(node_smsc: NodeSmsc) -> None:
    await node_smsc.configure(throttle_next=2)

    def run() -> list[int]:
        client = _connect(node_smsc)
        try:
            statuses = []
            for _ in range(3):
                _submit(client, b"t")
                pdu = client.read_pdu()
                assert pdu.command == "submit_sm_resp"
                statuses.append(int(pdu.status))
            return statuses
        finally:
            client.disconnect()

    assert await _in_thread(run) == [0x58, 0x58, 0]
    assert len(await node_smsc.submits()) == 1


async def test_drop_after_closes_socket_after_the_resp(node_smsc: NodeSmsc) -> None:
    await node_smsc.configure(drop_after=2)

    def run() -> None:
        client = _connect(node_smsc)
        try:
            _submit(client, b"one")
            _read(client, "submit_sm_resp")
            _submit(client, b"two")
            assert _read(client, "submit_sm_resp").status == 0
            with pytest.raises((smpplib.exceptions.ConnectionError, socket.timeout)):
                _submit(client, b"three")
                client.read_pdu()
        finally:
            client.disconnect()
        again = _connect(node_smsc)  # a reconnect binds normally
        again.disconnect()

    await _in_thread(run)
    assert [s.short_message for s in await node_smsc.submits()] == [b"one", b"two"]
    assert await node_smsc.bind_count() == 2


async def test_mo_injection_reaches_the_bound_client(node_smsc: NodeSmsc) -> None:
    with pytest.raises(NodeSmscError, match="409"):
        await node_smsc.inject_mo(SRC, DST, b"nobody bound")
    client = await _in_thread(lambda: _connect(node_smsc, mode="receiver"))
    try:
        ucs2 = "こんにちは".encode("utf-16-be")
        await node_smsc.inject_mo(SRC, DST, ucs2, data_coding=8)

        def receive() -> Any:
            mo = _read(client, "deliver_sm")
            _answer(client, mo)
            return mo

        mo = await _in_thread(receive)
    finally:
        client.disconnect()
    assert mo.short_message == ucs2
    assert mo.data_coding == 8 and mo.esm_class == 0
    assert _text(mo.source_addr) == SRC and _text(mo.destination_addr) == DST
    await asyncio.sleep(0.05)
    resps = await node_smsc.deliver_resps()
    assert [(r["kind"], r["command_status"]) for r in resps] == [("mo", 0)]


async def test_mo_stream_sends_numbered_timestamped_mo_and_counts_them() -> None:
    """The benchmark's MO source (bench/compare.py): each text carries its index and its send
    time, and /stats counts what went both ways. A quiet peer still works; nothing here is timed."""
    async with NodeSmsc(quiet=True) as peer:
        with pytest.raises(NodeSmscError, match="409"):
            await peer.mo_stream(SRC, DST, rate=1000, count=3)
        client = await _in_thread(lambda: _connect(peer))
        try:
            before = time.time() * 1000
            await peer.mo_stream(SRC, DST, rate=1000, count=3, tag="warm")

            def receive() -> list[Any]:
                got = []
                for _ in range(3):
                    mo = _read(client, "deliver_sm")
                    _answer(client, mo)
                    got.append(mo)
                _submit(client, b"counted", registered_delivery=0)
                _read(client, "submit_sm_resp")
                return got

            mos = await _in_thread(receive)
            after = time.time() * 1000
        finally:
            client.disconnect()
        texts = [mo.short_message.decode("ascii").split(" ") for mo in mos]
        assert [(t[0], t[1]) for t in texts] == [("warm", "0"), ("warm", "1"), ("warm", "2")]
        assert all(before - 1 <= float(t[2]) <= after + 1 for t in texts)
        assert all(_text(mo.source_addr) == SRC and _text(mo.destination_addr) == DST for mo in mos)
        await asyncio.sleep(0.05)
        stats = await peer.stats()
        assert stats["mo_sent"] == 3 and stats["deliver_resps"] == 3 and stats["submits"] == 1
        assert stats["mo_stream"]["sent"] == 3 and stats["mo_stream"]["finished_at"] is not None
        assert before - 1 <= stats["first_submit_at"] == stats["last_submit_at"] <= after + 1
        with pytest.raises(NodeSmscError, match="rate"):
            await peer.mo_stream(SRC, DST, rate=0, count=3)
        assert "submit_sm" not in peer.log_tail()  # quiet: no line per PDU


async def test_wrong_password_and_reject_binds_are_refused(node_smsc: NodeSmsc) -> None:
    def bind_status(password: str | None = None) -> int:
        try:
            _connect(node_smsc, password=password).disconnect()
        except smpplib.exceptions.PDUError as exc:
            return int(exc.args[1])
        return 0

    assert await _in_thread(lambda: bind_status("wrong")) == 0x0D
    await node_smsc.configure(reject_binds=True)
    assert await _in_thread(bind_status) == 0x0D
    await node_smsc.configure()
    assert await _in_thread(bind_status) == 0
    assert await node_smsc.bind_count() == 1


async def test_dlr_for_a_dropped_connection_waits_for_the_next_receiver_bind(node_smsc: NodeSmsc) -> None:
    await node_smsc.configure(drop_after=1, dlr_delay_ms=50)

    def run() -> tuple[str, Any]:
        client = _connect(node_smsc, mode="transmitter")
        try:
            _submit(client, b"queued", registered_delivery=1)
            message_id = _text(_read(client, "submit_sm_resp").message_id)
            with pytest.raises((smpplib.exceptions.ConnectionError, socket.timeout)):
                client.read_pdu()
        finally:
            client.disconnect()
        receiver = _connect(node_smsc, mode="receiver")
        try:
            dlr = _read(receiver, "deliver_sm")
            _answer(receiver, dlr)
        finally:
            receiver.disconnect()
        return message_id, dlr

    message_id, dlr = await _in_thread(run)
    assert _text(dlr.receipted_message_id).rstrip("\0") == message_id
    assert dlr.short_message.startswith(f"id:{message_id} ".encode())
