"""Schemathesis against the served OpenAPI document, over every operation the SMS/template test
in tests/test_openapi_metrics_ratelimit.py does not cover: SINs and their auto-reply rules,
inbound SMS (Xoxzo and Sinch style), DINs, call records, voicemails, outbound calls, and the
public routes.

The gateway has real state behind it, so answers are not all 404s: numbers imported and
subscribed, an MO received over SMPP, an inbound call that left a voicemail (FastAGI, as
Asterisk would call), an outbound call placed through the AMI stand-in, a tracked link. Each
operation gets random cases, negative (schema-violating) cases, cases with the real ids and a
well-formed body, and explicit hostile cases random generation would hardly produce (lone
surrogates and NUL in every field, digits outside ASCII, out-of-range dates and ports, broken
charsets, content encodings and multipart bodies, JSON nested past the recursion limit), some
of which must be refused with a 400 naming the field. Every answer must be documented (status,
content type, headers and schema), and none may be a 500.

At the end every operation in the document must have been exercised here or by the SMS/template
test (computed from the document: a new route without coverage fails this test).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from gateway.app import FASTAGI
from gateway.http.routes_outbound import OUTBOUND
from gateway.keys import NUMBERS
from gateway.services.accounts import NewCredentials
from gateway.services.number_import import COLUMNS, parse_numbers_csv
from smpp.encoding import encode_gsm7
from tests.conftest import (
    Gateway,
    ami_gateway_config,
    basic,
    fuzz_examples,
    gateway_config,
    start_gateway,
    wait_for,
)
from tests.peers.ami_server import AmiServer, Plan
from tests.peers.asterisk_agi import CallScenario, fastagi_call
from tests.test_openapi_metrics_ratelimit import SMS_AND_TEMPLATE_PATHS
from tests.webhook_receiver import Receiver

SIN_MAIN, SIN_SCRATCH, SIN_FREE = "+81312345601", "+81312345602", "+81312345603"
DIN_MAIN, DIN_SCRATCH, DIN_FREE = "+81312345678", "+81399990001", "+81399990002"
CUSTOMER = "+819011112222"
CALLER = "+819012345678"
INVENTORY = f"""{",".join(COLUMNS)}
{SIN_MAIN},JP,813,true,false,100,0
{SIN_SCRATCH},JP,813,true,false,100,0
{SIN_FREE},JP,813,true,false,100,0
{DIN_MAIN},JP,813,false,true,1000,3.5
{DIN_SCRATCH},JP,813,false,true,1000,3.5
{DIN_FREE},JP,813,false,true,1000,3.5
"""
AMI_SECRET = "s3cret"
BATCH = {"from": "SINCH", "to": [CUSTOMER], "body": "Hello ${name}", "send_at": "2099-01-01T00:00:00Z"}
# Generated cases per strategy (each operation has 2-8: random, negative, real ids, good bodies);
# raise it for a deeper run, e.g. GWTEST_SCHEMATHESIS_EXAMPLES=100 (~2.5 min per engine).
MAX_EXAMPLES = int(os.environ.get("GWTEST_SCHEMATHESIS_EXAMPLES", "15"))


# Operations that must see at least one 2xx (with the real ids and good bodies they do).
KEY_OPERATIONS = {
    "GET /sms/sins/",
    "POST /sms/sins/subscriptions/",
    "GET /sms/sins/subscriptions/",
    "GET /sms/sins/subscriptions/{uid}/",
    "POST /sms/sins/subscriptions/{uid}/",
    "DELETE /sms/sins/subscriptions/{uid}/",
    "GET /sms/sins/subscriptions/{uid}/autoreplies/",
    "POST /sms/sins/subscriptions/{uid}/autoreplies/",
    "DELETE /sms/sins/subscriptions/{uid}/autoreplies/{rule_id}/",
    "GET /sms/inbounds/",
    "GET /sms/inbounds/{uid}/",
    "POST /sms/inbounds/{uid}/reply/",
    "GET /xms/v1/{plan}/inbounds",
    "GET /xms/v1/{plan}/inbounds/{uid}",
    "POST /xms/v1/{plan}/batches",
    "GET /xms/v1/{plan}/batches",
    "POST /xms/v1/{plan}/batches/dry_run",
    "GET /xms/v1/{plan}/batches/{batch_id}",
    "POST /xms/v1/{plan}/batches/{batch_id}",
    "PUT /xms/v1/{plan}/batches/{batch_id}",
    "DELETE /xms/v1/{plan}/batches/{batch_id}",
    "GET /xms/v1/{plan}/batches/{batch_id}/delivery_report",
    "GET /xms/v1/{plan}/batches/{batch_id}/delivery_report/{recipient}",
    "GET /xms/v1/{plan}/delivery_reports",
    "GET /voice/dins/",
    "POST /voice/dins/subscriptions/",
    "GET /voice/dins/subscriptions/",
    "GET /voice/dins/subscriptions/{uid}/",
    "POST /voice/dins/subscriptions/{uid}/",
    "DELETE /voice/dins/subscriptions/{uid}/",
    "GET /voice/calls/",
    "GET /voice/calls/{callid}/",
    "GET /voice/voicemails/",
    "GET /voice/voicemails/{vid}/",
    "GET /voice/voicemails/{vid}/audio",
    "GET /voice/recordings/",
    "GET /voice/recordings/{rid}/",
    "GET /voice/recordings/{rid}/audio",
    "POST /voice/simple/playbacks/",
    "GET /l/{code}",
    "GET /",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
}


class State:
    """The real ids the cases use."""

    def __init__(self, gw: Gateway, creds: NewCredentials) -> None:
        self.gw = gw
        self.creds = creds
        self.uids: dict[str, str] = {}
        self.rule_id = ""
        self.scratch_rule_id = ""
        self.inbound_id = ""
        self.calls: list[str] = []
        self.voicemail_id = ""
        self.recording_id = ""
        self.link_code = ""
        self.batch_id = ""
        self.report_batch_id = ""  # never changed: its recipient stays CUSTOMER


@pytest_asyncio.fixture
async def ami() -> AsyncIterator[AmiServer]:
    server = AmiServer(secret=AMI_SECRET)
    await server.start()
    yield server
    await server.close()


async def _json(http: aiohttp.ClientSession, method: str, url: str, headers: Any, **kw: Any) -> Any:
    async with http.request(method, url, headers=headers, **kw) as r:
        assert r.status < 300, (method, url, r.status, await r.text())
        return await r.json()


async def seed(
    gw: Gateway, http: aiohttp.ClientSession, sim_smsc: Any, receiver: Receiver, ami: AmiServer
) -> State:
    creds = await gw.account(name="fuzz")
    st = State(gw, creds)
    auth = gw.auth(creds)
    base = gw.base_url
    await gw.app[NUMBERS].import_numbers(parse_numbers_csv(INVENTORY))
    st.uids = {n["number"]: n["uid"] for n in await gw.app[NUMBERS].list_inventory()}
    for kind, base_path, numbers in (
        ("sin", "/sms/sins", (SIN_MAIN, SIN_SCRATCH)),
        ("din", "/voice/dins", (DIN_MAIN, DIN_SCRATCH)),
    ):
        for number in numbers:
            await _json(
                http, "POST", f"{base}{base_path}/subscriptions/", auth, data={f"{kind}_uid": st.uids[number]}
            )
    sin, din = st.uids[SIN_MAIN], st.uids[DIN_MAIN]
    await _json(
        http, "POST", f"{base}/sms/sins/subscriptions/{sin}/", auth, data={"action_url": receiver.url("/mo")}
    )
    rules = f"{base}/sms/sins/subscriptions/{sin}/autoreplies/"
    st.rule_id = (
        await _json(http, "POST", rules, auth, data={"match": "keyword", "pattern": "INFO", "reply": "Hi"})
    )["rule_id"]
    st.scratch_rule_id = (
        await _json(http, "POST", rules, auth, data={"match": "regex", "pattern": "^bye", "reply": "Bye"})
    )["rule_id"]

    # An MO over SMPP, stored for the SIN's owner.
    await sim_smsc.inject_mo(
        CUSTOMER.lstrip("+"), SIN_MAIN.lstrip("+"), encode_gsm7("Hello gateway"), data_coding=0
    )

    async def inbound() -> Any:
        rows = await gw.sql("SELECT uid FROM inbound_messages")
        return rows[0][0] if rows else None

    st.inbound_id = await wait_for(inbound)

    # An inbound call to the DIN that leaves a voicemail.
    receiver.replies["/actions"] = 'record --no-beep\nvoicemail say en "Please leave a message."'
    await _json(
        http,
        "POST",
        f"{base}/voice/dins/subscriptions/{din}/",
        auth,
        data={"action_url": receiver.url("/actions"), "voicemail_url": receiver.url("/vm")},
    )
    scenario = CallScenario(callerid=CALLER, dnid=DIN_MAIN, record_seconds=1.0)
    await fastagi_call("127.0.0.1", gw.app[FASTAGI].port, scenario, timeout=30)

    async def voicemail() -> Any:
        rows = await gw.sql("SELECT uid FROM voicemails")
        return rows[0][0] if rows else None

    st.voicemail_id = await wait_for(voicemail)
    st.recording_id = (await gw.sql("SELECT uid FROM recordings"))[0][0]

    # An outbound call through the AMI stand-in, answered and played out.
    ami.agi_port = gw.app[FASTAGI].port
    assert await gw.app[OUTBOUND].ami.wait_connected(10), gw.app[OUTBOUND].ami.last_error
    placed = await _json(
        http,
        "POST",
        f"{base}/voice/simple/playbacks/",
        auth,
        data={"caller": DIN_MAIN, "recipient": CALLER, "tts_message": "Hello", "tts_lang": "en"},
    )
    await ami.finished_calls(1)
    # Later originates ring busy: random recording URLs are never fetched, no TTS for random text.
    ami.plan(*[Plan(outcome="busy") for _ in range(5000)])
    st.calls = [row[0] for row in await gw.sql("SELECT uid FROM calls ORDER BY id")]
    assert placed[0]["callid"] in st.calls and len(st.calls) == 2

    # A tracked link.
    await _json(
        http,
        "POST",
        f"{base}/sms/messages/",
        auth,
        data={
            "sender": "DEMO",
            "recipient": CALLER,
            "message": "See http://127.0.0.1:9/x",
            "track_link": "true",
        },
    )
    st.link_code = (await gw.sql("SELECT code FROM tracked_links"))[0][0]
    # A Sinch batch due much later: it can be updated and replaced until it is cancelled.
    batches = f"{base}/xms/v1/{creds.account.sid}/batches"
    st.batch_id = (await _json(http, "POST", batches, auth, json=BATCH))["id"]
    st.report_batch_id = (await _json(http, "POST", batches, auth, json=BATCH))["id"]
    return st


def fixed_parameters(st: State, method: str, path: str) -> list[dict[str, Any]]:
    """Real path parameters for an operation: full sets (answers 2xx) and partial ones (the
    parent is real, the child random: answers 404)."""
    sid = st.creds.account.sid
    if path.startswith("/sms/sins/subscriptions/{uid}"):
        if "{rule_id}" in path:
            return [{"uid": st.uids[SIN_MAIN], "rule_id": st.scratch_rule_id}, {"uid": st.uids[SIN_MAIN]}]
        # DELETE gets its own subscription: the others need theirs to stay.
        uid = st.uids[SIN_SCRATCH] if method == "DELETE" and path.endswith("{uid}/") else st.uids[SIN_MAIN]
        return [{"uid": uid}]
    if path.startswith("/voice/dins/subscriptions/{uid}"):
        return [{"uid": st.uids[DIN_SCRATCH] if method == "DELETE" else st.uids[DIN_MAIN]}]
    if path.startswith("/sms/inbounds/{uid}"):
        return [{"uid": st.inbound_id}]
    if path.startswith("/xms/v1/{plan}/batches/{batch_id}/delivery_report"):
        report = {"plan": sid, "batch_id": st.report_batch_id}
        return (
            [{**report, "recipient": CUSTOMER[1:]}, report]
            if "{recipient}" in path
            else [report, {"plan": sid}]
        )
    if path.startswith("/xms/v1/{plan}/batches/{batch_id}"):
        return [{"plan": sid, "batch_id": st.batch_id}, {"plan": sid}]
    if path.startswith("/xms/v1/{plan}"):
        return [{"plan": sid, "uid": st.inbound_id}, {"plan": sid}] if "{uid}" in path else [{"plan": sid}]
    if path.startswith("/voice/calls/{callid}"):
        return [{"callid": c} for c in st.calls]
    if path.startswith("/voice/voicemails/{vid}"):
        return [{"vid": st.voicemail_id}]
    if path.startswith("/voice/recordings/{rid}"):
        return [{"rid": st.recording_id}]
    if path.startswith("/l/{code}"):
        return [{"code": st.link_code}]
    return []


def good_body(st: State, method: str, path: str) -> dict[str, Any] | None:
    """A well-formed request body for the operation, if it takes one."""
    if method == "PUT" and path == "/xms/v1/{plan}/batches/{batch_id}":
        return BATCH
    if method != "POST":
        return None
    if path in ("/xms/v1/{plan}/batches", "/xms/v1/{plan}/batches/dry_run"):
        return BATCH
    if path == "/xms/v1/{plan}/batches/{batch_id}":
        return {"body": "Changed", "to_add": [CALLER]}
    if path == "/sms/sins/subscriptions/":
        return {"sin_uid": st.uids[SIN_FREE]}
    if path == "/voice/dins/subscriptions/":
        return {"din_uid": st.uids[DIN_FREE]}
    if path == "/sms/sins/subscriptions/{uid}/":
        return {"action_url": "http://127.0.0.1:9/mo"}
    if path == "/voice/dins/subscriptions/{uid}/":
        return {"action_url": "http://127.0.0.1:9/actions", "voicemail_url": "http://127.0.0.1:9/vm"}
    if path.endswith("/autoreplies/"):
        return {"match": "keyword", "pattern": "PRICE", "reply": "See our site."}
    if path.endswith("/reply/"):
        return {"message": "Thanks for your message"}
    if path == "/voice/simple/playbacks/":
        return {"caller": DIN_MAIN, "recipient": CALLER, "tts_message": "Hello", "tts_lang": "en"}
    return None


# --- hostile input, sent to every operation as explicit cases -------------------------------
# Values random generation rarely or never produces (JSON-escaped lone surrogates, NUL, digits
# outside ASCII, out-of-range ports and dates) and the byte-level bodies a client can send. Each
# case may carry an expectation: (status, the field the JSON error must name exactly, or the
# prefix of its name when that ends with "."; "" = any).

Expect = tuple[int, str] | None

# Never text, in any field, known or not: 400 naming it (no engine can store them).
REFUSED_TEXT = ["\ud800", "a\udfffb", "x\x00y"]
HOSTILE_TEXT = [
    *REFUSED_TEXT,
    "²²²²²",
    "١٢٣٤٥",
    "http://a.com:99999/",  # refused in URL fields
    "x" * 3000,
    "😀" * 40,
    "\r\n",
    " ",
    "",
]
URL_FIELDS = ("action_url", "voicemail_url", "callbackurl", "recording_url", "callback_url")
EMPTY_LISTS = ("to_add", "to_remove")  # the only fields an empty list suits (a batch's changes)
REFUSED_JSON: list[Any] = [{"a": "\ud800"}, [{"\x00": 1}]]
HOSTILE_JSON: list[Any] = [12345, -1, 1.5e300, True, None, [], {}, ["a"], *REFUSED_JSON]
# name -> (value, refused: 400 naming the parameter)
HOSTILE_QUERY: dict[str, list[tuple[str, bool]]] = {
    "start_date": [
        ("0001-01-01T00:00:00+01:00", True),  # before year 1 in UTC
        ("9999-12-31T23:59:59-01:00", True),  # after year 9999 in UTC
        ("0001-01-01", False),
        ("9999-12-31T23:59:59.999999Z", False),
        ("2026-02-30", True),
        ("2026-01-01T00:00:00+99:00", True),
        ("x", True),
    ],
    "end_date": [
        ("0001-01-01T00:00:00+01:00", True),
        ("9999-12-31T23:59:59-01:00", True),
        ("0001-01-01T00:00:01Z", True),  # before the default start
    ],
    "to": [
        ("²²²²²", True),
        ("١٢٣٤٥", True),
        ("+++81312345601", True),
        (",", True),
        ("+81312345601," * 200, True),
    ],
    "page": [("١", True), (" 1", True), ("1_0", True), ("-1", True), ("9" * 5000, True)],
    "page_size": [("١", True), ("0", True), ("101", True), ("9" * 30, True)],
    "country": [("ıx", True), ("J", True), ("JPN", True), ("١٢", True)],
    "prefix": [("١", True), ("+81", True), ("8" * 5000, True)],
    "client_reference": [("x" * 5000, False)],
    "from": [("²²²²²", False), (",,", False), ("x" * 5000, False)],
    "per_recipient": [("maybe", True), ("١", True), ("TRUE", False)],
    "number_of_recipients": [("١", True), ("1001", True), ("-1", True), ("0", False)],
    "type": [("partial", True), ("FULL", True), ("full", False)],
    "status": [("delivered,QUEUED", False), ("Lost", True), (",", False), ("ı", True)],
    "code": [("0,402", False), ("١", True), ("99999", True), ("-1", True)],
    "batch_id": [("x" * 5000, False), ("١", False)],
}
HOSTILE_PATH = ["x" * 3000, "١٢٣", "é", " ", "%", "\x00", "a/b"]  # not "..": the client resolves it


def hostile_raw_bodies() -> list[tuple[dict[str, str], bytes, Expect]]:
    """(headers, bytes, expectation) sent as the body of every operation that takes one. Not
    here: what aiohttp's HTTP parser refuses before the app sees the request (e.g.
    Content-Encoding: deflate over bytes that are not, found at the end of the message): its
    text/plain 400 cannot be shaped by a middleware."""
    deep = b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    just_parsable = b'{"a": ' + b"[" * 900 + b'"\\u0000"' + b"]" * 900 + b"}"
    form, json_type, multipart = (
        "application/x-www-form-urlencoded",
        "application/json",
        "multipart/form-data",
    )
    upload = b'--x\r\nContent-Disposition: form-data; name="a"; filename="a.txt"\r\n\r\nab\r\n--x--\r\n'
    return [
        ({"Content-Type": json_type}, deep, (400, "body")),
        ({"Content-Type": json_type}, just_parsable, (400, "a.0.0.")),
        ({"Content-Type": json_type}, b'["a"]', (400, "body")),
        ({"Content-Type": json_type}, b'{"a": ', (400, "body")),
        ({"Content-Type": json_type}, b'{"a": ' + b"1" * 5000 + b"}", (400, "body")),
        ({"Content-Type": f"{form}; charset=bogus"}, b"a=b", (415, "")),
        ({"Content-Type": form}, b"a=%ff%fe&\xff=1", (400, "body")),
        ({"Content-Type": form, "Content-Encoding": "gzip"}, b"a=b", (400, "body")),
        ({"Content-Type": multipart}, b"garbage", (400, "body")),
        ({"Content-Type": f"{multipart}; boundary=x"}, b"garbage", (400, "body")),
        ({"Content-Type": f"{multipart}; boundary=x"}, upload, (400, "a")),
        ({"Content-Type": "text/plain"}, b"a=b", (415, "")),
    ]


def _body_expect(field: str, value: Any) -> Expect:
    if any(value is v or value == v for v in REFUSED_TEXT):
        return (400, field)
    if any(value == v for v in REFUSED_JSON):
        return (400, f"{field}.")  # named down to the bad key: sin_uid.a
    if value == "http://a.com:99999/" and field in URL_FIELDS:
        return (400, field)
    if value == [] and field not in ("zzz", *EMPTY_LISTS):  # refused under its own name
        return (400, field)
    return None


def hostile_cases(op: Any, st: State, real: dict[str, Any]) -> list[tuple[Any, dict[str, Any], Expect]]:
    """Explicit cases for `op`: (case, extra keyword arguments for the call, expectation)."""
    out: list[tuple[Any, dict[str, Any], Expect]] = []
    real = real or {}
    path = real or None
    good = good_body(st, op.method.upper(), op.path)
    with_body: dict[str, Any] = {} if good is None else {"body": good, "media_type": "application/json"}
    for name in [p.name for p in op.path_parameters]:
        for value in HOSTILE_PATH:
            # Nothing is there; a service plan that is not yours is refused before that (but a
            # NUL anywhere in the path is a 404 before authentication).
            expect = (401, "") if name == "plan" and value != "\x00" else (404, "")
            out.append((op.Case(path_parameters={**real, name: value}, **with_body), {}, expect))
    for name in [p.name for p in op.query]:
        for value, refused in HOSTILE_QUERY.get(name, [(v, False) for v in HOSTILE_TEXT[:4]]):
            out.append(
                (op.Case(path_parameters=path, query={name: value}), {}, (400, name) if refused else None)
            )
    if good is None:
        return out
    for field in [*good, "zzz"]:
        for value in HOSTILE_TEXT + HOSTILE_JSON:
            case = op.Case(path_parameters=path, body={**good, field: value}, media_type="application/json")
            out.append((case, {}, _body_expect(field, value)))
        for value in HOSTILE_TEXT:
            if re.search("[\ud800-\udfff]", value):
                continue  # a form body is bytes: there is no way to send a lone surrogate
            form = "application/x-www-form-urlencoded"
            case = op.Case(path_parameters=path, body={**good, field: value}, media_type=form)
            out.append((case, {}, _body_expect(field, value)))
    for headers, raw, expect in hostile_raw_bodies():
        out.append((op.Case(path_parameters=path), {"headers": headers, "data": raw}, expect))
    return out


def run_schemathesis(
    base_url: str,
    st: State,
    *,
    exclude: str,
    include: str | None = None,
    max_examples: int = MAX_EXAMPLES,
    unavailable_ok: bool = False,
    hostile: bool = True,
    metrics_token: str = "",
) -> dict[str, Counter[int]]:
    """Every operation of the served document not matching `exclude` (and matching `include`),
    in document order with the deletes last; label -> how often each status code was answered.
    `unavailable_ok`: a (documented) 503 is the expected answer, so only a 500 is a server error.
    `metrics_token`: the gateway's, sent with some /metrics requests."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hst
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi import checks as oas_checks

    checks = [
        oas_checks.status_code_conformance,
        oas_checks.content_type_conformance,
        oas_checks.response_headers_conformance,
        oas_checks.response_schema_conformance,
    ]
    if not unavailable_ok:
        checks.insert(0, schemathesis.checks.not_a_server_error)
    # The served document, loaded as a dict: from_url would leave out GET /openapi.json itself.
    document = requests.get(f"{base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [
        op
        for op in operations
        if not re.match(exclude, op.path) and (include is None or re.match(include, op.path))
    ]
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    sid, token = st.creds.account.sid, st.creds.auth_token
    auths = {
        "basic": basic(sid, token),
        "bearer": {"Authorization": f"Bearer {token}"},
        "wrong": basic(sid, "not-the-token"),
        "none": {},
        "metrics": {"Authorization": f"Bearer {metrics_token}"},
    }
    tried: dict[str, Counter[int]] = {}
    session = requests.Session()  # keep-alive: a new connection per case would double the time

    def call(case: Any, headers: dict[str, str], expect: Expect = None, **kwargs: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, session=session, headers=headers, checks=checks, **kwargs
        )
        code = response.status_code
        assert code != 500, response.text
        if code == 400:  # names the field (or says what is wrong with the body)
            assert response.json(), response.text
        if expect is not None:
            where = f"{case.operation.label} {case.path_parameters} {case.query} {str(case.body)[:200]}"
            assert code == expect[0], (where, code, response.text[:300])
            # The field exactly; a name ending in "." is a prefix (nested keys). Sinch's error body
            # (/xms/) names them in its text: "field: reason; field: reason".
            answer = response.json()
            names = list(answer)
            if set(answer) == {"code", "text"}:
                names = [part.split(": ", 1)[0] for part in answer["text"].split("; ")]
            prefix = expect[1][-1:] == "."
            named = [k for k in names if k == expect[1] or (prefix and k.startswith(expect[1]))]
            assert not expect[1] or named, (where, response.text[:300])
        tried.setdefault(case.operation.label, Counter())[code] += 1

    def exercise_operation(op: Any) -> None:
        method = op.method.upper()
        fixed = fixed_parameters(st, method, op.path)
        if hostile:
            for case, kwargs, expect in hostile_cases(op, st, fixed[0] if fixed else {}):
                call(case, {**auths["basic"], **kwargs.pop("headers", {})}, expect, **kwargs)
        # Mostly the right credentials; some wrong or none (401 must conform too); the token as a
        # bearer on /xms/ (Sinch style); the metrics token on /metrics.
        good_modes = ["basic"]
        if op.path.startswith("/xms/"):
            good_modes.append("bearer")
        if op.path == "/metrics" and metrics_token:
            good_modes.append("metrics")
        # The real ids with a good body under every accepted credential, and once without any:
        # explicit, so that no operation depends on the draw for its success or its 401.
        body = good_body(st, method, op.path)
        real_body: dict[str, Any] = {} if body is None else {"body": body, "media_type": "application/json"}
        names = {p.name for p in op.path_parameters}
        for params in [p for p in fixed or [{}] if set(p) == names]:
            for mode in [*good_modes, "none"]:
                call(op.Case(path_parameters=params or None, **real_body), auths[mode])
        strategies = [op.as_strategy()]
        if op.path_parameters or op.query or op.body:
            strategies.append(op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        for params in fixed or [{}]:
            strategies.append(op.as_strategy(path_parameters=params or None))
            if body is not None:
                for media_type in ("application/json", "application/x-www-form-urlencoded"):
                    strategies.append(
                        op.as_strategy(path_parameters=params or None, body=body, media_type=media_type)
                    )
        modes = ["basic"] * 8 + ["wrong", "none"] + [m for m in good_modes if m != "basic"] * 5

        @settings(
            max_examples=max_examples * len(strategies),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=hst.one_of(*strategies), mode=hst.sampled_from(modes))
        def exercise(case: Any, mode: str) -> None:
            call(case, auths[mode])

        exercise()

    try:
        for op in operations:
            exercise_operation(op)
    finally:
        session.close()
    return tried


@pytest_asyncio.fixture
async def fuzz_gateway(
    clean_db: str, sim_smsc: Any, ami: AmiServer, receiver: Receiver, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[Gateway, State]]:
    cfg = ami_gateway_config(clean_db, sim_smsc, ami)
    gw = await start_gateway(cfg)
    try:
        st = await seed(gw, http, sim_smsc, receiver, ami)
        yield gw, st
    finally:
        await gw.runner.cleanup()


async def test_every_other_route_conforms_to_the_document(
    fuzz_gateway: tuple[Gateway, State], clean_db: str, sim_smsc: Any, http: aiohttp.ClientSession
) -> None:
    gw, st = fuzz_gateway
    tried = await asyncio.to_thread(
        run_schemathesis,
        gw.base_url,
        st,
        exclude=SMS_AND_TEMPLATE_PATHS,
        max_examples=fuzz_examples(clean_db, MAX_EXAMPLES),
    )

    # A second node on the same database, configured otherwise: outbound calls off (no AMI:
    # 503, documented too) and /metrics behind a token (401 without it).
    off = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port, metrics__token="m-tok"))
    try:
        assert OUTBOUND not in off.app
        off_tried = await asyncio.to_thread(
            run_schemathesis,
            off.base_url,
            st,
            exclude="^$",
            include="^/(voice/simple/playbacks/|metrics)$",
            max_examples=5,
            unavailable_ok=True,
            hostile=False,
            metrics_token="m-tok",
        )
    finally:
        await off.runner.cleanup()
    assert 503 in off_tried["POST /voice/simple/playbacks/"], off_tried
    assert {200, 401} <= set(off_tried["GET /metrics"]), off_tried

    async with http.get(f"{gw.base_url}/openapi.json") as r:
        doc = await r.json()
    documented = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
    mine = {label for label in documented if not re.match(SMS_AND_TEMPLATE_PATHS, label.split(" ", 1)[1])}
    assert mine - set(tried) == set(), "operations no test exercised"
    assert KEY_OPERATIONS <= mine, KEY_OPERATIONS - mine
    # Success is a 2xx; for the link redirect, its 302.
    successes = {
        label
        for label, codes in tried.items()
        if any(c == 302 if label == "GET /l/{code}" else 200 <= c < 300 for c in codes)
    }
    assert KEY_OPERATIONS - successes == set(), {k: tried.get(k) for k in KEY_OPERATIONS - successes}
    for label, codes in sorted(tried.items()):  # shown with -s: what each operation answered
        print(f"{sum(codes.values()):5d}  {label}  {dict(sorted(codes.items()))}")
