"""The web console over HTTP against a real gateway (both engines): every page classified, the
tenant wall on every customer page, CSRF, sessions (logout, expiry, idle, disabled account,
rotated token), sign-in throttling, the security headers and cookie flags, the operator's
pages (SMPP credentials bound with smpplib), the action_url test and the usage export.
tests/test_console_browser.py drives it in Chromium."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import smpplib.client
import smpplib.consts
import smpplib.exceptions
from aiohttp import web
from markupsafe import escape
from sqlalchemy import update
from yarl import URL

from gateway.app import create_app
from gateway.config import Config, ConfigError
from gateway.db.models import Call, ConsoleSession, Recording, Voicemail
from gateway.http.console import PAGES
from gateway.http.console.passwords import hash_password, parse_hash, verify_password
from gateway.keys import ACCOUNTS, CONFIG, MESSAGES, NODE_ID, NUMBERS, SESSIONS, TEMPLATES
from gateway.services.messages import OutboundRequest
from gateway.services.number_import import NumberImportError, parse_numbers_csv
from smpp.encoding import encode_gsm7
from tests.conftest import Gateway, free_port, gateway_config, serve_app, start_gateway, wait_for
from tests.console_rig import OPERATOR, ConsoleClient, bind_states, has, take_number, with_operator
from tests.procs import sql

A_SIN, A_DIN, B_SIN = "+81311110001", "+81322220001", "+81311110002"
CUSTOMER, OPTED = "+819011112222", "+819033334444"
MARK = "ALPHA7F3"  # only in A's texts


# -- the page table -----------------------------------------------------------------------------

# Customer pages whose path names tenant data, and the kind of id each parameter takes.
OWNED: dict[str, dict[str, str]] = {
    "/console/messages/{msgid}": {"msgid": "message"},
    "/console/templates/{uid}/send": {"uid": "template"},
    "/console/inbound/{uid}": {"uid": "inbound"},
    "/console/inbound/{uid}/reply": {"uid": "inbound"},
    "/console/numbers/{kind}/{uid}": {"kind": "kind", "uid": "number"},
    "/console/numbers/din/{uid}/test": {"uid": "din"},
    "/console/numbers/sin/{uid}/autoreplies": {"uid": "sin"},
    "/console/numbers/sin/{uid}/autoreplies/{rule_id}/delete": {"uid": "sin", "rule_id": "rule"},
    "/console/voicemails/{vid}/audio": {"vid": "voicemail"},
    "/console/recordings/{rid}/audio": {"rid": "recording"},
}
# Operator pages with parameters: accounts and templates of every tenant, by design.
OPERATOR_PARAMS = {
    "/console/operator/accounts/{sid}",
    "/console/operator/accounts/{sid}/{action}",
    "/console/operator/accounts/{sid}/dialing",
    "/console/operator/accounts/{sid}/senders/{action}",
    "/console/operator/accounts/{sid}/ratelimit",
    "/console/operator/accounts/{sid}/smpp/{action}",
    "/console/operator/templates/{uid}/{action}",
}
PUBLIC = {"/console", "/console/", "/console/login", "/console/operator/login", "/console/static/console.css"}


def console_routes() -> dict[tuple[str, str], str]:
    """(method, path) -> audience, for every console route the app serves."""
    access = {key: who for table in PAGES for key, who in table.access.items()}
    app = create_app(Config())
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/console") and r.method != "HEAD"
    }
    assert served == set(access), served ^ set(access)
    return access


def test_every_console_page_is_classified() -> None:
    """A new page with an id in its path must say which tenant data the id names; only the
    sign-in pages and the stylesheet are public."""
    problems = []
    for (method, path), who in console_routes().items():
        params = set(re.findall(r"\{(\w+)\}", path))
        if who == "public" and path not in PUBLIC:
            problems.append(f"{method} {path}: public")
        if params and who == "customer" and set(OWNED.get(path, {})) != params:
            problems.append(f"{method} {path}: not in OWNED")
        if params and who == "operator" and path not in OPERATOR_PARAMS:
            problems.append(f"{method} {path}: not in OPERATOR_PARAMS")
    assert problems == []


def test_console_off_serves_nothing() -> None:
    cfg = Config()
    cfg.console.enabled = False
    assert not [
        r for r in create_app(cfg).router.routes() if r.resource and "/console" in r.resource.canonical
    ]


def test_operator_password_hash() -> None:
    stored = hash_password("a long operator password")
    assert verify_password("a long operator password", stored)
    assert not verify_password("a long operator passwore", stored) and not verify_password("x", "")
    with pytest.raises(ValueError):
        hash_password("short")
    with pytest.raises(ValueError):
        parse_hash("plain-text-password")


# -- fixtures -------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def gw(clean_db: str, sim_smsc: Any) -> AsyncIterator[Gateway]:
    gw = await start_gateway(with_operator(gateway_config(clean_db, sim_smsc.host, sim_smsc.port)))
    yield gw
    await gw.runner.cleanup()


@pytest_asyncio.fixture
async def client(gw: Gateway) -> AsyncIterator[ConsoleClient]:
    c = ConsoleClient(gw)
    yield c
    await c.close()


def wav_file(path: Path, seconds: float) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * int(8000 * seconds))


async def tenant_a(gw: Gateway, sim: Any, tmp: Path) -> dict[str, str]:
    """Account A with one of everything a customer page shows; kind -> A's id."""
    a = await gw.account(name="tenant-a")
    ids = {"sid": a.account.sid}
    tpl = await gw.app[TEMPLATES].create(a.account.id, "greeting", f"{MARK} hello {{name}}")
    ids["template"] = tpl["template_id"]
    await gw.app[TEMPLATES].set_status(ids["template"], "APPROVED")
    ids["message"] = await gw.app[MESSAGES].create(
        OutboundRequest(a.account.id, "SENDER", CUSTOMER, f"{MARK} first", tags=("atag",))
    )
    ids["number"] = ids["sin"] = await take_number(gw, a, A_SIN, "sin")
    ids["din"] = await take_number(gw, a, A_DIN, "din")
    rule = await gw.app[NUMBERS].add_rule(a.account.id, ids["sin"], "keyword", "HOURS", f"{MARK} 9-5")
    ids["rule"] = rule["rule_id"]
    await sim.inject_mo(CUSTOMER[1:], A_SIN[1:], encode_gsm7(f"{MARK} question"), data_coding=0)
    await sim.inject_mo(OPTED[1:], A_SIN[1:], encode_gsm7("STOP"), data_coding=0)
    rows = await wait_for(
        lambda: gw.sql("SELECT uid FROM inbound_messages WHERE sender = :s", s=CUSTOMER), timeout=10
    )
    ids["inbound"] = rows[0][0]
    await wait_for(lambda: gw.sql("SELECT id FROM opt_outs WHERE number = :n", n=OPTED))
    audio = tmp / "vm.wav"
    wav_file(audio, 1.5)
    async with gw.app[SESSIONS].begin() as s:
        call = Call(
            uid="c" * 32,
            account_id=a.account.id,
            direction="inbound",
            caller=CUSTOMER,
            recipient=A_DIN,
            status="COMPLETED",
            actions='["voicemail"]',
            result="voicemail",
        )
        s.add(call)
        await s.flush()
        s.add(
            Voicemail(
                uid="v" * 32,
                call_id=call.id,
                account_id=a.account.id,
                caller=CUSTOMER,
                recipient=A_DIN,
                duration=1.5,
                path=str(audio),
                size=audio.stat().st_size,
            )
        )
        s.add(
            Recording(
                uid="r" * 32,
                call_id=call.id,
                account_id=a.account.id,
                caller=CUSTOMER,
                recipient=A_DIN,
                duration=1.5,
                path=str(audio),
                size=audio.stat().st_size,
            )
        )
    ids["call"], ids["voicemail"], ids["recording"] = "c" * 32, "v" * 32, "r" * 32
    return ids


