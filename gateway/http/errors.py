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
    try:
        return await _answered(request, handler)
    except ApiError as exc:
        if request.path.startswith(SINCH_PREFIX):
            exc = sinch_error(exc)
        return json_response(exc.body, status=exc.status)


async def _answered(request: web.Request, handler: Handler) -> web.StreamResponse:
    # No id or filter contains NUL, and PostgreSQL would refuse it as a parameter.
    if "\x00" in request.path:  # so there is nothing at such a path (404 is documented on ids)
        raise ApiError(404, {"detail": "Not found."})
    if "%00" in request.query_string or "\x00" in request.query_string:
        raise ApiError(400, {"detail": "NUL characters are not allowed in the URL."})
    try:
        return await handler(request)
    except ApiError:
        raise
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size  # the configured http.max_body_bytes
        raise ApiError(413, {"detail": f"Request body too large (max {limit} bytes)."}) from None
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        raise ApiError(exc.status, {"detail": exc.reason}) from None
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


# The Sinch XMS routes: their 400, 403 and 404 answers are Sinch's error body.
SINCH_PREFIX = "/xms/"
# Sinch's codes for what its 400/403/404 refuse; the text says which field and why.
_SINCH_CODES = {400: "syntax_constraint_violation", 403: "forbidden", 404: "not_found"}


def sinch_error(exc: ApiError, code: str | None = None) -> ApiError:
    """An error as the Sinch XMS API answers it: `{"code": "...", "text": "..."}` for 400, 403
    and 404 (`text` names each bad field: "to: reason; from: reason"); other statuses as they
    are. `code`: Sinch's code when it is not the status's usual one."""
    code = code or _SINCH_CODES.get(exc.status)
    if code is None or set(exc.body) == {"code", "text"}:
        return exc
    detail = exc.body.get("detail")
    if isinstance(detail, str):
        return ApiError(exc.status, {"code": code, "text": detail})
    reasons = "; ".join(
        f"{name}: {why[0] if isinstance(why, list) and why else why}" for name, why in exc.body.items()
    )
    return ApiError(exc.status, {"code": code, "text": reasons})


def db_unavailable(retry_after: int) -> web.Response:
    response = json_response({"detail": "Service temporarily unavailable: database"}, status=503)
    response.headers["Retry-After"] = str(retry_after)
    return response
