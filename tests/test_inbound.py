"""Inbound SMS over real SMPP (MO deliver_sm from the SMSC peer) to subscribed SINs: storage,
reassembly, signed webhooks, listings, replies, STOP/START/HELP and auto-replies."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import text

from gateway.db.engine import is_sqlite
from gateway.db.models import AutoReplyRule, Number, NumberSubscription
from gateway.keys import CONFIG, INBOUND, SESSIONS
from gateway.services.accounts import NewCredentials
from smpp.encoding import build_udh, decode_short_message, encode_gsm7
from tests.conftest import Gateway, basic, gateway_config, start_gateway, wait_for
from tests.procs import create_account, gateway_processes, sql, subscribe_sin
from tests.webhook_receiver import Receiver, genuine

SIN = "+81312345678"
CUSTOMER = "+819011112222"


@dataclass
class Sin:
    creds: NewCredentials
    subscription_id: int
    number: str


async def add_sin(gw: Gateway, creds: NewCredentials, number: str, action_url: str | None) -> Sin:
    async with gw.app[SESSIONS].begin() as s:
        num = Number(
            uid=secrets.token_hex(16),
            number=number,
            country_code="JP",
            prefix=number[1:4],
            sms=True,
            voice=False,
            monthly_cost=Decimal(100),
            minute_cost=Decimal(0),
        )
        s.add(num)
        await s.flush()
        sub = NumberSubscription(
            number_id=num.id, account_id=creds.account.id, kind="sin", action_url=action_url
        )
        s.add(sub)
        await s.flush()
        return Sin(creds, sub.id, number)


@pytest_asyncio.fixture
async def sin(gateway: Gateway, receiver: Receiver) -> AsyncIterator[Sin]:
    creds = await gateway.account(name="owner")
    yield await add_sin(gateway, creds, SIN, receiver.url("/mo"))


async def mo(peer: Any, text: str, source: str = CUSTOMER, dest: str = SIN) -> None:
    await peer.inject_mo(source.lstrip("+"), dest.lstrip("+"), encode_gsm7(text), data_coding=0)


async def hits(receiver: Receiver, path: str, n: int) -> list[Any]:
    async def ready() -> list[Any] | None:
        got = receiver.on(path)
        return got if len(got) >= n else None

    result: list[Any] = await wait_for(ready)
    return result


def form(hit: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(hit.body.decode(), keep_blank_values=True).items()}


def verify(secret: str, hit: Any) -> None:
    ts = hit.headers["X-Gateway-Timestamp"]
    assert (
        hit.headers["X-Gateway-Signature"]
        == hmac.new(secret.encode(), ts.encode() + hit.body, hashlib.sha256).hexdigest()
    )
    assert genuine(secret, hit.headers, hit.body, {})  # X-Gateway-Signature-256 (fast path too)


async def submits_to(peer: Any, number: str, n: int) -> list[str]:
    async def ready() -> list[str] | None:
        got = [
            decode_short_message(s.data_coding, s.esm_class, s.short_message).text
            for s in await peer.submits()
            if s.destination_addr == number.lstrip("+")
        ]
        return got if len(got) >= n else None

    result: list[str] = await wait_for(ready)
    return result


async def test_mo_is_stored_signed_webhooked_and_listed(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin, http: aiohttp.ClientSession
) -> None:
    await mo(sim_smsc, "Hello {gateway} €")
    [hit] = await hits(receiver, "/mo", 1)
    body = form(hit)
    assert body["sender"] == CUSTOMER and body["recipient"] == SIN and body["message"] == "Hello {gateway} €"
    assert len(body["id"]) == 32 and len(body["recv_time"]) == 19
    assert hit.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    verify(sin.creds.account.webhook_secret, hit)

    auth = gateway.auth(sin.creds)
    async with http.get(f"{gateway.base_url}/sms/inbounds/", headers=auth) as r:
        listed = await r.json()
    assert [m["id"] for m in listed] == [body["id"]] and listed[0]["message"] == body["message"]
    async with http.get(f"{gateway.base_url}/sms/inbounds/{body['id']}/", headers=auth) as r:
        assert (await r.json())["sender"] == CUSTOMER

    plan = sin.creds.account.sid
    bearer = {"Authorization": f"Bearer {sin.creds.auth_token}"}
    async with http.get(f"{gateway.base_url}/xms/v1/{plan}/inbounds", headers=bearer) as r:
        page = await r.json()
    assert page["count"] == 1 and page["page"] == 0 and page["page_size"] == 30
    item = page["inbounds"][0]
    assert item["type"] == "mo_text" and item["from"] == CUSTOMER[1:] and item["to"] == SIN[1:]
    assert item["body"] == body["message"] and item["received_at"].endswith("Z")
    async with http.get(f"{gateway.base_url}/xms/v1/{plan}/inbounds/{body['id']}", headers=bearer) as r:
        assert (await r.json())["id"] == body["id"]


async def test_concatenated_ucs2_mo_is_reassembled_once(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin
) -> None:
    text = "こんにちは、これは二部構成のメッセージです。" * 4
    units = text.encode("utf-16-be")
    half = (len(units) // 4) * 2
    chunks = [units[:half], units[half:]]
    # Out of order, and part 2 redelivered: one message, once.
    for seq in (2, 1, 2):
        udh = build_udh(0x42, 2, seq)
        await sim_smsc.inject_mo(CUSTOMER[1:], SIN[1:], udh + chunks[seq - 1], data_coding=8, esm_class=0x40)
    [hit] = await hits(receiver, "/mo", 1)
    assert form(hit)["message"] == text
    rows = await gateway.sql("SELECT parts, body FROM inbound_messages")
    assert rows == [(2, text)]
    # The parts are kept (marked assembled) only to recognise late redeliveries.
    assert await gateway.sql("SELECT count(*) FROM mo_parts WHERE assembled_at IS NULL") == [(0,)]
    await sim_smsc.inject_mo(
        CUSTOMER[1:], SIN[1:], build_udh(0x42, 2, 1) + chunks[0], data_coding=8, esm_class=0x40
    )
    await gateway.app[INBOUND].flush_stale()
    assert len(await gateway.sql("SELECT id FROM inbound_messages")) == 1


async def test_mo_to_unsubscribed_number_is_kept(gateway: Gateway, sim_smsc: Any, sin: Sin) -> None:
    await mo(sim_smsc, "anyone there?", dest="+81399998888")

    async def stored() -> list[Any]:
        return await gateway.sql("SELECT account_id, recipient FROM inbound_messages")

    assert await wait_for(stored) == [(None, "+81399998888")]
    assert gateway.app[INBOUND].unrouted == 1
    from tests.test_cli_and_run import run_cli

    code, out, err = await run_cli(
        {"GATEWAY_DATABASE_URL": gateway.app[CONFIG].database.url}, "inbound", "unrouted"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["unrouted"] == 1 and report["latest"][0]["recipient"] == "+81399998888"


async def test_stop_start_help_and_opt_out_enforcement(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin, http: aiohttp.ClientSession
) -> None:
    auth = gateway.auth(sin.creds)
    send = {"message": "promo", "recipient": CUSTOMER, "sender": "SHOP"}
    await mo(sim_smsc, " stop ")
    [confirmation] = await submits_to(sim_smsc, CUSTOMER, 1)
    assert "unsubscribed" in confirmation
    assert (await sim_smsc.submits())[0].source_addr == SIN[1:]
    async with http.post(f"{gateway.base_url}/sms/messages/", data=send, headers=auth) as r:
        assert r.status == 400 and await r.json() == {"recipient": ["Recipient has opted out"]}
    inbound_id = (await gateway.sql("SELECT uid FROM inbound_messages"))[0][0]
    async with http.post(
        f"{gateway.base_url}/sms/inbounds/{inbound_id}/reply/", data={"message": "sorry"}, headers=auth
    ) as r:
        assert r.status == 400 and "recipient" in await r.json()
    # Another account is not bound by this account's opt-out list.
    other = await gateway.account(name="other")
    async with http.post(f"{gateway.base_url}/sms/messages/", data=send, headers=gateway.auth(other)) as r:
        assert r.status == 201

    await mo(sim_smsc, "HELP")
    await mo(sim_smsc, "Start")
    texts = await submits_to(sim_smsc, CUSTOMER, 4)
    assert any("STOP to unsubscribe" in t for t in texts) and any("resubscribed" in t for t in texts)
    async with http.post(f"{gateway.base_url}/sms/messages/", data=send, headers=auth) as r:
        assert r.status == 201


async def test_webhook_text_reply_and_auto_reply_rules(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin
) -> None:
    async with gateway.app[SESSIONS].begin() as s:
        s.add(
            AutoReplyRule(
                uid="r1",
                subscription_id=sin.subscription_id,
                match="keyword",
                pattern="hours",
                reply="Open 9-17",
            )
        )
        s.add(
            AutoReplyRule(
                uid="r2",
                subscription_id=sin.subscription_id,
                match="regex",
                pattern=r"(?i)price",
                reply="See example.com/prices",
            )
        )
        # Stored before rules ran on RE2, which has no backreferences: skipped, not a poison MO.
        s.add(
            AutoReplyRule(
                uid="r0",
                subscription_id=sin.subscription_id,
                match="regex",
                pattern=r"(\w)\1",
                reply="legacy",
            )
        )
    await mo(sim_smsc, "HOURS please")
    await mo(sim_smsc, "what is the PRICE?")
    texts = await submits_to(sim_smsc, CUSTOMER, 2)
    assert sorted(texts) == ["Open 9-17", "See example.com/prices"]

    receiver.replies["/mo"] = "Thanks, we got it"
    await mo(sim_smsc, "something else")
    texts = await submits_to(sim_smsc, CUSTOMER, 3)
    assert "Thanks, we got it" in texts


async def test_reply_api_and_tenant_isolation(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin, http: aiohttp.ClientSession
) -> None:
    await mo(sim_smsc, "question")
    [hit] = await hits(receiver, "/mo", 1)
    inbound_id = form(hit)["id"]
    async with http.post(
        f"{gateway.base_url}/sms/inbounds/{inbound_id}/reply/",
        json={"message": "answer"},
        headers=gateway.auth(sin.creds),
    ) as r:
        assert r.status == 201 and len((await r.json())[0]["msgid"]) == 32
    assert await submits_to(sim_smsc, CUSTOMER, 1) == ["answer"]

    other = await gateway.account(name="intruder")
    oauth = gateway.auth(other)
    async with http.get(f"{gateway.base_url}/sms/inbounds/{inbound_id}/", headers=oauth) as r:
        assert r.status == 404
    async with http.post(
        f"{gateway.base_url}/sms/inbounds/{inbound_id}/reply/", data={"message": "x"}, headers=oauth
    ) as r:
        assert r.status == 404
    async with http.get(f"{gateway.base_url}/sms/inbounds/", headers=oauth) as r:
        assert await r.json() == []
    plan = sin.creds.account.sid
    async with http.get(
        f"{gateway.base_url}/xms/v1/{plan}/inbounds", headers={"Authorization": f"Bearer {other.auth_token}"}
    ) as r:
        assert r.status == 401
    async with http.get(f"{gateway.base_url}/xms/v1/{plan}/inbounds", headers=oauth) as r:
        assert r.status == 401
    async with http.get(
        f"{gateway.base_url}/xms/v1/{other.account.sid}/inbounds/{inbound_id}",
        headers={"Authorization": f"Bearer {other.auth_token}"},
    ) as r:
        assert r.status == 404


async def test_sinch_filters_and_pagination(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin, http: aiohttp.ClientSession
) -> None:
    second = await add_sin(gateway, sin.creds, "+81355556666", receiver.url("/mo2"))
    for i in range(5):
        await mo(sim_smsc, f"one {i}")
    for i in range(3):
        await mo(sim_smsc, f"two {i}", dest=second.number)
    await hits(receiver, "/mo", 5)
    await hits(receiver, "/mo2", 3)
    base = f"{gateway.base_url}/xms/v1/{sin.creds.account.sid}/inbounds"
    bearer = {"Authorization": f"Bearer {sin.creds.auth_token}"}

    async def get(query: str) -> tuple[int, Any]:
        async with http.get(base + query, headers=bearer) as r:
            return r.status, await r.json()

    _, page = await get("")
    assert page["count"] == 8
    _, page = await get(f"?to={second.number[1:]}")
    assert page["count"] == 3 and {m["to"] for m in page["inbounds"]} == {second.number[1:]}
    _, page = await get(f"?to={SIN},{second.number}&page_size=3&page=2")
    assert page["count"] == 8 and len(page["inbounds"]) == 2 and page["page"] == 2
    _, page = await get("?start_date=2000-01-01&end_date=2000-01-02")
    assert page["count"] == 0
    for query, field in (
        ("?page_size=101", "page_size"),
        ("?page=-1", "page"),
        ("?start_date=yesterday", "start_date"),
        ("?to=abc", "to"),
        ("?colour=red", "colour"),
        ("?start_date=2026-01-02&end_date=2026-01-01", "end_date"),
        (f"?to={SIN}&to={second.number}", "to"),
        ("?page=1&page=2", "page"),
    ):
        code, body = await get(query)  # Sinch's error body, naming the parameter
        assert code == 400 and body["code"] == "syntax_constraint_violation", (query, body)
        assert body["text"].startswith(f"{field}: "), (query, body)


async def test_hostile_auto_reply_patterns_cannot_stall_the_gateway(
    clean_db: str, sim_smsc: Any, tmp_path: Path
) -> None:
    """`(a|a)*b` on 36 a's took `re` minutes (exponential backtracking) with the process frozen.
    A gateway process, so a frozen one cannot freeze the test's own loop too."""
    creds = await create_account(clean_db, "tenant")
    await subscribe_sin(clean_db, creds.account.id, SIN, "")
    [(number_uid,)] = await sql(clean_db, "SELECT uid FROM numbers WHERE number = :n", n=SIN)
    async with gateway_processes(tmp_path) as procs:
        gw = procs.spawn("gw", clean_db, sim_smsc.port)
        await gw.start()
        auth = basic(creds.account.sid, creds.auth_token)
        rules = f"{gw.base_url}/sms/sins/subscriptions/{number_uid}/autoreplies/"
        async with aiohttp.ClientSession(headers=auth, timeout=aiohttp.ClientTimeout(total=5)) as http:
            for pattern in ("(a|a)*b", ".*.*.*.*.*.*x"):
                async with http.post(rules, data={"match": "regex", "pattern": pattern, "reply": "hi"}) as r:
                    assert r.status == 201, await r.text()
            await mo(sim_smsc, "a" * 36)
            await mo(sim_smsc, "a" * 1000 + "b")

            async def healthy_and_processed() -> bool:
                async with http.get(f"{gw.base_url}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    assert r.status == 200
                async with http.get(f"{gw.base_url}/sms/inbounds/") as r:
                    return len(await r.json()) == 2

            await wait_for(healthy_and_processed, timeout=20)
            assert await submits_to(sim_smsc, CUSTOMER, 1) == ["hi"]  # the "...ab" one matched


async def test_webhook_survives_gateway_restart(clean_db: str, sim_smsc: Any, receiver: Receiver) -> None:
    first = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port))
    creds = await first.account()
    await add_sin(first, creds, SIN, receiver.url("/later"))
    receiver.script["/later"] = [503] * 3
    await mo(sim_smsc, "kept across restarts")
    await hits(receiver, "/later", 1)
    await first.runner.cleanup()

    second = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port))
    try:

        async def delivered() -> bool:
            rows = await second.sql("SELECT status FROM webhook_deliveries WHERE kind = 'sms.inbound'")
            return rows == [("DONE",)]

        await wait_for(delivered, timeout=20)
        assert form(receiver.on("/later")[-1])["message"] == "kept across restarts"
    finally:
        await second.runner.cleanup()


