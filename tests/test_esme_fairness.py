"""The SMPP server between accounts, over real sockets against the node SMSC: one account's
flood over many sessions stays behind another account's submit at the database (per-account
window and bind cap); receipts and MO committed on this node reach the bound receiver at once,
not at its next poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.keys import CONFIG, SESSIONS
from gateway.services.smpp_credentials import IssuedCredentials, issue_credentials
from smpp import simulator_wire as wire
from tests.peers.node_esme import NodeEsme
from tests.peers.node_smsc import NodeSmsc
from tests.test_esme_server import JP, SIN, esme_gateway, smpp_receiving_account


@dataclass
class _Link:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sequences: wire.SequenceGenerator
    bind_status: int


async def _bind(port: int, creds: IssuedCredentials) -> _Link:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sequences = wire.SequenceGenerator()
    _, pdu = wire.request("bind_transmitter", sequences, system_id=creds.system_id, password=creds.password)
    writer.write(pdu)
    _, status, _ = wire.header(await wire.read_frame(reader))
    return _Link(reader, writer, sequences, status)


def _submit(link: _Link, text: bytes) -> bytes:
    _, pdu = wire.request(
        "submit_sm",
        link.sequences,
        source_addr_ton=5,
        source_addr="SHOP",
        dest_addr_ton=1,
        destination_addr=JP,
        short_message=text,
    )
    return pdu


def _message_id(frame: bytes) -> str:
    _, status, _ = wire.header(frame)
    assert status == 0
    return frame[16:].rstrip(b"\x00").decode()


@contextlib.asynccontextmanager
async def _commits_held(db_url: str) -> AsyncIterator[None]:
    """No message row commits while inside (another connection holds the write lock of the
    messages table): the server's submits pile up where it keeps them, in the order it took
    them, and commit in that order once it is released."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            held = await conn.begin()
            if conn.dialect.name == "postgresql":
                await conn.execute(text("LOCK TABLE messages IN EXCLUSIVE MODE"))
            else:  # a write statement takes SQLite's one write lock, whatever it matches
                await conn.execute(text("DELETE FROM messages WHERE 0 = 1"))
            yield
            await held.rollback()
    finally:
        await engine.dispose()


async def _read_all_taken(link: _Link) -> None:
    """An enquire_link after what was written: its answer says the session read all of it (a
    session handles its PDUs in order), while no submit can be answered (commits held)."""
    _, pdu = wire.request("enquire_link", link.sequences)
    link.writer.write(pdu)
    command_id, _, _ = wire.header(await wire.read_frame(link.reader))
    assert command_id == wire.ENQUIRE_LINK_RESP


async def test_a_flood_over_many_sessions_stays_behind_another_accounts_submit(
    clean_db: str, node_smsc: NodeSmsc
) -> None:
    """Account A binds four sessions (a fifth is refused: account_binds) and writes 100
    submit_sm on each without waiting for answers (each session's window takes them all);
    then B sends one. At most account_window of A's submits are with the database at a time,
    so B's message is committed after at most that many of A's, not after all 400."""
    window, sessions, per_session = 5, 4, 100
    settings = {
        "smpp_server__window": per_session,
        "smpp_server__account_window": window,
        "smpp_server__account_binds": sessions,
    }
    async with esme_gateway(clean_db, node_smsc, **settings) as gw:
        a = await gw.account(name="a", senders=("SHOP",))
        b = await gw.account(name="b", senders=("SHOP",))
        issued_a = await issue_credentials(gw.app[SESSIONS], a.account.sid)
        issued_b = await issue_credentials(gw.app[SESSIONS], b.account.sid)
        assert issued_a is not None and issued_b is not None
        port = gw.app[CONFIG].smpp_server.port

        flood = [await _bind(port, issued_a) for _ in range(sessions)]
        assert [link.bind_status for link in flood] == [0] * sessions
        extra = await _bind(port, issued_a)
        assert extra.bind_status == wire.ESME_RBINDFAIL
        other = await _bind(port, issued_b)
        assert other.bind_status == 0

        async with asyncio.timeout(60):
            async with _commits_held(clean_db):
                for link in flood:
                    link.writer.write(b"".join(_submit(link, b"flood %d" % i) for i in range(per_session)))
                for link in flood:
                    await _read_all_taken(link)
                other.writer.write(_submit(other, b"mine"))
                await _read_all_taken(other)
            b_msgid = _message_id(await wire.read_frame(other.reader))
            answers = [await wire.read_frame(link.reader) for link in flood for _ in range(per_session)]
        assert len({_message_id(frame) for frame in answers}) == sessions * per_session
        for link in [*flood, extra, other]:
            link.writer.close()

        rows = await gw.sql("SELECT msgid FROM messages ORDER BY id")
        ahead = [msgid for (msgid,) in rows].index(b_msgid)
    # Without the per-account window all of A's backlog (400) is ahead of B's.
    assert ahead <= window, ahead


async def test_receipts_and_mo_reach_a_bound_receiver_before_its_next_poll(
    clean_db: str, node_smsc: NodeSmsc, http: aiohttp.ClientSession
) -> None:
    """With the receivers' poll at 30 s, a DLR and an MO committed on this node still reach
    the bound ESME (npm `smpp` client) within 10 s: the commit wakes the account's sessions."""
    async with esme_gateway(clean_db, node_smsc, smpp_server__poll_interval=30.0) as gw:
        _, issued = await smpp_receiving_account(gw, http, clean_db)

        async with NodeEsme(gw.app[CONFIG].smpp_server.port, issued.system_id, issued.password) as esme:
            assert (await esme.event("bind_resp"))["status"] == 0
            sent = await esme.submit(
                "one",
                source_addr="SHOP",
                destination_addr=JP,
                short_message_hex=b"hi".hex(),
                registered_delivery=1,
            )
            assert sent["status"] == 0
            receipt = await esme.wait(
                lambda e: e["event"] == "deliver_sm" and e["receipted_message_id"] == sent["message_id"],
                timeout=10,
            )
            assert receipt["message_state"] == 2

            # Acknowledging the receipt made the receiver look once more; a second later it is
            # surely back in its 30 s wait, which only the MO's commit can cut short.
            await asyncio.sleep(1)
            await node_smsc.inject_mo("819011112222", SIN[1:], b"ping")
            mo = await esme.wait(lambda e: e["event"] == "deliver_sm" and e["esm_class"] == 0, timeout=10)
            assert bytes.fromhex(mo["short_message_hex"]) == b"ping"