def fill(path: str, ids: dict[str, str], kind: str = "sin") -> str:
    kinds = OWNED[path]
    return re.sub(r"\{(\w+)\}", lambda m: kind if kinds[m[1]] == "kind" else ids[kinds[m[1]]], path)


def without_tokens(text: str) -> str:
    return re.sub(r'name="csrf" value="[^"]*"', "", text)


# -- tenant isolation ---------------------------------------------------------------------------


async def test_a_customer_never_sees_or_touches_another_accounts_data(
    gw: Gateway, client: ConsoleClient, sim_smsc: Any, tmp_path: Path
) -> None:
    """B, signed in, tries every customer page on A's ids with the methods it serves: each is
    the 404 an unknown id gets, byte for byte; B's lists show nothing of A's; A's rows are as
    they were."""
    ids = await tenant_a(gw, sim_smsc, tmp_path)
    marks = {MARK, A_SIN, A_SIN[1:], A_DIN, A_DIN[1:], *ids.values()}
    b = await gw.account(name="tenant-b")
    await take_number(gw, b, B_SIN, "sin")
    await client.login(b)
    unknown = dict.fromkeys(ids, "0" * 32)
    owned = [(m, p) for (m, p) in console_routes() if p in OWNED]
    assert {p for _, p in owned} == set(OWNED)
    for method, path in owned:
        for kind in ("sin", "din") if "{kind}" in path else ("sin",):
            theirs, nobody = fill(path, ids, kind), fill(path, unknown, kind)
            if method == "GET":
                got, none = await client.get(theirs), await client.get(nobody)
            else:
                token = (await client.get("/console/overview")).csrf
                body = {
                    "csrf": token,
                    "message": "taken",
                    "action_url": "http://127.0.0.1:9/x",
                    "recipient": CUSTOMER,
                    "sender": "SENDER",
                    "var_name": "taken",
                    "match": "keyword",
                    "pattern": "TAKEN",
                    "reply": "taken",
                }
                got, none = await client.post(theirs, body), await client.post(nobody, body)
            assert got.status == 404, (method, theirs, got.status)
            assert without_tokens(got.text) == without_tokens(none.text), (method, theirs)
            assert not [x for x in marks if x in got.text], (method, theirs)
    for path in [
        "/console/overview",
        "/console/messages",
        f"/console/messages?recipient={CUSTOMER}",
        "/console/messages?tag=atag",
        f"/console/messages?msgid={ids['message']}",
        "/console/templates",
        "/console/inbound",
        "/console/optouts",
        "/console/numbers",
        "/console/calls",
        "/console/keys",
    ]:
        page = await client.get(path)  # (a search form shows what was searched for)
        assert page.status == 200 and not [x for x in marks if x in page.text and x not in path], path
    # A's rows are untouched: no reply or template message sent, the SIN's URL unset, its
    # auto-reply rule still the only one.
    assert await gw.sql("SELECT pattern FROM auto_reply_rules") == [("HOURS",)]
    assert await gw.sql("SELECT COUNT(*) FROM messages WHERE body LIKE '%taken%'") == [(0,)]
    assert await gw.sql(
        "SELECT action_url FROM number_subscriptions WHERE account_id != :b", b=b.account.id
    ) == [
        (None,),
        (None,),
    ]


