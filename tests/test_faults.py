"""Faults at the gateway's three outside edges, end to end over HTTP with real peers.

Each test puts one peer into a fault for a while and shows two things:

(a) the API keeps answering while the fault lasts: POST /sms/messages/ answers 201, GET of a
    message answers 200 with its current status, /healthz answers, /metrics shows the state;
(b) nothing is lost once the fault ends: every accepted message reaches the SMSC exactly as
    accepted (every part, decoded back to the accepted text) and ends DELIVERED, sent twice at
    most within the duplicate window the fault allows (asserted per test); every webhook is
    delivered, in order per message; every call ends with a record that names the error.

Peers: the SMSC is our simulator or the npm `smpp` server (tests/peers/), webhook receivers and
customer servers are real sockets below. docs/faults.md describes each behaviour and names the
test that shows it. Timings are shortened through the configuration; bounds on waits only end
a wait, they never assert speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import insert

from gateway.app import FASTAGI
from gateway.db.models import OrphanReceipt
from gateway.keys import CONFIG, NUMBERS, SESSIONS
from gateway.services.accounts import NewCredentials
from gateway.services.number_import import parse_numbers_csv
from smpp.encoding import decode_short_message
from tests.conftest import Gateway, free_port, gateway_config, start_gateway, wait_for
from tests.peers.asterisk_agi import CallScenario, CallTranscript, fastagi_call
from tests.peers.base import SmscPeer

JP = "+818012345678"
# Ends a wait for an API answer; generous because the machine is shared (not a speed claim).
API_DEADLINE = aiohttp.ClientTimeout(total=15)
LONG_GSM = "Long message that needs concatenation over SMPP. " * 4  # 200 septets: 2 parts
LONG_UCS2 = "長いメッセージは三つに分かれて届きます。" * 8  # 160 UCS-2 characters: 3 parts


# --- the API as a client sees it ------------------------------------------------------------------


@dataclass
class Api:
    gw: Gateway
    http: aiohttp.ClientSession
    creds: NewCredentials
    accepted: dict[str, str] = field(default_factory=dict)  # msgid -> text

    async def send(self, text: str, **extra: str) -> str:
        async with self.http.post(
            f"{self.gw.base_url}/sms/messages/",
            data={"message": text, "recipient": JP, "sender": "DEMO", **extra},
            headers=self.gw.auth(self.creds),
            timeout=API_DEADLINE,
        ) as r:
            assert r.status == 201, await r.text()
            msgid: str = (await r.json())[0]["msgid"]
        self.accepted[msgid] = text
        return msgid

    async def status(self, msgid: str) -> str:
        async with self.http.get(
            f"{self.gw.base_url}/sms/messages/{msgid}/",
            headers=self.gw.auth(self.creds),
            timeout=API_DEADLINE,
        ) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        assert body["msgid"] == msgid
        status: str = body["status"]
        return status

    async def health(self) -> None:
        async with self.http.get(f"{self.gw.base_url}/healthz", timeout=API_DEADLINE) as r:
            assert r.status == 200 and (await r.json()) == {"status": "ok"}

    async def metrics(self) -> dict[str, float]:
        async with self.http.get(f"{self.gw.base_url}/metrics", timeout=API_DEADLINE) as r:
            assert r.status == 200
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def probe(self, text: str, expect: set[str]) -> str:
        """The API while a fault lasts: accept a message, read it back, health and metrics."""
        msgid = await self.send(text)
        assert await self.status(msgid) in expect
        await self.health()
        metrics = await self.metrics()
        assert metrics["gateway_db_up"] == 1
        return msgid

    async def final_statuses(self) -> Counter[str]:
        rows = await self.gw.sql("SELECT status FROM messages")
        return Counter(r[0] for r in rows)

    async def all_delivered(self, timeout: float = 40) -> None:
        """Every accepted message DELIVERED (and nothing else in the table)."""
        n = len(self.accepted)

        async def done() -> bool:
            return await self.final_statuses() == Counter({"DELIVERED": n})

        try:
            await wait_for(done, timeout=timeout, interval=0.1)
        except AssertionError:
            raise AssertionError(f"statuses: {await self.final_statuses()} of {n} accepted") from None
        for msgid in list(self.accepted)[:3]:  # and the API says so too
            assert await self.status(msgid) == "DELIVERED"


async def api_for(gw: Gateway, http: aiohttp.ClientSession) -> Api:
    return Api(gw, http, await gw.account())


@dataclass
class Received:
    complete: Counter[str]  # texts the SMSC received in full (all parts of one concatenation)
    fragments: list[str]  # parts of concatenations that never completed
    resent_parts: int  # parts of a concatenation received again (same reference, number and text)
    part_submits: int  # submit_sm accepted, in all


def received(submits: list[Any]) -> Received:
    """What the SMSC got, put back together: concatenated parts grouped by (destination, ref).

    A retried long message reuses its reference and sends only the parts the SMSC had not
    answered, so parts of one concatenation come from several attempts; a part the SMSC got
    twice (it was on the wire when the link went) is counted in resent_parts. A different
    text under a taken (reference, number) would be two messages sharing a reference.
    """
    complete: Counter[str] = Counter()
    groups: dict[tuple[str, int, int], dict[int, str]] = {}
    resent = 0
    for s in submits:
        d = decode_short_message(s.data_coding, s.esm_class, s.short_message)
        if d.concat_ref is None or d.concat_total is None or d.concat_seq is None:
            complete[d.text] += 1
            continue
        key = (s.destination_addr, d.concat_ref, d.concat_total)
        parts = groups.setdefault(key, {})
        if d.concat_seq in parts:
            assert parts[d.concat_seq] == d.text, f"concatenation reference {key} reused within the test"
            resent += 1
        parts[d.concat_seq] = d.text
    fragments: list[str] = []
    for (_, _, total), parts in groups.items():
        if len(parts) == total:
            complete["".join(parts[i] for i in range(1, total + 1))] += 1
        else:
            fragments.extend(parts.values())
    return Received(complete, fragments, resent, len(submits))


async def exactly_as_accepted(api: Api, peer: SmscPeer) -> Received:
    """Every accepted text reached the SMSC whole; returns what it got (for duplicate bounds)."""
    got = received(await peer.submits())
    wanted = Counter(api.accepted.values())
    missing = wanted - got.complete
    assert not missing, f"never reached the SMSC whole: {sorted(missing)[:5]}"
    unknown = set(got.complete) - set(wanted)
    assert not unknown, f"the SMSC got texts nobody sent: {sorted(unknown)[:5]}"
    for part in got.fragments:
        assert any(part in text for text in wanted), f"a part of no accepted message: {part!r}"
    return got


def duplicates(api: Api, got: Received) -> int:
    return sum((got.complete - Counter(api.accepted.values())).values())


class Traffic:
    """Keeps posting messages (and reading them back) while a fault lasts: every POST must be
    answered 201 and every GET 200, whatever the SMSC does."""

    def __init__(self, api: Api, label: str, interval: float = 0.1) -> None:
        self.api = api
        self.label = label
        self.interval = interval
        self.sent = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _run(self) -> None:
        while not self._stop.is_set():
            text = self.text(self.sent)
            msgid = await self.api.send(text)
            self.sent += 1
            await self.api.status(msgid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def text(self, i: int) -> str:
        # Every fourth message is long (2 GSM parts or 3 UCS-2 parts).
        if i % 4 == 1:
            return f"{self.label}-{i} {LONG_GSM}"
        if i % 4 == 3:
            return f"{self.label}-{i} {LONG_UCS2}"
        return f"{self.label}-{i}"

    async def __aenter__(self) -> Traffic:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task  # raises what a failed POST/GET raised


async def backlog(api: Api, n: int, label: str) -> None:
    """n messages accepted at once, a third of them long."""
    texts = [
        f"{label}-{i} {LONG_GSM}"
        if i % 3 == 1
        else f"{label}-{i} {LONG_UCS2}"
        if i % 3 == 2
        else f"{label}-{i}"
        for i in range(n)
    ]
    await asyncio.gather(*(api.send(t) for t in texts))


def log_lines(caplog: pytest.LogCaptureFixture, logger: str, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and needle in r.getMessage()]


@pytest.fixture(params=["sim_smsc", "node_smsc"])
def peer(request: pytest.FixtureRequest) -> SmscPeer:
    smsc: SmscPeer = request.getfixturevalue(request.param)
    return smsc


@pytest_asyncio.fixture
async def gateways() -> AsyncIterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gw in started:
        await gw.runner.cleanup()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def make_gateway(clean_db: str, gateways: list[Gateway]) -> GatewayFactory:
    async def make(peer: SmscPeer, **overrides: Any) -> Gateway:
        gw = await start_gateway(gateway_config(clean_db, peer.host, peer.port, **overrides))
        gateways.append(gw)
        return gw

    return make


# --- SMSC faults ----------------------------------------------------------------------------------


async def test_smsc_refusing_binds_for_a_while(
    peer: SmscPeer,
    make_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await peer.configure(reject_binds=True)
    gw = await make_gateway(peer)
    api = await api_for(gw, http)
    await backlog(api, 12, "refused")
    async with Traffic(api, "while-refused"):
        await wait_for(lambda: _refusals(caplog, 2), timeout=20)
        await api.probe("probe", {"QUEUED"})
        metrics = await api.metrics()
        assert metrics['gateway_smpp_bound{connector="default"}'] == 0
        assert metrics["gateway_sms_queue_depth"] >= 12
    assert await peer.bind_count() == 0 and await peer.submits() == []
    assert set(await api.final_statuses()) == {"QUEUED"}
    # Not bound, the dispatcher leaves the queue alone: no claim churn, no per-message log.
    assert not log_lines(caplog, "gateway.workers.dispatcher", "not bound")

    await peer.configure()  # binds accepted again
    await api.all_delivered()
    got = await exactly_as_accepted(api, peer)
    assert duplicates(api, got) == 0 and not got.fragments
    assert await peer.bind_count() == 1
    assert (await api.metrics())['gateway_smpp_bound{connector="default"}'] == 1


async def _refusals(caplog: pytest.LogCaptureFixture, n: int) -> bool:
    return len(log_lines(caplog, "smpp.client", "rejected")) >= n


async def test_smsc_wrong_password_until_the_operator_fixes_it(
    sim_smsc: Any,
    make_gateway: GatewayFactory,
    gateways: list[Gateway],
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    wrong = await make_gateway(sim_smsc, smpp__password="not-the-password")
    api = await api_for(wrong, http)
    await backlog(api, 6, "bad-password")
    await wait_for(lambda: _refusals(caplog, 2), timeout=20)
    assert any("0x0000000e" in line for line in log_lines(caplog, "smpp.client", "rejected"))
    await api.probe("probe", {"QUEUED"})
    assert (await api.metrics())['gateway_smpp_bound{connector="default"}'] == 0
    await wrong.runner.cleanup()
    gateways.remove(wrong)

    fixed = await make_gateway(sim_smsc)  # the operator corrects smpp.password and restarts
    api.gw = fixed
    await api.all_delivered()
    got = await exactly_as_accepted(api, sim_smsc)
    assert duplicates(api, got) == 0


async def test_smsc_closing_the_socket_repeatedly(
    peer: SmscPeer, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gw = await make_gateway(peer)
    api = await api_for(gw, http)
    window = gw.app[CONFIG].smpp.window
    drops = 3
    await backlog(api, 20, "burst")
    async with Traffic(api, "while-dropping", interval=0.05):
        for n in range(drops):
            await peer.configure(drop_after=5)
            # The peer closes the connection after its 5th accepted submit; we rebind.
            await wait_for(lambda n=n: _binds_at_least(peer, n + 2), timeout=20)
            await api.probe("probe", {"QUEUED", "DELIVERING", "DELIVERED"})
    await api.all_delivered()
    got = await exactly_as_accepted(api, peer)
    # Only submits in flight at a drop (at most one window per drop) may go twice: a single-part
    # message again whole, a long message's unanswered part again under the same reference. Parts
    # the SMSC had answered are not resent, so no long message is left as a fragment.
    print(
        f"\nclosing x{drops}: {len(api.accepted)} messages, {got.part_submits} submits accepted,"
        f" {duplicates(api, got)} messages twice, {got.resent_parts} parts twice,"
        f" {len(got.fragments)} fragments"
    )
    assert not got.fragments
    assert duplicates(api, got) + got.resent_parts <= window * drops
    assert await peer.bind_count() == drops + 1


async def _binds_at_least(peer: SmscPeer, n: int) -> bool:
    return await peer.bind_count() >= n


async def test_smsc_answering_slowly_within_the_response_timeout(
    sim_smsc: SmscPeer, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    peer = sim_smsc  # the dispatcher's side of it: one peer is enough
    # Each submit_sm_resp takes 0.2 s (under the 3 s response timeout) and only two submits
    # are in flight: a batch takes longer to go out than the 1.2 s dispatcher lease.
    await peer.configure(respond_delay_ms=200)
    gw = await make_gateway(peer, smpp__window=2, smpp__response_timeout=3.0, dispatcher__lease_seconds=1.2)
    api = await api_for(gw, http)
    await backlog(api, 15, "slow")
    await api.probe("probe", {"QUEUED", "DELIVERING", "DELIVERED"})
    await api.all_delivered(timeout=60)
    got = await exactly_as_accepted(api, peer)
    assert duplicates(api, got) == 0 and not got.fragments
    assert await peer.bind_count() == 1


async def test_a_lease_lapsing_on_a_busy_node_does_not_resend_its_batch(
    sim_smsc: SmscPeer, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    # The test above on a loaded machine: a renewal (or the write of the outcomes) queued
    # behind other database work came after the lease ran out, another worker of the same node
    # claimed the rows still on the wire and sent them again (5 duplicates in one run). A lease
    # far shorter than a database round trip makes that lateness certain; the node still knows
    # which rows it has in flight and never claims them again.
    peer = sim_smsc
    await peer.configure(respond_delay_ms=200)
    gw = await make_gateway(peer, smpp__window=2, smpp__response_timeout=3.0, dispatcher__lease_seconds=0.02)
    api = await api_for(gw, http)
    await backlog(api, 15, "lapsed")
    await api.all_delivered(timeout=60)
    got = await exactly_as_accepted(api, peer)
    assert duplicates(api, got) == 0 and got.resent_parts == 0 and not got.fragments


async def test_smsc_answering_slower_than_the_response_timeout(
    node_smsc: SmscPeer,
    make_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both peers: tests/test_smpp_client.py::test_response_timeout_forces_reconnect.
    peer = node_smsc
    caplog.set_level(logging.INFO)
    window = 4
    gw = await make_gateway(peer, smpp__window=window, smpp__response_timeout=0.5)
    api = await api_for(gw, http)
    await peer.configure(respond_delay_ms=1500)  # every answer comes after the timeout
    async with Traffic(api, "too-slow", interval=0.2):
        await wait_for(lambda: _binds_at_least(peer, 3), timeout=20)  # two sessions given up
        await api.probe("probe", {"QUEUED", "DELIVERING", "DELIVERED"})
        await peer.configure()
    await api.all_delivered()
    got = await exactly_as_accepted(api, peer)
    # Each session given up on a timeout can leave at most one window of submits the SMSC
    # did accept, and those are sent again (a long message's parts under the same reference).
    aborted = await peer.bind_count() - 1
    print(
        f"\ntoo slow, {aborted} sessions given up: {len(api.accepted)} messages, {got.part_submits} submits"
        f" accepted, {duplicates(api, got)} messages twice, {got.resent_parts} parts twice"
    )
    assert not got.fragments
    assert duplicates(api, got) + got.resent_parts <= window * aborted
    assert log_lines(caplog, "smpp.client", "no response to sequence")


async def test_smsc_throttling_for_a_while(
    node_smsc: SmscPeer,
    make_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both peers' throttling: tests/test_delivery_resilience.py; here a long one against node's.
    peer = node_smsc
    caplog.set_level(logging.INFO)
    gw = await make_gateway(peer, dispatcher__lease_seconds=1.0)
    api = await api_for(gw, http)
    await peer.configure(throttle_next=1_000_000)  # every submit_sm answered 0x58
    await backlog(api, 12, "throttled")
    async with Traffic(api, "while-throttled"):
        await wait_for(lambda: _pauses(caplog, 3), timeout=20)
        await asyncio.sleep(1.5)  # longer than the lease: the batches in flight keep theirs
        await api.probe("probe", {"QUEUED"})
        assert (await api.metrics())['gateway_smpp_bound{connector="default"}'] == 1
    await peer.configure()
    await api.all_delivered()
    got = await exactly_as_accepted(api, peer)
    assert duplicates(api, got) == 0 and not got.fragments
    assert await peer.bind_count() == 1


async def _pauses(caplog: pytest.LogCaptureFixture, n: int) -> bool:
    return len(log_lines(caplog, "smpp.client", "pausing submits")) >= n


async def test_orphan_receipts_left_by_resent_copies_do_not_stall_receipt_matching(
    sim_smsc: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """Every copy the SMSC accepted but the gateway never recorded (a resend after a drop or a
    response timeout) gets a receipt that matches nothing and is kept as an orphan for three
    days. The periodic sweep exists for the receipt that raced its own submit's commit; it
    must still find that one behind any number of such leftovers."""
    gw = await make_gateway(sim_smsc)
    api = await api_for(gw, http)
    await sim_smsc.configure(dlr_mode="none")  # the receipt is placed below, as the race left it
    msgid = await api.send("raced")

    async def submitted() -> list[Any]:
        return await gw.sql(
            "SELECT p.smsc_id FROM message_parts p JOIN messages m ON m.id = p.message_id"
            " WHERE m.msgid = :m AND p.state = 'SUBMITTED'",
            m=msgid,
        )

    [(smsc_id,)] = await wait_for(submitted)
    now = datetime.now(UTC)
    leftovers = [
        {
            "smsc_id": f"ffff{i:08x}",
            "state": "DELIVERED",
            "stat": "DELIVRD",
            "received_at": now - timedelta(hours=1),
        }
        for i in range(1500)
    ]
    async with gw.app[SESSIONS].begin() as s:
        await s.execute(insert(OrphanReceipt), leftovers)
        s.add(OrphanReceipt(smsc_id=smsc_id, state="DELIVERED", stat="DELIVRD", received_at=now))

    async def delivered() -> bool:
        return await api.status(msgid) == "DELIVERED"

    await wait_for(delivered, timeout=15)


# --- webhook receiver faults ----------------------------------------------------------------------


@dataclass
class Hit:
    at: float  # wall clock, when the POST arrived
    path: str
    key: tuple[str, str]  # (msgid, status) of the status callback
    answered: int | None = None  # None: the sender gave up before we answered


@dataclass
class Fault:
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # answer after this long (slow receiver)
    first_only: bool = False  # only each callback's first POST gets the fault


class Receiver:
    """A callback endpoint that can be down (nothing listening on its port), slow, or answer
    errors, per path, for as long as the test says."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[Hit] = []
        self.faults: dict[str, Fault] = {}
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        hit = Hit(time.time(), request.path, (body["msgid"], body["status"]))
        seen = any(h.key == hit.key and h.path == hit.path for h in self.hits)
        self.hits.append(hit)
        fault = self.faults.get(request.path)
        if fault is not None and not (fault.first_only and seen):
            if fault.delay:
                await asyncio.sleep(fault.delay)
            hit.answered = fault.status
            return web.Response(status=fault.status, headers=fault.headers)
        hit.answered = 200
        return web.Response(status=200)

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]


