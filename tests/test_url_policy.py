"""Every customer URL under one outbound policy (issue 9 items 1, 2 and 5), over real sockets.

A loopback listener stands in for the operator's internal services: it answers on 127.0.0.1,
127.0.0.2 and ::1 at one port, like an internal service would, with a secret in text/plain. With
loopback refused (the default), no URL field lets a tenant reach it, whether refused at save
time (400 naming the field) or at connect time (a name that resolves to loopback when used).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from gateway.egress.policy import SsrfPolicy
from gateway.keys import NUMBERS
from gateway.services import validation as v
from gateway.services.accounts import NewCredentials
from gateway.services.errors import FieldErrors
from gateway.services.number_import import parse_numbers_csv
from smpp.encoding import decode_short_message
from tests.conftest import Gateway, gateway_config, serve_app, start_gateway, wait_for
from tests.test_inbound import CUSTOMER, SIN, add_sin, mo
from tests.test_ssrf import fake_dns
from tests.test_voice_calls import DIN, call, subscribe

JP = "+818012345678"
SECRET = "db_password=hunter2"
NOT_ALLOWED = ["This URL points to an address that is not allowed."]
INVENTORY = """number,country_code,prefix,sms,voice,monthly_cost,minute_cost
+81312345678,JP,813,false,true,1000,3.5
+81355550000,JP,813,true,false,100,0
"""

# Hosts a tenant may write for "this machine": every one must be refused with loopback refused.
LOOPBACK_FORMS = [
    "0.0.0.0",
    "[::]",
    "0x7f.1",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "127.0.0.2",
    "127.0.0.1",
    "127.0.0.1.",
    "[::1]",
    "localhost",
    "LocalHost.",
    "api.localhost",
    "2130706433",
    "0177.0.0.1",
    "127.1",
]
# Never fetchable, whatever the settings.
ALWAYS_REFUSED = ["2130706433", "0177.0.0.1", "127.1", "0x7f.1", "169.254.169.254", "0.0.0.0", "[::]"]


@dataclass
class Listener:
    """An internal service on loopback: 127.0.0.1, 127.0.0.2 and ::1, one port."""

    port: int = 0
    hits: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append((request.path, dict(request.headers)))
        resp = web.Response(text=SECRET, content_type="text/plain")
        resp.set_cookie("session", f"owner-of-{request.path.strip('/')}")
        return resp


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[Listener]:
    lis = Listener()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", lis.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    first = web.TCPSite(runner, "127.0.0.1", 0)
    await first.start()
    lis.port = first._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    for host in ("127.0.0.2", "::1"):
        await web.TCPSite(runner, host, lis.port).start()
    try:
        yield lis
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def strict(clean_db: str, sim_smsc: Any) -> AsyncIterator[Gateway]:
    """A gateway with the production defaults: loopback (and private ranges) refused."""
    gw = await start_gateway(
        gateway_config(clean_db, sim_smsc.host, sim_smsc.port, outbound_http__allow_loopback=False)
    )
    yield gw
    await gw.runner.cleanup()


# --------------------------------------------------------------------------- save time


@dataclass
class Tenant:
    gw: Gateway
    http: aiohttp.ClientSession
    creds: NewCredentials
    uids: dict[str, str] = field(default_factory=dict)

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, Any]:
        async with self.http.post(
            f"{self.gw.base_url}{path}", data=data, headers=self.gw.auth(self.creds)
        ) as r:
            return r.status, await r.json()

    async def subscription(self, kind: str) -> str:
        """The tenant's one SIN or DIN subscription (subscribed on first use)."""
        if kind not in self.uids:
            base = "/sms/sins" if kind == "sin" else "/voice/dins"
            async with self.http.get(f"{self.gw.base_url}{base}/", headers=self.gw.auth(self.creds)) as r:
                uid = (await r.json())[0][f"{kind}_uid"]
            assert (await self.post(f"{base}/subscriptions/", {f"{kind}_uid": uid}))[0] == 201
            self.uids[kind] = uid
        return self.uids[kind]


async def status_callback(t: Tenant, url: str) -> tuple[int, Any]:
    return await t.post(
        "/sms/messages/", {"message": "x", "recipient": JP, "sender": "DEMO", "callbackurl": url}
    )