async def test_mo_from_an_independent_smsc(clean_db: str, receiver: Receiver, node_smsc: Any) -> None:
    peer = node_smsc
    gw = await start_gateway(gateway_config(clean_db, peer.host, peer.port))
    try:
        creds = await gw.account()
        await add_sin(gw, creds, SIN, receiver.url("/node"))

        async def bound() -> bool:
            try:
                await mo(peer, "via node-smpp")
                return True
            except Exception:
                return False

        await wait_for(bound)
        [hit] = await hits(receiver, "/node", 1)
        assert form(hit)["message"] == "via node-smpp"

        # The webhook can overtake the deliver_sm_resp on its way to the peer: both follow the
        # commit of the message.
        async def answered() -> bool:
            return bool(await peer.deliver_resp_statuses())

        await wait_for(answered)
        assert await peer.deliver_resp_statuses() == [0]
    finally:
        await gw.runner.cleanup()


async def test_opt_out_applies_to_template_sends(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin, http: aiohttp.ClientSession
) -> None:
    from gateway.keys import TEMPLATES

    auth = gateway.auth(sin.creds)
    async with http.post(
        f"{gateway.base_url}/sms/templates/", json={"name": "t", "content": "Hi {n}"}, headers=auth
    ) as r:
        tid = (await r.json())["template_id"]
    await gateway.app[TEMPLATES].set_status(tid, "APPROVED")
    await mo(sim_smsc, "STOP")
    await submits_to(sim_smsc, CUSTOMER, 1)
    async with http.post(
        f"{gateway.base_url}/sms/templates/{tid}/messages/",
        json={"sender": "SHOP", "recipient": CUSTOMER, "variables": {"n": "x"}},
        headers=auth,
    ) as r:
        assert r.status == 400 and await r.json() == {"recipient": ["Recipient has opted out"]}


