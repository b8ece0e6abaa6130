"""Crash safety: the gateway process is SIGKILLed in the middle of the work and restarted.

The SMSC simulator and the webhook receiver run in the test process, so they outlive the
kill; the gateway runs as its own process (`python -m gateway run`, tests/procs.py) on a fresh
database per test, on every engine in tests.conftest.ENGINES.

SMS out: a 5,000-message burst (2,000 on PostgreSQL, see OUT_MESSAGES) with a callbackurl
is POSTed by concurrent clients, the gateway is SIGKILLed once half of them have a 201
(clients that were mid-request get no answer and do not count as accepted), restarted, and
the rest of the burst goes through the new process. Asserted: every 201 reached the SMSC, is
DELIVERED, and its DELIVERED callback arrived (signed) at least once; nothing reached the SMSC
that was not POSTed; duplicates at the SMSC are confined to the rows the dead process held a
claim on (see the test's docstring for the bound).

SMS in: MOs are injected at a steady rate to a subscribed SIN, the gateway is SIGKILLed midway
and restarted while the injection goes on. Asserted: every MO the SMSC saw acknowledged with
ESME_ROK is stored and reached the SIN's webhook at least once; only MOs whose deliver_sm was
unanswered when the connection died may be stored twice.

Webhook leases: the webhook sender leases the rows it is posting for 120 s (WebhookSender's
lease_seconds; there is no configuration key for it), and rows written for the inbound fast
path are born leased the same way. After a SIGKILL those rows wait out that lease before any
node posts them. The tests do not sit through 120 s: right after the kill (no gateway running)
they end the dead process's webhook leases in the database, which is exactly the state the
lease running out produces. The dispatcher's message leases are *not* touched: they run out
for real (GATEWAY_DISPATCHER_LEASE_SECONDS=3).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
import pytest_asyncio

from smpp.encoding import decode_short_message, encode_gsm7
from smpp.simulator import SimulatorConfig, SmscSimulator
from tests.conftest import ENGINES, wait_for
from tests.procs import (
    GatewayProcesses,
    create_account,
    fresh_database,
    gateway_processes,
    sql,
    subscribe_sin,
)
from tests.webhook_receiver import Hit, Receiver

JP = "+818012345678"
SIN = "+81312345678"
MO_SENDER = "819011112222"

# SMS out: the burst is 5,000 messages as the issue asks, the kill after half of them. On
# PostgreSQL it is 2,000 for now: the webhook sender's claim query (its per-subject ordering
# NOT EXISTS) costs time quadratic in the PENDING backlog there, so 10,000 callbacks take
# 60-120 s to drain (16 s before that clause); 2,000 keeps this file within about a minute.
OUT_MESSAGES = {"sqlite": 5000, "postgresql": 2000}
OUT_CLIENTS = 40
LEASE_SECONDS = 3
# Defaults, spelled out because the duplicate bound below is derived from them.
DISPATCH_WORKERS = 3
DISPATCH_BATCH = 200
# The SMSC answers each submit_sm after 20 ms: with the window of 10 that caps sending at
# ~500/s, below the rate the API accepts, so at the kill there is a backlog and claimed
# batches on the wire rather than an idle dispatcher.
OUT_SMSC_RESPONSE_MS = 20

# SMS in: a steady 200 MO/s for 8 s, the kill 3 s in.
MO_RATE = 200
MO_SECONDS = 8
MO_KILL_AT = 3.0

SETTLE_TIMEOUT = 60.0


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def gateway_procs(tmp_path: Path) -> AsyncIterator[GatewayProcesses]:
    async with gateway_processes(tmp_path) as procs:
        yield procs


@pytest_asyncio.fixture
async def db(engine: str, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(engine, tmp_path) as url:
        yield url


class RecordingSimulator(SmscSimulator):
    """The simulator, also noting which MO each deliver_sm_resp answered.

    SmscSimulator.delivery_statuses records only the command_status of every answer, in
    order; these crash tests need to know *which* MO the SMSC saw acknowledged, and which
    deliver_sm were unanswered when a connection died (the simulator sends those again).
    """

    def __init__(self, config: SimulatorConfig) -> None:
        super().__init__(config)
        self.mo_acked: Counter[bytes] = Counter()  # short_message -> ESME_ROK answers
        self.mo_refused: Counter[bytes] = Counter()  # short_message -> error answers
        self.mo_unanswered_at_close: list[bytes] = []

    def _delivery_answered(self, delivery: Any, status: int) -> None:
        if delivery.kind == "mo":
            body = bytes(delivery.fields["short_message"])
            (self.mo_acked if status == 0 else self.mo_refused)[body] += 1
        super()._delivery_answered(delivery, status)

    def _session_closed(self, session: Any, unanswered: list[Any]) -> None:
        self.mo_unanswered_at_close.extend(
            bytes(d.fields["short_message"]) for d in unanswered if d.kind == "mo"
        )
        super()._session_closed(session, unanswered)


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[RecordingSimulator]:
    simulator = RecordingSimulator(SimulatorConfig(port=0, dlr_delay=0, fail_prefix=None, summary_interval=0))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def signature_ok(hit: Hit, secret: str) -> bool:
    ts = hit.headers.get("X-Gateway-Timestamp", "")
    expected = hmac.new(secret.encode(), ts.encode() + hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hit.headers.get("X-Gateway-Signature", ""))


async def eventually(what: str, check: Any, detail: Any, timeout: float = SETTLE_TIMEOUT) -> None:
    """Poll the async `check` until true; on timeout fail with what the async `detail` says."""
    try:
        await wait_for(check, timeout=timeout, interval=0.25)
    except AssertionError:
        raise AssertionError(f"{what} not reached within {timeout} s: {await detail()}") from None


@dataclass
class AfterKill:
    """The database as the SIGKILLed process left it (read before anything restarts)."""

    leased: dict[str, str]  # msgid -> body: QUEUED rows the dead process held a claim on
    largest_claim: int  # most of those rows stamped with one claim token (one batch)
    statuses: Counter[str]
    webhook_leases: int  # PENDING deliveries leased to the dead process (now released)


async def inspect_and_release(db: str) -> AfterKill:
    rows = await sql(
        db, "SELECT msgid, body FROM messages WHERE status = 'QUEUED' AND claimed_by IS NOT NULL"
    )
    per_claim = await sql(
        db,
        "SELECT count(*) FROM messages WHERE status = 'QUEUED' AND claimed_by IS NOT NULL "
        "GROUP BY claimed_by",
    )
    statuses = Counter(
        {s: n for s, n in await sql(db, "SELECT status, count(*) FROM messages GROUP BY status")}
    )
    leased_hooks = await sql(
        db, "SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING' AND claimed_until IS NOT NULL"
    )
    # What the webhook lease running out (120 s, see the module docstring) would leave.
    await sql(
        db,
        "UPDATE webhook_deliveries SET claimed_until = NULL, claimed_by = NULL "
        "WHERE status = 'PENDING' AND claimed_until IS NOT NULL",
    )
    largest = max((int(n) for (n,) in per_claim), default=0)
    return AfterKill(dict(rows), largest, statuses, int(leased_hooks[0][0]))


@dataclass
class Burst:
    """Concurrent API clients POSTing `crash-<i>` once each; they hold off while the gateway is down.

    A request whose connection died (the kill) gets no answer: its index goes to `unanswered`
    and is not sent again, as a client cannot know whether it was committed.
    """

    url: str
    auth: dict[str, str]
    callbackurl: str
    total: int
    accepted: dict[str, int] = field(default_factory=dict)  # msgid -> i
    unanswered: set[int] = field(default_factory=set)
    refused: list[tuple[int, int, str]] = field(default_factory=list)  # i, HTTP status, body
    up: asyncio.Event = field(default_factory=asyncio.Event)
    _sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._next = iter(range(self.total))

    def resume(self) -> None:
        """(Re)open the client side on fresh connections and let the clients go on."""
        self._sessions.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)))
        self.up.set()

    async def close(self) -> None:
        for s in self._sessions:
            await s.close()

    async def run(self, clients: int) -> None:
        await asyncio.gather(*(self._client() for _ in range(clients)))

    async def _client(self) -> None:
        while True:
            await self.up.wait()
            i = next(self._next, None)
            if i is None:
                return
            form = {
                "message": f"crash-{i}",
                "recipient": JP,
                "sender": "CRASH",
                "callbackurl": self.callbackurl,
            }
            try:
                async with self._sessions[-1].post(self.url, data=form, headers=self.auth) as r:
                    body = await r.text()
                    if r.status == 201:
                        self.accepted[json.loads(body)[0]["msgid"]] = i
                    else:
                        self.refused.append((i, r.status, body[:200]))
            except (aiohttp.ClientError, TimeoutError):
                self.unanswered.add(i)


async def test_sms_out_burst_survives_sigkill(
    engine: str, db: str, sim: RecordingSimulator, receiver: Receiver, gateway_procs: GatewayProcesses
) -> None:
    """Every 201 of a burst cut by SIGKILL reaches the SMSC, ends DELIVERED, and its DELIVERED
    callback arrives at least once.

    Duplicate bound: the dispatcher claims up to `batch_size` QUEUED rows per worker under a
    lease and records the outcome of the whole batch after its last submit_sm_resp; until then
    the rows stay QUEUED with `claimed_by` set. A SIGKILL can therefore leave up to
    workers x batch_size (3 x 200 = 600) rows that the SMSC may already have but the database
    does not know were sent; when their lease runs out they are sent again. (The SMPP window,
    10, bounds only the submits *unanswered* at any moment, not the answered-but-unrecorded
    ones, so it is not the crash bound.) Asserted exactly: every body the SMSC saw twice is
    one of the rows the dead process held a claim on (read from the database right after the
    kill), none was seen more than twice, and that claimed set is at most 3 x 200.
    """
    total = OUT_MESSAGES[engine]
    kill_after = total // 2
    creds = await create_account(db)
    secret = creds.account.webhook_secret
    gw = gateway_procs.spawn(
        "gw",
        db,
        sim.port,
        GATEWAY_DISPATCHER_LEASE_SECONDS=str(LEASE_SECONDS),
        GATEWAY_DISPATCHER_WORKERS=str(DISPATCH_WORKERS),
        GATEWAY_DISPATCHER_BATCH_SIZE=str(DISPATCH_BATCH),
    )
    t0 = time.monotonic()
    await gw.start()
    await asyncio.wait_for(sim.wait_for_receiver(), 30)
    sim.configure(respond_delay_ms=OUT_SMSC_RESPONSE_MS)
    auth = {"Authorization": aiohttp.encode_basic_auth(creds.account.sid, creds.auth_token)}
    burst = Burst(f"{gw.base_url}/sms/messages/", auth, receiver.url("/status"), total)
    burst.resume()
    clients = asyncio.create_task(burst.run(OUT_CLIENTS))
    try:
        await eventually(
            "half the burst accepted",
            lambda: _true(len(burst.accepted) >= kill_after),
            lambda: _text(f"{len(burst.accepted)} accepted, {burst.refused[:3]}"),
            # A deadline, not a measure: on a machine busy with other work (load 6+) half of
            # the SQLite burst took longer than 45 s.
            timeout=120,
        )
        burst.up.clear()
        await gw.kill()
        accepted_before_kill = len(burst.accepted)
        submits_before_kill = len(sim.submits)
        dead = await inspect_and_release(db)
        down_at = time.monotonic()
        await gw.start()
        downtime = time.monotonic() - down_at
        burst.resume()
        await asyncio.wait_for(clients, 60)
    finally:
        clients.cancel()
        await asyncio.gather(clients, return_exceptions=True)
        await burst.close()

    async def status_counts() -> str:
        return str(dict(await sql(db, "SELECT status, count(*) FROM messages GROUP BY status")))

    async def settled() -> bool:
        rows = await sql(db, "SELECT count(*) FROM messages WHERE status NOT IN ('DELIVERED', 'FAIL')")
        return bool(rows[0][0] == 0)

    await eventually("every message in a final status", settled, status_counts)

    def final_callbacks() -> dict[str, int]:
        seen: dict[str, int] = {}
        for hit in receiver.on("/status"):
            payload = json.loads(hit.body)
            if payload["status"] == "DELIVERED":
                seen[payload["msgid"]] = seen.get(payload["msgid"], 0) + 1
        return seen

    async def all_called_back() -> bool:
        return set(burst.accepted) <= set(final_callbacks())

    async def missing_callbacks() -> str:
        missing = set(burst.accepted) - set(final_callbacks())
        pending = await sql(db, "SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        return f"{len(missing)} accepted msgids without a DELIVERED callback; outbox {dict(pending)}"

    await eventually("a DELIVERED callback for every 201", all_called_back, missing_callbacks)
    settle_s = time.monotonic() - t0
    assert await gw.stop() == 0, gw.tail()

    seen = Counter(
        decode_short_message(s.data_coding, s.esm_class, s.short_message).text for s in sim.submits
    )
    hits = receiver.on("/status")
    print(
        f"\nsms-out crash [{engine}]: {len(burst.accepted)} accepted ({accepted_before_kill} before "
        f"the kill), {len(burst.unanswered)} unanswered; SMSC had {submits_before_kill} submits at "
        f"the kill, {len(sim.submits)} in the end; statuses at the kill {dict(dead.statuses)}; "
        f"claimed by the dead process {len(dead.leased)} (largest claim {dead.largest_claim}); "
        f"duplicates {sum(n - 1 for n in seen.values())}; webhook leases released "
        f"{dead.webhook_leases}; callbacks {len(hits)}; restart {downtime:.1f} s; total {settle_s:.1f} s"
    )

    # -- what the clients saw
    assert burst.refused == [], burst.refused[:5]
    assert accepted_before_kill >= kill_after
    assert len(burst.accepted) > accepted_before_kill, "nothing was accepted after the restart"
    assert len(burst.accepted) + len(burst.unanswered) == total

    # -- every 201 is DELIVERED (final), in the database
    rows = await sql(db, "SELECT msgid, body, status FROM messages")
    status_of = {msgid: status for msgid, _, status in rows}
    not_delivered = {m: status_of.get(m) for m in burst.accepted if status_of.get(m) != "DELIVERED"}
    assert not_delivered == {}, list(not_delivered.items())[:10]

    # -- every 201 reached the SMSC; nothing reached it that was never POSTed
    accepted_bodies = {f"crash-{i}" for i in burst.accepted.values()}
    posted_bodies = accepted_bodies | {f"crash-{i}" for i in burst.unanswered}
    assert accepted_bodies - set(seen) == set()
    assert set(seen) - posted_bodies == set()
    assert set(seen) == {body for _, body, _ in rows}  # and the SMSC got every stored row

    # -- duplicates only among the rows the dead process had claimed (see the docstring)
    duplicates = {body: n for body, n in seen.items() if n > 1}
    assert set(duplicates) <= set(dead.leased.values()), sorted(set(duplicates) - set(dead.leased.values()))
    assert max(seen.values()) <= 2, {b: n for b, n in duplicates.items() if n > 2}
    assert dead.largest_claim <= DISPATCH_BATCH, f"one claim took {dead.largest_claim} rows"
    assert len(dead.leased) <= DISPATCH_WORKERS * DISPATCH_BATCH

    # -- callbacks: each 201 got its DELIVERED callback (waited for above), all of them signed
    assert all(signature_ok(h, secret) for h in hits)
    assert dead.statuses["QUEUED"] + dead.statuses["DELIVERING"] > 0, "the kill interrupted no work"


async def test_mo_survives_sigkill(
    db: str, sim: RecordingSimulator, receiver: Receiver, gateway_procs: GatewayProcesses
) -> None:
    """Every MO acknowledged to the SMSC (deliver_sm_resp ESME_ROK) is stored and webhooked at
    least once, across a SIGKILL in the middle of a steady MO stream.

    The gateway answers deliver_sm only after the MO (and its webhook row) committed, so the
    only MOs it may store twice are those stored but not yet acknowledged when it died: the
    SMSC never got an answer for them and sends them again. Asserted exactly: every body
    stored twice was among the deliver_sm unanswered when the connection closed.
    """
    creds = await create_account(db)
    secret = creds.account.webhook_secret
    await subscribe_sin(db, creds.account.id, SIN, receiver.url("/mo"))
    gw = gateway_procs.spawn("gw", db, sim.port, GATEWAY_DISPATCHER_LEASE_SECONDS=str(LEASE_SECONDS))
    t0 = time.monotonic()
    await gw.start()
    await asyncio.wait_for(sim.wait_for_receiver(), 30)

    total = MO_RATE * MO_SECONDS
    text_of = {encode_gsm7(f"mo-{i}"): f"mo-{i}" for i in range(total)}
    loop = asyncio.get_running_loop()

    async def inject() -> None:
        start = loop.time()
        for i, body in zip(itertools.count(), text_of):
            delay = start + i / MO_RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await sim.inject_mo(MO_SENDER, SIN[1:], body)

    injector = asyncio.create_task(inject())
    try:
        await asyncio.sleep(MO_KILL_AT)
        await gw.kill()
        # The SMSC noticed the connection go (and queued its unanswered deliver_sm again).
        await wait_for(lambda: _true(not sim.has_receiver()), timeout=10)
        acked_by_dead = {text_of[b] for b in sim.mo_acked}
        dead = await inspect_and_release(db)
        hooks_at_kill = await sql(db, "SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        down_at = time.monotonic()
        await gw.start()
        downtime = time.monotonic() - down_at
        await asyncio.wait_for(injector, MO_SECONDS + 30)
    finally:
        injector.cancel()
        await asyncio.gather(injector, return_exceptions=True)

    async def acked_all() -> bool:
        return len(sim.mo_acked) == total and sim.pending_deliveries == 0

    async def ack_detail() -> str:
        return f"{len(sim.mo_acked)} of {total} acknowledged, {sim.pending_deliveries} pending at the SMSC"

    await eventually("every MO acknowledged", acked_all, ack_detail)

    async def stored() -> list[Any]:
        return await sql(db, "SELECT uid, body FROM inbound_messages")

    def hooked() -> dict[str, str]:
        out: dict[str, str] = {}
        for hit in receiver.on("/mo"):
            fields = parse_qs(hit.body.decode())
            out[fields["id"][0]] = fields["message"][0]
        return out

    async def all_hooked() -> bool:
        return {uid for uid, _ in await stored()} <= set(hooked())

    async def hook_detail() -> str:
        missing = {uid for uid, _ in await stored()} - set(hooked())
        outbox = await sql(db, "SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
        return f"{len(missing)} stored MOs never reached the webhook; outbox {dict(outbox)}"

    await eventually("a webhook for every stored MO", all_hooked, hook_detail)
    settle_s = time.monotonic() - t0
    assert await gw.stop() == 0, gw.tail()

    rows = await stored()
    bodies = Counter(body for _, body in rows)
    twice = sum(1 for n in bodies.values() if n > 1)
    print(
        f"\nmo crash [{'sqlite' if db.startswith('sqlite') else 'postgresql'}]: {total} MOs at "
        f"{MO_RATE}/s; {len(acked_by_dead)} acknowledged by the dead process; "
        f"{len(set(sim.mo_unanswered_at_close))} unanswered at the kill; stored {len(rows)} "
        f"({twice} twice); refused answers {sum(sim.mo_refused.values())}; webhook leases released "
        f"{dead.webhook_leases}; outbox at the kill {dict(hooks_at_kill)}; webhook POSTs "
        f"{len(receiver.on('/mo'))}; restart {downtime:.1f} s; total {settle_s:.1f} s"
    )
    # -- the SMSC saw every MO acknowledged once; none acknowledged-but-lost
    assert max(sim.mo_acked.values()) == 1
    assert acked_by_dead, "the dead process had acknowledged nothing"
    assert len(acked_by_dead) < total, "the kill came after the stream"
    assert sorted(acked_by_dead - set(bodies)) == [], "acknowledged before the kill, then lost"
    assert sorted({text_of[b] for b in sim.mo_acked} - set(bodies)) == []
    assert set(bodies) <= set(text_of.values())
    # -- stored twice only if unanswered when the connection died
    unanswered = {text_of[b] for b in sim.mo_unanswered_at_close}
    duplicates = {body: n for body, n in bodies.items() if n > 1}
    assert max(bodies.values()) <= 2
    assert set(duplicates) <= unanswered, sorted(set(duplicates) - unanswered)
    # -- every stored MO (duplicates included) reached the webhook, with its text, signed
    hooks = hooked()
    assert {uid: body for uid, body in rows} == {uid: hooks[uid] for uid, _ in rows}
    assert all(signature_ok(h, secret) for h in receiver.on("/mo"))


async def _true(value: bool) -> bool:
    return value


async def _text(value: str) -> str:
    return value