async def test_the_owner_sees_every_page(gw: Gateway, sim_smsc: Any, tmp_path: Path) -> None:
    ids = await tenant_a(gw, sim_smsc, tmp_path)
    a = ConsoleClient(gw)
    try:
        # A signs in with a fresh token (the one tenant_a made is not kept).
        token = await gw.app[ACCOUNTS].rotate_token(ids["sid"])
        assert token is not None
        page = await a.submit("/console/login", "/console/login", {"sid": ids["sid"], "token": token})
        assert page.url.endswith("/console/overview")
        expect = {
            f"/console/messages/{ids['message']}": [ids["message"], MARK],
            "/console/messages?tag=atag": [ids["message"]],
            "/console/templates": [MARK, f"/console/templates/{ids['template']}/send"],
            "/console/inbound": [f"/console/inbound/{ids['inbound']}", CUSTOMER],
            f"/console/inbound/{ids['inbound']}": [f"{MARK} question"],
            "/console/optouts": [OPTED, "sent STOP to " + A_SIN],
            "/console/numbers": [A_SIN[1:], A_DIN[1:], f"{MARK} 9-5"],
            "/console/calls": [
                f"/console/voicemails/{ids['voicemail']}/audio",
                f"/console/recordings/{ids['recording']}/audio",
                "voicemail",
            ],
        }
        expect["/console/messages?page=1"] = ["0 messages", "(page 2)"]
        expect["/console/messages?page=x"] = ["A page number from 0 to"]
        for path, needles in expect.items():
            text = (await a.get(path)).text
            assert [n for n in needles if n not in text] == [], path
        overview = (await a.get("/console/overview")).text
        assert re.search(r'id="queued">[01]<', overview)
        for kind in ("voicemail", "recording"):
            url = f"{gw.base_url}/console/{kind}s/{ids[kind]}/audio?download=1"
            async with a.http.get(url) as r:
                body = await r.read()
                assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
                assert f'filename="{kind}-{ids[kind]}.wav"' in r.headers["Content-Disposition"]
            with wave.open(io.BytesIO(body)) as w:
                assert w.getnframes() == 12000
    finally:
        await a.close()


# -- CSRF, sessions, throttling, headers ------------------------------------------------------------


