"""What every console page shares: the route table with each page's audience, the session and
CSRF checks, the security headers, rendering, and HTML error pages.

A page is declared with its audience, `public`, `customer` or `operator`:

    @pages.get("/console/messages", "customer")
    async def messages(request: web.Request) -> web.StreamResponse: ...

Before a customer or operator page runs, the session cookie must name a live session of that
role (else a GET is sent to the sign-in page and a POST refused), and a POST must carry the
session's CSRF token in its `csrf` field. A public POST (the sign-in forms) must carry the
token of the `gw_console_login` cookie instead (double submit). Every POST with an Origin header
must come from this host.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from gateway.db.availability import is_outage
from gateway.http.console.sessions import ConsoleSessions, Session
from gateway.http.errors import DB_OUTAGE, Handler
from gateway.keys import CONFIG
from gateway.services.errors import ApiError

log = logging.getLogger(__name__)

PREFIX = "/console"
COOKIE = "gw_console"
LOGIN_COOKIE = "gw_console_login"
# No inline script or style anywhere, no frames, forms only to ourselves, nothing from elsewhere.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; media-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Access = Literal["public", "customer", "operator"]
PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=PageHandler)


@dataclass(frozen=True)
class Console:
    """What the console keeps on the app (CONSOLE): its templates, stylesheet and sessions."""

    env: jinja2.Environment
    css: bytes
    sessions: ConsoleSessions


CONSOLE = web.AppKey("console", Console)
SESSION = web.RequestKey("console_session", Session)


_PATTERN = re.compile(r"\{(\w+):[^}]*\}")


class Pages:
    """A route table (for `app.add_routes`) whose every route names its audience."""

    def __init__(self) -> None:
        self._defs: list[web.RouteDef] = []
        self.access: dict[tuple[str, str], Access] = {}  # (method, path) -> audience

    def __iter__(self) -> Iterator[web.RouteDef]:
        return iter(self._defs)

    def get(self, path: str, access: Access) -> Callable[[H], H]:
        return self.route("GET", path, access)

    def post(self, path: str, access: Access) -> Callable[[H], H]:
        return self.route("POST", path, access)

    def route(self, method: str, path: str, access: Access) -> Callable[[H], H]:
        def register(handler: H) -> H:
            self._defs.append(web.RouteDef(method, path, _guarded(access, handler), {}))
            self.access[(method, _PATTERN.sub(r"{\1}", path))] = access  # as resource.canonical
            return handler

        return register


def _guarded(access: Access, handler: PageHandler) -> PageHandler:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            _same_origin(request)
        if access == "public":
            if request.method == "POST":
                form = await request.post()
                _check_token(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf"))
            return await handler(request)
        session = await current_session(request)
        if session is None or session.role != access or not _operator_still_configured(request, session):
            if request.method != "POST":  # GET or HEAD: to the sign-in page
                return see_other(login_path(access))
            raise ApiError(403, {"detail": "Your session has ended: sign in again."})
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            _check_token(session.csrf, form.get("csrf"))
        return await handler(request)

    return endpoint


def _operator_still_configured(request: web.Request, session: Session) -> bool:
    """An operator session lasts only while its user is the configured one and operator
    sign-in is on (a changed name or a removed hash ends it at the next restart)."""
    if session.role != "operator":
        return True
    cfg = request.app[CONFIG].console
    return bool(cfg.operator_password_hash) and session.operator == cfg.operator_username


def login_path(access: Access) -> str:
    return f"{PREFIX}/operator/login" if access == "operator" else f"{PREFIX}/login"


def _check_token(expected: str, given: object) -> None:
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise ApiError(403, {"detail": "The form was stale or not sent from this console: reload and retry."})


def _same_origin(request: web.Request) -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        return
    try:
        host = urlsplit(origin).netloc
    except ValueError:
        host = ""
    if host.lower() != request.host.lower():
        raise ApiError(403, {"detail": "Cross-site form refused."})


async def current_session(request: web.Request) -> Session | None:
    if SESSION in request:
        return request[SESSION]
    token = request.cookies.get(COOKIE, "")
    return await request.app[CONSOLE].sessions.find(token) if token else None


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def secure(request: web.Request) -> bool:
    """Cookies get `Secure` when this request came over TLS or the gateway's public URL is
    https (TLS ended at a proxy in front; X-Forwarded-Proto is not trusted)."""
    return request.secure or request.app[CONFIG].public_base_url.startswith("https://")


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        COOKIE, token, path=f"{PREFIX}/", httponly=True, samesite="Strict", secure=secure(request)
    )


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=f"{PREFIX}/", secure=secure(request), httponly=True, samesite="Strict")


def login_form(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    """A sign-in page: its form's CSRF token is the login cookie's value (double submit), set
    now if the browser has none."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    if len(token) < 32 or len(token) > 64:
        token = secrets.token_urlsafe(32)
    response = render(request, template, {**context, "login_csrf": token}, status=status)
    response.set_cookie(
        LOGIN_COOKIE, token, path=f"{PREFIX}/", httponly=True, samesite="Strict", secure=secure(request)
    )
    return response


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def render(
    request: web.Request, template: str, context: Mapping[str, Any] | None = None, *, status: int = 200
) -> web.Response:
    session = request.get(SESSION)
    values = {"session": session, "csrf": session.csrf if session else "", "path": request.path}
    html = request.app[CONSOLE].env.get_template(template).render({**values, **(context or {})})
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def error_page(request: web.Request, status: int, detail: str) -> web.Response:
    return render(request, "error.html", {"status": status, "detail": detail}, status=status)


def _detail(body: Mapping[str, Any]) -> str:
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail
    return "; ".join(f"{k}: {v[0] if isinstance(v, list) and v else v}" for k, v in body.items())


def is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Console paths only: HTML error pages instead of JSON, and the security headers. Every
    page but the stylesheet is `no-store` (they show account data)."""
    if not is_console(request.path) or CONSOLE not in request.app:
        return await handler(request)
    try:
        response = await handler(request)
    except ApiError as exc:
        status = exc.status
        detail = "Not found." if status == 404 else _detail(exc.body)
        response = error_page(request, status, detail)
    except web.HTTPException as exc:
        if exc.status == 413:
            detail = f"The upload is too large (at most {request.app._client_max_size} bytes)."
        else:
            detail = "Not found." if exc.status == 404 else exc.reason
        response = error_page(request, exc.status, detail)
    except Exception as exc:
        outage = request.app.get(DB_OUTAGE)
        if outage is not None and is_outage(exc):
            outage.report(exc, f"console {request.method} {request.path}")
            response = error_page(request, 503, "The database is not answering; try again shortly.")
        else:
            log.exception("unhandled error on console %s %s", request.method, request.path)
            response = error_page(request, 500, "Internal error; it has been logged.")
    response.headers.update(HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response
