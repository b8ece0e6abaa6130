"""The web console at /console/: server-rendered pages for customers (signed in with SID and
auth token) and for the operator (configured credentials). No script, nothing fetched from
elsewhere; one stylesheet served from here. docs/console.md describes it, docs/security.md its
defences.

`install(app)` adds its routes, its middleware's state and the cleanup context that opens its
session store; `gateway/app.py` calls it when `console.enabled`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources

import jinja2
from aiohttp import web

from gateway.config import Config, ConfigError
from gateway.http.console import customer, operator
from gateway.http.console.passwords import parse_hash
from gateway.http.console.sessions import ConsoleSessions
from gateway.http.console.shared import CONSOLE, PREFIX, Console, Pages, console_middleware, is_console
from gateway.keys import CONFIG, SESSIONS

__all__ = ["PAGES", "console_middleware", "install", "is_console"]

static = Pages()
PAGES = (customer.pages, operator.pages, static)


@static.get(PREFIX + "/static/console.css", "public")
async def stylesheet(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=request.app[CONSOLE].css,
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "max-age=300"},
    )


def check_config(config: Config) -> None:
    if config.console.operator_password_hash:
        try:
            parse_hash(config.console.operator_password_hash)
        except ValueError as exc:
            raise ConfigError(f"console.operator_password_hash: {exc}") from None


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.http.console", "templates"),
        autoescape=True,  # every value is HTML-escaped unless a template says otherwise (none do)
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda v: "" if v is None else v.strftime("%Y-%m-%d %H:%M:%S")
    return env


async def _sessions(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG].console
    css = resources.files("gateway.http.console").joinpath("static/console.css").read_bytes()
    store = ConsoleSessions(
        app[SESSIONS], idle_seconds=cfg.session_idle_seconds, max_seconds=cfg.session_max_seconds
    )
    app[CONSOLE] = Console(_environment(), css, store)
    yield


def install(app: web.Application) -> None:
    """After the database's cleanup context (the session store needs it)."""
    check_config(app[CONFIG])
    for table in PAGES:
        app.add_routes(table)
    app.cleanup_ctx.append(_sessions)