@pytest_asyncio.fixture
async def hooks() -> AsyncIterator[Receiver]:
    rec = Receiver()
    yield rec
    await rec.stop()


async def webhook_rows(gw: Gateway) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in await gw.sql(
            "SELECT ref, url, status, attempts, last_status_code, last_error"
            " FROM webhook_deliveries ORDER BY id"
        )
    ]


async def all_webhooks_delivered(api: Api, hooks: Receiver, paths: dict[str, list[str]]) -> None:
    """Every status callback of every message DONE, and received (answered 200) in order:
    DELIVERING before DELIVERED for each message. `paths`: callback path -> msgids."""
    expected = sum(len(ids) for ids in paths.values()) * 2
    urls = {hooks.url(p) for p in paths}

    async def done() -> bool:
        rows = [r for r in await webhook_rows(api.gw) if r[1] in urls]
        return len(rows) == expected and all(r[2] == "DONE" for r in rows)

    try:
        await wait_for(done, timeout=40, interval=0.1)
    except AssertionError:
        raise AssertionError(f"webhook rows: {await webhook_rows(api.gw)}") from None
    for path, msgids in paths.items():
        hits = hooks.on(path)
        for msgid in msgids:
            ok = [h.key[1] for h in hits if h.key[0] == msgid and h.answered == 200]
            assert ok[:2] == ["DELIVERING", "DELIVERED"], (path, msgid, ok)
            # The DELIVERED callback was never sent before DELIVERING had been answered 200.
            first_delivered = next(i for i, h in enumerate(hits) if h.key == (msgid, "DELIVERED"))
            assert any(
                h.key == (msgid, "DELIVERING") and h.answered == 200 for h in hits[:first_delivered]
            ), (path, msgid)


