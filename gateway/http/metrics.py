"""Prometheus metrics: `GET /metrics` in the text exposition format (version 0.0.4).

Hand-rolled (no client library): a handful of counters, gauges and one histogram, kept per
process in a `Metrics` object the app owns (`app[METRICS]`). Counters are totals since the
process started; rates are PromQL's job, e.g.

    rate(gateway_sms_submits_total{result="ok"}[5m])          submits/s accepted by the SMSC
    rate(gateway_sms_receipts_total[5m])                      DLRs/s
    histogram_quantile(0.99, rate(gateway_sms_submit_seconds_bucket[5m]))
    histogram_quantile(0.5, rate(gateway_sms_delivery_seconds_bucket[5m]))    median DLR latency

What is exposed:

    gateway_sms_queue_depth                  gauge    messages QUEUED (shared DB: the same on every node)
    gateway_webhook_backlog                  gauge    webhook deliveries PENDING (shared DB)
    gateway_db_up                            gauge    1 if the two queries above answered
    gateway_sms_submits_total{result}        counter  submit_sm outcomes: ok | error
    gateway_sms_submit_seconds               histogram  submit_sm -> submit_sm_resp (all parts)
    gateway_sms_receipts_total{state}        counter  DLRs: DELIVERED | FAILED | PENDING | OTHER
    gateway_sms_delivery_seconds             histogram  accepted by the SMSC -> final status (DLR latency)
    gateway_sms_settled_total{status}        counter  messages settled by receipts: DELIVERED | FAIL
    gateway_sms_mo_total                     counter  MO deliver_sm received (parts, before reassembly)
    gateway_webhook_posts_total{code}        counter  webhook POSTs by answer: 2xx 3xx 4xx 5xx error
    gateway_smpp_bound                       gauge    1 while the SMPP transceiver is bound
    gateway_calls_in_progress                gauge    AGI calls being handled now
    gateway_calls_total                      counter  AGI calls started
    gateway_http_requests_total{method,route,status}  counter  API requests, by route template

The DB gauges cost one indexed COUNT each per scrape, (status, next_attempt_at) indexes on
both tables. Everything else is this process's: with several nodes, sum over instances.

`/metrics` is public unless `MetricsSettings.token` is set; then it needs
`Authorization: Bearer <token>` (Prometheus: `authorization: {credentials: ...}`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import func, select

from gateway.db.availability import is_outage
from gateway.db.models import Message, WebhookDelivery
from gateway.http.errors import DB_OUTAGE, Handler
from gateway.keys import SESSIONS
from gateway.services.errors import ApiError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SUBMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELIVERY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0)
RECEIPT_STATES = ("DELIVERED", "FAILED", "PENDING")
DB_TIMEOUT = 5.0
UNMATCHED = "(unmatched)"  # requests no route matched: one label value, not one per probed URL
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_GONE = 499  # the client went away before the answer (nginx's convention)


@dataclass(frozen=True)
class MetricsSettings:
    # If set, /metrics requires `Authorization: Bearer <token>`; empty = open (bind the API
    # to an internal interface, or set this).
    token: str = ""


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)) + "}"


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self.values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def lines(self) -> list[str]:
        out = self.header()
        for key in sorted(self.values):
            out.append(f"{self.name}{_labels(self.labelnames, key)} {_num(self.values[key])}")
        return out


class Gauge(_Family):
    kind = "gauge"

    def lines_for(self, value: float | None) -> list[str]:
        """A gauge with no labels whose value is read at scrape time; None = omitted."""
        if value is None:
            return []
        return [*self.header(), f"{self.name} {_num(value)}"]


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help_text)
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def lines(self) -> list[str]:
        out = self.header()
        cumulative = 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            out.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {cumulative}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{self.name}_sum {_num(self.sum)}")
        out.append(f"{self.name}_count {self.count}")
        return out


class Metrics:
    """This process's counters plus the hooks the workers call. All methods are cheap and sync.

    `calls_in_progress` and `smpp_bound`, when given, are read at scrape time and take precedence
    over what `call_started`/`call_ended` and `bind_state` recorded.
    """

    def __init__(
        self,
        settings: MetricsSettings | None = None,
        *,
        calls_in_progress: Callable[[], int] | None = None,
        smpp_bound: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings or MetricsSettings()
        self._calls_in_progress = calls_in_progress
        self._smpp_bound = smpp_bound
        self._bound = False
        self._calls_now = 0
        self.queue_depth = Gauge("gateway_sms_queue_depth", "Messages waiting to be submitted (QUEUED).")
        self.webhook_backlog = Gauge(
            "gateway_webhook_backlog", "Webhook deliveries waiting to be delivered (PENDING)."
        )
        self.db_up = Gauge("gateway_db_up", "1 if the database answered the scrape-time queries.")
        self.submits = Counter(
            "gateway_sms_submits_total", "submit_sm outcomes (one per message).", ["result"]
        )
        self.submit_seconds = Histogram(
            "gateway_sms_submit_seconds", "Time from submit_sm to the last submit_sm_resp.", SUBMIT_BUCKETS
        )
        self.receipts = Counter("gateway_sms_receipts_total", "Delivery receipts received.", ["state"])
        self.delivery_seconds = Histogram(
            "gateway_sms_delivery_seconds",
            "Time from the SMSC accepting a message to its final status (receipts).",
            DELIVERY_BUCKETS,
        )
        self.settled_total = Counter(
            "gateway_sms_settled_total", "Messages brought to a final status by receipts.", ["status"]
        )
        self.mos = Counter(
            "gateway_sms_mo_total", "Mobile-originated deliver_sm received (each part of a long MO counts)."
        )
        self.webhooks = Counter(
            "gateway_webhook_posts_total", "Webhook POST attempts by answer class.", ["code"]
        )
        self.bound = Gauge("gateway_smpp_bound", "1 while the SMPP transceiver is bound.")
        self.calls_now = Gauge("gateway_calls_in_progress", "AGI calls being handled now.")
        self.calls = Counter("gateway_calls_total", "AGI calls started.")
        self.http = Counter(
            "gateway_http_requests_total", "HTTP requests by route template.", ["method", "route", "status"]
        )

    # --- hooks -----------------------------------------------------------------------------

    def submit_done(self, seconds: float, ok: bool) -> None:
        """One message's submit finished: ok = the SMSC accepted every part."""
        self.submits.inc("ok" if ok else "error")
        self.submit_seconds.observe(max(0.0, seconds))

    def receipt(self, state: str = "") -> None:
        """A delivery receipt arrived; state is smpp.types.ReceiptState's value."""
        self.receipts.inc(state if state in RECEIPT_STATES else "OTHER")

    def settled(self, status: str, seconds: float | None) -> None:
        """A message reached its final status (DELIVERED or FAIL) from its receipts."""
        self.settled_total.inc(status if status in ("DELIVERED", "FAIL") else "OTHER")
        if seconds is not None:
            self.delivery_seconds.observe(max(0.0, seconds))

    def mo(self) -> None:
        self.mos.inc()

    def webhook(self, status_code: int | None) -> None:
        """One webhook POST answered (status_code) or failed without an answer (None)."""
        if status_code is None or not 100 <= status_code <= 599:
            self.webhooks.inc("error")
        else:
            self.webhooks.inc(f"{status_code // 100}xx")

    def bind_state(self, bound: bool) -> None:
        self._bound = bound

    def call_started(self) -> None:
        self._calls_now += 1
        self.calls.inc()

    def call_ended(self) -> None:
        self._calls_now = max(0, self._calls_now - 1)

    def http_request(self, method: str, route: str, status: int) -> None:
        self.http.inc(method, route, str(status))

    # --- exposition --------------------------------------------------------------------------

    def render(self, queue_depth: int | None = None, webhook_backlog: int | None = None) -> str:
        """The exposition text; the DB gauges are passed in (None = the query failed)."""
        bound = self._smpp_bound() if self._smpp_bound is not None else self._bound
        calls = self._calls_in_progress() if self._calls_in_progress is not None else self._calls_now
        db_ok = queue_depth is not None and webhook_backlog is not None
        lines: list[str] = [
            *self.queue_depth.lines_for(queue_depth),
            *self.webhook_backlog.lines_for(webhook_backlog),
            *self.db_up.lines_for(1 if db_ok else 0),
            *self.submits.lines(),
            *self.submit_seconds.lines(),
            *self.receipts.lines(),
            *self.delivery_seconds.lines(),
            *self.settled_total.lines(),
            *self.mos.lines(),
            *self.webhooks.lines(),
            *self.bound.lines_for(1 if bound else 0),
            *self.calls_now.lines_for(calls),
            *self.calls.lines(),
            *self.http.lines(),
        ]
        return "\n".join(lines) + "\n"


