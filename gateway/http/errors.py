"""Every error leaves as JSON naming the field; nothing reaches the caller as a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.db.availability import DbOutage, is_outage
from gateway.services.errors import ApiError

log = logging.getLogger(__name__)

# The process's view of database outages, shared with the background loops (gateway/app.py).
DB_OUTAGE = web.AppKey("db_outage", DbOutage)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # No id or filter contains NUL, and PostgreSQL would refuse it as a parameter.
    if "\x00" in request.path:  # so there is nothing at such a path (404 is documented on ids)
        return json_response({"detail": "Not found."}, status=404)
    if "%00" in request.query_string or "\x00" in request.query_string:
        return json_response({"detail": "NUL characters are not allowed in the URL."}, status=400)
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body, status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size  # the configured http.max_body_bytes
        return json_response({"detail": f"Request body too large (max {limit} bytes)."}, 413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"detail": exc.reason}, status=exc.status)
    except Exception as exc:
        outage = request.app.get(DB_OUTAGE)
        if outage is not None and is_outage(exc):
            # Not a bug and not the caller's fault: one log line per interval, not per request.
            resource = request.match_info.route.resource
            outage.report(exc, f"API {request.method} {resource.canonical if resource else '?'}")
            return db_unavailable(outage.RETRY_AFTER)
        # A bug must not leak internals; it is logged with the request for the operator.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"detail": "Internal error; it has been logged."}, status=500)


def db_unavailable(retry_after: int) -> web.Response:
    response = json_response({"detail": "Service temporarily unavailable: database"}, status=503)
    response.headers["Retry-After"] = str(retry_after)
    return response