async def send_with_callbacks(api: Api, hooks: Receiver, path: str, n: int) -> list[str]:
    return list(
        await asyncio.gather(*(api.send(f"{path}-{i}", callbackurl=hooks.url(path)) for i in range(n)))
    )


async def _attempts_at_least(gw: Gateway, n: int) -> bool:
    rows = await webhook_rows(gw)
    return any(r[3] >= n for r in rows)


async def test_webhook_receiver_down_then_up(
    sim_smsc: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession, hooks: Receiver
) -> None:
    gw = await make_gateway(sim_smsc)
    api = await api_for(gw, http)
    msgids = await send_with_callbacks(api, hooks, "/cb", 5)  # nothing listens on the port yet
    await wait_for(lambda: _attempts_at_least(gw, 3), timeout=20)
    # The messages themselves go on: the SMSC took them and the receipts came back.
    await api.all_delivered()
    await api.probe("probe", {"QUEUED", "DELIVERING", "DELIVERED"})
    metrics = await api.metrics()
    assert metrics["gateway_webhook_backlog"] >= 1
    assert metrics['gateway_webhook_posts_total{code="error"}'] >= 3
    rows = await webhook_rows(gw)
    assert {r[2] for r in rows} == {"PENDING"}
    # DELIVERING callbacks are retried; each DELIVERED one waits behind its message's.
    tried = [r for r in rows if r[3]]
    assert len(tried) == len(msgids) and all("Connect" in (r[5] or "") for r in tried)

    await hooks.start()  # the receiver is back
    await all_webhooks_delivered(api, hooks, {"/cb": msgids})


