"""Scale-out: two gateway processes on one PostgreSQL share the outbound queue.

Both run as real processes (`python -m gateway run`, tests/procs.py) with their own
dispatcher.node_id and their own SMPP bind to one SMSC simulator in the test process; the
simulator accepts any credentials, so each node binds with its node id as system_id and
every accepted submit_sm says which bind (which node) sent it. Messages are POSTed to the
two APIs alternately. Nothing crashes, so exactly-once is the claim under test:

- every 201 is DELIVERED, and the SMSC received every message exactly once (no duplicate, no
  loss) over exactly two binds (no reconnect that could excuse a duplicate);
- every row was claimed exactly once (`attempts` = 1: no second claim after a lost lease or a
  failed submit) and has exactly one part;
- both nodes did part of the work: `claimed_by` (node id + claim token, kept after sending)
  splits the rows between the two node ids, each with at least MIN_SHARE of them, and for every
  message the node whose claim it carries is the node whose bind delivered it to the SMSC.

Also shared through the database: a connector's submit-rate cap, and what the operator's
console shows of every node's SMPP binds (a killed node's turn stale).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from smpp.encoding import decode_short_message
from smpp.simulator import SimulatorConfig, SmscSimulator
from tests.conftest import ENGINES, gateway_config, start_gateway, wait_for
from tests.console_rig import ConsoleClient, bind_states, has, with_operator
from tests.procs import (
    GatewayProcess,
    GatewayProcesses,
    create_account,
    fresh_database,
    gateway_processes,
    sql,
)

pytestmark = pytest.mark.skipif("postgresql" not in ENGINES, reason="scale-out needs PostgreSQL")

MESSAGES = 2000
CLIENTS = 40
NODES = ("node-a", "node-b")
MIN_SHARE = 0.1  # each node sends at least this fraction (each API wakes its own dispatcher)
JP = "+818012345678"


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest_asyncio.fixture
async def gateway_procs(tmp_path: Path) -> AsyncIterator[GatewayProcesses]:
    async with gateway_processes(tmp_path) as procs:
        yield procs


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SmscSimulator]:
    simulator = SmscSimulator(
        SimulatorConfig(port=0, dlr_delay=0, fail_prefix=None, summary_interval=0, password=None)
    )
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def post_alternately(nodes: list[GatewayProcess], auth: dict[str, str]) -> dict[str, int]:
    """POST `scale-<i>` for every i, message i to node i % 2; msgid -> i for each 201."""
    accepted: dict[str, int] = {}
    todo = iter(range(MESSAGES))

    async def client(http: aiohttp.ClientSession) -> None:
        for i in todo:
            form = {"message": f"scale-{i}", "recipient": JP, "sender": "SCALE"}
            url = f"{nodes[i % len(nodes)].base_url}/sms/messages/"
            async with http.post(url, data=form, headers=auth) as r:
                assert r.status == 201, (i, r.status, await r.text())
                accepted[(await r.json())[0]["msgid"]] = i

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return accepted


async def test_two_nodes_send_each_message_exactly_once(
    db: str, sim: SmscSimulator, gateway_procs: GatewayProcesses
) -> None:
    t0 = time.monotonic()
    creds = await create_account(db, "scale")
    auth = {"Authorization": aiohttp.encode_basic_auth(creds.account.sid, creds.auth_token)}
    nodes = [
        gateway_procs.spawn(name, db, sim.port, GATEWAY_DISPATCHER_NODE_ID=name, GATEWAY_SMPP_SYSTEM_ID=name)
        for name in NODES
    ]
    for node in nodes:  # one after the other: both would otherwise run the (no-op) migration at once
        await node.start()

    async def both_bound() -> bool:
        return all(sim.has_receiver(name) for name in NODES)

    await wait_for(both_bound, timeout=30)

    accepted = await post_alternately(nodes, auth)
    assert len(accepted) == MESSAGES

    async def statuses() -> Counter[str]:
        return Counter(
            {s: n for s, n in await sql(db, "SELECT status, count(*) FROM messages GROUP BY status")}
        )

    async def all_delivered() -> bool:
        return await statuses() == Counter({"DELIVERED": MESSAGES})

    try:
        await wait_for(all_delivered, timeout=60, interval=0.25)
    except AssertionError:
        raise AssertionError(f"not all DELIVERED: {await statuses()}") from None
    for node in nodes:
        assert await node.stop() == 0, node.tail()
    elapsed = time.monotonic() - t0

    # -- the SMSC got every message exactly once, over the two binds and no others
    submits = sim.submits
    body_of = {
        s.message_id: decode_short_message(s.data_coding, s.esm_class, s.short_message).text for s in submits
    }
    seen = Counter(body_of.values())
    expected = {f"scale-{i}" for i in accepted.values()}
    assert set(seen) == expected
    assert {b: n for b, n in seen.items() if n > 1} == {}
    assert sim.bind_count == len(NODES)

    # -- one claim and one part per row, every 201 DELIVERED
    rows = await sql(db, "SELECT msgid, body, status, attempts, claimed_by FROM messages")
    assert len(rows) == MESSAGES
    assert {msgid for msgid, *_ in rows} == set(accepted)
    assert Counter(status for _, _, status, _, _ in rows) == Counter({"DELIVERED": MESSAGES})
    assert Counter(attempts for _, _, _, attempts, _ in rows) == Counter({1: MESSAGES})
    parts = await sql(db, "SELECT message_id, count(*) FROM message_parts GROUP BY message_id")
    assert len(parts) == MESSAGES and {n for _, n in parts} == {1}

    # -- both nodes worked, and each message went out on the bind of the node that claimed it
    claimed_node = {body: claimed_by.split(":", 1)[0] for _, body, _, _, claimed_by in rows}
    sent_by = {body_of[s.message_id]: s.system_id for s in submits}
    assert claimed_node == sent_by
    share = Counter(claimed_node.values())
    assert set(share) == set(NODES), share
    assert min(share.values()) >= MIN_SHARE * MESSAGES, share
    posted_to = {f"scale-{i}": NODES[i % len(NODES)] for i in accepted.values()}
    crossed = sum(1 for body, node in claimed_node.items() if posted_to[body] != node)
    print(
        f"\nscale-out: {MESSAGES} messages, sent by {dict(share)}; "
        f"{crossed} sent by the node that did not accept them; duplicates 0; {elapsed:.1f} s"
    )


RATE = 20
CAPPED = 120


async def test_a_rate_cap_holds_across_two_nodes(
    db: str, sim: SmscSimulator, gateway_procs: GatewayProcesses
) -> None:
    """Both nodes send over the connector `default` capped at RATE submits per second: the
    SMSC sees at most about RATE in any second of the clock (each node alone would send RATE),
    and both nodes send part of them. The cap is shared through the database, whose clock
    counts the seconds; the simulator stamps arrivals with this machine's clock, the same one,
    so only a submit on the wire across a second's turn may count in the next: the tolerance."""
    creds = await create_account(db, "capped")
    auth = {"Authorization": aiohttp.encode_basic_auth(creds.account.sid, creds.auth_token)}
    nodes = [
        gateway_procs.spawn(
            name,
            db,
            sim.port,
            GATEWAY_DISPATCHER_NODE_ID=name,
            GATEWAY_SMPP_SYSTEM_ID=name,
            GATEWAY_SMPP_MAX_SUBMITS_PER_SECOND=str(RATE),
            GATEWAY_SMPP_WINDOW="20",
        )
        for name in NODES
    ]
    for node in nodes:
        await node.start()
    await wait_for(lambda: _async(all(sim.has_receiver(name) for name in NODES)), timeout=30)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for i in range(CAPPED):
            form = {"message": f"capped-{i}", "recipient": JP, "sender": "CAP"}
            async with http.post(f"{nodes[i % 2].base_url}/sms/messages/", data=form, headers=auth) as r:
                assert r.status == 201

    async def delivered() -> bool:
        rows = await sql(db, "SELECT count(*) FROM messages WHERE status = 'DELIVERED'")
        return bool(rows[0][0] == CAPPED)

    await wait_for(delivered, timeout=60, interval=0.25)
    for node in nodes:
        assert await node.stop() == 0, node.tail()
    submits = sim.submits
    assert len(submits) == CAPPED
    times = [s.received_at.timestamp() for s in submits]
    per_second = Counter(int(t) for t in times)
    by_node = Counter(s.system_id for s in submits)
    print(f"\nrate cap {RATE}/s over two nodes: {sorted(per_second.values())} per second, by node {by_node}")
    assert set(by_node) == set(NODES), by_node
    assert max(per_second.values()) <= RATE * 1.2, per_second
    # Two nodes at RATE each, unshared, would be done in half the time.
    assert max(times) - min(times) >= (CAPPED / RATE - 1) * 0.9


