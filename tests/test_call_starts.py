"""Call starts at scale: many callers at once through the FastAGI server, a real action_url
server, the Asterisk stand-in on real sockets. What a burst of callers must not do: queue one
database transaction per call, queue behind a per-host cap on action_url fetches, or wait for
the first action's audio to be made only after Asterisk has answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from sqlalchemy import event

from gateway.app import FASTAGI
from gateway.keys import ENGINE
from gateway.voice import asterisk_side
from tests.conftest import Gateway, serve_app, wait_for
from tests.peers.asterisk_agi import CallScenario, fastagi_call
from tests.test_voice_calls import DIN, records, subscribe, tone_wav


@dataclass
class Server:
    base_url: str = ""
    script: str = 'say en "Hello"'
    in_flight: int = 0
    most_in_flight: int = 0
    wait_for_in_flight: int = 0  # hold each action_url request until this many are in flight
    all_in: asyncio.Event = field(default_factory=asyncio.Event)
    media_hits: int = 0


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    wav = tone_wav()

    async def actions(request: web.Request) -> web.Response:
        srv.in_flight += 1
        srv.most_in_flight = max(srv.most_in_flight, srv.in_flight)
        try:
            if srv.wait_for_in_flight:
                if srv.in_flight >= srv.wait_for_in_flight:
                    srv.all_in.set()
                try:
                    await asyncio.wait_for(srv.all_in.wait(), 5)
                except TimeoutError:
                    return web.Response(status=503, text="not all calls got here at once")
            return web.Response(text=srv.script, content_type="text/plain")
        finally:
            srv.in_flight -= 1

    async def media(request: web.Request) -> web.Response:
        srv.media_hits += 1
        return web.Response(body=wav, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/actions", actions)
    app.router.add_get("/greeting.wav", media)
    async with serve_app(app) as srv.base_url:
        yield srv


def count_statements(gw: Gateway, counts: dict[str, int]) -> None:
    """Counts INSERTs into calls and DIN lookups the gateway's engine sends from now on."""

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO calls"):
            counts["inserts"] += 1
        elif "FROM number_subscriptions JOIN numbers" in statement:
            counts["lookups"] += 1

    event.listen(gw.app[ENGINE].sync_engine, "before_cursor_execute", seen)


async def test_simultaneous_call_starts_share_their_lookups_and_inserts(
    gateway: Gateway, http: aiohttp.ClientSession, server: Server
) -> None:
    din = await subscribe(gateway, http, f"{server.base_url}/actions")
    counts = {"inserts": 0, "lookups": 0}
    count_statements(gateway, counts)
    port = gateway.app[FASTAGI].port
    calls = 40
    transcripts = await asyncio.gather(
        *(fastagi_call("127.0.0.1", port, CallScenario(), timeout=30) for _ in range(calls))
    )
    assert all(t.verbs == ["ANSWER", "STREAM FILE", "HANGUP"] for t in transcripts)
    # Every call has its own record, with the DIN holder's account, completed.
    rows = await records(gateway, http, din.creds)
    assert len(rows) == calls and {r["status"] for r in rows} == {"COMPLETED"}
    assert len({r["callid"] for r in rows}) == calls
    # ...but not a lookup and an insert per call: calls that arrive together go together.
    assert counts["inserts"] <= calls // 4, counts
    assert counts["lookups"] <= calls // 4, counts


async def test_action_url_fetches_of_simultaneous_callers_are_not_queued_per_host(
    gateway: Gateway, http: aiohttp.ClientSession, server: Server
) -> None:
    """Each caller hears ringing until its action_url answers; 30 callers of one customer must
    not wait in rounds of a per-host connection cap (or behind webhook deliveries)."""
    din = await subscribe(gateway, http, f"{server.base_url}/actions")
    calls = 30
    server.wait_for_in_flight = calls
    port = gateway.app[FASTAGI].port
    await asyncio.gather(*(fastagi_call("127.0.0.1", port, CallScenario(), timeout=30) for _ in range(calls)))
    assert server.most_in_flight == calls
    rows = await records(gateway, http, din.creds)
    assert [r["status"] for r in rows] == ["COMPLETED"] * calls


async def test_the_first_actions_audio_is_made_while_asterisk_answers(
    gateway: Gateway, http: aiohttp.ClientSession, server: Server
) -> None:
    """A real ANSWER takes ~0.5 s: the first playback is fetched and converted meanwhile, not
    after it."""
    await subscribe(gateway, http, f"{server.base_url}/actions")
    server.script = f"playback {server.base_url}/greeting.wav"
    agi = asterisk_side.AsteriskAgi(CallScenario(), asterisk_side.CallTranscript(), fast=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.app[FASTAGI].port)
    try:
        writer.write(agi.header("agi://127.0.0.1/din").encode())
        assert await asyncio.wait_for(reader.readline(), 10) == b"ANSWER\n"

        async def fetched() -> bool:
            return server.media_hits == 1

        await wait_for(fetched, timeout=5)  # ANSWER still unanswered
        writer.write(b"200 result=0\n")
        stream = (await asyncio.wait_for(reader.readline(), 10)).decode()
        assert stream.startswith("STREAM FILE ")
        assert server.media_hits == 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def test_the_call_is_recorded_in_progress_before_it_is_answered(
    gateway: Gateway, http: aiohttp.ClientSession, server: Server
) -> None:
    """The insert runs while the action_url is fetched, but the IN_PROGRESS row is in before
    ANSWER: a node that dies once the call runs leaves a row for the abandoned-call sweep."""
    await subscribe(gateway, http, f"{server.base_url}/actions")
    agi = asterisk_side.AsteriskAgi(CallScenario(), asterisk_side.CallTranscript(), fast=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.app[FASTAGI].port)
    try:
        writer.write(agi.header("agi://127.0.0.1/din").encode())
        assert await asyncio.wait_for(reader.readline(), 10) == b"ANSWER\n"
        rows = await gateway.sql(
            "SELECT status, recipient, account_id FROM calls WHERE asterisk_uniqueid = :u", u=agi.uniqueid
        )
        assert [(r[0], r[1]) for r in rows] == [("IN_PROGRESS", DIN)] and rows[0][2] is not None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