async def test_webhook_receiver_slower_than_the_timeout_then_fast(
    sim_smsc: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession, hooks: Receiver
) -> None:
    gw = await make_gateway(sim_smsc, webhooks__timeout=0.5)
    api = await api_for(gw, http)
    hooks.faults["/slow"] = Fault(status=200, delay=3.0)  # answers 200, but too late
    await hooks.start()
    msgids = await send_with_callbacks(api, hooks, "/slow", 4)
    await wait_for(lambda: _attempts_at_least(gw, 2), timeout=20)
    await api.probe("probe", {"QUEUED", "DELIVERING", "DELIVERED"})
    assert (await api.metrics())["gateway_webhook_backlog"] >= 1
    rows = await webhook_rows(gw)
    assert any("Timeout" in (r[5] or "") for r in rows)

    del hooks.faults["/slow"]  # fast again
    await all_webhooks_delivered(api, hooks, {"/slow": msgids})
    # At least once: a receiver that got a POST but answered too late sees it again.
    assert len(hooks.on("/slow")) > 2 * len(msgids)


async def test_a_hanging_receiver_holds_one_slot_not_the_deliveries_claimed_with_it(
    sim_smsc: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession, hooks: Receiver
) -> None:
    """One delivery loop of 4 slots; two of them hang on a receiver until the timeout. The other
    receiver's callbacks go through the two free slots meanwhile: every one of them arrives before
    the first hanging POST could have ended (a batch waiting for its slowest POST would hold
    them until then)."""
    timeout = 5.0
    gw = await make_gateway(sim_smsc, webhooks__timeout=timeout, webhooks__loops=1, webhooks__batch_size=4)
    api = await api_for(gw, http)
    hooks.faults["/hang"] = Fault(status=200, delay=60)
    await hooks.start()
    hanging = await send_with_callbacks(api, hooks, "/hang", 2)

    async def both_hanging() -> bool:
        return len(hooks.on("/hang")) >= 2

    await wait_for(both_hanging)
    fast = await send_with_callbacks(api, hooks, "/fast", 6)

    async def fast_answered() -> bool:
        return sum(h.answered == 200 for h in hooks.on("/fast")) >= 2 * len(fast)

    await wait_for(fast_answered, timeout=30)
    first_hang = min(h.at for h in hooks.on("/hang"))
    last_fast = max(h.at for h in hooks.on("/fast"))
    assert last_fast < first_hang + timeout, "fast callbacks waited for the hanging POSTs"
    del hooks.faults["/hang"]
    await all_webhooks_delivered(api, hooks, {"/fast": fast, "/hang": hanging})


