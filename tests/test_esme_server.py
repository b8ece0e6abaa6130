"""The SMPP server for ESMEs, over real sockets, with ESMEs that are not our code (the npm
`smpp` package's client, and smpplib as a client) and the independent node SMSC as the
gateway's SMSC: bind, submits (single, long UCS-2 in UDH parts) answered after the commit,
receipts and MO back to the ESME, refusals with their SMPP statuses, a rebind after a drop
that loses nothing, bad PDUs."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from gateway.keys import CONFIG, SESSIONS
from gateway.services.accounts import NewCredentials
from gateway.services.smpp_credentials import IssuedCredentials, issue_credentials
from smpp.encoding import build_udh, decode_short_message
from smpp.server import smpp_time
from tests.conftest import Gateway, free_port, gateway_config, start_gateway, wait_for
from tests.peers.node_esme import NodeEsme
from tests.peers.node_smsc import NodeSmsc
from tests.procs import subscribe_sin

JP = "818012345678"
SIN = "+81312345678"


@contextlib.asynccontextmanager
async def esme_gateway(db_url: str, smsc: NodeSmsc, **overrides: Any) -> AsyncIterator[Gateway]:
    cfg = gateway_config(
        db_url,
        smsc.host,
        smsc.port,
        smpp_server__enabled=True,
        smpp_server__port=free_port(),
        **{"smpp_server__poll_interval": 0.1, **overrides},
    )
    gw = await start_gateway(cfg)
    try:
        yield gw
    finally:
        await gw.runner.cleanup()


async def smpp_receiving_account(
    gw: Gateway, http: aiohttp.ClientSession, db_url: str
) -> tuple[NewCredentials, IssuedCredentials]:
    """An account allowed sender SHOP, with SMPP credentials, whose SIN delivers its MO to the
    account's SMPP receiver (set through the API, as a customer would)."""
    creds = await gw.account(senders=("SHOP",))
    issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
    assert issued is not None
    await subscribe_sin(db_url, creds.account.id, SIN, "http://127.0.0.1:9/")
    subs = f"{gw.base_url}/sms/sins/subscriptions/"
    async with http.get(subs, headers=gw.auth(creds)) as r:
        [sub] = await r.json()
    async with http.post(
        f"{subs}{sub['sin_uid']}/", json={"mo_delivery": "smpp"}, headers=gw.auth(creds)
    ) as r:
        assert r.status == 200 and (await r.json())["mo_delivery"] == "smpp"
    return creds, issued


