"""Status callbacks (signed, retried, dropped on 4xx) and link tracking, through real HTTP servers."""

from __future__ import annotations

import hashlib
import hmac
import json
import string
import time
from typing import Any

import aiohttp

from gateway.http.ratelimit import RateLimiter, RateLimitSettings, client_key
from gateway.services.links import new_code
from gateway.services.outbox import sign, sign_legacy
from smpp.encoding import decode_short_message
from tests.conftest import Gateway, wait_for
from tests.webhook_receiver import REPLAY_WINDOW, Receiver, genuine

JP = "+818012345678"
URL_SAFE = set(string.ascii_letters + string.digits + "-_")


def verify(secret: str, hit: Any) -> None:
    assert genuine(secret, hit.headers, hit.body, {})
    # The deprecated header, kept for one release: timestamp immediately followed by the body.
    ts = hit.headers["X-Gateway-Timestamp"]
    expected = hmac.new(secret.encode(), ts.encode() + hit.body, hashlib.sha256).hexdigest()
    assert hit.headers["X-Gateway-Signature"] == expected


async def test_status_callbacks_are_signed_and_ordered(
    gateway: Gateway, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    creds = await gateway.account()
    async with http.post(
        f"{gateway.base_url}/sms/messages/",
        data={"message": "cb", "recipient": JP, "sender": "DEMO", "callbackurl": receiver.url("/cb")},
        headers=gateway.auth(creds),
    ) as r:
        msgid = (await r.json())[0]["msgid"]
    hits = await wait_for(lambda: _ready(receiver, "/cb", 2))
    bodies = [json.loads(h.body) for h in hits]
    assert [b["status"] for b in bodies] == ["DELIVERING", "DELIVERED"]
    assert all(b["msgid"] == msgid for b in bodies)
    for h in hits:
        verify(creds.account.webhook_secret, h)
        assert h.headers["Content-Type"].startswith("application/json")


async def test_callback_signature_recipe_and_delivery_id_stable_across_retries(
    gateway: Gateway, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    creds = await gateway.account()
    secret = creds.account.webhook_secret
    receiver.script["/retried"] = [500]  # the DELIVERING callback's first POST fails
    async with http.post(
        f"{gateway.base_url}/sms/messages/",
        data={"message": "x", "recipient": JP, "sender": "DEMO", "callbackurl": receiver.url("/retried")},
        headers=gateway.auth(creds),
    ) as r:
        assert r.status == 201
    hits = await wait_for(lambda: _ready(receiver, "/retried", 3))
    statuses = [json.loads(h.body)["status"] for h in hits]
    assert statuses == ["DELIVERING", "DELIVERING", "DELIVERED"]
    ids = [h.headers["X-Gateway-Delivery-Id"] for h in hits]
    # A retry carries the same id (the receiver can deduplicate); another delivery its own.
    assert ids[0] == ids[1] != ids[2] and all(len(i) == 32 for i in ids)
    seen: dict[str, float] = {}
    assert [genuine(secret, h.headers, h.body, seen) for h in hits] == [True, False, True]
    # The id is signed: replaying a POST under a fresh id does not get past deduplication.
    first = hits[0]
    assert not genuine(secret, {**first.headers, "X-Gateway-Delivery-Id": "0" * 32}, first.body, {})
    assert not genuine("another secret", first.headers, first.body, {})
    assert not genuine(secret, first.headers, first.body + b" ", {})
    stale = {**first.headers, "X-Gateway-Timestamp": str(int(time.time()) - REPLAY_WINDOW - 60)}
    stale["X-Gateway-Signature-256"] = sign(secret, stale["X-Gateway-Timestamp"], ids[0], first.body)
    assert not genuine(secret, stale, first.body, {})


async def test_delivered_callback_waits_while_its_delivering_one_is_failing_slowly(
    gateway: Gateway, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    """The receipt comes at once, while the DELIVERING callback's first POST is still waiting
    for its (failed) answer: the DELIVERED callback is not POSTed before DELIVERING got through,
    whichever way the gateway hands each delivery to its sender."""
    creds = await gateway.account()
    receiver.delays["/slow"] = [0.5]
    receiver.script["/slow"] = [500]
    async with http.post(
        f"{gateway.base_url}/sms/messages/",
        data={"message": "x", "recipient": JP, "sender": "DEMO", "callbackurl": receiver.url("/slow")},
        headers=gateway.auth(creds),
    ) as r:
        assert r.status == 201
    hits = await wait_for(lambda: _ready(receiver, "/slow", 3))
    assert [json.loads(h.body)["status"] for h in hits] == ["DELIVERING", "DELIVERING", "DELIVERED"]


def test_signature_separates_timestamp_from_body() -> None:
    """The deprecated signature covers timestamp + body run together, so "1700000000" with a body
    starting "1" signs the same bytes as "17000000001" with the rest; the new one does not."""
    delivery = "a" * 32
    assert sign_legacy("s", "1700000000", b"1{}") == sign_legacy("s", "17000000001", b"{}")
    assert sign("s", "1700000000", delivery, b"1{}") != sign("s", "17000000001", delivery, b"{}")
    # Nor can the id and the body trade bytes.
    assert sign("s", "1700000000", delivery, b"b{}") != sign("s", "1700000000", delivery + "b", b"{}")


async def _ready(receiver: Receiver, path: str, n: int) -> list[Any] | None:
    hits = receiver.on(path)
    return hits if len(hits) >= n else None


async def test_callback_retried_on_5xx_and_429_dropped_on_4xx(
    gateway: Gateway, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    creds = await gateway.account()
    receiver.script["/flaky"] = [500, 429, 503]  # the DELIVERING callback fails three times
    receiver.script["/gone"] = [404]
    for path in ("/flaky", "/gone"):
        async with http.post(
            f"{gateway.base_url}/sms/messages/",
            data={"message": "x", "recipient": JP, "sender": "DEMO", "callbackurl": receiver.url(path)},
            headers=gateway.auth(creds),
        ) as r:
            assert r.status == 201
    # Two callbacks (DELIVERING, DELIVERED) share the three scripted failures: 5 POSTs in all.
    await wait_for(lambda: _ready(receiver, "/flaky", 5), timeout=15)
    statuses = [json.loads(h.body)["status"] for h in receiver.on("/flaky")]
    assert len(statuses) == 5 and set(statuses) == {"DELIVERING", "DELIVERED"}
    await wait_for(lambda: _all_final(gateway), timeout=15)
    rows = await gateway.sql(
        "SELECT url, status, attempts, last_status_code FROM webhook_deliveries ORDER BY id"
    )
    gone = [r for r in rows if r[0].endswith("/gone")]
    flaky = [r for r in rows if r[0].endswith("/flaky")]
    assert gone and all(r[1] == "DROPPED" or r[1] == "DONE" for r in gone)
    assert any(r[1] == "DROPPED" and r[2] == 1 and r[3] == 404 for r in gone)
    assert all(r[1] == "DONE" for r in flaky) and sum(r[2] for r in flaky) == 5


async def _all_final(gw: Gateway) -> bool:
    rows = await gw.sql("SELECT status FROM webhook_deliveries")
    return bool(rows) and all(r[0] != "PENDING" for r in rows) and len(rows) == 4


async def test_callback_gives_up_after_the_window(
    db_url: str, clean_db: str, sim_smsc: Any, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    from tests.conftest import gateway_config, start_gateway

    gw = await start_gateway(
        gateway_config(clean_db, sim_smsc.host, sim_smsc.port, webhooks__give_up_after_seconds=0.5)
    )
    try:
        creds = await gw.account()
        receiver.script["/down"] = [503] * 100
        async with http.post(
            f"{gw.base_url}/sms/messages/",
            data={"message": "x", "recipient": JP, "sender": "DEMO", "callbackurl": receiver.url("/down")},
            headers=gw.auth(creds),
        ) as r:
            assert r.status == 201

        async def expired() -> bool:
            rows = await gw.sql("SELECT status FROM webhook_deliveries")
            return len(rows) == 2 and all(r[0] == "EXPIRED" for r in rows)

        await wait_for(expired, timeout=15)
    finally:
        await gw.runner.cleanup()


async def test_link_tracking_redirects_and_calls_back_once(
    gateway: Gateway, http: aiohttp.ClientSession, receiver: Receiver, sim_smsc: Any
) -> None:
    creds = await gateway.account()
    target = "https://example.com/offer?id=42"
    async with http.post(
        f"{gateway.base_url}/sms/messages/",
        data={
            "message": f"See {target}.",
            "recipient": JP,
            "sender": "DEMO",
            "track_link": "true",
            "lt_callbackurl": receiver.url("/lt"),
        },
        headers=gateway.auth(creds),
    ) as r:
        msgid = (await r.json())[0]["msgid"]
    submits = await wait_for(sim_smsc.submits)
    sent = decode_short_message(submits[0].data_coding, submits[0].esm_class, submits[0].short_message).text
    assert target not in sent
    assert sent.startswith(f"See {gateway.base_url}/l/") and sent.endswith(".")
    short = sent[4:-1]
    async with http.get(f"{gateway.base_url}/sms/messages/{msgid}/", headers=gateway.auth(creds)) as r:
        st = await r.json()
    assert st["link_tracking"][0]["url"] == target and st["link_tracking"][0]["first_access_time"] is None
    for _ in range(3):
        async with http.get(short, allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == target
    hits = await wait_for(lambda: _ready(receiver, "/lt", 1))
    payload = json.loads(hits[0].body)
    assert payload["msgid"] == msgid and payload["url"] == target and payload["first_access_time"]
    verify(creds.account.webhook_secret, hits[0])
    async with http.get(f"{gateway.base_url}/sms/messages/{msgid}/", headers=gateway.auth(creds)) as r:
        link = (await r.json())["link_tracking"][0]
    assert link["first_access_time"] == payload["first_access_time"] and link["access_count"] == 3
    assert len(receiver.on("/lt")) == 1
    async with http.get(f"{gateway.base_url}/l/nope", allow_redirects=False) as r:
        assert r.status == 404


async def test_link_codes_are_long_and_guessing_them_is_throttled_per_address(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    """8-character (48-bit) codes, and /l/ answered 247 guesses/s from one client."""
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(len(c) == 16 and set(c) <= URL_SAFE for c in codes)  # 16 x 6 = 96 random bits
    assert len(set("".join(codes))) == 64  # every symbol in use

    creds = await gateway.account()
    async with http.post(
        f"{gateway.base_url}/sms/messages/",
        data={"message": "See https://example.com/x", "recipient": JP, "sender": "DEMO", "track_link": "1"},
        headers=gateway.auth(creds),
    ) as r:
        assert r.status == 201
    [(code,)] = await gateway.sql("SELECT code FROM tracked_links")
    assert len(code) == 16
    link, unknown = f"{gateway.base_url}/l/{code}", f"{gateway.base_url}/l/"

    def client(address: str) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))

    async with client("127.0.0.1") as guesser, client("127.0.0.2") as other, client("127.0.0.3") as reader:
        for _ in range(30):  # following real links never counts
            async with reader.get(link, allow_redirects=False) as r:
                assert r.status == 302
        for i in range(20):  # links.miss_burst
            async with guesser.get(unknown + new_code(), allow_redirects=False) as r:
                assert r.status == 404, i
        for url in (unknown + new_code(), link):  # refused before the lookup, right or wrong
            async with guesser.get(url, allow_redirects=False) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) >= 1 and "retry after" in (await r.json())["detail"]
        async with other.get(unknown + new_code(), allow_redirects=False) as r:
            assert r.status == 404
        async with other.get(link, allow_redirects=False) as r:
            assert r.status == 302


def test_miss_limiter_refills_gives_back_and_stays_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimitSettings(rate=1.0, burst=2), clock=lambda: now[0], max_keys=3)
    assert [limiter.take("a"), limiter.take("a")] == [0.0, 0.0]
    assert limiter.take("a") == 1.0  # one token a second
    limiter.give_back("a")  # that lookup found its link
    assert limiter.take("a") == 0.0
    now[0] = 1.0
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    for client in ("b", "c", "d", "e"):
        limiter.take(client)
    assert limiter.tracked == 3  # the least recently seen ("a", then "b") were dropped
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" and client_key(None) == ""
    assert RateLimiter(RateLimitSettings(rate=0.0)).take("x") == 0.0