async def _async(value: bool) -> bool:
    return value


async def test_the_console_shows_every_nodes_smsc_binds(
    db: str, sim: SmscSimulator, gateway_procs: GatewayProcesses
) -> None:
    """Node A (in this process) serves the operator's SMSC binds page; node B, a process with two
    binds, reports its own through the database. Both nodes' binds are listed as bound; after B
    is killed (SIGKILL: it cannot say goodbye), B's rows turn stale and A's stay bound."""
    b = gateway_procs.spawn(
        "node-b",
        db,
        sim.port,
        GATEWAY_DISPATCHER_NODE_ID="node-b",
        GATEWAY_SMPP_BINDS="2",
        GATEWAY_SMPP_BIND_REPORT_SECONDS="0.5",
    )
    await b.start()
    a = await start_gateway(
        with_operator(gateway_config(db, "127.0.0.1", sim.port, dispatcher__node_id="node-a"))
    )
    client = ConsoleClient(a)
    try:
        await client.operator_login()
        binds = [("node-a", "default#1"), ("node-b", "default#1"), ("node-b", "default#2")]
        await wait_for(lambda: has(bind_states(client), dict.fromkeys(binds, "bound")), timeout=30)
        await b.kill()
        after = {binds[0]: "bound", binds[1]: "stale", binds[2]: "stale"}
        await wait_for(lambda: has(bind_states(client), after), timeout=30)
        assert "stale (node not reporting)" in (await client.get("/console/operator/smsc")).text
    finally:
        await client.close()
        await a.runner.cleanup()
    assert [r[0] for r in await sql(db, "SELECT node FROM smsc_binds ORDER BY bind")] == ["node-b", "node-b"]
