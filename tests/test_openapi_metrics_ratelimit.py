"""The OpenAPI document (complete against the served routes, and what the API really answers,
checked with schemathesis), the /docs page, Prometheus /metrics, and the per-account rate limit.

The gateways here are built like tests/conftest.py's start_gateway, with the openapi/metrics
routes and the metrics/ratelimit middlewares added before the app starts (when the app factory
does not add them already)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import shutil
import subprocess
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

# Imported here, at the top of the stack: schemathesis imports it lazily from deep inside a
# hypothesis draw, where CPython 3.11.7's parser (run by pytest's assertion rewriting) failed
# with "SystemError: AST constructor recursion depth mismatch" in a full run.
import schemathesis.generation.jsonschema.strategy  # noqa: F401
from aiohttp import web

from gateway.app import CONNECTORS, create_app
from gateway.config import Config
from gateway.db.engine import create_engine, session_factory
from gateway.http import auth, metrics, openapi, ratelimit
from gateway.http.metrics import METRICS, Metrics, MetricsSettings
from gateway.http.ratelimit import RATE_LIMITER, RateLimiter, RateLimitSettings
from gateway.keys import ACCOUNTS, SESSIONS, TEMPLATES
from tests.conftest import Gateway, basic, free_port, fuzz_examples, gateway_config, wait_for

JP = "+818012345678"
PUBLIC = ("/openapi.json", "/docs", "/metrics")
# The operations test_sms_and_template_routes_conform_to_the_document runs schemathesis on;
# tests/test_schemathesis_routes.py covers every other one.
SMS_AND_TEMPLATE_PATHS = r"^/sms/(messages|templates)/"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PROJECT_VERSION = tomllib.loads(PYPROJECT.read_text())["project"]["version"]


# --- building the app with the additions ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def add_extras(
    app: web.Application, *, limiter: RateLimiter | None = None, metric: Metrics | None = None
) -> Metrics:
    """What app.py is to wire: routes, the metrics middleware outermost, the rate limit inside
    auth. Skips whatever the factory already added, so the test keeps working once it does."""
    served = set(openapi.served_operations(app))
    if ("GET", "/openapi.json") not in served:
        app.add_routes(openapi.routes)
    if ("GET", "/metrics") not in served:
        app.add_routes(metrics.routes)
    if metrics.metrics_middleware not in app.middlewares:
        app.middlewares.insert(0, metrics.metrics_middleware)
    if ratelimit.ratelimit_middleware not in app.middlewares:
        app.middlewares.append(ratelimit.ratelimit_middleware)
    if metric is None:
        metric = Metrics(
            smpp_bound=lambda: app[CONNECTORS].bound_binds() if CONNECTORS in app else {},
            calls_in_progress=lambda: 0,
        )
    app[METRICS] = metric
    app[RATE_LIMITER] = limiter if limiter is not None else RateLimiter(RateLimitSettings(rate=0))
    return metric


@pytest.fixture(autouse=True)
def public_docs_and_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """/openapi.json, /docs and /metrics are public (auth.PUBLIC_PREFIXES, once wired)."""
    missing = tuple(p for p in PUBLIC if not p.startswith(auth.PUBLIC_PREFIXES))
    monkeypatch.setattr(auth, "PUBLIC_PREFIXES", auth.PUBLIC_PREFIXES + missing)


Starter = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def start(clean_db: str, sim_smsc: Any) -> AsyncIterator[Starter]:
    runners: list[web.AppRunner] = []

    async def _start(
        *,
        limiter: RateLimiter | None = None,
        metric: Metrics | None = None,
        smsc: bool = True,
        **overrides: Any,
    ) -> Gateway:
        # smsc=False: an SMPP port nobody listens on, so messages stay QUEUED.
        port = sim_smsc.port if smsc else free_port()
        cfg = gateway_config(clean_db, sim_smsc.host, port, **overrides)
        app = create_app(cfg)
        add_extras(app, limiter=limiter, metric=metric)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, cfg.http.host, cfg.http.port).start()
        return Gateway(app, cfg.public_base_url, runner)

    yield _start
    for runner in reversed(runners):
        await runner.cleanup()


# --- the OpenAPI document ---------------------------------------------------------------------


def full_app() -> web.Application:
    app = create_app(Config())
    add_extras(app)
    return app


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_every_served_route_is_in_the_document() -> None:
    app = full_app()
    served = openapi.served_operations(app)
    assert ("POST", "/sms/messages/") in served and ("GET", "/metrics") in served
    assert openapi.undocumented(app) == [], "declare these routes with gateway/http/api.py Routes"
    doc = openapi.build_document(app)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == set(served)  # exactly what is served: no more, no less


def test_a_route_declared_without_the_contract_is_reported() -> None:
    app = full_app()

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_post("/sms/brand-new/{thing}/", handler)
    assert openapi.undocumented(app) == [("POST", "/sms/brand-new/{thing}/")]
    entry = openapi.build_document(app)["paths"]["/sms/brand-new/{thing}/"]["post"]
    assert entry["x-undocumented"] is True and entry["parameters"][0]["name"] == "thing"


def test_operations_the_app_does_not_serve_are_left_out() -> None:
    app = web.Application()
    app.add_routes(openapi.routes)
    doc = openapi.build_document(app, server_url="http://gw.example")
    assert set(doc["paths"]) == {"/openapi.json", "/docs"}
    assert doc["servers"] == [{"url": "http://gw.example"}]


def test_document_structure_errors_and_security() -> None:
    doc = openapi.build_document(full_app())
    assert doc["openapi"] == "3.1.0"
    schemes = doc["components"]["securitySchemes"]
    assert schemes["basicAuth"] == {"type": "http", "scheme": "basic", "description": "SID : auth token."}
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"
    assert doc["security"] == [{"basicAuth": []}]
    for ref in refs(doc):
        resolve(doc, ref)  # every $ref resolves
    ids: list[str] = []
    for path, ops in doc["paths"].items():
        declared = set(re.findall(r"\{(\w+)\}", path))
        for method, op in ops.items():
            ids.append(op["operationId"])
            where = f"{method.upper()} {path}"
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == declared, where
            codes = set(op["responses"])
            public = op.get("security") == [] or path == "/metrics"
            if not public:
                assert {"401", "429"} <= codes, where
                retry = op["responses"]["429"]["headers"]["Retry-After"]["schema"]
                assert retry == {"type": "integer", "minimum": 1}
                detail = op["responses"]["401"]["content"]["application/json"]["schema"]
                assert resolve(doc, detail["$ref"])["required"] == ["detail"]
            if "requestBody" in op:
                assert {"400", "413", "415"} <= codes, where
                assert set(op["requestBody"]["content"]) == {
                    "application/json",
                    "application/x-www-form-urlencoded",
                }
            if declared and not public:
                assert "404" in codes, where
            if path.startswith("/xms/"):
                assert op["security"] == [{"basicAuth": []}, {"bearerAuth": []}], where
            elif path.startswith(("/l/", "/healthz", "/readyz", "/openapi.json", "/docs")):
                assert op["security"] == [], where
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    send = doc["paths"]["/sms/messages/"]["post"]
    assert {"201", "400", "401", "403", "413", "415", "429"} <= set(send["responses"])
    body = resolve(doc, send["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert body["required"] == ["message", "recipient", "sender"]
    tsend = doc["paths"]["/sms/templates/{uid}/messages/"]["post"]
    assert resolve(doc, tsend["responses"]["422"]["content"]["application/json"]["schema"]["$ref"])[
        "required"
    ] == ["variables"]
    alias = doc["paths"]["/sms/messages/{msgid}"]["get"]
    assert alias["x-alias-of"] == "/sms/messages/{msgid}/"


async def test_openapi_json_and_docs_are_served_without_auth(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    gw = await start()
    async with http.get(f"{gw.base_url}/openapi.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        doc = await r.json()
    assert doc["servers"] == [{"url": gw.base_url}]
    assert "/sms/templates/{uid}/messages/" in doc["paths"]
    async with http.get(f"{gw.base_url}/docs") as r:
        assert r.status == 200 and r.content_type == "text/html"
        csp = r.headers["Content-Security-Policy"]
        html = await r.text()
    check_docs_page(html, csp)
    embedded = re.search(r'<script type="application/json" id="spec">(.*?)</script>', html, re.S)
    assert embedded is not None and json.loads(embedded.group(1)) == doc
    async with http.get(f"{gw.base_url}/sms/messages/") as r:
        assert r.status == 401  # the API itself still needs credentials


def check_docs_page(html: str, csp: str) -> None:
    """Self-contained: nothing loaded from anywhere; the CSP lets exactly our inline code run."""
    assert not re.search(r"<(link|img|iframe|object|embed)\b", html, re.I)
    assert not re.search(r"\bsrc\s*=", html, re.I)
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    assert not re.search(r"@import|url\(", styles[0], re.I)
    assert not re.search(r"fetch|XMLHttpRequest|import\(", scripts[0])
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert f"script-src {digest(scripts[0])};" in csp
    assert f"style-src {digest(styles[0])};" in csp


def test_docs_json_cannot_break_out_of_its_script_element() -> None:
    doc = openapi.build_document(full_app())
    doc["info"]["description"] = "</script><script>alert(1)</script> <!-- & -->"
    html = openapi.render_docs(doc)
    assert html.count("</script>") == 2  # the data block's and the code's own
    embedded = re.search(r'<script type="application/json" id="spec">(.*?)</script>', html, re.S)
    assert embedded is not None and json.loads(embedded.group(1)) == doc


DOM_SHIM = r"""
const html = require("fs").readFileSync(0, "utf8");
const spec = html.match(/<script type="application\/json" id="spec">([\s\S]*?)<\/script>/)[1];
const code = html.match(/<script>([\s\S]*?)<\/script>/)[1];
function Node(tag) { this.tag = tag; this.children = []; this.attrs = {}; }
Node.prototype.setAttribute = function (k, v) { this.attrs[k] = String(v); };
Node.prototype.appendChild = function (c) { this.children.push(c); return c; };
const root = new Node("main");
globalThis.document = {
  getElementById: (id) => (id === "spec" ? { textContent: spec } : root),
  createElement: (tag) => new Node(tag),
  createTextNode: (text) => ({ text: String(text) }),
};
new Function(code)();
const found = { details: 0, h2: [], text: [], code: [], b: [] };
function textOf(n) { return n.text !== undefined ? n.text : n.children.map(textOf).join(""); }
(function walk(n) {
  if (n.text !== undefined) { found.text.push(n.text); return; }
  if (n.tag === "details") found.details++;
  if (n.tag === "h2") found.h2.push(n.attrs.id);
  if (n.tag === "code" || n.tag === "b") found[n.tag].push(textOf(n));
  n.children.forEach(walk);
})(root);
found.text = found.text.join(" ");
console.log(JSON.stringify(found));
"""


def test_docs_page_renders_every_operation() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/test installs it)")
    doc = openapi.build_document(full_app())
    out = subprocess.run(
        [node, "-e", DOM_SHIM], input=openapi.render_docs(doc), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    rendered = json.loads(out.stdout)
    assert rendered["details"] == sum(len(ops) for ops in doc["paths"].values())
    assert rendered["h2"] == [t["name"] for t in doc["tags"]]
    for needle in ("/sms/templates/{uid}/messages/", "Retry-After", "variables", "bearerAuth"):
        assert needle in rendered["text"]


def test_docs_page_renders_markdown_in_descriptions() -> None:
    """`code`, **bold**, paragraphs and lists become elements, the text between them stays text;
    markup the renderer does not know stays as it was written, never as HTML."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/test installs it)")
    doc = openapi.build_document(full_app())
    op = doc["paths"]["/sms/messages/"]["post"]
    op["description"] = "Needs `freeform`; **not** <b>html</b>.\n\n- one `a`\n- two"
    out = subprocess.run(
        [node, "-e", DOM_SHIM], input=openapi.render_docs(doc), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    rendered = json.loads(out.stdout)
    assert {"freeform", "a"} <= set(rendered["code"]) and {"not", "Authentication"} <= set(rendered["b"])
    assert "<b>html</b>" in rendered["text"] and "**" not in rendered["text"]
    assert " one " in rendered["text"] and "- one" not in rendered["text"]


# --- schemathesis against the served document ------------------------------------------------


async def test_sms_and_template_routes_conform_to_the_document(
    start: Starter, http: aiohttp.ClientSession, clean_db: str
) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.specs.openapi import checks as oas_checks

    gw = await start()
    creds = await gw.account()
    headers = gw.auth(creds)
    async with http.post(
        f"{gw.base_url}/sms/templates/", json={"name": "otp", "content": "Code {code}"}, headers=headers
    ) as r:
        template_id = (await r.json())["template_id"]
    await gw.app[TEMPLATES].set_status(template_id, "APPROVED")
    async with http.post(
        f"{gw.base_url}/sms/templates/", json={"name": "scratch", "content": "Hi {name}"}, headers=headers
    ) as r:
        scratch_id = (await r.json())["template_id"]
    async with http.post(
        f"{gw.base_url}/sms/templates/{template_id}/messages/",
        json={"sender": "DEMO", "recipient": JP, "variables": {"code": "1"}},
        headers=headers,
    ) as r:
        assert r.status == 201
        msgid = (await r.json())[0]["msgid"]

    valid_send = {"sender": "DEMO", "recipient": JP, "variables": {"code": "42"}}
    checks = [
        schemathesis.checks.not_a_server_error,
        oas_checks.status_code_conformance,
        oas_checks.content_type_conformance,
        oas_checks.response_headers_conformance,
        oas_checks.response_schema_conformance,
    ]
    tried: dict[str, set[int]] = {}

    def run() -> None:
        schema = schemathesis.openapi.from_url(f"{gw.base_url}/openapi.json").include(
            path_regex=SMS_AND_TEMPLATE_PATHS
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 14  # 11 routes + 3 slash-less aliases
        for op in operations:
            fixed: dict[str, Any] = {}
            if "{uid}" in op.path:
                # PUT and DELETE get their own template: the sends need theirs APPROVED.
                fixed = {"uid": scratch_id if op.method.upper() in ("PUT", "DELETE") else template_id}
            elif "{msgid}" in op.path:
                fixed = {"msgid": msgid}
            strategies = [op.as_strategy()]
            if fixed:  # real ids too, or every answer would be a 404
                strategies.append(op.as_strategy(path_parameters=fixed))
            if op.method.upper() == "POST" and op.path.endswith("/messages/"):
                # Random E.164-shaped numbers are rarely valid ones: also send a deliverable body.
                good = dict(valid_send, message="hello") if "{uid}" not in op.path else valid_send
                strategies.append(
                    op.as_strategy(path_parameters=fixed, body=good, media_type="application/json")
                )
            strategy = st.one_of(*strategies)

            @settings(
                max_examples=fuzz_examples(clean_db, 50),
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def exercise(case: Any) -> None:
                response = case.call_and_validate(base_url=gw.base_url, headers=headers, checks=checks)
                tried.setdefault(case.operation.label, set()).add(response.status_code)

            exercise()

    await asyncio.to_thread(run)
    assert len(tried) == 14
    successes = {label for label, codes in tried.items() if any(200 <= c < 300 for c in codes)}
    assert {
        "POST /sms/messages/",
        "GET /sms/messages/{msgid}/",
        "POST /sms/templates/",
        "GET /sms/templates/{uid}/",
        "POST /sms/templates/{uid}/messages/",
        "GET /sms/templates/messages/{msgid}/",
    } <= successes, tried


# --- metrics ----------------------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A strict-enough reader of the text format: every sample belongs to a family announced by
    # HELP and # TYPE lines, labels are well-formed, values are numbers."""
    assert text.endswith("\n")
    families: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in families
            families[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        name, labels_text, value = m.group(1), m.group(3) or "", m.group(4)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in families else name
        assert family in families, f"{name} has no # TYPE"
        labels: list[tuple[str, str]] = []
        rest = labels_text
        while rest:
            lm = LABEL.match(rest)
            assert lm, f"bad labels {labels_text!r}"
            labels.append((lm.group(1), lm.group(2)))
            rest = rest[lm.end() :]
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(value)
    return samples


def val(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_hooks_and_exposition_format() -> None:
    calls = {"now": 2}
    m = Metrics(calls_in_progress=lambda: calls["now"], smpp_bound=lambda: {"a": 2, "b": 0})
    m.submit_done(0.003, True, connector="a")
    m.submit_done(0.2, True, connector="a")
    m.submit_done(45.0, False, connector="b")
    m.receipt("DELIVERED")
    m.receipt("DELIVERED")
    m.receipt("weird")
    m.mo("a")
    for code in (200, 204, 503, None, 410):
        m.webhook(code)
    m.call_started()
    m.http_request("GET", '/odd"path\\with\nnewline', 200)
    s = parse_exposition(m.render(queue_depth=7, webhook_backlog=3))
    assert val(s, "gateway_sms_queue_depth") == 7 and val(s, "gateway_webhook_backlog") == 3
    assert val(s, "gateway_db_up") == 1
    assert val(s, "gateway_sms_submits_total", connector="a", result="ok") == 2
    assert val(s, "gateway_sms_submits_total", connector="b", result="error") == 1
    # cumulative buckets: 0.003 <= 0.005; 0.2 <= 0.25; 45 only in +Inf
    assert val(s, "gateway_sms_submit_seconds_bucket", le="0.005") == 1
    assert val(s, "gateway_sms_submit_seconds_bucket", le="0.1") == 1
    assert val(s, "gateway_sms_submit_seconds_bucket", le="0.25") == 2
    assert val(s, "gateway_sms_submit_seconds_bucket", le="30.0") == 2  # prometheus_client's float form
    assert val(s, "gateway_sms_submit_seconds_bucket", le="+Inf") == 3
    assert val(s, "gateway_sms_submit_seconds_count") == 3
    assert math.isclose(val(s, "gateway_sms_submit_seconds_sum") or 0, 45.203)
    assert val(s, "gateway_sms_receipts_total", state="DELIVERED") == 2
    assert val(s, "gateway_sms_receipts_total", state="OTHER") == 1
    assert val(s, "gateway_sms_mo_total", connector="a") == 1
    assert val(s, "gateway_webhook_posts_total", code="2xx") == 2
    assert val(s, "gateway_webhook_posts_total", code="5xx") == 1
    assert val(s, "gateway_webhook_posts_total", code="4xx") == 1
    assert val(s, "gateway_webhook_posts_total", code="error") == 1
    assert val(s, "gateway_smpp_bound", connector="a") == 2
    assert val(s, "gateway_smpp_bound", connector="b") == 0
    assert val(s, "gateway_calls_in_progress") == 2  # the callable wins over call_started()
    assert val(s, "gateway_calls_total") == 1
    escaped = 'route="/odd\\"path\\\\with\\nnewline"'
    assert escaped in m.render()
    # Without the callable, call_started/call_ended keep the gauge.
    m2 = Metrics()
    m2.call_started()
    m2.call_started()
    m2.call_ended()
    m2.call_ended()
    m2.call_ended()  # never below zero
    s2 = parse_exposition(m2.render(None, None))
    assert val(s2, "gateway_calls_in_progress") == 0 and val(s2, "gateway_smpp_bound") is None
    assert val(s2, "gateway_db_up") == 0 and val(s2, "gateway_sms_queue_depth") is None


async def test_db_gauges_report_a_database_that_does_not_answer(tmp_path: Any) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/db.sqlite3")
    app = web.Application()
    app[SESSIONS] = session_factory(engine)
    try:
        assert await metrics._db_gauges(app) == (None, None)
    finally:
        await engine.dispose()
    assert await metrics._db_gauges(web.Application()) == (None, None)  # before the DB is up


async def scrape(http: aiohttp.ClientSession, gw: Gateway, **kw: Any) -> dict[Any, float]:
    async with http.get(f"{gw.base_url}/metrics", **kw) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return parse_exposition(await r.text())


async def test_metrics_endpoint_reads_the_webhook_backlog_and_counts_requests(
    start: Starter, http: aiohttp.ClientSession, receiver: Any
) -> None:
    gw = await start()
    creds = await gw.account()
    receiver.script["/status"] = [503] * 50  # callbacks stay PENDING, retried
    s = await scrape(http, gw)
    assert val(s, "gateway_webhook_backlog") == 0 and val(s, "gateway_sms_queue_depth") == 0
    assert await wait_for(lambda: _bound(http, gw))
    async with http.post(
        f"{gw.base_url}/sms/messages/",
        data={"recipient": JP, "sender": "DEMO", "message": "hi", "callbackurl": receiver.url("/status")},
        headers=gw.auth(creds),
    ) as r:
        assert r.status == 201
        msgid = (await r.json())[0]["msgid"]
    for url, headers in (
        (f"/sms/messages/{msgid}/", gw.auth(creds)),
        (f"/sms/messages/{msgid}/", basic(creds.account.sid, "wrong")),
        ("/no/such/route", gw.auth(creds)),
    ):
        async with http.get(gw.base_url + url, headers=headers) as r:
            await r.read()

    async def two_pending() -> bool:
        rows = await gw.sql("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'PENDING'")
        return rows[0][0] == 2  # DELIVERING and DELIVERED callbacks, both failing with 503

    await wait_for(two_pending)
    s = await scrape(http, gw)
    assert val(s, "gateway_webhook_backlog") == 2
    assert val(s, "gateway_sms_queue_depth") == 0
    assert val(s, "gateway_db_up") == 1
    assert val(s, "gateway_smpp_bound", connector="default") == 1
    assert val(s, "gateway_calls_in_progress") == 0
    http_total = "gateway_http_requests_total"
    assert val(s, http_total, method="POST", route="/sms/messages/", status="201") == 1
    assert val(s, http_total, method="GET", route="/sms/messages/{msgid}/", status="200") == 1
    assert val(s, http_total, method="GET", route="/sms/messages/{msgid}/", status="401") == 1
    assert val(s, http_total, method="GET", route="(unmatched)", status="404") == 1
    assert (val(s, http_total, method="GET", route="/metrics", status="200") or 0) >= 2


async def _bound(http: aiohttp.ClientSession, gw: Gateway) -> bool:
    s = await scrape(http, gw)
    return val(s, "gateway_smpp_bound", connector="default") == 1


async def test_queue_depth_counts_queued_messages_and_the_token_guards_metrics(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    gw = await start(smsc=False, metric=Metrics(MetricsSettings(token="s3cret")))
    creds = await gw.account()
    for i in range(3):
        async with http.post(
            f"{gw.base_url}/sms/messages/",
            json={"recipient": JP, "sender": "DEMO", "message": f"m{i}"},
            headers=gw.auth(creds),
        ) as r:
            assert r.status == 201
    for headers in ({}, {"Authorization": "Bearer nope"}, gw.auth(creds)):
        async with http.get(f"{gw.base_url}/metrics", headers=headers) as r:
            assert r.status == 401 and "detail" in await r.json()
    s = await scrape(http, gw, headers={"Authorization": "Bearer s3cret"})
    assert val(s, "gateway_sms_queue_depth") == 3
    assert gw.app[CONNECTORS].bound_binds() == {"default": 0}  # what gateway_smpp_bound reads
    rows = await gw.sql("SELECT COUNT(*) FROM messages WHERE status = 'QUEUED'")
    assert rows[0][0] == 3


async def test_scrape_has_build_info_process_metrics_and_route_latency(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    gw = await start()
    creds = await gw.account()
    async with http.post(
        f"{gw.base_url}/sms/messages/",
        json={"recipient": JP, "sender": "DEMO", "message": "hi"},
        headers=gw.auth(creds),
    ) as r:
        assert r.status == 201
        msgid = (await r.json())[0]["msgid"]
    for url in (f"/sms/messages/{msgid}/", f"/sms/messages/{msgid}/", "/no/such/route"):
        async with http.get(gw.base_url + url, headers=gw.auth(creds)) as r:
            await r.read()
    s = await scrape(http, gw)
    assert val(s, "gateway_build_info", version=PROJECT_VERSION) == 1
    latency = "gateway_http_request_duration_seconds"
    assert val(s, f"{latency}_count", method="GET", route="/sms/messages/{msgid}/") == 2
    assert val(s, f"{latency}_bucket", method="GET", route="/sms/messages/{msgid}/", le="+Inf") == 2
    assert (val(s, f"{latency}_sum", method="GET", route="/sms/messages/{msgid}/") or 0) > 0
    assert val(s, f"{latency}_count", method="POST", route="/sms/messages/") == 1
    assert val(s, f"{latency}_count", method="GET", route="(unmatched)") == 1
    routes = {v for (name, labels) in s if name.startswith(latency) for k, v in labels if k == "route"}
    assert not any(msgid in r or "/no/such" in r for r in routes), routes
    assert (val(s, "process_resident_memory_bytes") or 0) > 1_000_000
    assert (val(s, "process_open_fds") or 0) > 0
    assert any(name == "python_info" for name, _ in s)
    assert val(s, "python_gc_collections_total", generation="0") is not None


async def test_per_account_submit_counter_keeps_a_bounded_label_set(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    cap = 3
    gw = await start(metric=Metrics(max_accounts=cap))
    senders = [await gw.account(name=f"acct{i}") for i in range(cap + 5)]
    for creds in senders:
        async with http.post(
            f"{gw.base_url}/sms/messages/",
            json={"recipient": JP, "sender": "DEMO", "message": "hi"},
            headers=gw.auth(creds),
        ) as r:
            assert r.status == 201
    by_account = "gateway_sms_submits_by_account_total"

    async def all_submitted() -> dict[str, float] | None:
        s = await scrape(http, gw)
        counts = {dict(labels)["account"]: v for (name, labels), v in s.items() if name == by_account}
        return counts if sum(counts.values()) == cap + 5 else None

    counts = await wait_for(all_submitted)
    assert len(counts) == cap + 1
    assert counts.pop("other") == 5
    assert set(counts) <= {str(c.account.id) for c in senders} and set(counts.values()) == {1}
    s = await scrape(http, gw)
    assert val(s, by_account, account="other", result="ok") == 5
    assert val(s, "gateway_sms_submits_total", connector="default", result="ok") == cap + 5


# --- rate limit -------------------------------------------------------------------------------


def test_token_bucket_refill_retry_after_and_pruning() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimitSettings(rate=2.0, burst=3), clock=clock)
    assert [limiter.take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(1) == pytest.approx(0.5)
    assert limiter.take(2) == 0.0  # accounts are independent
    clock.now += 0.25
    assert limiter.take(1) == pytest.approx(0.25)  # half a token back; refusals cost nothing
    clock.now += 0.25
    assert limiter.take(1) == 0.0
    clock.now += 10
    assert [limiter.take(1) for _ in range(4)][-1] > 0  # refills to burst, not beyond
    assert limiter.tracked == 2
    clock.now += RateLimiter.PRUNE_EVERY + 10
    limiter.take(3)
    assert limiter.tracked == 1  # full (idle) buckets are forgotten

    slow = RateLimiter(RateLimitSettings(rate=0.5, burst=1), clock=clock)
    assert slow.take(1) == 0.0
    assert ratelimit.retry_after_seconds(slow.take(1)) == 2
    assert ratelimit.retry_after_seconds(0.0001) == 1
    assert ratelimit.retry_after_seconds(1.0) == 1

    off = RateLimiter(RateLimitSettings(rate=0, burst=1), clock=clock)
    assert all(off.take(1) == 0.0 for _ in range(1000)) and off.tracked == 0
    with pytest.raises(ValueError):
        RateLimiter(RateLimitSettings(rate=1.0, burst=0))


@dataclass
class Answer:
    status: int
    body: Any
    retry_after: str | None


async def test_rate_limit_answers_429_per_account_with_retry_after(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    gw = await start(limiter=RateLimiter(RateLimitSettings(rate=1.0, burst=3), clock=clock))
    alice, bob = await gw.account(name="alice"), await gw.account(name="bob")

    async def call(method: str, path: str, headers: dict[str, str], **kw: Any) -> Answer:
        async with http.request(method, gw.base_url + path, headers=headers, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return Answer(r.status, body, r.headers.get("Retry-After"))

    send = {"recipient": JP, "sender": "DEMO", "message": "hello"}
    assert [(await call("GET", "/sms/messages/", gw.auth(alice))).status for _ in range(3)] == [200] * 3
    refused = await call("POST", "/sms/messages/", gw.auth(alice), json=send)
    assert refused == Answer(429, {"detail": "Rate limit exceeded; retry after 1 s."}, "1")
    assert await gw.sql("SELECT id FROM messages") == []  # nothing written when refused
    assert (await call("GET", "/sms/messages/", gw.auth(bob))).status == 200  # bob has his own bucket
    # Public routes and failed authentication neither count nor get 429.
    for _ in range(5):
        assert (await call("GET", "/healthz", {})).status == 200
        assert (await call("GET", "/openapi.json", {})).status == 200
        assert (await call("GET", "/sms/messages/", basic(alice.account.sid, "wrong"))).status == 401
    clock.now += 0.4
    assert (await call("GET", "/sms/messages/", gw.auth(alice))).retry_after == "1"
    clock.now += 0.6  # one token back
    assert (await call("POST", "/sms/messages/", gw.auth(alice), json=send)).status == 201
    assert (await call("GET", "/sms/messages/", gw.auth(alice))).status == 429
    s = await scrape(http, gw)
    assert val(s, "gateway_http_requests_total", method="POST", route="/sms/messages/", status="429") == 1
    assert val(s, "gateway_http_requests_total", method="GET", route="/sms/messages/", status="429") == 2


async def test_an_accounts_own_rate_limit_overrides_the_settings(
    start: Starter, http: aiohttp.ClientSession
) -> None:
    """`gateway accounts set --rate --burst` (and the console's account page): an account with
    its own limit is held to it while limiting is off for the rest; a rate of 0 frees an account
    from the gateway-wide limit; "default" gives it the settings' again."""
    clock = FakeClock()
    gw = await start(limiter=RateLimiter(RateLimitSettings(rate=0.0, burst=3), clock=clock))
    capped, free = await gw.account(name="capped"), await gw.account(name="free")
    accounts = gw.app[ACCOUNTS]
    info = await accounts.set_rate_limit(capped.account.sid, 1.0, 2)
    assert info is not None and (info.rate, info.burst) == (1.0, 2)
    with pytest.raises(ValueError, match="burst"):
        await accounts.set_rate_limit(capped.account.sid, 1.0, 0)

    async def statuses(creds: Any, n: int) -> list[int]:
        out = []
        for _ in range(n):
            async with http.get(f"{gw.base_url}/sms/messages/", headers=gw.auth(creds)) as r:
                out.append(r.status)
        return out

    assert await statuses(capped, 3) == [200, 200, 429]
    assert await statuses(free, 10) == [200] * 10  # the settings: no limit
    clock.now += 1.0
    assert await statuses(capped, 2) == [200, 429]
    # Limiting on for everyone, but this account is exempt (rate 0), then back to the settings.
    gw.app[RATE_LIMITER].settings = RateLimitSettings(rate=1.0, burst=3)
    await accounts.set_rate_limit(free.account.sid, 0.0, None)
    assert await statuses(free, 10) == [200] * 10
    await accounts.set_rate_limit(free.account.sid, None, None)
    clock.now += 10.0
    assert await statuses(free, 4) == [200, 200, 200, 429]