async def test_node_esme_submits_and_gets_receipts_and_mo(
    clean_db: str, node_smsc: NodeSmsc, http: aiohttp.ClientSession
) -> None:
    async with esme_gateway(clean_db, node_smsc) as gw:
        creds, issued = await smpp_receiving_account(gw, http, clean_db)

        port = gw.app[CONFIG].smpp_server.port
        async with NodeEsme(port, issued.system_id, "wrong") as bad:
            assert (await bad.event("bind_resp"))["status"] == smpplib.consts.SMPP_ESME_RINVPASWD
        async with NodeEsme(port, issued.system_id, issued.password) as esme:
            assert (await esme.event("bind_resp"))["status"] == 0
            one = await esme.submit(
                "one",
                source_addr="SHOP",
                destination_addr=JP,
                short_message_hex=b"hello".hex(),
                registered_delivery=1,
            )
            assert one["status"] == 0
            msgid = one["message_id"]
            # Answered only once committed: the row is there as soon as the answer is.
            async with http.get(f"{gw.base_url}/sms/messages/{msgid}/", headers=gw.auth(creds)) as r:
                assert r.status == 200 and (await r.json())["sender"] == "SHOP"

            text = "日本語のテキスト、" * 10  # 90 UCS-2 characters: two parts
            units = text.encode("utf-16-be")
            halves = [units[:134], units[134:]]
            answers = [
                await esme.submit(
                    f"long{i}",
                    source_addr="SHOP",
                    destination_addr=JP,
                    esm_class=0x40,
                    data_coding=8,
                    short_message_hex=(build_udh(7, 2, i) + half).hex(),
                    registered_delivery=1,
                )
                for i, half in enumerate(halves, start=1)
            ]
            assert [a["status"] for a in answers] == [0, 0]
            assert answers[0]["message_id"] == answers[1]["message_id"] != msgid

            refused = await esme.submit(
                "bank", source_addr="BANK", destination_addr=JP, short_message_hex="6869"
            )
            assert refused["status"] == smpplib.consts.SMPP_ESME_RINVSRCADR
            refused = await esme.submit(
                "dst", source_addr="SHOP", destination_addr="12", short_message_hex="6869"
            )
            assert refused["status"] == smpplib.consts.SMPP_ESME_RINVDSTADR

            receipts = await wait_for(lambda: _receipts(esme, {msgid, answers[0]["message_id"]}), timeout=15)
            for receipt in receipts:
                assert receipt["esm_class"] == 4 and receipt["message_state"] == 2
                body = bytes.fromhex(receipt["short_message_hex"]).decode()
                assert body.startswith(f"id:{receipt['receipted_message_id']} ") and "stat:DELIVRD" in body

            await node_smsc.inject_mo("819011112222", SIN[1:], "返信です".encode("utf-16-be"), data_coding=8)
            mo = await esme.wait(lambda e: e["event"] == "deliver_sm" and e["esm_class"] == 0)
            assert (mo["source_addr"], mo["destination_addr"], mo["data_coding"]) == (
                "819011112222",
                SIN[1:],
                8,
            )
            assert bytes.fromhex(mo["short_message_hex"]).decode("utf-16-be") == "返信です"

            async with http.get(f"{gw.base_url}/metrics") as r:
                assert "gateway_smpp_server_sessions 1.0" in await r.text()

            esme.send({"op": "raw", "hex": struct.pack(">LLLL", 16, 0x00000099, 0, 77).hex()})
            nack = await esme.event("generic_nack")
            assert (nack["status"], nack["sequence"]) == (smpplib.consts.SMPP_ESME_RINVCMDID, 77)

    submitted = await node_smsc.submits()
    texts = [decode_short_message(s.data_coding, s.esm_class, s.short_message).text for s in submitted]
    assert texts[0] == "hello" and "".join(texts[1:]) == text  # one message of two parts
    assert await gw_rows(clean_db) == [(0,)]  # every receipt and the MO acknowledged, none left


async def _receipts(esme: NodeEsme, ids: set[str]) -> list[dict[str, Any]] | None:
    got = [e for e in esme.received("deliver_sm") if e["receipted_message_id"] in ids]
    return got if len(got) == len(ids) else None


async def gw_rows(db_url: str) -> list[Any]:
    from tests.procs import sql

    return await sql(db_url, "SELECT count(*) FROM esme_deliveries")


def _smpplib_client(port: int) -> smpplib.client.Client:
    client = smpplib.client.Client("127.0.0.1", port, timeout=5)
    client.connect()
    return client