async def test_forms_without_the_csrf_token_are_refused(gw: Gateway, client: ConsoleClient) -> None:
    creds = await gw.account()
    await client.login(creds)
    form = {"name": "t", "content": "hello"}
    for token in (None, "", "forged-token"):
        data = form if token is None else {**form, "csrf": token}
        page = await client.post("/console/templates", data)
        assert page.status == 403 and "stale" in page.text
    page = await client.submit(
        "/console/templates", "/console/templates", form, headers={"Origin": "http://evil.example"}
    )
    assert page.status == 403 and "Cross-site" in page.text
    assert await gw.sql("SELECT COUNT(*) FROM templates") == [(0,)]
    page = await client.submit("/console/templates", "/console/templates", form)
    assert page.status == 200 and await gw.sql("SELECT COUNT(*) FROM templates") == [(1,)]
    # The sign-in form: its token must match the sign-in cookie.
    fresh = ConsoleClient(gw)
    try:
        page = await fresh.post("/console/login", {"sid": creds.account.sid, "token": creds.auth_token})
        assert page.status == 403
        await fresh.get("/console/login")
        page = await fresh.post(
            "/console/login", {"csrf": "x" * 43, "sid": creds.account.sid, "token": creds.auth_token}
        )
        assert page.status == 403
    finally:
        await fresh.close()


async def test_sessions_end_on_logout_expiry_idleness_disabling_and_rotation(
    gw: Gateway, client: ConsoleClient
) -> None:
    creds = await gw.account()

    async def signed_in(c: ConsoleClient) -> bool:
        page = await c.get("/console/overview")
        return page.url.endswith("/console/overview") and page.status == 200

    await client.login(creds)
    assert await signed_in(client)
    cookie = client.http.cookie_jar.filter_cookies(URL(gw.base_url + "/console/"))["gw_console"].value
    stored = await gw.sql("SELECT token_hash FROM console_sessions")
    assert stored and cookie not in str(stored)  # only a hash is kept
    await client.submit("/console/overview", "/console/logout", {})
    assert not await signed_in(client)
    # The old cookie, replayed after logout, is nobody.
    replay = ConsoleClient(gw)
    replay.http.cookie_jar.update_cookies({"gw_console": cookie}, URL(gw.base_url + "/console/"))
    try:
        assert not await signed_in(replay)
        page = await replay.post(
            "/console/templates", {"csrf": "x", "name": "t", "content": "c"}, follow=False
        )
        assert page.status == 403
    finally:
        await replay.close()
    past = datetime.now(UTC) - timedelta(seconds=1)
    for column in ("expires_at", "idle_until"):
        await client.login(creds)
        async with gw.app[SESSIONS].begin() as s:
            await s.execute(update(ConsoleSession).values({column: past}))
        assert not await signed_in(client), column
    await client.login(creds)
    await gw.app[ACCOUNTS].set_disabled(creds.account.sid, True)
    assert not await signed_in(client)
    await gw.app[ACCOUNTS].set_disabled(creds.account.sid, False)
    # Signing in again in the same browser (as anyone) ends the session it had.
    await client.login(creds)
    before = await gw.sql("SELECT token_hash FROM console_sessions")
    await client.login(await gw.account(name="second"))
    after = await gw.sql("SELECT token_hash FROM console_sessions")
    assert len(before) == len(after) == 1 and before != after
    await client.login(creds)
    other = ConsoleClient(gw)
    try:
        await other.login(creds)
        page = await client.submit("/console/keys", "/console/keys/token", {})
        new_token = re.search(r'id="new-token">([^<]+)<', page.text)
        assert new_token and await signed_in(client) and not await signed_in(other)
        assert await gw.app[ACCOUNTS].authenticate(creds.account.sid, creds.auth_token) is None
    finally:
        await other.close()


async def test_failed_sign_ins_are_throttled_per_address(clean_db: str, sim_smsc: Any) -> None:
    gw = await start_gateway(
        with_operator(
            gateway_config(
                clean_db,
                sim_smsc.host,
                sim_smsc.port,
                ratelimit__auth_failures_burst=3,
                ratelimit__auth_failures_per_second=0.01,
            )
        )
    )
    c = ConsoleClient(gw)
    try:
        creds = await gw.account()
        wrong = {"sid": creds.account.sid, "token": "wrong"}
        statuses = [(await c.submit("/console/login", "/console/login", wrong)).status for _ in range(3)]
        assert statuses == [401, 401, 401]
        right = {"sid": creds.account.sid, "token": creds.auth_token}
        page = await c.submit("/console/login", "/console/login", right)
        assert page.status == 429 and int(page.headers["Retry-After"]) >= 1
        page = await c.operator_login()
        assert page.status == 429  # one bucket for every sign-in form (and the API)
    finally:
        await c.close()
        await gw.runner.cleanup()