METRICS = web.AppKey("metrics", Metrics)


async def _db_gauges(app: web.Application) -> tuple[int | None, int | None]:
    sessions = app.get(SESSIONS)
    if sessions is None:
        return None, None
    try:
        async with asyncio.timeout(DB_TIMEOUT), sessions() as s:
            queued = await s.scalar(
                select(func.count()).select_from(Message).where(Message.status == "QUEUED")
            )
            pending = await s.scalar(
                select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "PENDING")
            )
    except Exception as exc:  # a scrape must still answer, with gateway_db_up 0
        outage = app.get(DB_OUTAGE)
        if outage is not None and (isinstance(exc, TimeoutError) or is_outage(exc)):
            outage.report(exc, "/metrics")
        else:
            log.warning("metrics: database gauges unavailable", exc_info=True)
        return None, None
    return int(queued or 0), int(pending or 0)


routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app.get(METRICS)
    if metrics is None:
        raise ApiError(404, {"detail": "Metrics are not enabled on this gateway."})
    token = metrics.settings.token
    if token:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise ApiError(401, {"detail": "Use Authorization: Bearer <metrics token>."})
    queued, pending = await _db_gauges(request.app)
    body = metrics.render(queued, pending)
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every request by method, route template and final status. Place it first (outside
    `error_middleware`) so it sees the status the client gets: 401s, 429s and 500s included."""
    metrics = request.app.get(METRICS)
    if metrics is None:
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects (3xx) are raised through error_middleware
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        method = request.method if request.method in METHODS else "OTHER"
        metrics.http_request(method, _route_label(request), status)