async def test_smpplib_esme_rebinds_after_a_drop_and_is_throttled(clean_db: str, node_smsc: NodeSmsc) -> None:
    """A receipt that comes while the ESME is away waits for its next bind; the account's rate
    limit answers ESME_RTHROTTLED; a wrong password ESME_RINVPASWD."""
    await node_smsc.configure(dlr_delay_ms=300)
    async with esme_gateway(clean_db, node_smsc, ratelimit__rate=0.5, ratelimit__burst=2) as gw:
        creds = await gw.account(senders=("SHOP",))
        issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
        assert issued is not None
        port = gw.app[CONFIG].smpp_server.port

        def bind_wrong() -> int:
            client = _smpplib_client(port)
            try:
                client.bind_transmitter(system_id=issued.system_id, password="nope")
            except smpplib.exceptions.PDUError as exc:
                return int(exc.args[1])
            finally:
                client.disconnect()
            return 0

        assert await asyncio.to_thread(bind_wrong) == smpplib.consts.SMPP_ESME_RINVPASWD

        def submit_and_drop() -> list[tuple[int, str]]:
            client = _smpplib_client(port)
            client.bind_transmitter(system_id=issued.system_id, password=issued.password)
            answers = []
            for _ in range(3):
                client.send_message(
                    source_addr_ton=5,
                    source_addr="SHOP",
                    dest_addr_ton=1,
                    destination_addr=JP,
                    short_message=b"away",
                    registered_delivery=1,
                )
                pdu = client.read_pdu()
                answers.append((int(pdu.status), (pdu.message_id or b"").decode()))
            client.disconnect()  # no unbind: a dropped link
            return answers

        answers = await asyncio.to_thread(submit_and_drop)
        assert [a[0] for a in answers] == [0, 0, smpplib.consts.SMPP_ESME_RTHROTTLED]
        sent = {a[1] for a in answers[:2]}

        async def receipts_waiting() -> bool:
            rows = await gw.sql("SELECT receipted_id FROM esme_deliveries")
            return {r[0] for r in rows} == sent

        await wait_for(receipts_waiting, timeout=15)

        def receive() -> set[str]:
            client = _smpplib_client(port)
            client.bind_receiver(system_id=issued.system_id, password=issued.password)
            got = set()
            while len(got) < 2:
                pdu = client.read_pdu()
                if pdu.command == "deliver_sm":
                    got.add(pdu.receipted_message_id.decode())
                    resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=client)
                    resp.sequence = pdu.sequence  # make_pdu ignores sequence= for a response
                    client.send_pdu(resp)
            client.unbind()
            client.disconnect()
            return got

        assert await asyncio.to_thread(receive) == sent
        await wait_for(lambda: _none_left(gw))


async def _none_left(gw: Gateway) -> bool:
    return await gw.sql("SELECT count(*) FROM esme_deliveries") == [(0,)]


def test_smpp_times() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    assert smpp_time("", now) is None
    assert smpp_time("000001020304000R", now) == now + timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert smpp_time("261205100000004+", now) == datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    for bad in ("26120510000000+", "2612051000000X4+", "261205100000004Z"):
        try:
            smpp_time(bad, now)
        except ValueError:
            continue
        raise AssertionError(bad)


async def test_hostile_peers_are_cut_off(clean_db: str, node_smsc: NodeSmsc) -> None:
    """A command_length over the bound closes the connection before the body is read; no bind
    within the deadline closes it; past the failed-bind budget a right password is refused
    too; past the connection cap a new connection is closed at once; a submit before a bind is
    ESME_RINVBNDSTS."""
    settings = {
        "smpp_server__bind_timeout": 0.5,
        "smpp_server__bind_failures_per_minute": 2,
        "smpp_server__max_connections": 2,
    }
    async with esme_gateway(clean_db, node_smsc, **settings) as gw:
        creds = await gw.account()
        issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
        assert issued is not None
        port = gw.app[CONFIG].smpp_server.port

        async def closed(reader: asyncio.StreamReader) -> bool:
            return await asyncio.wait_for(reader.read(), 5) == b""

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack(">LLLL", 0x7FFFFFFF, 4, 0, 1))  # claims 2 GiB
        assert await closed(reader)
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack(">LLLL", 16, 4, 0, 5))  # submit_sm before any bind
        assert struct.unpack(">LLLL", await reader.readexactly(16)) == (16, 0x80000004, 0x04, 5)
        assert await closed(reader)  # then the bind deadline
        writer.close()

        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed(reader)  # over max_connections
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)

        def bind(password: str) -> int:
            client = _smpplib_client(port)
            try:
                client.bind_transceiver(system_id=issued.system_id, password=password)
            except smpplib.exceptions.PDUError as exc:
                return int(exc.args[1])
            except smpplib.exceptions.ConnectionError:
                return -1
            finally:
                client.disconnect()
            return 0

        assert [await asyncio.to_thread(bind, "guess") for _ in range(2)] == [
            smpplib.consts.SMPP_ESME_RINVPASWD
        ] * 2
        assert await asyncio.to_thread(bind, issued.password) == smpplib.consts.SMPP_ESME_RBINDFAIL