async def test_security_headers_and_cookie_flags(gw: Gateway, client: ConsoleClient) -> None:
    page = await client.get("/console/login")
    h = page.headers
    assert (
        "unsafe-inline" not in h["Content-Security-Policy"]
        and "frame-ancestors 'none'" in h["Content-Security-Policy"]
    )
    assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
    assert h["Cache-Control"] == "no-store"
    assert "<script" not in page.text
    creds = await gw.account()
    token = page.csrf
    async with client.http.post(
        gw.base_url + "/console/login",
        data={"csrf": token, "sid": creds.account.sid, "token": creds.auth_token},
        allow_redirects=False,
    ) as r:
        cookie = r.cookies["gw_console"]
        assert r.status == 303 and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain HTTP, no https public URL
    gw.app[CONFIG].http.public_base_url = "https://gw.example"  # TLS ends at a proxy in front
    page = await client.get("/console/login")
    assert "Secure" in page.headers["Set-Cookie"]
    # (a browser would not send a Secure cookie over plain HTTP; this client is told to)
    async with client.http.post(
        gw.base_url + "/console/login",
        data={"csrf": page.csrf, "sid": creds.account.sid, "token": creds.auth_token},
        headers={"Cookie": f"gw_console_login={page.csrf}"},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.cookies["gw_console"]["secure"]
    css = await client.get("/console/static/console.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")


async def test_page_output_is_escaped(gw: Gateway, client: ConsoleClient) -> None:
    creds = await gw.account()
    await gw.app[TEMPLATES].create(creds.account.id, "<script>alert(1)</script>", "<b>bold</b> {name}")
    await client.login(creds)
    text = (await client.get("/console/templates")).text
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>bold</b>" not in text


# -- operator -------------------------------------------------------------------------------------------


async def test_operator_pages(gw: Gateway, client: ConsoleClient) -> None:
    customer = await gw.account(name="cust")
    tpl = await gw.app[TEMPLATES].create(customer.account.id, "promo", "Sale {item}")
    # A customer session is no operator: the operator pages send it to the operator sign-in.
    cust = ConsoleClient(gw)
    try:
        await cust.login(customer)
        assert (await cust.get("/console/operator/templates")).url.endswith("/console/operator/login")
        token = (await cust.get("/console/overview")).csrf
        page = await cust.post(f"/console/operator/templates/{tpl['template_id']}/approve", {"csrf": token})
        assert page.status == 403
    finally:
        await cust.close()
    assert (await client.operator_login("wrong password!")).status == 401
    page = await client.operator_login()
    assert page.status == 200 and page.url.endswith("/console/operator/")
    assert (await client.get("/console/overview")).url.endswith("/console/login")  # no customer
    gw.app[CONFIG].console.operator_username = "someone-else"  # the configuration changed
    assert (await client.get("/console/operator/")).url.endswith("/console/operator/login")
    gw.app[CONFIG].console.operator_username = OPERATOR
    page = await client.operator_login()
    for path in ("/", "/templates", "/numbers", "/smsc", "/webhooks", "/usage"):
        page = await client.get("/console/operator" + path)
        assert page.status == 200, path
    node = gw.app[NODE_ID]
    await wait_for(lambda: has(bind_states(client), {(node, "default#1"): "bound"}))
    assert "Sale {item}" in (await client.get("/console/operator/templates")).text
    await client.submit(
        "/console/operator/templates", f"/console/operator/templates/{tpl['template_id']}/approve", {}
    )
    assert (await gw.app[TEMPLATES].get(customer.account.id, tpl["template_id"]))["status"] == "APPROVED"
    page = await client.submit(
        "/console/operator/", "/console/operator/accounts", {"name": "=cmd|' /C calc'!A0"}
    )
    new_sid = re.search(r'id="new-sid">([0-9a-f]+)<', page.text)
    assert new_sid and re.search(r'id="new-token">[\w-]{40,}<', page.text)
    await client.submit(
        "/console/operator/", f"/console/operator/accounts/{customer.account.sid}/disable", {}
    )
    assert (await gw.sql("SELECT disabled FROM accounts WHERE id = :i", i=customer.account.id))[0][0]
    # Dialing rights, as `gateway accounts set` takes them: "default" is the global setting.
    account_page = f"/console/operator/accounts/{customer.account.sid}"
    rights = {
        "outbound_allow_prefixes": "+81, 1",
        "outbound_max_concurrent": "2",
        "outbound_max_per_minute": "default",
        "verified_callers": "+81312345678\n",
    }
    page = await client.submit(account_page, account_page + "/dialing", rights)
    assert page.status == 200 and 'value="+81,+1"' in page.text and "+81312345678</textarea>" in page.text
    assert await gw.sql(
        "SELECT outbound_allow_prefixes, outbound_max_concurrent, outbound_max_per_minute, verified_callers"
        " FROM accounts WHERE id = :i",
        i=customer.account.id,
    ) == [("+81,+1", 2, None, "+81312345678")]
    page = await client.submit(account_page, account_page + "/dialing", {**rights, "verified_callers": "12"})
    assert page.status == 400 and "verified_callers" in page.text
    assert (await client.get("/console/operator/accounts/" + "0" * 32)).status == 404
    # The API rate limit, as `gateway accounts set --rate --burst`: "default" is the setting.
    page = await client.submit(account_page, account_page + "/ratelimit", {"rate": "2.5", "burst": "7"})
    assert page.status == 200 and 'value="2.5"' in page.text
    rate_columns = "SELECT rate_limit, rate_burst FROM accounts WHERE id = :i"
    assert await gw.sql(rate_columns, i=customer.account.id) == [(2.5, 7)]
    page = await client.submit(account_page, account_page + "/ratelimit", {"rate": "fast", "burst": "7"})
    assert page.status == 400 and "rate:" in page.text
    page = await client.submit(
        account_page, account_page + "/ratelimit", {"rate": "default", "burst": "default"}
    )
    assert await gw.sql(rate_columns, i=customer.account.id) == [(None, None)]
    # Sender ids, as `gateway accounts senders` manages them: the send rule follows at once.
    page = await client.submit(account_page, account_page + "/senders/add", {"sender": "NEWSHOP"})
    assert page.status == 200 and "<code>NEWSHOP</code>" in page.text
    assert ("NEWSHOP", "operator") in await gw.sql(
        "SELECT sender, origin FROM sender_ids WHERE account_id = :i", i=customer.account.id
    )
    page = await client.submit(account_page, account_page + "/senders/add", {"sender": "TWELVE CHARS"})
    assert page.status == 400 and "sender:" in page.text
    await client.submit(account_page, account_page + "/senders/remove", {"sender": "NEWSHOP"})
    assert ("NEWSHOP", "operator") not in await gw.sql(
        "SELECT sender, origin FROM sender_ids WHERE account_id = :i", i=customer.account.id
    )
    unknown = "/console/operator/accounts/" + "0" * 32
    assert (await client.post(unknown + "/senders/add", {"csrf": page.csrf, "sender": "X"})).status == 404
    # The CSV import: the CLI's per-line errors, nothing imported; then a good file.
    bad = b"number,country_code,prefix,sms,voice,monthly_cost,minute_cost\n+8131234,JP,813,maybe,false,1,1\n"
    with pytest.raises(NumberImportError) as cli:
        parse_numbers_csv(bad)
    form = aiohttp.FormData()
    form.add_field("csrf", (await client.get("/console/operator/numbers")).csrf)
    form.add_field("file", bad, filename="n.csv", content_type="text/csv")
    page = await client.post("/console/operator/numbers", form)
    assert page.status == 400 and all(str(escape(e)) in page.text for e in cli.value.errors)
    good = (
        b"number,country_code,prefix,sms,voice,monthly_cost,minute_cost\n+81312345678,JP,813,true,false,1,1\n"
    )
    form = aiohttp.FormData()
    form.add_field("csrf", (await client.get("/console/operator/numbers")).csrf)
    form.add_field("file", good, filename="n.csv", content_type="text/csv")
    page = await client.post("/console/operator/numbers", form)
    assert page.status == 200 and "1 created" in page.text and "+81312345678" in page.text
    # Usage as CSV: one row per account, a name that looks like a formula is defused.
    await gw.app[MESSAGES].create(OutboundRequest(customer.account.id, "SENDER", CUSTOMER, "x"))
    month = datetime.now(UTC).strftime("%Y-%m")
    async with client.http.get(f"{gw.base_url}/console/operator/usage.csv?month={month}") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(await r.text())))
    by_sid = {row["sid"]: row for row in rows}
    assert (
        by_sid[customer.account.sid]["messages"] == "1"
        and by_sid[customer.account.sid]["sms_cost"] == "9.5000"  # the +8190 price
    )
    assert by_sid[new_sid[1]]["name"].startswith("'=")
    assert (await client.get("/console/operator/usage?month=2026-13")).status == 404