async def test_concatenated_gsm7_mo_with_sar_or_udh(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin
) -> None:
    text = "Long message with extension chars {like} [these] and the euro sign € " * 4
    septets = encode_gsm7(text)
    cut = 150
    if septets[cut - 1] == 0x1B:  # never split an escape pair
        cut -= 1
    for seq, chunk in ((1, septets[:cut]), (2, septets[cut:])):
        await sim_smsc.inject_mo(
            CUSTOMER[1:], SIN[1:], build_udh(7, 2, seq) + chunk, data_coding=0, esm_class=0x40
        )
    [hit] = await hits(receiver, "/mo", 1)
    assert form(hit)["message"] == text


def test_only_ascii_digits_make_an_e164_number() -> None:
    from gateway.services.inbound import e164_from_smpp
    from gateway.voice.calls import e164_from_agi

    assert e164_from_smpp("819012345678") == "+819012345678"
    assert e164_from_smpp("+819012345678") == "+819012345678"
    assert e164_from_smpp("Shop") == "Shop"
    # Unicode digits are kept as the SMSC sent them (an odd sender), never made a number.
    assert e164_from_smpp("8190²²²") == "8190²²²"
    assert e164_from_smpp("٨١٩٠١٢٣٤٥٦٧") == "٨١٩٠١٢٣٤٥٦٧"
    assert e164_from_agi("819012345678") == "+819012345678"
    assert e164_from_agi("+8190²²²²²") == ""
    assert e164_from_agi("unknown") == ""