async def test_webhook_receiver_answering_500_then_200(
    sim_smsc: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession, hooks: Receiver
) -> None:
    gw = await make_gateway(sim_smsc)
    api = await api_for(gw, http)
    hooks.faults["/err"] = Fault(status=500)
    await hooks.start()
    msgids = await send_with_callbacks(api, hooks, "/err", 4)
    await wait_for(lambda: _attempts_at_least(gw, 3), timeout=20)
    await api.probe("probe", {"QUEUED", "DELIVERING", "DELIVERED"})
    metrics = await api.metrics()
    assert metrics["gateway_webhook_backlog"] >= 1
    assert metrics['gateway_webhook_posts_total{code="5xx"}'] >= 3
    assert {r[4] for r in await webhook_rows(gw) if r[3]} == {500}

    del hooks.faults["/err"]
    await all_webhooks_delivered(api, hooks, {"/err": msgids})


async def test_webhook_receiver_answering_429_with_and_without_retry_after(
    sim_smsc: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession, hooks: Receiver
) -> None:
    gw = await make_gateway(sim_smsc)
    api = await api_for(gw, http)
    wait_s = 1
    when = email.utils.formatdate(time.time() + 60, usegmt=True)  # a date: honoured as such
    hooks.faults["/plain"] = Fault(status=429, first_only=True)
    hooks.faults["/seconds"] = Fault(status=429, headers={"Retry-After": str(wait_s)}, first_only=True)
    await hooks.start()
    paths = {p: await send_with_callbacks(api, hooks, p, 2) for p in ("/plain", "/seconds")}
    hooks.faults["/date"] = Fault(status=429, headers={"Retry-After": when}, first_only=True)
    dated = await send_with_callbacks(api, hooks, "/date", 1)
    await api.probe("probe", {"QUEUED", "DELIVERING", "DELIVERED"})
    assert (await api.metrics())['gateway_webhook_posts_total{code="4xx"}'] >= 1

    await all_webhooks_delivered(api, hooks, paths)
    for msgid in paths["/seconds"]:
        for status in ("DELIVERING", "DELIVERED"):
            first, second = [h.at for h in hooks.on("/seconds") if h.key == (msgid, status)]
            assert second - first >= wait_s - 0.1, "retried before Retry-After"
    # Retry-After as a date a minute ahead: still waiting after the others were all delivered.
    rows = [r for r in await webhook_rows(gw) if r[0] == dated[0]]
    assert [(r[2], r[3], r[4]) for r in rows] == [("PENDING", 1, 429), ("PENDING", 0, None)]
    [(next_at,)] = await gw.sql(
        "SELECT next_attempt_at FROM webhook_deliveries WHERE ref = :r AND attempts = 1", r=dated[0]
    )
    assert _as_epoch(next_at) >= email.utils.parsedate_to_datetime(when).timestamp() - 1


