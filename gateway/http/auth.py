"""HTTP Basic `SID:AUTH_TOKEN` on every API route; the link redirect and health check are public."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from gateway.http.errors import ApiError, Handler
from gateway.keys import ACCOUNT, ACCOUNTS
from gateway.logs import log_context
from gateway.services.accounts import AccountInfo

# /metrics has its own optional bearer token (metrics.token).
PUBLIC_PREFIXES = ("/l/", "/healthz", "/readyz", "/openapi.json", "/docs", "/metrics")


def _service_plan(path: str) -> str | None:
    if path.startswith("/xms/v1/"):
        return path.split("/")[3] or None
    return None


def _challenge(detail: str) -> ApiError:
    return ApiError(401, {"detail": detail})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        raise _challenge("Authentication credentials were not provided.")
    plan = _service_plan(request.path)
    if plan is not None and scheme.lower() == "bearer":
        # Sinch style: the SID is the service_plan_id in the path, the bearer is the token.
        account = await request.app[ACCOUNTS].authenticate(plan, value.strip())
        if account is None:
            raise _challenge("Invalid service plan or token.")
        return await _admitted(request, handler, account)
    if scheme.lower() != "basic":
        raise _challenge("Use HTTP Basic authentication with your SID and auth token.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _challenge("Invalid basic header.") from None
    sid, sep, token = decoded.partition(":")
    if not sep or not sid or not token or "\x00" in decoded:
        raise _challenge("Invalid basic header.")
    account = await request.app[ACCOUNTS].authenticate(sid, token)
    if account is None:
        raise _challenge("Invalid username/password.")
    if plan is not None and plan != sid:
        raise _challenge("The service plan in the path is not this account's.")
    return await _admitted(request, handler, account)


async def _admitted(request: web.Request, handler: Handler, account: AccountInfo) -> web.StreamResponse:
    request[ACCOUNT] = account
    with log_context(account=account.sid):
        return await handler(request)
