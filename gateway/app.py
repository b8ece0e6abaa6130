"""The one app factory: configuration in, aiohttp Application out, every resource owned by a
cleanup context so start-up and shutdown happen in one well-defined order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from functools import partial

import aiohttp
from aiohttp import web
from sqlalchemy import event

from gateway.config import Config, ConfigError, smsc_connectors
from gateway.db.availability import DbOutage
from gateway.db.engine import create_engine, is_sqlite, session_factory
from gateway.egress.client import policy_session
from gateway.egress.policy import SsrfPolicy
from gateway.http import (
    console,
    metrics,
    openapi,
    routes_batches,
    routes_dins,
    routes_inbound,
    routes_outbound,
    routes_public,
    routes_sins,
    routes_sms,
    routes_templates,
    routes_voice,
)
from gateway.http.auth import auth_middleware
from gateway.http.errors import DB_OUTAGE, error_middleware
from gateway.http.metrics import METRICS, Metrics, MetricsSettings, metrics_middleware
from gateway.http.ratelimit import (
    AUTH_FAILURES,
    LINK_MISSES,
    MAX_TRACKED_ADDRESSES,
    RATE_LIMITER,
    RateLimiter,
    RateLimitSettings,
    ratelimit_middleware,
)
from gateway.http.request_log import request_id_middleware
from gateway.keys import (
    ACCOUNTS,
    BATCHES,
    CALLS,
    CONFIG,
    CONNECTORS,
    ENGINE,
    INBOUND,
    LINKS,
    MESSAGES,
    NODE_ID,
    NUMBERS,
    REPORTS,
    SESSIONS,
    TEMPLATES,
    URL_POLICY,
)
from gateway.net.guard import IPNetwork, parse_networks
from gateway.net.listening import listening
from gateway.routing.rules import RulesError
from gateway.routing.source import RouteFile
from gateway.services.accounts import AccountService
from gateway.services.batches import BatchService
from gateway.services.dialing import DialPolicy
from gateway.services.inbound import InboundService, KeywordReplies
from gateway.services.messages import MessageService
from gateway.services.numbers import NumberService
from gateway.services.pricing import PriceList
from gateway.services.reports import Reports
from gateway.services.templates import TemplateService
from gateway.services.tracking import LinkTracker
from gateway.voice.assembly import call_service
from gateway.voice.fastagi import FastAgiServer
from gateway.voice.outbound import (
    OUTBOUND,
    OutboundSettings,
    agi_router,
    outbound_cleanup_ctx,
    price_table_problem,
)
from gateway.voice.retention import VoiceRetention
from gateway.workers import connectors as smsc
from gateway.workers.batch_sweep import BatchSweep
from gateway.workers.bind_report import BindReport
from gateway.workers.connectors import ConnectorPlan
from gateway.workers.dispatcher import Dispatcher
from gateway.workers.esme import EsmeGateway
from gateway.workers.lifecycle import Lifecycle
from gateway.workers.receipts import ReceiptApplier
from gateway.workers.smpp_events import CoreSmppEvents
from gateway.workers.webhook_sender import WebhookSender
from smpp.server import EsmeServer, EsmeServerConfig

log = logging.getLogger(__name__)

DISPATCHER = web.AppKey("dispatcher", Dispatcher)
# MO transactions in flight at once on PostgreSQL (by sender): bench/sms_in.py at 1,000 MO/s.
MO_WRITE_LANES = 4
ROUTES = web.AppKey("routes", RouteFile)
RECEIPTS = web.AppKey("receipts", ReceiptApplier)
WEBHOOKS = web.AppKey("webhooks", WebhookSender)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
SMSC_PORT = web.AppKey("smsc_port", int)
FASTAGI = web.AppKey("fastagi", FastAgiServer)
ESME_SERVER = web.AppKey("esme_server", EsmeServer)


def create_app(config: Config) -> web.Application:
    app = web.Application(
        # metrics outermost (it sees the final status, 401/429/500 included); the rate limit
        # inside auth, since it counts per account.
        # The console's middleware (HTML errors, security headers) only acts on /console/ paths.
        middlewares=[
            request_id_middleware,
            metrics_middleware,
            error_middleware,
            *([console.console_middleware] if config.console.enabled else []),
            auth_middleware,
            ratelimit_middleware,
        ],
        client_max_size=config.http.max_body_bytes,
    )
    app[CONFIG] = config
    app[NODE_ID] = config.dispatcher.node_id or f"{socket.gethostname()}:{config.http.port}"
    app[DB_OUTAGE] = DbOutage()
    app[URL_POLICY] = SsrfPolicy.from_config(config.outbound_http)
    app[METRICS] = Metrics(
        MetricsSettings(token=config.metrics.token),
        calls_in_progress=lambda: app[CALLS].in_progress if CALLS in app else 0,
        smpp_bound=lambda: app[CONNECTORS].bound_binds() if CONNECTORS in app else {},
        esme_sessions=lambda: app[ESME_SERVER].bound() if ESME_SERVER in app else 0,
    )
    try:
        app[RATE_LIMITER] = RateLimiter(
            RateLimitSettings(rate=config.ratelimit.rate, burst=config.ratelimit.burst)
        )
        app[AUTH_FAILURES] = RateLimiter(
            RateLimitSettings(
                rate=config.ratelimit.auth_failures_per_second, burst=config.ratelimit.auth_failures_burst
            ),
            max_keys=MAX_TRACKED_ADDRESSES,
        )
    except ValueError as exc:
        raise ConfigError(f"ratelimit: {exc}") from None
    _check_dialing(config)
    plans = [smsc.plan(c) for c in smsc_connectors(config.smpp)]
    app[ROUTES] = RouteFile(config.smpp.routes_file, [p.settings.id for p in plans])
    try:
        app[ROUTES].load()
    except RulesError as exc:
        raise ConfigError(f"smpp.routes_file {config.smpp.routes_file}: {exc}") from None
    links = config.links
    try:
        app[LINK_MISSES] = RateLimiter(
            RateLimitSettings(rate=links.miss_per_minute / 60, burst=links.miss_burst),
            max_keys=links.max_clients,
        )
    except ValueError as exc:
        raise ConfigError(f"links: {exc}") from None
    app.add_routes(openapi.routes)
    if config.metrics.enabled:
        app.add_routes(metrics.routes)
    app.add_routes(routes_public.routes)
    app.add_routes(routes_sms.routes)
    app.add_routes(routes_templates.routes)
    app.add_routes(routes_sins.routes)
    app.add_routes(routes_inbound.routes)
    app.add_routes(routes_batches.routes)
    app.add_routes(routes_dins.routes)
    app.add_routes(routes_voice.routes)
    app.add_routes(routes_outbound.routes)  # 503 while outbound calls are off
    app.cleanup_ctx.append(_database)
    if config.console.enabled:
        console.install(app)  # its session store opens after the database
    app.cleanup_ctx.append(_http_client)
    if config.simulator.enabled:
        app.cleanup_ctx.append(_simulator)
    app.cleanup_ctx.append(partial(_messaging, plans))
    if config.smpp_server.enabled:
        app.cleanup_ctx.append(partial(_smpp_server, _esme_server_config(config)))
    try:
        fastagi_peers = parse_networks(config.voice.fastagi_allowed_peers)
    except ValueError as exc:
        raise ConfigError(f"voice.fastagi_allowed_peers: {exc}") from None
    if config.voice.fastagi_enabled and not fastagi_peers:
        raise ConfigError("voice.fastagi_allowed_peers is empty: no Asterisk could connect")
    app.cleanup_ctx.append(partial(_voice, fastagi_peers))
    if config.voice.ami_enabled:
        v = config.voice
        app.cleanup_ctx.append(
            outbound_cleanup_ctx(
                OutboundSettings(
                    ami_host=v.ami_host,
                    ami_port=v.ami_port,
                    ami_username=v.ami_username,
                    ami_secret=v.ami_secret,
                    trunk=v.trunk,
                    ring_timeout=v.outbound_ring_timeout,
                    prices=v.outbound_prices,
                    allow_prefixes=v.outbound_allow_prefixes,
                    deny_number_types=v.deny_number_types,
                    max_concurrent=v.outbound_max_concurrent,
                    max_per_minute=v.outbound_max_per_minute,
                    max_call_seconds=v.max_call_seconds,
                ),
                lambda app: app[CALLS].executor,
                wake_webhooks=lambda app: app[WEBHOOKS].wake,
            )
        )
    return app


def _check_dialing(config: Config) -> None:
    """The toll-fraud settings, checked before anything starts."""
    v = config.voice
    try:
        DialPolicy.parse(v.outbound_allow_prefixes, v.deny_number_types)
        DialPolicy.parse(v.transfer_allow_prefixes, v.deny_number_types)
    except ValueError as exc:
        raise ConfigError(f"voice: {exc}") from None
    if v.outbound_max_concurrent < 0 or v.outbound_max_per_minute < 0:
        raise ConfigError("voice.outbound_max_concurrent and outbound_max_per_minute must be >= 0")
    if v.ami_enabled and (problem := price_table_problem(v.outbound_prices)) is not None:
        raise ConfigError(
            f"voice.ami_enabled is true but {problem}: outbound calls would not be billed. "
            "Set a price per minute for every prefix calls may reach, e.g. [voice.outbound_prices] "
            '"81" = 3.0'
        )


async def _database(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    engine = create_engine(cfg.database.url, cfg.database.pool_size)
    outage = app[DB_OUTAGE]
    # A new connection after an outage is the database coming back: say so once.
    event.listen(engine.sync_engine, "connect", lambda *_: outage.connected())
    sessions = session_factory(engine)
    app[ENGINE] = engine
    app[SESSIONS] = sessions
    app[ACCOUNTS] = AccountService(sessions)
    app[TEMPLATES] = TemplateService(sessions)
    app[LINKS] = LinkTracker(sessions, cfg.public_base_url)
    app[NUMBERS] = NumberService(sessions)
    app[REPORTS] = Reports(sessions)
    yield
    await engine.dispose()


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """The session for webhooks: each connection checked against the outbound URL policy, no
    cookie jar shared between tenants. (The voice bridge has its own, with the same policy.)"""
    session = policy_session(app[URL_POLICY], limit=100, limit_per_host=20)
    app[HTTP_CLIENT] = session
    yield
    await session.close()


async def _simulator(app: web.Application) -> AsyncIterator[None]:
    from smpp.simulator import SimulatorConfig as SimCfg
    from smpp.simulator import SmscSimulator
    from smpp.simulator_control import ControlServer

    cfg = app[CONFIG]
    sim = SmscSimulator(
        SimCfg(
            host=cfg.smpp.host,
            port=cfg.smpp.port,
            system_id=cfg.smpp.system_id,
            password=cfg.smpp.password,
            dlr_delay=cfg.simulator.dlr_delay,
            fail_prefix=cfg.simulator.fail_prefix or None,
        )
    )
    with listening("built-in SMSC simulator", cfg.smpp.host, cfg.smpp.port, "smpp.host", "smpp.port"):
        await sim.start()
    app[SMSC_PORT] = sim.port
    log.info("built-in SMSC simulator listening on %s:%d", cfg.smpp.host, sim.port)
    control = ControlServer(sim, cfg.simulator.control_port)
    if cfg.simulator.control_port:
        try:
            await control.start()
        except OSError as exc:
            # A convenience for demos, not worth refusing to start over (e.g. a second gateway).
            log.warning("simulator control port not started (`gateway simulate` cannot reach it): %s", exc)
    yield
    await control.stop()
    await sim.stop()


async def _messaging(plans: list[ConnectorPlan], app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    sessions = app[SESSIONS]
    base_url = cfg.public_base_url
    # The pieces wake each other; closures bind late, so construction order stays simple.
    dispatcher: Dispatcher | None = None
    webhooks: WebhookSender | None = None

    def wake_dispatcher() -> None:
        if dispatcher is not None:
            dispatcher.wake()

    def wake_webhooks() -> None:
        if webhooks is not None:
            webhooks.wake()

    def wake_esme(accounts: Iterable[int]) -> None:
        # Receipts and MO committed for these accounts: their receivers bound here look now.
        if ESME_SERVER in app:
            app[ESME_SERVER].wake(accounts)

    messages = MessageService(
        sessions,
        PriceList(cfg.sms.prices),
        base_url,
        cfg.sms.max_parts,
        cfg.sms.retention_days,
        cfg.sms.list_limit,
        wake_dispatcher,
    )
    webhooks = WebhookSender(
        sessions,
        app[HTTP_CLIENT],
        timeout=cfg.webhooks.timeout,
        first_retry=cfg.webhooks.first_retry_seconds,
        give_up_after=cfg.webhooks.give_up_after_seconds,
        batch_size=cfg.webhooks.batch_size,
        loops=cfg.webhooks.loops,
        max_in_flight_per_host=cfg.webhooks.max_in_flight_per_host,
        max_in_flight_per_account=cfg.webhooks.max_in_flight_per_account,
        poll_interval=cfg.webhooks.poll_interval,
        lease_seconds=cfg.webhooks.lease_seconds,
        reply_hook=lambda uid, text: inbound.reply_from_webhook(uid, text),
        observer=app[METRICS],
        db=app[DB_OUTAGE],
    )
    inbound = InboundService(
        sessions,
        app[NUMBERS],
        messages,
        KeywordReplies(cfg.sms.optout_reply, cfg.sms.optin_reply, cfg.sms.help_reply),
        cfg.sms.mo_reassembly_seconds,
        wake_dispatcher,
        wake_webhooks,
        fast_path=webhooks,
        wake_esme=wake_esme,
        # SQLite has one connection: a second lane would only queue for it.
        write_lanes=1 if is_sqlite(cfg.database.url) else MO_WRITE_LANES,
    )
    receipts = ReceiptApplier(
        sessions, base_url, wake_webhooks, observer=app[METRICS], fast_path=webhooks, wake_esme=wake_esme
    )
    if SMSC_PORT in app:
        # The built-in simulator took an ephemeral port: connectors at its address go there.
        at_simulator = (cfg.smpp.host, cfg.smpp.port)
        plans = [
            replace(p, client=replace(p.client, port=app[SMSC_PORT]))
            if (p.client.host, p.client.port) == at_simulator
            else p
            for p in plans
        ]
    bind_changes = Lifecycle()  # a bind went up or down: the report writes it now
    bind_changes.wake()  # and the first report at once, bound or not
    connectors = smsc.build(
        plans,
        lambda cid: CoreSmppEvents(
            receipts, inbound, app[METRICS], app[DB_OUTAGE], connector=cid, bind_changed=bind_changes.wake
        ),
        sessions,
        shared_rate=app[ENGINE].dialect.name == "postgresql",
        db=app[DB_OUTAGE],
    )
    routes = app[ROUTES]
    dispatcher = Dispatcher(
        sessions,
        connectors,
        receipts,
        base_url,
        node_id=app[NODE_ID],
        batch_size=cfg.dispatcher.batch_size,
        poll_interval=cfg.dispatcher.poll_interval,
        lease_seconds=cfg.dispatcher.lease_seconds,
        workers=cfg.dispatcher.workers,
        wake_webhooks=wake_webhooks,
        observer=app[METRICS],
        db=app[DB_OUTAGE],
        routes=lambda: routes.table,
        fast_path=webhooks,
        wake_esme=wake_esme,
    )
    app[RECEIPTS] = receipts
    app[CONNECTORS] = connectors
    app[DISPATCHER] = dispatcher
    app[WEBHOOKS] = webhooks
    app[MESSAGES] = messages
    app[INBOUND] = inbound
    app[BATCHES] = BatchService(sessions, messages, cfg.sms.max_parts, wake_dispatcher, wake_webhooks)
    housekeeping = Lifecycle()
    db = app[DB_OUTAGE]
    workers = [
        asyncio.create_task(_forever(db, "dispatcher", dispatcher.run), name="dispatcher"),
        asyncio.create_task(_forever(db, "webhook sender", webhooks.run), name="webhooks"),
        asyncio.create_task(
            _every(db, housekeeping, 2.0, "orphan receipt sweep", receipts.sweep), name="sweep"
        ),
        asyncio.create_task(
            _every(db, housekeeping, 10.0, "stale MO parts", inbound.flush_stale), name="mo-parts"
        ),
        asyncio.create_task(
            _every(db, housekeeping, 1.0, "batch sweep", BatchSweep(sessions, wake_webhooks, wake_esme).run),
            name="batch-sweep",
        ),
    ]
    binds = BindReport(sessions, connectors, app[NODE_ID], cfg.smpp.bind_report_seconds)
    workers.append(
        asyncio.create_task(
            _every(db, bind_changes, cfg.smpp.bind_report_seconds, "SMSC bind report", binds.write),
            name="bind-report",
        )
    )
    if routes.path is not None:
        workers.append(
            asyncio.create_task(
                _every(db, housekeeping, cfg.smpp.routes_check_seconds, "routing rules", routes.check),
                name="routes",
            )
        )
    client_task = asyncio.create_task(_forever(db, "smpp connectors", connectors.run), name="smpp")
    yield
    await messages.close()  # the HTTP site is already closed: commit what it accepted
    # Stop taking work, let in-flight batches record their outcome, then unbind.
    for lc in (dispatcher.lifecycle, webhooks.lifecycle, housekeeping, bind_changes):
        lc.request_stop()
    _, late = await asyncio.wait(workers, timeout=cfg.dispatcher.shutdown_seconds)
    for task in late:
        log.warning("%s did not stop in time; cancelling", task.get_name())
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connectors.stop(), 5)
    with contextlib.suppress(Exception):  # else its rows turn stale, as a crashed node's
        await asyncio.wait_for(binds.remove(), 5)
    client_task.cancel()
    await asyncio.gather(client_task, return_exceptions=True)
    await inbound.close()
    await receipts.close()


def _esme_server_config(config: Config) -> EsmeServerConfig:
    """The SMPP server's settings, TLS files loaded: checked before anything starts."""
    c = config.smpp_server
    if min(c.window, c.account_window, c.account_binds) < 1:
        raise ConfigError("smpp_server.window, account_window and account_binds must be at least 1")
    tls = None
    if c.tls:
        if not c.tls_cert_file:
            raise ConfigError("smpp_server.tls is true but smpp_server.tls_cert_file is not set")
        try:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(c.tls_cert_file, c.tls_key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"smpp_server: TLS files unusable: {exc}") from None
    return EsmeServerConfig(
        host=c.host,
        port=c.port,
        tls=tls,
        system_id=c.system_id,
        max_connections=c.max_connections,
        bind_timeout=c.bind_timeout,
        idle_timeout=c.idle_timeout,
        window=c.window,
        account_window=c.account_window,
        account_binds=c.account_binds,
        response_timeout=c.response_timeout,
        max_pdu_length=c.max_pdu_bytes,
        poll_interval=c.poll_interval,
        bind_failures=c.bind_failures_per_minute,
    )


