"""Unauthenticated routes: the index, tracked-link redirects, liveness and readiness."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy import text

from gateway.db.availability import is_outage
from gateway.http.api import Content, Json, Routes
from gateway.http.errors import DB_OUTAGE, json_response
from gateway.http.ratelimit import LINK_MISSES, client_key, too_many_requests
from gateway.http.responses import Health, Index, Ready
from gateway.keys import LINKS, SESSIONS
from gateway.services.errors import not_found

log = logging.getLogger(__name__)

READY_DB_TIMEOUT = 2.0

routes = Routes("Public", security="public")

# `GET /` for whoever opens the base URL printed by `gateway run`, in a browser or with curl:
# JSON like every other answer (a redirect would hand curl an HTML page), pointing the way.
INDEX = {
    "name": "Voice/SMS gateway API",
    "docs": "/docs",
    "openapi": "/openapi.json",
    "health": "/healthz",
    "authentication": "HTTP Basic, your account SID and auth token",
}


@routes.get("/", returns=Index)
async def index(request: web.Request) -> Json:
    """Where to start: the paths of the documentation and this document"""
    return INDEX


@routes.get(
    "/l/{code}",
    status=302,
    returns=Content({}),
    headers={"Location": {"schema": {"type": "string", "format": "uri"}}},
    errors={404, 429},
)
async def follow_link(request: web.Request) -> Json:
    """Tracked link redirect

    Records the first access and calls `lt_callbackurl`. Unknown codes are limited per client
    address (`links.miss_burst`, `links.miss_per_minute`); past the limit every code answers 429
    until Retry-After."""
    misses, client = request.app[LINK_MISSES], client_key(request.remote)
    wait = misses.take(client)
    if wait > 0:
        return too_many_requests(wait, "Too many unknown links from your address")
    target = await request.app[LINKS].open(request.match_info["code"])
    if target is None:
        raise not_found("No such link.")
    misses.give_back(client)
    raise web.HTTPFound(target)


@routes.get("/healthz", returns=Health)
async def health(request: web.Request) -> Json:
    """Liveness: the process serves HTTP"""
    return {"status": "ok"}


@routes.get("/readyz", returns=Ready, errors={503})
async def ready(request: web.Request) -> Json:
    """Readiness: the database answers

    503 while the database does not answer within 2 s. The SMSC, webhook receivers and
    Asterisk are not checked: work for them is queued durably (docs/faults.md)."""
    try:
        async with asyncio.timeout(READY_DB_TIMEOUT), request.app[SESSIONS]() as s:
            await s.execute(text("SELECT 1"))
    except Exception as exc:
        outage = request.app.get(DB_OUTAGE)
        if outage is not None and (isinstance(exc, TimeoutError) or is_outage(exc)):
            outage.report(exc, "/readyz")  # probed every few seconds: not a line each time
        else:
            log.warning("not ready: database: %r", exc)
        return json_response({"detail": "Not ready: the database does not answer."}, status=503)
    return {"status": "ready", "database": "up"}
