"""HTTP Basic `SID:AUTH_TOKEN` on every API route; the index, link redirect and health check are public.

Failed authentication is throttled per client address (the socket's peer; X-Forwarded-For is
not trusted): every refused credential takes a token from the address's bucket
(ratelimit.auth_failures_burst, refilled at ratelimit.auth_failures_per_second), and while it
is empty the address gets 429 with Retry-After for every credential it presents, without a
database query. The one exception is a credential that authenticated within the last few
seconds (AccountService.cached): it costs no query and a guesser cannot produce one, so clients
sharing the address with a guesser (NAT, a proxy) keep working while they are active.
Malformed or missing headers cost nothing and are answered 401 without being counted.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from gateway.http.errors import Handler
from gateway.http.ratelimit import AUTH_FAILURES, client_key, too_many_requests
from gateway.keys import ACCOUNT, ACCOUNTS
from gateway.logs import log_context
from gateway.services.accounts import AccountInfo
from gateway.services.errors import ApiError

# /metrics has its own optional bearer token (metrics.token); /console has its own sign-in and
# sessions (gateway/http/console).
PUBLIC_PREFIXES = ("/l/", "/healthz", "/readyz", "/openapi.json", "/docs", "/metrics", "/console")
PUBLIC_PATHS = frozenset({"/"})  # exact: every path starts with "/"


def _service_plan(path: str) -> str | None:
    if path.startswith("/xms/v1/"):
        return path.split("/")[3] or None
    return None


def _challenge(detail: str) -> ApiError:
    return ApiError(401, {"detail": detail})


class _Throttled(Exception):
    def __init__(self, wait: float) -> None:
        self.wait = wait


async def _authenticate(request: web.Request, sid: str, token: str) -> AccountInfo | None:
    accounts = request.app[ACCOUNTS]
    failures = request.app.get(AUTH_FAILURES)
    if failures is None:
        return await accounts.authenticate(sid, token)
    address = client_key(request.remote)
    wait = failures.wait(address)
    if wait > 0:
        account = accounts.cached(sid, token)
        if account is None:
            raise _Throttled(wait)
        return account
    account = await accounts.authenticate(sid, token)
    if account is None:
        failures.take(address)
    return account


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    try:
        return await _check(request, handler)
    except _Throttled as exc:
        return too_many_requests(exc.wait, "Too many failed authentication attempts")


async def _check(request: web.Request, handler: Handler) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    if not header:
        raise _challenge("Authentication credentials were not provided.")
    # Credentials are ASCII by construction; other bytes arrive as surrogate escapes that
    # neither base64 nor hashing accept.
    if not header.isascii():
        raise _challenge("Invalid authorization header.")
    scheme, _, value = header.partition(" ")
    plan = _service_plan(request.path)
    if plan is not None and scheme.lower() == "bearer":
        # Sinch style: the SID is the service_plan_id in the path, the bearer is the token.
        account = await _authenticate(request, plan, value.strip())
        if account is None:
            raise _challenge("Invalid service plan or token.")
        return await _admitted(request, handler, account)
    if scheme.lower() != "basic":
        raise _challenge("Use HTTP Basic authentication with your SID and auth token.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise _challenge("Invalid basic header.") from None
    sid, sep, token = decoded.partition(":")
    if not sep or not sid or not token or "\x00" in decoded:
        raise _challenge("Invalid basic header.")
    account = await _authenticate(request, sid, token)
    if account is None:
        raise _challenge("Invalid username/password.")
    if plan is not None and plan != sid:
        raise _challenge("The service plan in the path is not this account's.")
    return await _admitted(request, handler, account)


async def _admitted(request: web.Request, handler: Handler, account: AccountInfo) -> web.StreamResponse:
    request[ACCOUNT] = account
    with log_context(account=account.sid):
        return await handler(request)