async def link_callback(t: Tenant, url: str) -> tuple[int, Any]:
    data = {"message": "See https://example.com/a", "recipient": JP, "sender": "DEMO"}
    return await t.post("/sms/messages/", {**data, "track_link": "true", "lt_callbackurl": url})


async def sin_action_url(t: Tenant, url: str) -> tuple[int, Any]:
    return await t.post(f"/sms/sins/subscriptions/{await t.subscription('sin')}/", {"action_url": url})


async def voicemail_url(t: Tenant, url: str) -> tuple[int, Any]:
    return await t.post(f"/voice/dins/subscriptions/{await t.subscription('din')}/", {"voicemail_url": url})


async def din_action_url(t: Tenant, url: str) -> tuple[int, Any]:
    return await t.post(f"/voice/dins/subscriptions/{await t.subscription('din')}/", {"action_url": url})


async def outbound_callback(t: Tenant, url: str) -> tuple[int, Any]:
    data = {"caller": DIN, "recipient": JP, "tts_message": "hello", "tts_lang": "en", "callbackurl": url}
    return await t.post("/voice/simple/playbacks/", data)


FIELDS: dict[str, tuple[str, Callable[[Tenant, str], Awaitable[tuple[int, Any]]]]] = {
    "status callbackurl": ("callbackurl", status_callback),
    "lt_callbackurl": ("lt_callbackurl", link_callback),
    "SIN action_url": ("action_url", sin_action_url),
    "voicemail_url": ("voicemail_url", voicemail_url),
    "DIN action_url": ("action_url", din_action_url),
    "outbound-call callbackurl": ("callbackurl", outbound_callback),
}


@pytest.mark.parametrize("name", list(FIELDS))
async def test_every_url_field_refuses_loopback_forms_at_save(
    name: str, strict: Gateway, http: aiohttp.ClientSession, listener: Listener
) -> None:
    field_name, submit = FIELDS[name]
    await strict.app[NUMBERS].import_numbers(parse_numbers_csv(INVENTORY))
    tenant = Tenant(strict, http, await strict.account())
    answers = {}
    for host in [*LOOPBACK_FORMS, "169.254.169.254"]:
        status, body = await submit(tenant, f"http://{host}:{listener.port}/hook")
        answers[host] = (status, body.get(field_name) if isinstance(body, dict) else body)
    assert answers == dict.fromkeys(answers, (400, NOT_ALLOWED)), answers
    # Nothing was stored, so nothing is ever sent: the listener sees no request at all.
    assert await strict.sql("SELECT count(*) FROM webhook_deliveries") == [(0,)]
    assert await strict.sql("SELECT count(*) FROM messages") == [(0,)]
    assert await strict.sql("SELECT action_url, voicemail_url FROM number_subscriptions") in (
        [],
        [(None, None)],
    )
    await asyncio.sleep(0.5)
    assert listener.hits == []


@pytest.mark.parametrize("host", ALWAYS_REFUSED)
@pytest.mark.parametrize("allow", [False, True])
def test_never_fetchable_hosts_refused_at_save_whatever_the_settings(host: str, allow: bool) -> None:
    policy = SsrfPolicy(allow_private=allow, allow_loopback=allow)
    for url in (f"http://{host}/", f"https://{host}:8443/x?y=1"):
        with pytest.raises(FieldErrors) as info:
            v.http_url("callbackurl", url, policy)
        assert info.value.body == {"callbackurl": NOT_ALLOWED}


def test_save_time_check_follows_the_settings() -> None:
    open_ = SsrfPolicy(allow_private=True, allow_loopback=True)
    closed = SsrfPolicy(allow_private=False, allow_loopback=False)
    for url in ("http://127.0.0.1:8080/", "http://localhost/", "http://[::1]/", "http://10.0.0.1/"):
        assert v.http_url("callbackurl", url, open_) == url
        with pytest.raises(FieldErrors):
            v.http_url("callbackurl", url, closed)
    # Names are not resolved at save time: the connect-time check covers them.
    assert v.http_url("callbackurl", "https://hooks.example.com/x", closed) == "https://hooks.example.com/x"


# --------------------------------------------------------------------------- connect time


