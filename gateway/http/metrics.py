"""Prometheus metrics: `GET /metrics`, written by prometheus_client in the text format 0.0.4.

Every series lives on one `CollectorRegistry` per app (`app[METRICS].registry`), never the
library's global REGISTRY, so two apps in one process (the tests) never share a counter.
Counters are totals since the process started; rates are PromQL's job, e.g.

    sum(rate(gateway_sms_submits_total{result="ok"}[5m]))     submits/s accepted by the SMSCs
    histogram_quantile(0.99, rate(gateway_sms_submit_seconds_bucket[5m]))
    histogram_quantile(0.5, rate(gateway_sms_delivery_seconds_bucket[5m]))    median DLR latency
    histogram_quantile(0.99, sum by (route, le) (rate(gateway_http_request_duration_seconds_bucket[5m])))

The series are listed in docs/operations.md. Labels stay bounded: `route` is the matched
route's pattern (UNMATCHED otherwise), `method` one of METHODS or OTHER, `account` the first
`max_accounts` accounts seen and OTHER_ACCOUNT for the rest, `connector` one of the configured
SMSC connectors (`default` with the single [smpp] section). prometheus_client adds a `*_created`
series beside each counter and histogram (the time it started counting).

The database gauges (queue depth, webhook backlog, db up) are read when scraped: the endpoint
queries, hands the answers to the `_DbGauges` collector and renders, with no await in between.
They cost one indexed COUNT each per scrape; everything else is this process's: with several
nodes, sum over instances.

One process per node today. Several worker processes behind one port would each hold their
own registry, and a scrape would see only the one that answered. prometheus_client's
multiprocess mode is the way: PROMETHEUS_MULTIPROC_DIR set (and emptied) before any metric is
created, counters and histograms then written to mmap files there, and /metrics rendering a
fresh registry holding `MultiProcessCollector` over that directory plus `_DbGauges` (the
database answers are the same whichever process asks). `set_function` does not work there:
calls_in_progress becomes a plain gauge set by the hooks, smpp_bound one per connector, with a
`multiprocess_mode` (`max`, `livesum`); `mark_process_dead` runs on a worker's exit; the
process and GC collectors go (they describe only the process that answered).

`/metrics` is public unless `MetricsSettings.token` is set; then it needs
`Authorization: Bearer <token>` (Prometheus: `authorization: {credentials: ...}`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from gateway.db.availability import is_outage
from gateway.db.models import Message, WebhookDelivery
from gateway.http.api import Content, Json, Routes
from gateway.http.errors import DB_OUTAGE, Handler
from gateway.keys import SESSIONS
from gateway.services.errors import ApiError
from gateway.version import version

log = logging.getLogger(__name__)

SUBMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DELIVERY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0)
RECEIPT_STATES = ("DELIVERED", "FAILED", "PENDING")
DB_TIMEOUT = 5.0
UNMATCHED = "(unmatched)"  # requests no route matched: one label value, not one per probed URL
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_GONE = 499  # the client went away before the answer (nginx's convention)
# Accounts with a label of their own; later ones share OTHER_ACCOUNT, so a gateway with
# thousands of accounts does not grow thousands of series.
MAX_ACCOUNT_LABELS = 50
OTHER_ACCOUNT = "other"


@dataclass(frozen=True)
class MetricsSettings:
    # If set, /metrics requires `Authorization: Bearer <token>`; empty = open (bind the API
    # to an internal interface, or set this).
    token: str = ""


class _DbGauges(Collector):
    """The scrape-time database answers; None = the query failed (the gauge is left out)."""

    def __init__(self) -> None:
        self.queue_depth: int | None = None
        self.webhook_backlog: int | None = None

    def collect(self) -> Iterator[Metric]:
        if self.queue_depth is not None:
            yield GaugeMetricFamily(
                "gateway_sms_queue_depth", "Messages waiting to be submitted (QUEUED).", self.queue_depth
            )
        if self.webhook_backlog is not None:
            yield GaugeMetricFamily(
                "gateway_webhook_backlog",
                "Webhook deliveries waiting to be delivered (PENDING).",
                self.webhook_backlog,
            )
        up = self.queue_depth is not None and self.webhook_backlog is not None
        yield GaugeMetricFamily(
            "gateway_db_up", "1 if the database answered the scrape-time queries.", float(up)
        )


class _BoundGauge(Collector):
    """gateway_smpp_bound{connector}: the binds each connector has up, read when scraped."""

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gateway_smpp_bound",
            "SMPP binds up, per SMSC connector (0 = the connector is down).",
            labels=["connector"],
        )
        for connector, binds in self._read().items():
            family.add_metric([connector], float(binds))
        yield family


class Metrics:
    """This app's registry plus the hooks the workers call (gateway/workers/observer.py).

    `calls_in_progress`, when given, is read at scrape time and takes precedence over what
    `call_started`/`call_ended` recorded; `smpp_bound` (binds up per connector) is read at
    scrape time too, as is `esme_sessions` (ESMEs bound to the SMPP server).
    """

    def __init__(
        self,
        settings: MetricsSettings | None = None,
        *,
        calls_in_progress: Callable[[], int] | None = None,
        smpp_bound: Callable[[], Mapping[str, int]] | None = None,
        esme_sessions: Callable[[], int] | None = None,
        max_accounts: int = MAX_ACCOUNT_LABELS,
    ) -> None:
        self.settings = settings or MetricsSettings()
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._db = _DbGauges()
        r.register(self._db)
        r.register(_BoundGauge(smpp_bound or dict))
        Gauge(
            "gateway_smpp_server_sessions", "ESME sessions bound to the SMPP server now.", registry=r
        ).set_function(esme_sessions or (lambda: 0))
        self._calls_now = 0
        self._accounts: set[str] = set()
        self._max_accounts = max_accounts
        Gauge("gateway_build_info", "The running gateway's version.", ["version"], registry=r).labels(
            version()
        ).set(1)
        self.submits = Counter(
            "gateway_sms_submits_total",
            "submit_sm outcomes (one per message and SMSC connector tried).",
            ["connector", "result"],
            registry=r,
        )
        self.submits_by_account = Counter(
            "gateway_sms_submits_by_account_total",
            f"submit_sm outcomes per account (the first {max_accounts}; the rest as {OTHER_ACCOUNT}).",
            ["account", "result"],
            registry=r,
        )
        self.submit_seconds = Histogram(
            "gateway_sms_submit_seconds",
            "Time from submit_sm to the last submit_sm_resp.",
            buckets=SUBMIT_BUCKETS,
            registry=r,
        )
        self.receipts = Counter(
            "gateway_sms_receipts_total", "Delivery receipts received.", ["state"], registry=r
        )
        self.delivery_seconds = Histogram(
            "gateway_sms_delivery_seconds",
            "Time from the SMSC accepting a message to its final status (receipts).",
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.settled_total = Counter(
            "gateway_sms_settled_total",
            "Messages brought to a final status by receipts.",
            ["status"],
            registry=r,
        )
        self.mos = Counter(
            "gateway_sms_mo_total",
            "Mobile-originated deliver_sm received (each part of a long MO counts), by connector.",
            ["connector"],
            registry=r,
        )
        self.webhooks = Counter(
            "gateway_webhook_posts_total", "Webhook POST attempts by answer class.", ["code"], registry=r
        )
        calls_now = calls_in_progress or (lambda: self._calls_now)
        Gauge("gateway_calls_in_progress", "AGI calls being handled now.", registry=r).set_function(
            lambda: float(calls_now())
        )
        self.calls = Counter("gateway_calls_total", "AGI calls started.", registry=r)
        self.audio = Counter(
            "gateway_voice_audio_stored_total",
            "Audio callers left: voicemails and scripts' recordings, counted apart.",
            ["kind"],
            registry=r,
        )
        for kind in ("voicemail", "recording"):
            self.audio.labels(kind=kind)
        self.http = Counter(
            "gateway_http_requests_total",
            "HTTP requests by route template.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            registry=r,
        )

    # --- hooks -----------------------------------------------------------------------------

    def submit_done(self, seconds: float, ok: bool, account: str = "", connector: str = "") -> None:
        """One message's submit over one connector finished: ok = the SMSC accepted every part."""
        result = "ok" if ok else "error"
        self.submits.labels(connector, result).inc()
        self.submits_by_account.labels(self._account_label(account), result).inc()
        self.submit_seconds.observe(max(0.0, seconds))

    def _account_label(self, account: str) -> str:
        if account not in self._accounts and len(self._accounts) < self._max_accounts:
            self._accounts.add(account)
        return account if account in self._accounts else OTHER_ACCOUNT

    def receipt(self, state: str = "") -> None:
        """A delivery receipt arrived; state is smpp.types.ReceiptState's value."""
        self.receipts.labels(state if state in RECEIPT_STATES else "OTHER").inc()

    def settled(self, status: str, seconds: float | None) -> None:
        """A message reached its final status (DELIVERED or FAIL) from its receipts."""
        self.settled_total.labels(status if status in ("DELIVERED", "FAIL") else "OTHER").inc()
        if seconds is not None:
            self.delivery_seconds.observe(max(0.0, seconds))

    def mo(self, connector: str = "") -> None:
        self.mos.labels(connector).inc()

    def webhook(self, status_code: int | None) -> None:
        """One webhook POST answered (status_code) or failed without an answer (None)."""
        if status_code is None or not 100 <= status_code <= 599:
            self.webhooks.labels("error").inc()
        else:
            self.webhooks.labels(f"{status_code // 100}xx").inc()

    def call_started(self) -> None:
        self._calls_now += 1
        self.calls.inc()

    def left_audio(self, kind: str) -> None:
        self.audio.labels(kind=kind).inc()

    def call_ended(self) -> None:
        self._calls_now = max(0, self._calls_now - 1)

    def http_request(self, method: str, route: str, status: int, seconds: float | None = None) -> None:
        self.http.labels(method, route, str(status)).inc()
        if seconds is not None:
            self.http_seconds.labels(method, route).observe(max(0.0, seconds))

    # --- exposition --------------------------------------------------------------------------

    def render(self, queue_depth: int | None = None, webhook_backlog: int | None = None) -> str:
        """The exposition text; the DB gauges are passed in (None = the query failed)."""
        self._db.queue_depth, self._db.webhook_backlog = queue_depth, webhook_backlog
        return generate_latest(self.registry).decode()


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


routes = Routes("Operations", security="metrics")


@routes.get(
    "/metrics",
    returns=Content({"text/plain": {"type": "string"}}),
    errors={401, 404},
    operation_id="metrics",
)
async def metrics_endpoint(request: web.Request) -> Json:
    """Prometheus metrics (text exposition format 0.0.4)

    Open unless a metrics token is configured; then `Authorization: Bearer <token>`. Counters
    are per node; the queue and webhook backlog gauges read the shared database."""
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
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts and times every request by method, route template and final status. Place it
    first (outside `error_middleware`) so it sees the status the client gets: 401s, 429s and
    500s included."""
    metrics = request.app.get(METRICS)
    if metrics is None:
        return await handler(request)
    started = time.perf_counter()
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
        metrics.http_request(method, _route_label(request), status, time.perf_counter() - started)
