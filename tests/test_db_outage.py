"""PostgreSQL going away and coming back: a TCP proxy the test controls stands between the
gateway and the database, and is cut (listener closed, every connection reset) and restored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from tests.conftest import basic, gateway_config, start_gateway, wait_for
from tests.webhook_receiver import Receiver


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the upstream; `cut()` is the database vanishing from the
    network (connection refused, open connections reset), `restore()` its return."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()


@pytest_asyncio.fixture
async def pg_proxy(clean_db: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    url = make_url(clean_db)
    if url.get_backend_name() != "postgresql":
        pytest.skip("an outage needs a database behind a socket")
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    await proxy.cut()


async def _answer(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, Any, str | None]:
    async with asyncio.timeout(10), http.request(method, url, **kw) as r:
        body = await r.json()  # JSON in every case, 503 included
        return r.status, body, r.headers.get("Retry-After")


async def test_api_and_workers_ride_out_a_database_outage(
    pg_proxy: tuple[TcpProxy, str],
    sim_smsc: Any,
    receiver: Receiver,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    proxy, db_url = pg_proxy
    # Binds refused at first: the message posted before the outage waits in the queue, so it
    # is the workers that must pick it up once the database is back.
    await sim_smsc.configure(reject_binds=True)
    gw = await start_gateway(gateway_config(db_url, sim_smsc.host, sim_smsc.port))
    try:
        creds = await gw.account()
        good, wrong = gw.auth(creds), basic(creds.account.sid, "not-the-token")
        stranger = basic("f" * 32, "whatever")
        api = f"{gw.base_url}/sms/messages/"
        send = {
            "recipient": "+819012345678",
            "sender": "Gateway",
            "message": "hello",
            "callbackurl": receiver.url("/status"),
        }
        status, body, _ = await _answer(http, "POST", api, json=send, headers=good)
        assert status == 201, body
        msgid = body[0]["msgid"]

        await proxy.cut()
        await sim_smsc.configure()  # binds accepted: the dispatcher now tries to claim, and fails
        caplog.clear()
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < 4.0:
            for method, url, kw in [
                ("GET", f"{api}{msgid}/", {"headers": good}),
                ("POST", api, {"json": send, "headers": good}),
                ("GET", api, {"headers": wrong}),
                ("POST", api, {"json": send, "headers": stranger}),
                ("GET", f"{gw.base_url}/readyz", {}),
            ]:
                status, body, retry_after = await _answer(http, method, url, **kw)
                assert status == 503, (method, url, status, body)
                assert "detail" in body
                if not url.endswith("/readyz"):
                    assert body == {"detail": "Service temporarily unavailable: database"}
                    assert retry_after is not None and int(retry_after) >= 1
            await asyncio.sleep(0.05)
        during = [r for r in caplog.records if r.name.startswith("gateway")]
        # One line when it started (maybe a summary): not a line, let alone a traceback, per
        # request or per loop pass (hundreds of each went by).
        assert not [r for r in during if r.exc_info], [r.getMessage() for r in during if r.exc_info]
        assert len([r for r in during if r.levelno >= logging.WARNING]) <= 5, [r.getMessage() for r in during]
        assert any("database unreachable" in r.getMessage() for r in during)

        await proxy.restore()

        async def answers_again() -> bool:
            status, _, _ = await _answer(http, "GET", f"{api}{msgid}/", headers=good)
            return status == 200

        await wait_for(answers_again, timeout=15, interval=0.2)
        assert (await _answer(http, "GET", api, headers=wrong))[0] == 401
        assert (await _answer(http, "POST", api, json=send, headers=good))[0] == 201
        assert (await _answer(http, "GET", f"{gw.base_url}/readyz"))[0] == 200

        # The background loops found the database again by themselves: the message accepted
        # before the outage goes out, and its status callbacks reach the receiver.
        async def delivered() -> bool:
            _, body, _ = await _answer(http, "GET", f"{api}{msgid}/", headers=good)
            return bool(body["status"] == "DELIVERED")

        await wait_for(delivered, timeout=40, interval=0.2)
        await wait_for(lambda: _callbacks(receiver, msgid), timeout=20)
        assert any("database reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await gw.runner.cleanup()


async def _callbacks(receiver: Receiver, msgid: str) -> bool:
    return any(msgid.encode() in h.body and b"DELIVERED" in h.body for h in receiver.on("/status"))