async def test_a_stalled_mo_write_does_not_hold_up_other_senders_mo(
    gateway: Gateway, sim_smsc: Any, receiver: Receiver, sin: Sin
) -> None:
    """On PostgreSQL MO from different senders are written side by side: one waiting on a
    lock (here, a part of a long MO, held by the test) does not stall the rest. SQLite has one
    connection and one lane."""
    if is_sqlite(gateway.app[CONFIG].database.url):
        pytest.skip("SQLite writes one transaction at a time")
    inbound = gateway.app[INBOUND]
    lane = inbound.lane_of(CUSTOMER[1:])
    other = next(f"+8190{n:08d}" for n in range(1000) if inbound.lane_of(f"8190{n:08d}") != lane)
    async with gateway.app[SESSIONS].begin() as lock:
        await lock.execute(text("LOCK TABLE mo_parts IN EXCLUSIVE MODE"))
        await sim_smsc.inject_mo(
            CUSTOMER[1:], SIN[1:], build_udh(0x17, 2, 1) + encode_gsm7("first half "), esm_class=0x40
        )
        await asyncio.sleep(0.3)  # that part's transaction now waits for the lock
        await mo(sim_smsc, "not held up", source=other)
        [hit] = await hits(receiver, "/mo", 1)
        assert form(hit)["sender"] == other and form(hit)["message"] == "not held up"
    await sim_smsc.inject_mo(
        CUSTOMER[1:], SIN[1:], build_udh(0x17, 2, 2) + encode_gsm7("second half"), esm_class=0x40
    )
    hit = (await hits(receiver, "/mo", 2))[1]
    assert form(hit)["sender"] == CUSTOMER and form(hit)["message"] == "first half second half"
