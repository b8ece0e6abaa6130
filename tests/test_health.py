"""/ (the way to the docs), /healthz (liveness) and /readyz (readiness: the database answers)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.db.engine import create_engine, session_factory
from gateway.http import routes_public
from gateway.keys import SESSIONS
from tests.conftest import Gateway, free_port, serve_app


async def test_ready_and_live_on_a_running_gateway(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.base_url}/readyz") as r:
        assert (r.status, await r.json()) == (200, {"status": "ready", "database": "up"})
    async with http.get(f"{gateway.base_url}/healthz") as r:
        assert (r.status, await r.json()) == (200, {"status": "ok"})


async def test_the_base_url_points_to_the_docs_without_credentials(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """`gateway run` prints the base URL; opening it answered 401 and said nothing about /docs."""
    async with http.get(f"{gateway.base_url}/") as r:
        assert (r.status, r.content_type) == (200, "application/json")
        index = await r.json()
    assert (index["docs"], index["openapi"], index["health"]) == ("/docs", "/openapi.json", "/healthz")
    for path, content_type in ((index["docs"], "text/html"), (index["openapi"], "application/json")):
        async with http.get(gateway.base_url + path) as r:
            assert (r.status, r.content_type) == (200, content_type), path
    # Only "/" itself is public: every other path still wants credentials.
    for path in ("/sms/messages/", "//sms/messages/", "/nowhere"):
        async with http.get(gateway.base_url + path) as r:
            assert r.status == 401, path


async def test_not_ready_while_the_database_does_not_answer(http: aiohttp.ClientSession) -> None:
    # A PostgreSQL server that is not there: every connection attempt is refused.
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")
    app = web.Application()
    app[SESSIONS] = session_factory(engine)
    app.add_routes(routes_public.routes)
    try:
        async with serve_app(app) as base_url:
            async with http.get(f"{base_url}/readyz") as r:
                assert r.status == 503
                assert (await r.json())["detail"].startswith("Not ready: the database")
            async with http.get(f"{base_url}/healthz") as r:
                assert r.status == 200  # alive all the same: restarting would not bring the database back
    finally:
        await engine.dispose()
