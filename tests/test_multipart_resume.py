"""A long message interrupted after the SMSC accepted some of its parts is completed, not resent.

End to end over HTTP and SMPP against both SMSC peers (our simulator and the npm `smpp`
server): the dispatcher records the parts the SMSC accepted before the link went, puts the
message back in the queue, and the next attempt sends only the missing parts under the same
concatenation reference, so the handset gets one concatenation it can assemble. Receipts for
the early parts are matched while the message is still QUEUED, and the message settles once
the rest is accepted and receipted, with one callback per status.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.app import RECEIPTS
from gateway.services.accounts import NewCredentials
from smpp.dlr import normalize_id
from smpp.encoding import decode_short_message
from smpp.types import DeliveryReceipt, ReceiptState
from tests.conftest import Gateway, gateway_config, start_gateway, wait_for
from tests.peers.base import SmscPeer
from tests.webhook_receiver import Receiver

JP = "+818012345678"
# 700 septets of distinct text: five GSM parts (4 x 153 + 88).
FIVE_PARTS = "".join(f"{i:03d} " for i in range(175))


@pytest.fixture(params=["sim_smsc", "node_smsc"])
def peer(request: pytest.FixtureRequest) -> SmscPeer:
    smsc: SmscPeer = request.getfixturevalue(request.param)
    return smsc


@pytest_asyncio.fixture
async def gw(clean_db: str, peer: SmscPeer) -> AsyncIterator[Gateway]:
    g = await start_gateway(gateway_config(clean_db, peer.host, peer.port))
    yield g
    await g.runner.cleanup()


async def post(http: aiohttp.ClientSession, gw: Gateway, receiver: Receiver) -> tuple[str, NewCredentials]:
    creds = await gw.account()
    async with http.post(
        f"{gw.base_url}/sms/messages/",
        data={"message": FIVE_PARTS, "recipient": JP, "sender": "DEMO", "callbackurl": receiver.url("/cb")},
        headers=gw.auth(creds),
    ) as r:
        assert r.status == 201, await r.text()
        msgid: str = (await r.json())[0]["msgid"]
    return msgid, creds


async def api_get(http: aiohttp.ClientSession, gw: Gateway, creds: NewCredentials, msgid: str) -> Any:
    async with http.get(f"{gw.base_url}/sms/messages/{msgid}/", headers=gw.auth(creds)) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def parts_seen(submits: list[Any]) -> list[tuple[int, int, int, str, str]]:
    """(reference, total, part number, text, SMSC id) of each submit_sm the peer accepted."""
    out = []
    for s in submits:
        d = decode_short_message(s.data_coding, s.esm_class, s.short_message)
        assert d.concat_ref is not None, "a part without a concatenation UDH"
        out.append((d.concat_ref, d.concat_total, d.concat_seq, d.text, s.message_id))
    return out


async def message_row(gw: Gateway, msgid: str) -> tuple[int, str, int, str | None]:
    (row,) = await gw.sql("SELECT id, status, attempts, claimed_by FROM messages WHERE msgid = :m", m=msgid)
    return row[0], row[1], row[2], row[3]


async def part_rows(gw: Gateway, msgid: str) -> list[tuple[int, str, str]]:
    rows = await gw.sql(
        "SELECT p.seq, p.smsc_id, p.state FROM message_parts p JOIN messages m ON m.id = p.message_id"
        " WHERE m.msgid = :m ORDER BY p.seq",
        m=msgid,
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def callbacks(gw: Gateway, msgid: str) -> list[str]:
    rows = await gw.sql("SELECT body FROM webhook_deliveries WHERE ref = :m ORDER BY id", m=msgid)
    return [json.loads(r[0])["status"] for r in rows]


def check_one_concatenation(seen: list[tuple[int, int, int, str, str]], message_id: int) -> dict[int, int]:
    """All parts under one reference (the row's) and total 5, assembling to the text; returns how
    many times each part number reached the SMSC."""
    ref = (message_id - 1) % 255 + 1
    assert {(r, total) for r, total, *_ in seen} == {(ref, 5)}
    texts: dict[int, str] = {}
    for _, _, seq, text, _ in seen:
        assert texts.setdefault(seq, text) == text
    assert "".join(texts[n] for n in range(1, 6)) == FIVE_PARTS
    return dict(Counter(seq for _, _, seq, _, _ in seen))


async def test_link_drop_after_part_two_resends_parts_three_to_five_only(
    gw: Gateway, peer: SmscPeer, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await peer.configure(drop_after=2)  # the peer closes the link right after answering part 2
    msgid, creds = await post(http, gw, receiver)

    async def delivered() -> bool:
        return (await message_row(gw, msgid))[1] == "DELIVERED"

    await wait_for(delivered, timeout=30)
    row_id, _, attempts, _ = await message_row(gw, msgid)
    seen = parts_seen(await peer.submits())
    times = check_one_concatenation(seen, row_id)
    # Parts 1-2 the SMSC answered before the drop went out once; 3-5 went out on the retry.
    assert times[1] == times[2] == 1
    assert all(times[n] >= 1 for n in (3, 4, 5))
    assert [seq for _, _, seq, _, _ in seen][:2] == [1, 2]
    assert attempts == 2
    assert await peer.bind_count() == 2

    parts = await part_rows(gw, msgid)
    assert [seq for seq, _, _ in parts] == [1, 2, 3, 4, 5]
    assert {state for _, _, state in parts} == {"DELIVERED"}
    ids_of = {seq: normalize_id(smsc_id) for _, _, seq, _, smsc_id in seen}
    assert [smsc_id for _, smsc_id, _ in parts] == [ids_of[n] for n in range(1, 6)]

    async def two_callbacks() -> bool:
        return len(receiver.on("/cb")) >= 2

    await wait_for(two_callbacks)
    assert [json.loads(h.body)["status"] for h in receiver.on("/cb")] == ["DELIVERING", "DELIVERED"]
    assert await callbacks(gw, msgid) == ["DELIVERING", "DELIVERED"]
    view = await api_get(http, gw, creds, msgid)
    assert (view["status"], view["parts"]) == ("DELIVERED", 5)


@pytest.mark.parametrize(("early_stat", "final"), [("DELIVRD", "DELIVERED"), ("UNDELIV", "FAIL")])
async def test_receipts_for_early_parts_while_queued_settle_once_the_rest_is_in(
    gw: Gateway,
    peer: SmscPeer,
    http: aiohttp.ClientSession,
    receiver: Receiver,
    early_stat: str,
    final: str,
) -> None:
    """Parts 1-2 get their final receipts while the message waits in the queue (the gateway
    cannot rebind meanwhile, so no retry can come first): they are matched, the message stays
    QUEUED with no callback, and it settles, with one callback per status, once parts 3-5 are
    accepted and receipted. The receipts are handed to the gateway's receipt applier, as the
    SMPP client would, so their order against the retry is the test's, not the network's."""
    receipts = gw.app[RECEIPTS]
    # Drop after part 2; refuse binds from then on; no receipts from the peer (they come below).
    await peer.configure(drop_after=2, dlr_mode="none", reject_binds=True)
    msgid, creds = await post(http, gw, receiver)

    async def requeued_with_two_parts() -> bool:
        _, state, attempts, claimed_by = await message_row(gw, msgid)
        return (
            state == "QUEUED"
            and attempts == 1
            and claimed_by is None
            and len(await part_rows(gw, msgid)) == 2
        )

    await wait_for(requeued_with_two_parts, timeout=20)
    first = await peer.submits()
    assert len(first) == 2
    stats = {1: early_stat, 2: "DELIVRD"}
    for seq, submit in enumerate(first, start=1):
        state = ReceiptState.DELIVERED if stats[seq] == "DELIVRD" else ReceiptState.FAILED
        await receipts.on_receipt(DeliveryReceipt(submit.message_id, state, stats[seq]), "default")

    early_states = ["DELIVERED" if stats[n] == "DELIVRD" else "FAILED" for n in (1, 2)]
    assert [state for _, _, state in await part_rows(gw, msgid)] == early_states
    assert (await message_row(gw, msgid))[1] == "QUEUED"
    view = await api_get(http, gw, creds, msgid)
    assert (view["status"], view["parts"], view["sent_time"]) == ("QUEUED", 5, None)
    assert await callbacks(gw, msgid) == []
    assert await gw.sql("SELECT count(*) FROM orphan_receipts") == [(0,)]

    await peer.configure(dlr_mode="none")  # binds accepted again; the retry sends the rest

    async def delivering() -> bool:
        return (await message_row(gw, msgid))[1] == "DELIVERING"

    await wait_for(delivering, timeout=30)
    assert await callbacks(gw, msgid) == ["DELIVERING"]
    assert (await api_get(http, gw, creds, msgid))["parts"] == 5
    row_id, _, attempts, _ = await message_row(gw, msgid)
    assert attempts == 2
    seen = parts_seen(await peer.submits())
    assert check_one_concatenation(seen, row_id) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    parts = await part_rows(gw, msgid)
    assert [(seq, state) for seq, _, state in parts] == [
        (1, early_states[0]),
        (2, early_states[1]),
        (3, "SUBMITTED"),
        (4, "SUBMITTED"),
        (5, "SUBMITTED"),
    ]

    for _, _, seq, _, smsc_id in seen[2:]:
        await receipts.on_receipt(DeliveryReceipt(smsc_id, ReceiptState.DELIVERED, "DELIVRD"), "default")
        if seq < 5:  # not settled while a part is still SUBMITTED
            assert (await message_row(gw, msgid))[1] == "DELIVERING"
    assert (await message_row(gw, msgid))[1] == final
    assert await callbacks(gw, msgid) == ["DELIVERING", final]

    async def both_posted() -> bool:
        return len(receiver.on("/cb")) >= 2

    await wait_for(both_posted)
    assert [json.loads(h.body)["status"] for h in receiver.on("/cb")] == ["DELIVERING", final]
    assert (await api_get(http, gw, creds, msgid))["status"] == final
