"""Tenant isolation across every resource, over HTTP against a real gateway.

Account A gets one of everything the API can make: a freeform message with a tracked link, a
template and a template message, a SIN subscription with an action_url and an auto-reply
rule, an MO to it (over SMPP from the SMSC peer) and a reply, an opt-out (STOP), a DIN
subscription, an inbound call that leaves a voicemail (FastAGI stand-in) and an outbound call
(AMI stand-in). Account B, with its own SIN, DIN, template, messages and MO, then tries every
route with a path parameter on A's ids, with every method: the answer must be 404 (401 for
the Sinch routes with A's service plan in the path, which is the auth code's answer), and
exactly what B gets for an id that does not exist (no existence oracle). Every list B can
read (with filters) must hold none of A's ids, numbers or texts; B cannot subscribe A's SIN
or DIN; A's view of everything is the same before and after; A's opt-out list does not bind
B; MO to A's SIN reaches only A's webhook.

A number changing hands (A unsubscribes, B subscribes) takes nothing of A's along: A's late
webhook reply and the reply API no longer send from it, and a voicemail left during the
hand-over is A's and is not announced at B's voicemail_url.

The route list comes from the app's router: a route with a path parameter that is not in
OWNED (or PUBLIC_DYNAMIC) fails the test, as does a plain route that is not classified.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest_asyncio
from aiohttp import web

from gateway.app import FASTAGI, create_app
from gateway.config import Config
from gateway.keys import NUMBERS, TEMPLATES
from gateway.services.accounts import NewCredentials
from gateway.services.number_import import parse_numbers_csv
from gateway.voice.outbound import OUTBOUND
from smpp.encoding import decode_short_message, encode_gsm7
from tests.conftest import (
    Gateway,
    ami_gateway_config,
    basic,
    gateway_config,
    serve_app,
    start_gateway,
    wait_for,
)
from tests.peers.ami_server import AmiServer
from tests.peers.asterisk_agi import CallScenario, fastagi_call
from tests.webhook_receiver import Hit, Receiver

A_SIN, B_SIN, SPARE_SIN = "+81311110001", "+81311110002", "+81311110009"
A_DIN, B_DIN, SPARE_DIN = "+81322220001", "+81322220002", "+81322220009"
CUSTOMER = "+819011112222"  # writes to both SINs
OPTED = "+819033334444"  # sends STOP to A's SIN, then writes to B's
CALLER = "+819012345678"
A_BATCH_TO, B_BATCH_TO = "+819055556666", "+819077778888"  # each tenant's batch recipient
MARK = "ALPHA7F3"  # in A's texts only: must never show up in anything B reads
INVENTORY = f"""number,country_code,prefix,sms,voice,monthly_cost,minute_cost
{A_SIN},JP,813,true,false,100,0
{B_SIN},JP,813,true,false,100,0
{SPARE_SIN},JP,813,true,false,100,0
{A_DIN},JP,813,false,true,1000,3.5
{B_DIN},JP,813,false,true,1000,3.5
{SPARE_DIN},JP,813,false,true,1000,3.5
"""
AMI_SECRET = "s3cret"
HIJACK = "@hijack"  # in a body: the caller's own webhook URL (B: /hijack, which must stay silent)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")


# -- the route table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Owned:
    """A route whose path parameters name tenant data: the kind of id in each parameter, and
    the body the owner would send for each method that takes one (so that a 404 can only come
    from the ownership check, never from validation)."""

    params: dict[str, str]
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)


_TEMPLATE_SEND = {"sender": "SENDER", "recipient": CUSTOMER, "variables": {"name": "x"}}
_BATCH = {"from": "SENDER", "to": [CUSTOMER], "body": "taken", "send_at": "2099-01-01T00:00:00Z"}
OWNED: dict[str, Owned] = {
    "/sms/messages/{msgid}": Owned({"msgid": "message"}),
    "/sms/messages/{msgid}/": Owned({"msgid": "message"}),
    "/sms/templates/messages/{msgid}": Owned({"msgid": "template_message"}),
    "/sms/templates/messages/{msgid}/": Owned({"msgid": "template_message"}),
    "/sms/templates/{uid}": Owned({"uid": "template"}),
    "/sms/templates/{uid}/": Owned(
        {"uid": "template"}, {"PUT": {"name": "taken", "content": "Taken {name}"}}
    ),
    "/sms/templates/{uid}/messages/": Owned({"uid": "template"}, {"POST": _TEMPLATE_SEND}),
    "/sms/sins/subscriptions/{uid}": Owned({"uid": "sin"}),
    "/sms/sins/subscriptions/{uid}/": Owned({"uid": "sin"}, {"POST": {"action_url": HIJACK}}),
    "/sms/sins/subscriptions/{uid}/autoreplies": Owned({"uid": "sin"}),
    "/sms/sins/subscriptions/{uid}/autoreplies/": Owned(
        {"uid": "sin"}, {"POST": {"match": "keyword", "pattern": "taken", "reply": "taken"}}
    ),
    "/sms/sins/subscriptions/{uid}/autoreplies/{rule_id}/": Owned({"uid": "sin", "rule_id": "rule"}),
    "/sms/inbounds/{uid}": Owned({"uid": "inbound"}),
    "/sms/inbounds/{uid}/": Owned({"uid": "inbound"}),
    "/sms/inbounds/{uid}/reply/": Owned({"uid": "inbound"}, {"POST": {"message": "taken"}}),
    "/xms/v1/{plan}/inbounds": Owned({"plan": "plan"}),
    "/xms/v1/{plan}/inbounds/{uid}": Owned({"plan": "plan", "uid": "inbound"}),
    "/xms/v1/{plan}/batches": Owned({"plan": "plan"}, {"POST": _BATCH}),
    "/xms/v1/{plan}/batches/dry_run": Owned({"plan": "plan"}, {"POST": _BATCH}),
    "/xms/v1/{plan}/batches/{batch_id}": Owned(
        {"plan": "plan", "batch_id": "batch"}, {"POST": {"body": "taken"}, "PUT": _BATCH}
    ),
    "/xms/v1/{plan}/batches/{batch_id}/delivery_report": Owned({"plan": "plan", "batch_id": "batch"}),
    "/xms/v1/{plan}/batches/{batch_id}/delivery_report/{recipient}": Owned(
        {"plan": "plan", "batch_id": "batch", "recipient": "batch_recipient"}
    ),
    "/xms/v1/{plan}/delivery_reports": Owned({"plan": "plan"}),
    "/voice/dins/subscriptions/{uid}": Owned({"uid": "din"}),
    "/voice/dins/subscriptions/{uid}/": Owned(
        {"uid": "din"}, {"POST": {"action_url": HIJACK, "voicemail_url": HIJACK, "status_url": HIJACK}}
    ),
    "/voice/calls/{callid}": Owned({"callid": "call"}),  # inbound calls and outbound call status
    "/voice/calls/{callid}/": Owned({"callid": "call"}),
    "/voice/voicemails/{vid}": Owned({"vid": "voicemail"}),
    "/voice/voicemails/{vid}/": Owned({"vid": "voicemail"}),
    "/voice/voicemails/{vid}/audio": Owned({"vid": "voicemail"}),
    "/voice/recordings/{rid}": Owned({"rid": "recording"}),
    "/voice/recordings/{rid}/": Owned({"rid": "recording"}),
    "/voice/recordings/{rid}/audio": Owned({"rid": "recording"}),
}
PUBLIC_DYNAMIC = {"/l/{code}": "tracked-link redirect: public by design, the code is the secret"}

# Plain GET routes listing tenant data: the query strings B tries ({today}, {a_sin} filled in).
TENANT_LISTS: dict[str, tuple[str, ...]] = {
    "/sms/messages/": ("", "?sent_date={today}", "?sent_date>={today}", "?sent_date<={today}"),
    "/sms/templates/": ("",),
    "/sms/sins/subscriptions": ("",),
    "/sms/sins/subscriptions/": ("",),
    "/sms/inbounds/": ("", "?to={a_sin}", "?start_date=2000-01-01T00:00:00Z&page_size=100"),
    "/voice/dins/subscriptions": ("",),
    "/voice/dins/subscriptions/": ("",),
    "/voice/calls/": ("",),
    "/voice/voicemails/": ("",),
    "/voice/recordings/": ("",),
}
# The shared inventory: A's (taken) numbers must not be offered.
INVENTORY_LISTS: dict[str, tuple[str, ...]] = {
    p: ("", "?country=JP", "?prefix=813", "?prefix=8131111000")
    for p in ("/sms/sins", "/sms/sins/", "/voice/dins", "/voice/dins/")
}
# Plain POSTs create the caller's own rows; what the test does with each.
CREATES = {
    "/sms/messages/": "B sends, also to the number that opted out from A",
    "/sms/templates/": "B creates its own template",
    "/sms/sins/subscriptions/": "B subscribes its SIN; A's SIN is refused",
    "/voice/dins/subscriptions/": "B subscribes its DIN; A's DIN is refused",
    "/voice/simple/playbacks/": "A places the outbound call; its callid is tried on /voice/calls/",
}
NOT_TENANT = {"/", "/openapi.json", "/docs", "/metrics", "/healthz", "/readyz"}  # still scanned for A's ids


def route_table(app: web.Application) -> dict[str, set[str]]:
    """Every route of the app: canonical path -> methods."""
    out: dict[str, set[str]] = {}
    for route in app.router.routes():
        assert route.resource is not None
        out.setdefault(route.resource.canonical, set()).add(route.method)
    return out


CONSOLE = "/console"  # the web console's pages: tests/test_console.py holds their own table


def coverage_problems(routes: dict[str, set[str]]) -> list[str]:
    problems = []
    for path, methods in sorted(routes.items()):
        if path == CONSOLE or path.startswith(CONSOLE + "/"):
            continue
        params = re.findall(r"\{(\w+)", path)
        if params:
            if path in PUBLIC_DYNAMIC:
                continue
            entry = OWNED.get(path)
            if entry is None:
                problems.append(f"{sorted(methods)} {path}: not in OWNED (which ids are in the path?)")
                continue
            if set(entry.params) != set(params):
                problems.append(f"{path}: OWNED names {sorted(entry.params)}, the route {sorted(params)}")
            for m in methods - {"GET", "HEAD", "DELETE"} - set(entry.bodies):
                problems.append(f"{m} {path}: no body in OWNED (what would the owner send?)")
            continue
        for m in methods:
            known = (
                path in NOT_TENANT
                or (m in ("GET", "HEAD") and (path in TENANT_LISTS or path in INVENTORY_LISTS))
                or (m == "POST" and path in CREATES)
            )
            if not known:
                problems.append(f"{m} {path}: not classified (TENANT_LISTS, INVENTORY_LISTS, CREATES?)")
    for path in [*OWNED, *PUBLIC_DYNAMIC, *TENANT_LISTS, *INVENTORY_LISTS, *CREATES, *NOT_TENANT]:
        if path not in routes:
            problems.append(f"{path}: in the table but not routed (stale entry)")
    return problems


def test_every_route_is_in_the_isolation_table() -> None:
    assert coverage_problems(route_table(create_app(Config()))) == []


# -- helpers ----------------------------------------------------------------------------------


@dataclass
class Resp:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Tenant:
    creds: NewCredentials
    name: str
    ids: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids, primary first

    @property
    def sid(self) -> str:
        return self.creds.account.sid

    def add(self, kind: str, value: str) -> str:
        self.ids.setdefault(kind, []).append(value)
        return value


@dataclass
class Api:
    gw: Gateway
    http: aiohttp.ClientSession
    receiver: Receiver

    async def call(
        self, method: str, path: str, headers: dict[str, str], body: Any = None, *, webhook: str = ""
    ) -> Resp:
        if body is not None and webhook:
            body = {k: self.receiver.url(webhook) if v == HIJACK else v for k, v in body.items()}
        async with self.http.request(method, self.gw.base_url + path, headers=headers, json=body) as r:
            return Resp(r.status, await r.read())

    async def ok(self, t: Tenant, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = await self.call(method, path, self.gw.auth(t.creds), body)
        assert r.status == status, (method, path, r.status, r.body)
        return r.json()


def auths(path: str, t: Tenant) -> list[dict[str, str]]:
    """Basic everywhere; the Sinch-style routes take the bearer token too."""
    out = [basic(t.sid, t.creds.auth_token)]
    if path.startswith("/xms/"):
        out.append({"Authorization": f"Bearer {t.creds.auth_token}"})
    return out


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def markers(a: Tenant) -> set[str]:
    """What only A's data contains: every id, A's numbers (with and without +), A's text mark."""
    out = {MARK, a.sid, A_SIN, A_SIN[1:], A_DIN, A_DIN[1:]}
    for values in a.ids.values():
        out.update(values)
    return out


