"""The API's listening socket: aiohttp's TCP site behind a ListenerGuard (connection cap, request
head deadline), used by `gateway run` and by the tests' gateways alike.

aiohttp has no limit on connections and no deadline for a request head of its own: its
keep-alive timer (here set to the same `http.header_timeout`) closes a connection that idles
after a response, and the guard closes one that does not complete its first head in time.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.config import HttpConfig
from gateway.net.guard import ListenerGuard
from gateway.net.listening import listening


class GuardedSite(web.TCPSite):
    """TCPSite whose connections pass the guard before aiohttp's protocol sees them."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ListenerGuard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.wrap(server), self._host, self._port, backlog=self._backlog
        )


async def start_api(app: web.Application, cfg: HttpConfig, **runner_args: Any) -> web.AppRunner:
    """Start `app` (its cleanup contexts included) behind the guard on cfg.host:cfg.port; the
    caller ends it with `runner.cleanup()`. A listener that cannot bind raises ListenError, with
    whatever had started stopped again."""
    runner = web.AppRunner(app, keepalive_timeout=cfg.header_timeout, **runner_args)
    guard = ListenerGuard(
        "HTTP API (http.max_connections, http.header_timeout)",
        max_connections=cfg.max_connections,
        head_timeout=cfg.header_timeout,
    )
    try:
        await runner.setup()
        with listening("HTTP API", cfg.host, cfg.port, "http.host", "http.port"):
            await GuardedSite(runner, cfg.host, cfg.port, guard).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(
    app: web.Application, cfg: HttpConfig, on_listening: Callable[[], None] = lambda: None, **runner_args: Any
) -> None:
    """`gateway run`: serve until SIGINT or SIGTERM, then shut down gracefully. `on_listening`
    runs once every listener is bound."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = await start_api(app, cfg, **runner_args)
    try:
        on_listening()
        await stop.wait()
    finally:
        await runner.cleanup()
