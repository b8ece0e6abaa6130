"""Unauthenticated routes: the index, tracked-link redirects, liveness and readiness."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy import text

from gateway.db.availability import is_outage
from gateway.http.errors import DB_OUTAGE, json_response
from gateway.http.ratelimit import LINK_MISSES, client_key, too_many_requests
from gateway.keys import LINKS, SESSIONS
from gateway.services.errors import not_found

log = logging.getLogger(__name__)

READY_DB_TIMEOUT = 2.0

routes = web.RouteTableDef()

# `GET /` for whoever opens the base URL printed by `gateway run`, in a browser or with curl:
# JSON like every other answer (a redirect would hand curl an HTML page), pointing the way.
INDEX = {
    "name": "Voice/SMS gateway API",
    "docs": "/docs",
    "openapi": "/openapi.json",
    "health": "/healthz",
    "authentication": "HTTP Basic, your account SID and auth token",
}


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return json_response(INDEX)


@routes.get("/l/{code}")
async def follow_link(request: web.Request) -> web.StreamResponse:
    misses, client = request.app[LINK_MISSES], client_key(request.remote)
    wait = misses.take(client)
    if wait > 0:
        return too_many_requests(wait, "Too many unknown links from your address")
    target = await request.app[LINKS].open(request.match_info["code"])
    if target is None:
        raise not_found("No such link.")
    misses.give_back(client)
    raise web.HTTPFound(target)


@routes.get("/healthz")
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def ready(request: web.Request) -> web.Response:
    """Ready to take API traffic: the database answers. SMPP, webhook receivers and Asterisk
    are not checked: requests are queued durably while they are away (see docs/faults.md)."""
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
    return json_response({"status": "ready", "database": "up"})
