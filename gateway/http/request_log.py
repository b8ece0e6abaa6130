"""Request ids and the access log.

Every request gets an id: the caller's `X-Request-ID` when it is a sane token (so a request can
be followed from the caller's own logs), else a new one. It is echoed in the response header
and bound to every log line written while the request is handled.
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.http.errors import Handler
from gateway.keys import ACCOUNT
from gateway.logs import log_context

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(HEADER, "")
    # Anything else could forge log fields or lines, so it is replaced, not cleaned.
    request_id = given if _SANE.fullmatch(given) else uuid.uuid4().hex[:16]
    with log_context(request_id=request_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects and the like, raised past the error middleware
            exc.headers[HEADER] = request_id
            raise
    response.headers[HEADER] = request_id
    return response


class AccessLogger(AbstractAccessLogger):
    """One structured line per request on the `gateway.access` logger (log.access = true)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        account = request.get(ACCOUNT)
        self.logger.info(
            "%s %s %d",
            request.method,
            request.path,
            response.status,
            extra={
                "request_id": response.headers.get(HEADER, ""),
                "account": account.sid if account is not None else None,
                "status": response.status,
                "ms": round(time * 1000, 1),
                "remote": request.remote,
            },
        )


def access_logger() -> logging.Logger:
    return logging.getLogger("gateway.access")
