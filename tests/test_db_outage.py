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
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.db.availability import DbOutage, is_outage
from gateway.db.engine import create_engine
from smpp.client_wire import ESME_RX_T_APPN
from tests.conftest import basic, free_port, gateway_config, start_gateway, wait_for
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
        # Inbound SMS during the outage cannot be stored: the SMSC is asked to redeliver
        # (ESME_RX_T_APPN), quietly.
        await wait_for(lambda: _bound(sim_smsc), timeout=20)
        for _ in range(3):
            await sim_smsc.simulator.inject_mo("+819011112222", "+815012345678", b"during the outage")
        await wait_for(lambda: _redelivery_asked(sim_smsc), timeout=10)
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


async def _bound(sim_smsc: Any) -> bool:
    return bool(sim_smsc.simulator.has_receiver())


async def _redelivery_asked(sim_smsc: Any) -> bool:
    return ESME_RX_T_APPN in sim_smsc.simulator.delivery_statuses


async def test_outage_told_apart_from_bugs(tmp_path: Any) -> None:
    """Real exceptions from real engines: an unreachable server is an outage; a statement the
    database refuses, or an OSError that did not come from the driver, is a bug (500)."""
    refused = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")
    sqlite = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        with pytest.raises(Exception) as down:
            async with refused.connect() as c:
                await c.execute(text("SELECT 1"))
        assert is_outage(down.value)
        async with sqlite.begin() as c:
            await c.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            await c.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(Exception) as duplicate:
            async with sqlite.begin() as c:
                await c.execute(text("INSERT INTO t VALUES (1)"))
        assert not is_outage(duplicate.value)
        with pytest.raises(Exception) as typo:
            async with sqlite.begin() as c:
                await c.execute(text("SELEC 1"))
        assert not is_outage(typo.value)
        with pytest.raises(Exception) as cannot_open:
            async with create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/x.sqlite3").connect():
                pass
        assert is_outage(cannot_open.value)
        assert not is_outage(ConnectionRefusedError(111, "a customer's webhook receiver"))
        assert not is_outage(TimeoutError())
    finally:
        await refused.dispose()
        await sqlite.dispose()


def test_an_outage_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = DbOutage(clock=lambda: now[0])
    failure = ConnectionRefusedError(111, "refused")
    assert outage.backoff() == DbOutage.BACKOFF_MIN
    with caplog.at_level(logging.WARNING, logger="gateway.db.availability"):
        while now[0] < 65.0:  # 100 failures a second for 65 s
            outage.report(failure, "API")
            now[0] = round(now[0] + 0.01, 2)
        assert outage.backoff() == DbOutage.BACKOFF_MAX
        outage.connected()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines  # the start, a summary at 30 s and 60 s, the return
    assert lines[0].startswith("database unreachable (ConnectionRefusedError")
    assert lines[1].startswith("database still unreachable after 30 s: 3000 failures in the last 30 s")
    assert lines[2].startswith("database still unreachable after 60 s:")
    assert lines[3] == "database reachable again after 65 s"
    assert not outage.down and outage.backoff() == DbOutage.BACKOFF_MIN