async def _final_webhooks(gw: Gateway, n: int) -> list[Any] | None:
    rows = await gw.sql(
        "SELECT status, attempts, last_status_code, last_error FROM webhook_deliveries ORDER BY id"
    )
    return rows if len(rows) == n and all(r[0] != "PENDING" for r in rows) else None


async def test_name_resolving_to_loopback_at_send_time_is_dropped_not_posted(
    strict: Gateway,
    http: aiohttp.ClientSession,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Saved as a name (no DNS at save time); when the POST is made the name resolves to
    loopback (DNS changed, or always pointed there): refused, dropped at once, never retried."""
    caplog.set_level(logging.WARNING, "gateway.workers.webhook_sender")
    fake_dns(monkeypatch, {"hooks.customer.test": [["127.0.0.1"]]})
    creds = await strict.account()
    status, _ = await status_callback(
        Tenant(strict, http, creds), f"http://hooks.customer.test:{listener.port}/cb?token=abc"
    )
    assert status == 201
    rows = await wait_for(lambda: _final_webhooks(strict, 2), timeout=15)
    # DELIVERING and DELIVERED: both dropped after one attempt, with a generic error.
    assert rows == [("DROPPED", 1, None, "receiver address not allowed")] * 2
    assert listener.hits == []
    reasons = [r.getMessage() for r in caplog.records if "webhook dropped" in r.getMessage()]
    assert len(reasons) == 2 and all("loopback" in r for r in reasons), reasons


async def test_sin_webhook_to_an_internal_service_never_becomes_an_sms(
    strict: Gateway, sim_smsc: Any, listener: Listener
) -> None:
    """A SIN whose action_url points at an internal service (stored before loopback was
    refused): its text/plain answer would have been sent back to the sender as an SMS."""
    creds = await strict.account(name="owner")
    await add_sin(strict, creds, SIN, f"http://127.0.0.1:{listener.port}/mo")
    await mo(sim_smsc, "what is the password?")
    rows = await wait_for(lambda: _final_webhooks(strict, 1), timeout=15)
    await asyncio.sleep(0.5)  # a reply, had there been one, is submitted right after the POST
    submits = await sim_smsc.submits()
    texts = [decode_short_message(s.data_coding, s.esm_class, s.short_message).text for s in submits]
    assert not any("hunter2" in t for t in texts), texts
    assert [s for s in submits if s.destination_addr == CUSTOMER.lstrip("+")] == []
    assert listener.hits == []
    assert rows == [("DROPPED", 1, None, "receiver address not allowed")]


# --------------------------------------------------------------------------- cookies (item 5)


async def test_a_receivers_cookie_never_reaches_another_tenants_callback(
    gateway: Gateway, http: aiohttp.ClientSession, listener: Listener
) -> None:
    """Tenant A's receiver sets a cookie; tenant B's callback to the same host:port carries none
    (a shared jar would hand B's requests A's session, and A the cookies B's receiver sets)."""
    base = f"http://localhost:{listener.port}"  # a name: cookie jars refuse IP-address hosts
    alice, bob = await gateway.account(name="alice"), await gateway.account(name="bob")
    assert (await status_callback(Tenant(gateway, http, alice), f"{base}/alice"))[0] == 201

    async def posted(path: str, n: int) -> list[dict[str, str]] | None:
        got = [h for p, h in listener.hits if p == path]
        return got if len(got) >= n else None

    await wait_for(lambda: posted("/alice", 2))  # DELIVERING and DELIVERED; the first set a cookie
    assert (await status_callback(Tenant(gateway, http, bob), f"{base}/bob"))[0] == 201
    for headers in await wait_for(lambda: posted("/bob", 2)):
        assert "Cookie" not in headers, headers
    assert all("Cookie" not in h for _, h in listener.hits)


# --------------------------------------------------------------------------- call records (item 2)


async def _non_http_port() -> tuple[asyncio.Server, int]:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6 internal-bastion\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Secrets:
    """An HTTP service whose answers are secrets: as a script, as media, in a 404 page."""

    base_url: str = ""
    playlist: str = ""  # the script /playlist answers


@pytest_asyncio.fixture
async def secrets_server() -> AsyncIterator[Secrets]:
    srv = Secrets()

    async def script(request: web.Request) -> web.Response:
        return web.Response(text=f"{SECRET}\n", content_type="text/plain")

    async def playlist(request: web.Request) -> web.Response:
        return web.Response(text=srv.playlist, content_type="text/plain")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="pw=hunter2 <html>", content_type="audio/wav")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text=SECRET)

    app = web.Application()
    app.router.add_get("/script", script)
    app.router.add_get("/playlist", playlist)
    app.router.add_get("/secret.wav", page)
    app.router.add_get("/missing", missing)
    async with serve_app(app) as srv.base_url:
        yield srv