# -- the action_url test ------------------------------------------------------------------------------


async def test_testing_an_action_url_shows_the_script_or_its_errors(
    gw: Gateway, client: ConsoleClient
) -> None:
    script = {"text": 'say en "Hello"\nplayback https://example.com/a.wav'}
    seen: list[dict[str, str]] = []

    async def actions(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        return web.Response(text=script["text"], content_type="text/plain")

    app = web.Application()
    app.router.add_get("/actions", actions)
    async with serve_app(app) as base:
        creds = await gw.account()
        uid = await take_number(gw, creds, A_DIN, "din")
        await gw.app[NUMBERS].set_action_url(creds.account.id, "din", uid, f"{base}/actions")
        await client.login(creds)
        page = await client.submit("/console/numbers", f"/console/numbers/din/{uid}/test", {})
        assert page.status == 200 and "The script parses: 2 actions" in page.text
        assert seen == [{"caller": A_DIN, "recipient": A_DIN}]
        script["text"] = 'say en "Hello"\nsay en "unterminated'
        page = await client.submit("/console/numbers", f"/console/numbers/din/{uid}/test", {})
        assert re.search(r"line 2, column \d+: ", page.text), page.text[-1500:]
        # The same egress policy as a call: a private address is refused, and says no more.
        page = await client.submit(
            "/console/numbers", f"/console/numbers/din/{uid}", {"action_url": "http://10.1.2.3/x"}
        )
        assert page.status == 400 and "action_url" in page.text
        # Where call events go is set on the same form (an empty field leaves a URL as it is).
        page = await client.submit(
            "/console/numbers", f"/console/numbers/din/{uid}", {"status_url": f"{base}/events"}
        )
        assert page.status == 200 and f"{base}/events" in page.text
        rows = await gw.sql(
            "SELECT action_url, status_url FROM number_subscriptions WHERE account_id = :a",
            a=creds.account.id,
        )
        assert rows == [(f"{base}/actions", f"{base}/events")]


def test_the_operator_password_hash_comes_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("a long operator password\n"))
    assert main(["console", "hash-password"]) == 0
    stored = capsys.readouterr().out.strip()
    assert verify_password("a long operator password", stored)
    cfg = Config()
    cfg.console.operator_password_hash = stored
    create_app(cfg)
    cfg.console.operator_password_hash = "hunter2"  # a password where its hash belongs
    with pytest.raises(ConfigError, match=r"console\.operator_password_hash"):
        create_app(cfg)