async def _smpp_server(settings: EsmeServerConfig, app: web.Application) -> AsyncIterator[None]:
    """The SMPP server for ESMEs over the message service (gateway/workers/esme.py)."""
    cfg = app[CONFIG].smpp_server
    limiter = app[RATE_LIMITER]
    backend = EsmeGateway(
        app[SESSIONS],
        app[MESSAGES],
        throttle=limiter.take,
        lease_seconds=max(settings.response_timeout * 3, 30.0),
        parts_window=cfg.parts_window_seconds,
        db=app[DB_OUTAGE],
    )
    server = EsmeServer(settings, backend)
    with listening("SMPP server", cfg.host, cfg.port, "smpp_server.host", "smpp_server.port"):
        await server.start()
    app[ESME_SERVER] = server
    sweeps = Lifecycle()
    sweeper = asyncio.create_task(
        _every(app[DB_OUTAGE], sweeps, 10.0, "stale ESME parts", backend.flush_stale_parts), name="esme-parts"
    )
    yield
    sweeps.request_stop()
    await sweeper
    await server.stop()


async def _voice(fastagi_peers: tuple[IPNetwork, ...], app: web.Application) -> AsyncIterator[None]:
    """The AGI bridge: the call flow behind a FastAGI server."""
    cfg = app[CONFIG].voice
    webhooks = app[WEBHOOKS]
    # The bridge's own session for action_url and media: every fetch is for a live call (the
    # FastAGI connection limit bounds them), and a caller hears ringback until its action_url
    # answers, so call starts must neither wait behind webhook deliveries nor queue 20 at a
    # time per host (200 simultaneous callers of one customer: 10 rounds of its answer time).
    http = policy_session(app[URL_POLICY], limit=cfg.fastagi_max_connections, limit_per_host=0)
    async with (
        http,
        call_service(
            cfg,
            app[SESSIONS],
            app[NUMBERS],
            http,
            base_url=app[CONFIG].public_base_url,
            wake_webhooks=webhooks.wake,
            observer=app[METRICS],
        ) as calls,
    ):
        app[CALLS] = calls
        server: FastAgiServer | None = None
        if cfg.fastagi_enabled:
            # "outbound" scripts (answered calls we originated) go to OutboundCalls, looked up
            # per call since its cleanup context starts after this one.
            server = FastAgiServer(
                agi_router(calls.handle, lambda: app.get(OUTBOUND)),
                cfg.fastagi_host,
                cfg.fastagi_port,
                max_connections=cfg.fastagi_max_connections,
                allowed_peers=fastagi_peers,
                secret=cfg.fastagi_secret,
            )
            with listening(
                "FastAGI", cfg.fastagi_host, cfg.fastagi_port, "voice.fastagi_host", "voice.fastagi_port"
            ):
                await server.start()
            app[FASTAGI] = server  # the server logs where it listens
        sweeps = Lifecycle()
        sweepers = [
            asyncio.create_task(
                _every(
                    app[DB_OUTAGE],
                    sweeps,
                    60.0,
                    "call sweep",
                    partial(calls.sweep_abandoned, cfg.max_call_seconds),
                ),
                name="call-sweep",
            ),
            asyncio.create_task(
                _every(
                    app[DB_OUTAGE],
                    sweeps,
                    600.0,
                    "call retention",
                    VoiceRetention(app[SESSIONS], cfg.retention_days).sweep,
                ),
                name="call-retention",
            ),
        ]
        yield
        sweeps.request_stop()
        await asyncio.gather(*sweepers)
        if server is not None:
            await server.stop()


async def _forever(db: DbOutage, what: str, fn: Callable[[], Awaitable[None]]) -> None:
    """A background loop that dies of a bug is restarted, not left silently dead."""
    while True:
        try:
            await fn()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Restarted after 1 s (longer while the database is unreachable).
            await asyncio.sleep(max(1.0, db.failed(exc, f"{what} loop", log)))


async def _every(
    db: DbOutage, lifecycle: Lifecycle, seconds: float, what: str, fn: Callable[[], Awaitable[object]]
) -> None:
    while not lifecycle.stopping:
        await lifecycle.idle(seconds)
        if lifecycle.stopping:
            return
        try:
            await fn()
        except Exception as exc:
            db.failed(exc, what, log)  # its interval is the back-off