async def _records(gw: Gateway, http: aiohttp.ClientSession, creds: NewCredentials, n: int) -> list[Any]:
    async def ended() -> list[dict[str, Any]] | None:
        async with http.get(f"{gw.base_url}/voice/calls/", headers=gw.auth(creds)) as r:
            rows: list[dict[str, Any]] = await r.json()
        return rows if len(rows) == n and all(c["end_time"] for c in rows) else None

    rows: list[dict[str, Any]] = await wait_for(ended)
    return rows


async def test_call_record_error_does_not_echo_or_tell_ports_apart(
    gateway: Gateway, http: aiohttp.ClientSession, secrets_server: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    banner, non_http = await _non_http_port()
    closed = _closed_port()
    urls = {
        "script": f"{secrets_server.base_url}/script",
        "closed": f"http://127.0.0.1:{closed}/actions",
        "non-http": f"http://127.0.0.1:{non_http}/actions",
        "404": f"{secrets_server.base_url}/missing",
    }
    try:
        din = await subscribe(gateway, http, urls["script"])
        errors, seen = {}, set()
        for i, (what, url) in enumerate(urls.items()):
            async with http.post(
                f"{gateway.base_url}/voice/dins/subscriptions/{din.uid}/",
                data={"action_url": url},
                headers=gateway.auth(din.creds),
            ) as r:
                assert r.status == 200
            await call(gateway, dnid=DIN)
            [new] = [c for c in await _records(gateway, http, din.creds, i + 1) if c["callid"] not in seen]
            seen.add(new["callid"])
            assert new["status"] == "FAILED" and new["actions"] == ["say en"], new
            errors[what] = new["error"]
    finally:
        banner.close()
    assert errors == {
        "script": "invalid script at line 1, column 1",
        "closed": "action_url fetch failed",
        "non-http": "action_url fetch failed",
        "404": "action_url fetch failed: HTTP 404",
    }
    # The operator's log has the detail the tenant does not see.
    text = caplog.text
    assert "hunter2" in text and str(closed) in text and str(non_http) in text


async def test_playback_error_does_not_echo_or_tell_ports_apart(
    gateway: Gateway, http: aiohttp.ClientSession, secrets_server: Secrets
) -> None:
    banner, non_http = await _non_http_port()
    base = secrets_server.base_url
    media = [
        f"http://127.0.0.1:{_closed_port()}/a.wav",
        f"http://127.0.0.1:{non_http}/b.wav",
        f"{base}/secret.wav",
        f"{base}/missing",
    ]
    secrets_server.playlist = "\n".join(f"playback {m}" for m in media)
    try:
        din = await subscribe(gateway, http, f"{base}/playlist")
        await call(gateway, dnid=DIN)
        [rec] = await _records(gateway, http, din.creds, 1)
    finally:
        banner.close()
    assert rec["status"] == "COMPLETED"
    assert rec["error"] == (
        "playback: media fetch failed; playback: media fetch failed; "
        "playback: media is not playable MP3 or WAV audio; playback: media fetch failed: HTTP 404"
    )
    assert "hunter2" not in json.dumps(rec)


async def test_action_url_refused_at_connect_time_reads_the_same(
    strict: Gateway, http: aiohttp.ClientSession, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DIN action_url whose name resolves to loopback when the call comes: not fetched, and
    the record reads like any other failed fetch."""
    fake_dns(monkeypatch, {"ivr.customer.test": [["127.0.0.1"]]})
    din = await subscribe(strict, http, f"http://ivr.customer.test:{listener.port}/actions")
    await call(strict, dnid=DIN)
    [rec] = await _records(strict, http, din.creds, 1)
    assert rec["status"] == "FAILED" and rec["error"] == "action_url fetch failed"
    assert listener.hits == []