async def test_smpplib_over_tls_with_sar_parts_and_message_payload(
    clean_db: str, node_smsc: NodeSmsc, tmp_path: Path
) -> None:
    """TLS on the listener; a long message as two submits with sar_* TLVs becomes one message;
    a long text in message_payload is one submit."""
    await asyncio.to_thread(
        subprocess.run,
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
            "-subj", "/CN=gateway", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    settings = {
        "smpp_server__tls": True,
        "smpp_server__tls_cert_file": str(tmp_path / "cert.pem"),
        "smpp_server__tls_key_file": str(tmp_path / "key.pem"),
    }
    async with esme_gateway(clean_db, node_smsc, **settings) as gw:
        creds = await gw.account(senders=("SHOP",))
        issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
        assert issued is not None
        port = gw.app[CONFIG].smpp_server.port
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        context.check_hostname = False  # smpplib connects without a server name; the chain is checked
        first, second = "A" * 153, "B" * 20
        payload = "C" * 300

        def submit() -> list[tuple[int, str]]:
            client = smpplib.client.Client("127.0.0.1", port, timeout=5, ssl_context=context)
            client.connect()
            client.bind_transmitter(system_id=issued.system_id, password=issued.password)
            answers = []
            sar = {"sar_msg_ref_num": 300, "sar_total_segments": 2}
            submits: list[dict[str, Any]] = [
                {"short_message": first.encode(), "sar_segment_seqnum": 1, **sar},
                {"short_message": second.encode(), "sar_segment_seqnum": 2, **sar},
                {"short_message": b"", "message_payload": payload.encode()},
            ]
            for fields in submits:
                client.send_message(
                    source_addr_ton=5, source_addr="SHOP", dest_addr_ton=1, destination_addr=JP, **fields
                )
                pdu = client.read_pdu()
                answers.append((int(pdu.status), (pdu.message_id or b"").decode()))
            client.unbind()
            client.disconnect()
            return answers

        answers = await asyncio.to_thread(submit)
        assert [a[0] for a in answers] == [0, 0, 0]
        assert answers[0][1] == answers[1][1] != answers[2][1]
        rows = await gw.sql("SELECT msgid, body, parts FROM messages ORDER BY id")
        assert [tuple(r) for r in rows] == [
            (answers[0][1], first + second, 2),
            (answers[2][1], payload, 2),
        ]


async def test_schedule_validity_failure_only_receipts_and_binary(
    clean_db: str, node_smsc: NodeSmsc, http: aiohttp.ClientSession
) -> None:
    """registered_delivery 2 wants failures only; a message scheduled after its validity
    period (relative times) expires unsent, and the ESME gets an EXPIRED receipt; 8-bit data
    in two UDH parts goes out as the same octets (data_coding 4, two parts)."""
    async with esme_gateway(clean_db, node_smsc) as gw:
        creds = await gw.account(senders=("SHOP",))
        issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
        assert issued is not None
        async with NodeEsme(gw.app[CONFIG].smpp_server.port, issued.system_id, issued.password) as esme:
            assert (await esme.event("bind_resp"))["status"] == 0
            fields = {"source_addr": "SHOP", "destination_addr": JP, "short_message_hex": b"hi".hex()}
            quiet = await esme.submit("quiet", registered_delivery=2, **fields)
            late = await esme.submit(
                "late",
                registered_delivery=1,
                schedule_delivery_time="000000001000000R",  # in 10 minutes
                validity_period="000000000001000R",  # valid for 1 second
                **fields,
            )
            assert quiet["status"] == late["status"] == 0
            data = bytes(range(256))[:200]  # every octet value a text could not carry, NUL first
            binary = [
                await esme.submit(
                    f"bin{i}",
                    source_addr="SHOP",
                    destination_addr=JP,
                    esm_class=0x40,
                    data_coding=4,
                    short_message_hex=(build_udh(9, 2, i) + chunk).hex(),
                )
                for i, chunk in enumerate((data[:134], data[134:]), start=1)
            ]
            assert [b["status"] for b in binary] == [0, 0]
            receipt = await esme.wait(
                lambda e: e["event"] == "deliver_sm" and e["receipted_message_id"] == late["message_id"]
            )
            assert receipt["message_state"] == 3
            assert "stat:EXPIRED" in bytes.fromhex(receipt["short_message_hex"]).decode()

            async def delivered() -> bool:
                url = f"{gw.base_url}/sms/messages/{quiet['message_id']}/"
                async with http.get(url, headers=gw.auth(creds)) as r:
                    return bool((await r.json())["status"] == "DELIVERED")

            await wait_for(delivered)
            # Its receipt would have been written with the status: none for a delivered one.
            assert await gw.sql("SELECT count(*) FROM esme_deliveries") == [(0,)]
            assert all(e["receipted_message_id"] != quiet["message_id"] for e in esme.received("deliver_sm"))
    submitted = await node_smsc.submits()
    assert len(submitted) == 3  # the expired one never went out
    parts = [s for s in submitted if s.data_coding == 4]
    assert [s.esm_class & 0x40 for s in parts] == [0x40, 0x40]
    assert b"".join(s.short_message[6:] for s in parts) == data


async def test_smpplib_queries_the_state_of_its_own_messages_only(
    clean_db: str, node_smsc: NodeSmsc, http: aiohttp.ClientSession
) -> None:
    """query_sm answers the state of the account's message: ENROUTE while a long message waits
    for its parts, DELIVERED with its final_date once delivered; an unknown msgid and another
    account's are both ESME_RINVMSGID."""
    async with esme_gateway(clean_db, node_smsc) as gw:
        creds = await gw.account(senders=("SHOP",))
        other = await gw.account(name="other", senders=("SHOP",))
        body = {"recipient": f"+{JP}", "sender": "SHOP", "message": "theirs"}
        async with http.post(f"{gw.base_url}/sms/messages/", json=body, headers=gw.auth(other)) as r:
            assert r.status == 201
            theirs = (await r.json())[0]["msgid"]
        issued = await issue_credentials(gw.app[SESSIONS], creds.account.sid)
        assert issued is not None
        port = gw.app[CONFIG].smpp_server.port

        def queries() -> dict[str, Any]:
            client = _smpplib_client(port)
            client.bind_transceiver(system_id=issued.system_id, password=issued.password)
            address = {"source_addr_ton": 5, "source_addr": "SHOP"}

            def submit(**fields: Any) -> str:
                client.send_message(dest_addr_ton=1, destination_addr=JP, **address, **fields)
                pdu = client.read_pdu()
                assert pdu.status == 0
                return str(pdu.message_id.decode())

            def query(msgid: str) -> tuple[int, int | None, str]:
                client.send_pdu(smpplib.smpp.make_pdu("query_sm", client=client, message_id=msgid, **address))
                pdu = client.read_pdu()
                assert pdu.command == "query_sm_resp"
                return int(pdu.status), pdu.message_state, (pdu.final_date or b"").decode()

            mine = submit(short_message=b"mine")
            part = submit(
                short_message=b"first half", sar_msg_ref_num=5, sar_total_segments=2, sar_segment_seqnum=1
            )
            seen = {"part": query(part), "theirs": query(theirs), "unknown": query("0" * 32)}
            for _ in range(150):  # the deadline: 15 s for the node SMSC's receipt
                seen["mine"] = query(mine)
                if seen["mine"][1] == 2:
                    break
                time.sleep(0.1)
            client.unbind()
            client.disconnect()
            return seen

        seen = await asyncio.to_thread(queries)
    invalid = smpplib.consts.SMPP_ESME_RINVMSGID
    assert seen["part"] == (0, 1, "")
    assert seen["theirs"][0] == seen["unknown"][0] == invalid
    status, state, final_date = seen["mine"]
    assert (status, state) == (0, 2)
    assert smpp_time(final_date, datetime.now(UTC)) is not None