async def test_a_messages_timeline_shows_each_callback_attempt(
    gw: Gateway, client: ConsoleClient, receiver: Any
) -> None:
    """A receiver that fails once, then takes it: the failed attempt with its HTTP status and
    next try, then the delivery. A receiver that never answers HTTP: no transport detail is
    shown to the tenant (the operator log has it)."""
    creds = await gw.account()
    receiver.script["/status"] = [500]
    closed = f"http://127.0.0.1:{free_port()}/status"
    ok = await gw.app[MESSAGES].create(
        OutboundRequest(creds.account.id, "SENDER", CUSTOMER, "hi", callbackurl=receiver.url("/status"))
    )
    down = await gw.app[MESSAGES].create(
        OutboundRequest(creds.account.id, "SENDER", CUSTOMER, "hi", callbackurl=closed)
    )

    async def settled() -> bool:
        rows = await gw.sql("SELECT status FROM webhook_deliveries WHERE ref = :r", r=ok)
        tried = await gw.sql("SELECT max(attempts) FROM webhook_deliveries WHERE ref = :r", r=down)
        return bool(rows) and all(s == "DONE" for (s,) in rows) and (tried[0][0] or 0) >= 1

    await wait_for(settled, timeout=20)
    await client.login(creds)
    text = (await client.get(f"/console/messages/{ok}")).text
    assert re.search(r"Attempt 1: HTTP 500; next try at \d{4}-", text), text[-2000:]
    assert "HTTP 200, delivered" in text
    text = (await client.get(f"/console/messages/{down}")).text
    assert "no HTTP answer" in text and "Error" not in text and "Connect" not in text


# -- SMPP credentials ---------------------------------------------------------------------------