def leaked(body: bytes, marks: Iterable[str]) -> list[str]:
    text = body.decode("utf-8", "replace")
    return sorted(m for m in marks if m in text)


async def mo(peer: Any, source: str, dest: str, text: str) -> None:
    await peer.inject_mo(source.lstrip("+"), dest.lstrip("+"), encode_gsm7(text), data_coding=0)


def form(hit: Hit) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(hit.body.decode()).items()}


def signed_by(secret: str, hit: Hit) -> bool:
    ts = hit.headers["X-Gateway-Timestamp"]
    mac = hmac.new(secret.encode(), ts.encode() + hit.body, hashlib.sha256).hexdigest()
    return hit.headers["X-Gateway-Signature"] == mac


async def nth_hit(receiver: Receiver, path: str, n: int) -> Hit:
    async def ready() -> Hit | None:
        got = receiver.on(path)
        return got[n - 1] if len(got) >= n else None

    hit: Hit = await wait_for(ready)
    return hit


# -- the action_url server for A's DIN ---------------------------------------------------------


@pytest_asyncio.fixture
async def actions() -> AsyncIterator[str]:
    async def script(request: web.Request) -> web.Response:
        script = f'record\nvoicemail say en "{MARK} leave a message"'
        return web.Response(text=script, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/actions", script)
    async with serve_app(app) as base_url:
        yield f"{base_url}/actions"


@pytest_asyncio.fixture
async def rig(clean_db: str, sim_smsc: Any) -> AsyncIterator[tuple[Gateway, AmiServer]]:
    ami = AmiServer(secret=AMI_SECRET)
    await ami.start()
    cfg = ami_gateway_config(clean_db, sim_smsc, ami)
    gw = await start_gateway(cfg)
    ami.agi_port = gw.app[FASTAGI].port
    try:
        yield gw, ami
    finally:
        await gw.runner.cleanup()
        await ami.close()


# -- setting up the tenants -------------------------------------------------------------------


async def subscribe(api: Api, t: Tenant, kind: str, number: str, **urls: str) -> str:
    base = "/sms/sins" if kind == "sin" else "/voice/dins"
    offered = await api.ok(t, "GET", f"{base}/?prefix=813")
    uid: str = next(n[f"{kind}_uid"] for n in offered if "+" + n[kind] == number)
    await api.ok(t, "POST", f"{base}/subscriptions/", {f"{kind}_uid": uid}, status=201)
    if urls:
        await api.ok(t, "POST", f"{base}/subscriptions/{uid}/", urls)
    return t.add(kind, uid)


async def add_rule(api: Api, t: Tenant, keyword: str, reply: str) -> None:
    rule = {"match": "keyword", "pattern": keyword, "reply": reply}
    added = await api.ok(t, "POST", f"/sms/sins/subscriptions/{t.ids['sin'][0]}/autoreplies/", rule, 201)
    t.add("rule", added["rule_id"])


async def template_and_message(api: Api, t: Tenant, content: str, callback: str) -> None:
    tpl = await api.ok(t, "POST", "/sms/templates/", {"name": f"{t.name}-tpl", "content": content}, 201)
    t.add("template", tpl["template_id"])
    await api.gw.app[TEMPLATES].set_status(tpl["template_id"], "APPROVED")  # the operator's CLI
    send = {
        "sender": t.name.upper(),
        "recipient": CUSTOMER,
        "variables": {"name": "x"},
        "callbackurl": callback,
    }
    [sent] = await api.ok(t, "POST", f"/sms/templates/{tpl['template_id']}/messages/", send, 201)
    t.add("template_message", sent["msgid"])
    t.add("message", sent["msgid"])


async def set_up_a(api: Api, a: Tenant, peer: Any, ami: AmiServer, action_url: str) -> None:
    rcv = api.receiver
    await subscribe(api, a, "sin", A_SIN, action_url=rcv.url("/a-mo"))
    await add_rule(api, a, "hours", f"Open 9-17 {MARK}")
    await subscribe(api, a, "din", A_DIN, action_url=action_url, voicemail_url=rcv.url("/a-vm"))
    await template_and_message(api, a, f"Hi {{name}} {MARK}", rcv.url("/a-cb"))
    freeform = {
        "message": f"{MARK} see https://example.com/offer",
        "recipient": CUSTOMER,
        "sender": "ALPHA",
        "track_link": "true",
        "callbackurl": rcv.url("/a-cb"),
        "lt_callbackurl": rcv.url("/a-lt"),
    }
    a.add("message", (await api.ok(a, "POST", "/sms/messages/", freeform, 201))[0]["msgid"])

    await mo(peer, CUSTOMER, A_SIN, f"question {MARK}")
    inbound = a.add("inbound", form(await nth_hit(rcv, "/a-mo", 1))["id"])
    reply = await api.ok(a, "POST", f"/sms/inbounds/{inbound}/reply/", {"message": f"answer {MARK}"}, 201)
    a.add("message", reply[0]["msgid"])
    await mo(peer, OPTED, A_SIN, "STOP")
    a.add("inbound", form(await nth_hit(rcv, "/a-mo", 2))["id"])
    # A's own opt-out list holds: both ways of queueing a message refuse the number.
    for extra in ({}, {"track_link": "true"}):
        body = {"message": f"{MARK} https://example.com/x", "recipient": OPTED, "sender": "ALPHA", **extra}
        r = await api.call("POST", "/sms/messages/", api.gw.auth(a.creds), body)
        assert r.status == 400 and r.json() == {"recipient": ["Recipient has opted out"]}, body

    # An inbound call to A's DIN that leaves a voicemail.
    t = await fastagi_call(
        "127.0.0.1", api.gw.app[FASTAGI].port, CallScenario(dnid=A_DIN, callerid=CALLER, record_seconds=1.0)
    )
    assert "RECORD FILE" in t.verbs, t.verbs

    async def voicemail() -> Any:
        return await api.ok(a, "GET", "/voice/voicemails/")

    [vm] = await wait_for(voicemail)
    a.add("voicemail", vm["voicemail_id"])
    [recording] = await api.ok(a, "GET", "/voice/recordings/")
    a.add("recording", recording["recording_id"])
    a.add("call", vm["callid"])
    await nth_hit(rcv, "/a-vm", 1)

    # An outbound call, originated over AMI and played over FastAGI.
    assert await api.gw.app[OUTBOUND].ami.wait_connected(10)
    call = {
        "caller": A_DIN,
        "recipient": CUSTOMER,
        "tts_message": f"Hello {MARK}",
        "tts_lang": "en",
        "callbackurl": rcv.url("/a-call"),
    }
    callid = a.add("call", (await api.ok(a, "POST", "/voice/simple/playbacks/", call, 201))[0]["callid"])
    await ami.finished_calls(1)

    async def settled() -> bool:
        calls = await api.ok(a, "GET", "/voice/calls/")
        msgs = await api.ok(a, "GET", "/sms/messages/")
        done = {c["callid"]: c["status"] for c in calls}
        return (
            done.get(callid) == "COMPLETED"
            and all(c["end_time"] for c in calls)
            and all(m["status"] == "DELIVERED" for m in msgs)
        )

    await wait_for(settled)
    for m in await api.ok(a, "GET", "/sms/messages/"):  # the STOP confirmation and the rule's are A's too
        if m["msgid"] not in a.ids["message"]:
            a.add("message", m["msgid"])
    assert len(a.ids["message"]) == 4 and len(a.ids["call"]) == 2
    a.add("plan", a.sid)
    await send_batch(api, a, f"Later {MARK}", A_BATCH_TO)


async def send_batch(api: Api, t: Tenant, text: str, to: str) -> None:
    """A Sinch batch due much later: it can still be updated, replaced and cancelled."""
    batch = {"from": "SINCH", "to": [to], "body": text, "send_at": "2099-01-01T00:00:00Z"}
    t.add("batch", (await api.ok(t, "POST", f"/xms/v1/{t.sid}/batches", batch, 201))["id"])
    t.add("batch_recipient", to[1:])


async def set_up_b(api: Api, b: Tenant, peer: Any) -> None:
    rcv = api.receiver
    await subscribe(api, b, "sin", B_SIN, action_url=rcv.url("/b-mo"))
    await add_rule(api, b, "beta", "beta rule")
    await subscribe(api, b, "din", B_DIN)
    await template_and_message(api, b, "Hello {name} from beta", rcv.url("/b-cb"))
    await mo(peer, OPTED, B_SIN, "hello beta")
    b.add("inbound", form(await nth_hit(rcv, "/b-mo", 1))["id"])
    b.add("plan", b.sid)
    await send_batch(api, b, "beta later", B_BATCH_TO)


# -- snapshots of A's view --------------------------------------------------------------------


async def snapshot(api: Api, a: Tenant) -> dict[str, Any]:
    """Everything A can read: every GET route of OWNED with each of A's ids, and every list.
    Each answer must be 200 (this is also the check that the ids in the table are A's)."""
    out: dict[str, Any] = {}
    routes = route_table(api.gw.app)
    for path, entry in OWNED.items():
        if "GET" not in routes[path]:
            continue
        for values in combos(entry, a, None):
            url = fill(path, values)
            for h in auths(path, a):
                r = await api.call("GET", url, h)
                assert r.status == 200, (url, r.status, r.body)
                key = f"{url} {h['Authorization'].split()[0]}"
                out[key] = hashlib.sha256(r.body).hexdigest() if path.endswith("/audio") else r.json()
    for path, queries in TENANT_LISTS.items():
        for q in queries:
            url = path + q.format(today=datetime.now(UTC).date(), a_sin=A_SIN)
            out[url] = await api.ok(a, "GET", url)
    return out


def combos(entry: Owned, owner: Tenant, other: Tenant | None) -> list[dict[str, str]]:
    """Parameter values: every mix of the owner's ids and the other tenant's, with at least one
    of the owner's (just the owner's when `other` is None)."""
    names = list(entry.params)
    choices = []
    for n in names:
        kind = entry.params[n]
        mine = [(v, True) for v in owner.ids[kind]]
        theirs = [(v, False) for v in (other.ids.get(kind, [])[:1] if other and len(names) > 1 else [])]
        choices.append(mine + theirs)
    return [
        {n: v for n, (v, _) in zip(names, pick, strict=True)}
        for pick in itertools.product(*choices)
        if any(owned for _, owned in pick)
    ]


# -- the test ---------------------------------------------------------------------------------


async def test_tenants_are_isolated_on_every_route(
    rig: tuple[Gateway, AmiServer],
    sim_smsc: Any,
    receiver: Receiver,
    actions: str,
    http: aiohttp.ClientSession,
) -> None:
    gw, ami = rig
    problems = coverage_problems(route_table(gw.app))
    assert problems == [], "\n".join(problems)
    api = Api(gw, http, receiver)
    await gw.app[NUMBERS].import_numbers(parse_numbers_csv(INVENTORY))
    a = Tenant(await gw.account(name="alpha", freeform=True), "alpha")
    b = Tenant(await gw.account(name="beta", freeform=True), "beta")
    await set_up_a(api, a, sim_smsc, ami, actions)
    before = await snapshot(api, a)
    await set_up_b(api, b, sim_smsc)
    marks = markers(a)

    # 1. Every route with a path parameter, every method, with A's ids (alone, and mixed with
    # B's own): 404, or 401 with A's service plan in the path; the same as for an unknown id.
    tried = 0
    for path, entry in OWNED.items():
        registered = route_table(gw.app)[path]
        for values in combos(entry, a, b):
            bogus = {
                n: secrets.token_hex(16) if v in a.ids[entry.params[n]] else v for n, v in values.items()
            }
            for method in sorted(set(METHODS) | registered):
                body = entry.bodies.get(method)
                if body is None and method in ("POST", "PUT", "PATCH"):
                    body = next(iter(entry.bodies.values()), None)
                if any(entry.params[n] == "plan" and v == a.sid for n, v in values.items()):
                    expected = 401  # auth middleware: the service plan is not this account's
                else:
                    expected = 404 if method in registered else 405
                for h in auths(path, b):
                    got = await api.call(method, fill(path, values), h, body, webhook="/hijack")
                    unknown = await api.call(method, fill(path, bogus), h, body, webhook="/hijack")
                    what = f"{method} {fill(path, values)} ({h['Authorization'].split()[0]})"
                    assert got.status == expected, (what, got.status, got.body)
                    echoed = got.body
                    for n, v in values.items():
                        echoed = echoed.replace(v.encode(), bogus[n].encode())
                    assert (got.status, echoed) == (unknown.status, unknown.body), what
                    tried += 1
    assert tried >= len(OWNED) * len(METHODS)

    # 2. B's own ids on the same GET routes: B's data, none of A's.
    for path, entry in OWNED.items():
        if "GET" in route_table(gw.app)[path] and all(k in b.ids for k in entry.params.values()):
            values = {n: b.ids[k][0] for n, k in entry.params.items()}
            for h in auths(path, b):
                r = await api.call("GET", fill(path, values), h)
                assert r.status == 200 and not leaked(r.body, marks), (path, r.status, leaked(r.body, marks))

    # 3. Every list, with filters: nothing of A's.
    today = datetime.now(UTC).date()
    lists = {**TENANT_LISTS, **INVENTORY_LISTS}
    for path, queries in lists.items():
        for q in queries:
            url = path + q.format(today=today, a_sin=A_SIN)
            r = await api.call("GET", url, gw.auth(b.creds))
            assert r.status == 200 and not leaked(r.body, marks), (url, r.status, leaked(r.body, marks))
            if path in ("/voice/calls/", "/voice/voicemails/", "/voice/recordings/"):
                assert r.json() == [], url  # B has no calls
    for q in ("", f"?to={A_SIN[1:]}", "?start_date=2000-01-01T00:00:00Z&page_size=100"):
        for h in auths("/xms/", b):
            r = await api.call("GET", f"/xms/v1/{b.sid}/inbounds{q}", h)
            assert r.status == 200 and not leaked(r.body, marks), (q, leaked(r.body, marks))
    for q in ("", "?from=ALPHA", "?start_date=2000-01-01T00:00:00Z&page_size=100"):
        for h in auths("/xms/", b):
            r = await api.call("GET", f"/xms/v1/{b.sid}/batches{q}", h)
            assert r.status == 200 and not leaked(r.body, marks), (q, leaked(r.body, marks))
            assert [x["id"] for x in r.json()["batches"]] == ([] if q == "?from=ALPHA" else b.ids["batch"])
    r = await api.call("GET", f"/xms/v1/{b.sid}/batches?from=SINCH", gw.auth(b.creds))
    assert [x["id"] for x in r.json()["batches"]] == b.ids["batch"]
    for q in ("", "?status=Queued", "?start_date=2000-01-01T00:00:00Z&page_size=100"):
        r = await api.call("GET", f"/xms/v1/{b.sid}/delivery_reports{q}", gw.auth(b.creds))
        assert r.status == 200 and not leaked(r.body, marks), (q, leaked(r.body, marks))
        assert [x["batch_id"] for x in r.json()["delivery_reports"]] == b.ids["batch"]
    for path in NOT_TENANT:
        r = await api.call("GET", path, gw.auth(b.creds))
        assert r.status == 200 and not leaked(r.body, marks), (path, leaked(r.body, marks))
    # B's own lists do show B's rows (the lists above were not simply empty).
    listed = await api.ok(b, "GET", "/sms/messages/")  # the batch's recipient too
    assert [m["msgid"] for m in listed if m["sender"] != "SINCH"] == b.ids["message"]
    assert [i["id"] for i in await api.ok(b, "GET", "/sms/inbounds/")] == b.ids["inbound"]
    offered = await api.ok(b, "GET", "/sms/sins/")
    assert ["+" + n["sin"] for n in offered] == [SPARE_SIN]

    # 4. A's SIN and DIN cannot be taken.
    for kind, base in (("sin", "/sms/sins"), ("din", "/voice/dins")):
        r = await api.call(
            "POST", f"{base}/subscriptions/", gw.auth(b.creds), {f"{kind}_uid": a.ids[kind][0]}
        )
        label = kind.upper()
        assert r.status == 400 and r.json() == {f"{kind}_uid": [f"This {label} is not available."]}, r.body

    # 5. A's opt-out list is A's: B reaches the number (freeform, tracked link, template, reply).
    sends = [
        ("/sms/messages/", {"message": "beta news", "recipient": OPTED, "sender": "BETA"}),
        (
            "/sms/messages/",
            {
                "message": "beta https://example.com/b",
                "recipient": OPTED,
                "sender": "BETA",
                "track_link": "true",
            },
        ),
        (
            f"/sms/templates/{b.ids['template'][0]}/messages/",
            {"sender": "BETA", "recipient": OPTED, "variables": {"name": "y"}},
        ),
        (f"/sms/inbounds/{b.ids['inbound'][0]}/reply/", {"message": "beta answer"}),
    ]
    sent = [(await api.ok(b, "POST", path, body, 201))[0]["msgid"] for path, body in sends]

    async def delivered() -> bool:
        rows = {m["msgid"]: m for m in await api.ok(b, "GET", "/sms/messages/")}
        return all(rows[m]["status"] == "DELIVERED" and rows[m]["recipient"] == OPTED for m in sent)

    await wait_for(delivered)

    # 6. A's state is untouched by all of that.
    after = await snapshot(api, a)
    assert after == before

    # 7. MO to A's SIN reaches A's webhook only (and B's hijack URL never heard anything).
    await mo(sim_smsc, CUSTOMER, A_SIN, f"later {MARK}")
    late = form(await nth_hit(receiver, "/a-mo", 3))
    assert late["recipient"] == A_SIN
    assert len(receiver.on("/b-mo")) == 1 and receiver.on("/hijack") == []
    assert late["id"] not in (await api.call("GET", "/sms/inbounds/", gw.auth(b.creds))).body.decode()
    for hit in receiver.hits:
        owner = a if hit.path.startswith("/a-") else b
        assert signed_by(owner.creds.account.webhook_secret, hit), hit.path
        if owner is b:
            assert not leaked(hit.body, marks), (hit.path, leaked(hit.body, marks))

    # 8. And A itself can do everything B was refused (the ids and bodies above were valid).
    mutating = [
        (path, method, entry)
        for path, entry in OWNED.items()
        for method in route_table(gw.app)[path] - {"GET", "HEAD"}
    ]
    # Sends before the PUT (a changed text needs approval again), deletes last, rules first.
    mutating.sort(key=lambda e: ({"POST": 0, "DELETE": 2}.get(e[1], 1), -len(e[2].params)))
    for path, method, entry in mutating:
        values = {n: a.ids[k][0] for n, k in entry.params.items()}
        r = await api.call(
            method, fill(path, values), gw.auth(a.creds), entry.bodies.get(method), webhook="/a-own"
        )
        assert 200 <= r.status < 300, (method, path, r.status, r.body)


# -- a number changing hands --------------------------------------------------------------------


@dataclass
class Gate:
    """A customer endpoint whose answers can be held back: the SIN webhook answers text/plain
    (a reply, the 46elks way), the DIN action_url a voicemail script."""

    base_url: str = ""
    hits: list[str] = field(default_factory=list)
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url + path

    def hold(self, path: str) -> asyncio.Event:
        self.held[path] = asyncio.Event()
        return self.held[path]

    async def arrived(self, path: str, n: int) -> None:
        async def ready() -> bool:
            return self.hits.count(path) >= n

        await wait_for(ready)


@pytest_asyncio.fixture
async def gate() -> AsyncIterator[Gate]:
    g = Gate()

    async def handle(request: web.Request) -> web.Response:
        g.hits.append(request.path)
        event = g.held.pop(request.path, None)
        if event is not None:
            await event.wait()
        return web.Response(text=g.texts[request.path], content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serve_app(app) as g.base_url:
        yield g


async def texts_to(peer: Any, number: str) -> list[tuple[str, str]]:
    """(source, text) of every submit_sm to `number` so far."""
    return [
        (s.source_addr, decode_short_message(s.data_coding, s.esm_class, s.short_message).text)
        for s in await peer.submits()
        if s.destination_addr == number.lstrip("+")
    ]


async def test_a_number_changing_hands_takes_nothing_of_the_old_holder_along(
    clean_db: str, sim_smsc: Any, receiver: Receiver, gate: Gate, http: aiohttp.ClientSession
) -> None:
    # One webhook loop: once a later delivery arrives, the earlier one's reply hook has run.
    gw = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port, webhooks__loops=1))
    try:
        api = Api(gw, http, receiver)
        await gw.app[NUMBERS].import_numbers(parse_numbers_csv(INVENTORY))
        a = Tenant(await gw.account(name="alpha", freeform=True), "alpha")
        b = Tenant(await gw.account(name="beta", freeform=True), "beta")
        sin = await subscribe(api, a, "sin", A_SIN, action_url=gate.url("/a-mo"))
        din = await subscribe(
            api, a, "din", A_DIN, action_url=gate.url("/actions"), voicemail_url=receiver.url("/a-vm")
        )
        gate.texts = {"/a-mo": f"Thanks {MARK}", "/actions": 'voicemail say en "Leave a message"'}

        # While A holds the SIN, its webhook's text answer is a reply from the SIN.
        await mo(sim_smsc, CUSTOMER, A_SIN, "first")

        async def replied() -> bool:
            return (A_SIN[1:], f"Thanks {MARK}") in await texts_to(sim_smsc, CUSTOMER)

        await wait_for(replied)
        [first] = await api.ok(a, "GET", "/sms/inbounds/")

        # The SIN changes hands while A's webhook still works on an MO: A's late answer must
        # not go out from what is now B's number.
        release = gate.hold("/a-mo")
        gate.texts["/a-mo"] = f"Late {MARK}"
        await mo(sim_smsc, CUSTOMER, A_SIN, "second")
        await gate.arrived("/a-mo", 2)
        await api.ok(a, "DELETE", f"/sms/sins/subscriptions/{sin}/")
        await api.ok(b, "POST", "/sms/sins/subscriptions/", {"sin_uid": sin}, status=201)
        await api.ok(b, "POST", f"/sms/sins/subscriptions/{sin}/", {"action_url": receiver.url("/b-mo")})
        release.set()
        await mo(sim_smsc, CUSTOMER, A_SIN, "third")
        assert form(await nth_hit(receiver, "/b-mo", 1))["message"] == "third"
        sent = await texts_to(sim_smsc, CUSTOMER)
        assert (A_SIN[1:], f"Late {MARK}") not in sent, sent
        assert len(await api.ok(a, "GET", "/sms/messages/")) == 1  # the first reply only

        # Nor through the reply API; A keeps its history, B sees none of it.
        r = await api.call("POST", f"/sms/inbounds/{first['id']}/reply/", gw.auth(a.creds), {"message": MARK})
        assert r.status == 403, r.body
        assert len(await api.ok(a, "GET", "/sms/inbounds/")) == 2
        [third] = await api.ok(b, "GET", "/sms/inbounds/")
        assert third["message"] == "third"
        r = await api.call("GET", f"/sms/inbounds/{first['id']}/", gw.auth(b.creds))
        assert r.status == 404

        # The DIN changes hands during a call: A's voicemail is A's, and is not announced to B.
        release = gate.hold("/actions")
        call = asyncio.create_task(
            fastagi_call(
                "127.0.0.1",
                gw.app[FASTAGI].port,
                CallScenario(dnid=A_DIN, callerid=CALLER, record_seconds=1.0),
            )
        )
        await gate.arrived("/actions", 1)
        await api.ok(a, "DELETE", f"/voice/dins/subscriptions/{din}/")
        await api.ok(b, "POST", "/voice/dins/subscriptions/", {"din_uid": din}, status=201)
        await api.ok(b, "POST", f"/voice/dins/subscriptions/{din}/", {"voicemail_url": receiver.url("/b-vm")})
        release.set()
        assert "RECORD FILE" in (await call).verbs

        async def voicemail() -> Any:
            return await api.ok(a, "GET", "/voice/voicemails/")

        [vm] = await wait_for(voicemail)
        assert await api.ok(b, "GET", "/voice/voicemails/") == []
        assert await api.ok(b, "GET", "/voice/calls/") == []
        # The voicemail and its webhook (if any) are written in one transaction.
        urls = [
            u
            for (u,) in await gw.sql(
                "SELECT url FROM webhook_deliveries WHERE ref = :r", r=vm["voicemail_id"]
            )
        ]
        assert receiver.url("/b-vm") not in urls, urls
    finally:
        await gw.runner.cleanup()