def _as_epoch(value: Any) -> float:
    """A timestamp column read back through raw SQL (naive UTC on both engines, or a string)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return float(value.replace(tzinfo=UTC).timestamp())


# --- action_url and media faults ------------------------------------------------------------------

OFFERED = 1 << 30  # what a "huge" answer would send if nobody stopped reading: 1 GiB
READ_BOUND = 64 << 20  # the gateway stopped long before this (socket buffers included)


@dataclass
class Served:
    requests: int = 0
    sent: int = 0  # body bytes written (accepted by the kernel)
    cut_off: bool = False  # the client closed the connection while we were still sending


class CustomerServer:
    """A customer's web server misbehaving on raw sockets. Paths (any prefix, e.g. /media/):
    `hang` reads the request and never answers; `stall` sends the headers and a few bytes of a
    1000-byte body, then nothing; `huge` announces and streams 1 GiB; `chunked` streams 1 GiB
    chunked, with no Content-Length; anything else answers 200 with `script`."""

    def __init__(self) -> None:
        self.port = 0
        self.script = 'say en "Hello"'
        self.served: dict[str, Served] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode().split("?")[0]
            served = self.served.setdefault(path, Served())
            served.requests += 1
            kind = path.rsplit("/", 1)[-1].split(".")[0]
            await getattr(self, f"_{kind}", self._ok)(writer, served)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _ok(self, writer: asyncio.StreamWriter, served: Served) -> None:
        body = self.script.encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()

    async def _hang(self, writer: asyncio.StreamWriter, served: Served) -> None:
        await asyncio.Event().wait()

    async def _stall(self, writer: asyncio.StreamWriter, served: Served) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\nsay en")
        await writer.drain()
        await asyncio.Event().wait()

    async def _huge(self, writer: asyncio.StreamWriter, served: Served) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: %d\r\n\r\n" % OFFERED)
        await self._stream(writer, served, chunked=False)

    async def _chunked(self, writer: asyncio.StreamWriter, served: Served) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nTransfer-Encoding: chunked\r\n\r\n")
        await self._stream(writer, served, chunked=True)

    async def _stream(self, writer: asyncio.StreamWriter, served: Served, *, chunked: bool) -> None:
        block = b"#" * (64 * 1024)
        framed = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
        try:
            while served.sent < OFFERED:
                writer.write(framed)
                await writer.drain()
                served.sent += len(block)
        except (ConnectionError, OSError):
            served.cut_off = True


@pytest_asyncio.fixture
async def customer() -> AsyncIterator[CustomerServer]:
    srv = CustomerServer()
    await srv.start()
    yield srv
    await srv.stop()


VOICE = {
    "voice__action_url_timeout": 1.5,
    "voice__action_url_max_bytes": 16 * 1024,
    "voice__media_timeout": 1.0,
    "voice__media_max_bytes": 256 * 1024,
}
SLACK = 10.0  # ends a wait for the bridge's next AGI command; not a speed claim


async def subscribe_dins(api: Api, action_urls: dict[str, str]) -> None:
    """Import one DIN per action_url and subscribe the account to each."""
    lines = ["number,country_code,prefix,sms,voice,monthly_cost,minute_cost"]
    lines += [f"{din},JP,813,false,true,1000,3.5" for din in action_urls]
    await api.gw.app[NUMBERS].import_numbers(parse_numbers_csv("\n".join(lines) + "\n"))
    auth = api.gw.auth(api.creds)
    base = api.gw.base_url
    async with api.http.get(f"{base}/voice/dins/?prefix=813", headers=auth) as r:
        uids = {"+" + d["din"]: d["din_uid"] for d in await r.json()}
    for din, url in action_urls.items():
        async with api.http.post(
            f"{base}/voice/dins/subscriptions/", data={"din_uid": uids[din]}, headers=auth
        ) as r:
            assert r.status == 201
        async with api.http.post(
            f"{base}/voice/dins/subscriptions/{uids[din]}/", data={"action_url": url}, headers=auth
        ) as r:
            assert r.status == 200


async def calls(api: Api) -> list[dict[str, Any]]:
    async with api.http.get(
        f"{api.gw.base_url}/voice/calls/", headers=api.gw.auth(api.creds), timeout=API_DEADLINE
    ) as r:
        assert r.status == 200
        rows: list[dict[str, Any]] = await r.json()
    return rows


async def place_call(gw: Gateway, din: str, timeout: float) -> CallTranscript:
    return await fastagi_call("127.0.0.1", gw.app[FASTAGI].port, CallScenario(dnid=din), timeout=timeout)


async def ended_records(api: Api, n: int) -> dict[str, dict[str, Any]]:
    async def ended() -> list[dict[str, Any]] | None:
        rows = await calls(api)
        return rows if len(rows) == n and all(c["end_time"] for c in rows) else None

    return {c["recipient"]: c for c in await wait_for(ended)}


async def test_action_url_hanging_or_huge_falls_back(
    sim_smsc: Any,
    make_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    customer: CustomerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await make_gateway(sim_smsc, **VOICE)
    api = await api_for(gw, http)
    dins = {
        "+81312340001": customer.url("/hang"),  # never answers
        "+81312340002": customer.url("/stall"),  # headers, then the body stalls
        "+81312340003": customer.url("/huge"),  # Content-Length 1 GiB
        "+81312340004": customer.url("/chunked"),  # 1 GiB chunked, no Content-Length
    }
    await subscribe_dins(api, dins)
    # The first AGI command (ANSWER) comes once the fetch has ended: within the timeout + slack.
    placed = {
        din: asyncio.create_task(place_call(gw, din, VOICE["voice__action_url_timeout"] + SLACK))
        for din in dins
    }

    async def hanging_calls_in_progress() -> bool:
        # Answers that could only be given while the two hanging calls last.
        listed = len([c for c in await calls(api) if c["status"] == "IN_PROGRESS"])
        return listed >= 2 and (await api.metrics())["gateway_calls_in_progress"] >= 2

    await wait_for(hanging_calls_in_progress, timeout=SLACK)
    await api.probe("during calls", {"QUEUED", "DELIVERING", "DELIVERED"})

    transcripts = {din: await task for din, task in placed.items()}
    for din, t in transcripts.items():
        assert t.ended_by == "bridge", (din, t.ended_by)
        assert t.verbs == ["ANSWER", "STREAM FILE", "HANGUP"] and t.missing == [], (din, t.commands)
    assert len({t.streamed[0] for t in transcripts.values()}) == 1  # the same fallback for all
    records = await ended_records(api, len(dins))
    for rec in records.values():
        assert rec["status"] == "FAILED" and rec["actions"] == ["say en"], rec
    # The tenant sees one generic reason; the operator's log says which limit ended each fetch.
    assert {records[din]["error"] for din in dins} == {"action_url fetch failed"}
    details = log_lines(caplog, "gateway.voice.calls", "action_url fetch failed")
    assert sum("timed out after 1.5 s" in line for line in details) == 2, details
    assert any("over the 16384-byte cap" in line for line in details), details
    assert any("exceeds the 16384-byte cap" in line for line in details), details
    for path in ("/huge", "/chunked"):  # the fetch stopped reading and closed the connection
        served = customer.served[path]
        assert served.cut_off and served.sent < READ_BOUND, (path, served)


async def test_playback_media_hanging_or_huge_is_skipped(
    sim_smsc: Any,
    make_gateway: GatewayFactory,
    http: aiohttp.ClientSession,
    customer: CustomerServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await make_gateway(sim_smsc, **VOICE)
    api = await api_for(gw, http)
    din = "+81312340005"
    await subscribe_dins(api, {din: customer.url("/actions")})
    media = ["/media/hang.wav", "/media/stall.wav", "/media/huge.wav", "/media/chunked.wav"]
    customer.script = "\n".join(
        [*(f"playback {customer.url(m)}" for m in media), 'say en "After the music."']
    )
    t = await place_call(gw, din, VOICE["voice__media_timeout"] + SLACK)
    # Each playback fails on its own and the script goes on: the caller hears the say.
    assert t.ended_by == "bridge"
    assert t.verbs == ["ANSWER", "STREAM FILE", "HANGUP"] and t.missing == [], t.commands
    [rec] = (await ended_records(api, 1)).values()
    assert rec["status"] == "COMPLETED" and rec["result"] == "completed"
    assert [a.split()[0] for a in rec["actions"]] == ["playback"] * 4 + ["say"]
    assert rec["error"] == "; ".join(["playback: media fetch failed"] * 4)
    details = log_lines(caplog, "gateway.voice.executor", "playback failed")
    assert sum("timed out after 1 s" in line for line in details) == 2, details
    assert any("over the 262144-byte cap" in line for line in details), details
    assert any("exceeds the 262144-byte cap" in line for line in details), details
    for path in ("/media/huge.wav", "/media/chunked.wav"):
        served = customer.served[path]
        assert served.cut_off and served.sent < READ_BOUND, (path, served)
    # Failures are not cached: the next call fetches again.
    customer.script = f"playback {customer.url('/media/huge.wav')}"
    await place_call(gw, din, VOICE["voice__media_timeout"] + SLACK)
    assert customer.served["/media/huge.wav"].requests == 2