def smpp_bind(port: int, system_id: str, password: str) -> int:
    """A transceiver bind with smpplib (not our code): its status, 0 when bound."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=5)
    client.connect()
    try:
        client.bind_transceiver(system_id=system_id, password=password)
        client.unbind()
    except smpplib.exceptions.PDUError as exc:
        return int(exc.args[1])
    finally:
        client.disconnect()
    return 0


async def test_the_operator_issues_rotates_and_revokes_smpp_credentials(clean_db: str, sim_smsc: Any) -> None:
    """The account page: a new pair whose password is shown once and binds over SMPP; rotating
    stops the old one binding, revoking every one; a customer session and a form without its
    token change nothing; the password's hash is never on a page."""
    cfg = with_operator(gateway_config(clean_db, sim_smsc.host, sim_smsc.port))
    cfg.smpp_server.enabled, cfg.smpp_server.port = True, free_port()
    gw = await start_gateway(cfg)
    client, cust = ConsoleClient(gw), ConsoleClient(gw)
    try:
        creds = await gw.account(name="esme")
        page_path = f"/console/operator/accounts/{creds.account.sid}"
        issue, revoke = page_path + "/smpp/issue", page_path + "/smpp/revoke"
        stored = "SELECT system_id, password_hash FROM smpp_credentials"

        await cust.login(creds)
        assert (await cust.get(page_path)).url.endswith("/console/operator/login")
        token = (await cust.get("/console/overview")).csrf
        for path in (issue, revoke):
            assert (await cust.post(path, {"csrf": token})).status == 403
        assert await gw.sql(stored) == []

        await client.operator_login()
        page = await client.get(page_path)
        assert "cannot bind to the SMPP server" in page.text
        for data in ({}, {"csrf": "forged"}):
            assert (await client.post(issue, data)).status == 403
        assert await gw.sql(stored) == []

        async def issued() -> tuple[str, str, str]:
            page = await client.submit(page_path, issue, {})
            system_id = re.search(r'id="new-system-id">(\w+)<', page.text)
            password = re.search(r'id="new-smpp-password">(\w+)<', page.text)
            assert page.status == 200 and system_id and password, page.text[-2000:]
            [(in_db, digest)] = await gw.sql(stored)
            assert in_db == system_id[1] and digest not in page.text and password[1] not in digest
            return system_id[1], password[1], page.text

        first_id, first_password, _ = await issued()
        port = cfg.smpp_server.port
        assert await asyncio.to_thread(smpp_bind, port, first_id, first_password) == 0
        page = await client.get(page_path)  # shown once: the next page has the system_id only
        assert first_id in page.text and first_password not in page.text and "Rotate" in page.text

        second_id, second_password, _ = await issued()
        assert second_id != first_id
        refused = smpplib.consts.SMPP_ESME_RINVPASWD
        assert await asyncio.to_thread(smpp_bind, port, first_id, first_password) == refused
        assert await asyncio.to_thread(smpp_bind, port, second_id, second_password) == 0

        page = await client.submit(page_path, revoke, {})
        assert page.status == 200 and "cannot bind to the SMPP server" in page.text
        assert await gw.sql(stored) == []
        assert await asyncio.to_thread(smpp_bind, port, second_id, second_password) == refused
        unknown = "/console/operator/accounts/" + "0" * 32
        for path in (unknown + "/smpp/issue", unknown + "/smpp/revoke"):
            assert (await client.post(path, {"csrf": page.csrf})).status == 404
    finally:
        await client.close()
        await cust.close()
        await gw.runner.cleanup()


# -- SMSC binds ---------------------------------------------------------------------------------


async def test_the_smsc_binds_page_shows_a_bind_going_down_from_the_database(
    clean_db: str, sim_smsc: Any
) -> None:
    """The page lists the binds the node wrote to smsc_binds: bound, then down once the SMSC
    is gone (written at the change, not at the next report); a clean stop removes them."""
    gw = await start_gateway(
        with_operator(gateway_config(clean_db, sim_smsc.host, sim_smsc.port, smpp__bind_report_seconds=60.0))
    )
    client = ConsoleClient(gw)
    node = gw.app[NODE_ID]
    try:
        await client.operator_login()
        await wait_for(lambda: has(bind_states(client), {(node, "default#1"): "bound"}))
        assert "(this node)" in (await client.get("/console/operator/smsc")).text
        [(connector, mode, peer, bound, up_since)] = await gw.sql(
            "SELECT connector, mode, peer, bound, since FROM smsc_binds WHERE node = :n", n=node
        )
        assert (connector, mode, peer, bound) == (
            "default",
            "transceiver",
            f"{sim_smsc.host}:{sim_smsc.port}",
            True,
        )
        await sim_smsc.stop()
        await wait_for(lambda: has(bind_states(client), {(node, "default#1"): "down"}))
        [(bound, down_since)] = await gw.sql("SELECT bound, since FROM smsc_binds WHERE node = :n", n=node)
        assert not bound and down_since != up_since
    finally:
        await client.close()
        await gw.runner.cleanup()
    assert await sql(clean_db, "SELECT bind FROM smsc_binds") == []
