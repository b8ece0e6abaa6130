"""Connection exhaustion: the API's listener caps connections, closes those that do not send a
request head within http.header_timeout, and logs each condition once per interval; `gateway
run` under a low open-files limit survives more sockets than it has descriptors, with a log
of a few lines, and answers again as soon as the idle sockets are reaped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.net.fds import fit_caps
from tests.conftest import Gateway, gateway_config, start_gateway
from tests.procs import GatewayProcesses, gateway_processes

HEADER_TIMEOUT = 1.5


@pytest_asyncio.fixture
async def small_gateway(clean_db: str, sim_smsc: Any) -> AsyncIterator[Gateway]:
    cfg = gateway_config(
        clean_db, sim_smsc.host, sim_smsc.port, http__max_connections=20, http__header_timeout=HEADER_TIMEOUT
    )
    gw = await start_gateway(cfg)
    yield gw
    await gw.runner.cleanup()


def idle_sockets(port: int, n: int) -> list[socket.socket]:
    """n connections that never send a byte (non-blocking: a refused one reads EOF or a reset)."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        out.append(s)
    return out


@contextlib.contextmanager
def closing_all(sockets: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield sockets
    finally:
        for s in sockets:
            s.close()


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


async def wait_closed(sockets: list[socket.socket], within: float) -> float:
    """Seconds until the server closed every socket; fails after `within`."""
    start = time.monotonic()
    while not all(closed_by_server(s) for s in sockets):
        assert time.monotonic() - start < within, (
            f"{sum(not closed_by_server(s) for s in sockets)} still open"
        )
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def healthz(base_url: str, timeout: float = 1.0) -> int | None:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(f"{base_url}/healthz") as r:
                return r.status
    except (aiohttp.ClientError, TimeoutError):
        return None


def port_of(gw: Gateway) -> int:
    return int(gw.base_url.rsplit(":", 1)[1])


async def test_a_slow_header_client_is_disconnected_within_the_header_timeout(
    small_gateway: Gateway,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(small_gateway))
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # ...and the rest of the head never comes
    start = time.monotonic()
    assert await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 1.0) == b""
    assert time.monotonic() - start >= HEADER_TIMEOUT - 0.2
    writer.close()
    # A client that does send its head in time is answered, and an idle keep-alive connection
    # is closed after the same timeout.
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(small_gateway))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 1.0)
    writer.close()


async def test_idle_sockets_over_the_cap_cannot_keep_the_api_down(
    small_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = port_of(small_gateway)
    with closing_all(idle_sockets(port, 20)) as held:
        await asyncio.sleep(0.3)  # all 20 accepted: the cap
        start = time.monotonic()
        with closing_all(idle_sockets(port, 30)) as over:
            # Over the cap: each new connection is closed at once, not queued behind the idle ones.
            await wait_closed(over, within=1.0)
        # The idle ones are reaped by the header timeout, and the API answers again.
        await wait_closed(held, within=HEADER_TIMEOUT + 1.0)
        assert await healthz(small_gateway.base_url) == 200
        assert time.monotonic() - start < HEADER_TIMEOUT + 1.0
    # 30 refusals and 20 slow heads: one line each (the next ones come after the interval).
    full = [r for r in caplog.records if "connections open, the cap" in r.getMessage()]
    slow = [r for r in caplog.records if "no complete request head" in r.getMessage()]
    assert len(full) == 1 and len(slow) == 1, [r.getMessage() for r in caplog.records]


OPEN_FILES = (128, 256)  # soft, hard: `gateway run` raises the soft limit to the hard one
SOCKETS = 400  # more than the gateway has descriptors


def test_connection_caps_are_fitted_under_the_open_files_limit() -> None:
    assert fit_caps([1000, 1000], 1 << 20) == [1000, 1000]
    assert fit_caps([1000, 1000], 1024) == [384, 384]  # a quarter kept for everything else
    assert fit_caps([1000, 0], 256) == [64, 0]  # FastAGI off
    assert fit_caps([300, 100], 1024) == [300, 100]


@pytest_asyncio.fixture
async def procs(tmp_path: Any) -> AsyncIterator[GatewayProcesses]:
    async with gateway_processes(tmp_path) as p:
        yield p


async def test_more_sockets_than_descriptors_neither_floods_the_log_nor_kills_the_api(
    procs: GatewayProcesses, clean_db: str, sim_smsc: Any
) -> None:
    gw = procs.spawn(
        "nofile",
        clean_db,
        sim_smsc.port,
        GATEWAY_HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        GATEWAY_VOICE_FASTAGI_ENABLED="true",
        GATEWAY_VOICE_FASTAGI_PORT="0",
    )
    gw.open_files = OPEN_FILES
    await gw.start()
    limits = await asyncio.to_thread(Path(f"/proc/{gw.pid}/limits").read_text)
    assert re.search(rf"Max open files\s+{OPEN_FILES[1]}\s+{OPEN_FILES[1]}\s", limits), limits
    before = len(gw.log_path.read_text().splitlines())
    sockets: list[socket.socket] = []
    with closing_all(sockets):
        start = time.monotonic()
        for _ in range(SOCKETS):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", gw.http_port))
            sockets.append(s)
        # Every socket is still open on this side; the gateway has reaped or refused them all
        # and answers within the header timeout (+1 s), not when the clients give up.
        while (status := await healthz(gw.base_url)) != 200:
            assert time.monotonic() - start < HEADER_TIMEOUT + 2.0, status
        assert gw.running
    assert await healthz(gw.base_url) == 200
    await asyncio.sleep(0.5)
    logged = gw.log_path.read_text().splitlines()[before:]
    assert len(logged) <= 10, "\n".join(logged[:40])
