"""Several SMSC connectors, over real sockets, on both engines: routing rules send each message
to its SMSC (our simulator, or the npm `smpp` server for an SMSC that is not our code),
failover when the first is down or throttles, receipts match only messages sent over their own
connector (the two SMSCs hand out the same ids), MO comes in from every connector, the rules
file is reloaded while the gateway runs, a connector's binds and bind modes, TLS, its rate
cap, and the connector on the message's status, its parts and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import CONNECTORS, ROUTES, create_app
from gateway.config import Config, ConfigError, ConnectorConfig
from smpp.encoding import decode_short_message, encode_gsm7
from smpp.simulator import SimulatorConfig, SmscSimulator
from tests.conftest import Gateway, free_port, gateway_config, start_gateway, wait_for
from tests.procs import subscribe_sin

JP_MOBILE = "+818012345678"  # no rule below matches it: the first connector
DOCOMO = "+819012345678"  # the +8190 rule


@contextlib.asynccontextmanager
async def simulators(n: int, **config: Any) -> AsyncIterator[list[SmscSimulator]]:
    sims = [
        SmscSimulator(SimulatorConfig(port=0, dlr_delay=0.0, fail_prefix=None, summary_interval=0, **config))
        for _ in range(n)
    ]
    for sim in sims:
        await sim.start()
    try:
        yield sims
    finally:
        for sim in sims:
            await sim.stop()


def connector(id: str, port: int, **settings: Any) -> ConnectorConfig:
    return ConnectorConfig(id=id, host="127.0.0.1", port=port, **settings)


def config(db_url: str, connectors: Sequence[ConnectorConfig], routes: Path | None = None) -> Config:
    cfg = gateway_config(db_url, "127.0.0.1", free_port())
    cfg.smpp.connectors = list(connectors)
    if routes is not None:
        cfg.smpp.routes_file = str(routes)
        cfg.smpp.routes_check_seconds = 0.1
    return cfg


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[Gateway]:
    gw = await start_gateway(cfg)
    try:
        yield gw
    finally:
        await gw.runner.cleanup()


async def send(
    gw: Gateway, http: aiohttp.ClientSession, auth: dict[str, str], recipient: str, text: str, **extra: str
) -> str:
    form = {"recipient": recipient, "sender": "DEMO", "message": text, **extra}
    async with http.post(f"{gw.base_url}/sms/messages/", data=form, headers=auth) as r:
        assert r.status == 201, await r.text()
        msgid: str = (await r.json())[0]["msgid"]
        return msgid


async def view(gw: Gateway, http: aiohttp.ClientSession, auth: dict[str, str], msgid: str) -> dict[str, Any]:
    async with http.get(f"{gw.base_url}/sms/messages/{msgid}/", headers=auth) as r:
        assert r.status == 200
        result: dict[str, Any] = await r.json()
        return result


async def settle(
    gw: Gateway, http: aiohttp.ClientSession, auth: dict[str, str], msgids: Sequence[str], timeout: float = 20
) -> dict[str, dict[str, Any]]:
    """Every message's status JSON once none is QUEUED or DELIVERING."""

    async def final() -> dict[str, dict[str, Any]] | None:
        views = {m: await view(gw, http, auth, m) for m in msgids}
        return views if all(v["status"] in ("DELIVERED", "FAIL") for v in views.values()) else None

    result: dict[str, dict[str, Any]] = await wait_for(final, timeout=timeout, interval=0.1)
    return result


def texts(submits: Sequence[Any]) -> list[str]:
    return [decode_short_message(s.data_coding, s.esm_class, s.short_message).text for s in submits]


async def scrape(gw: Gateway, http: aiohttp.ClientSession) -> str:
    async with http.get(f"{gw.base_url}/metrics") as r:
        return await r.text()


def sample(text: str, series: str) -> float | None:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


# --- routing ----------------------------------------------------------------------------------


async def test_rules_send_each_message_to_its_smsc_and_the_connector_is_recorded(
    clean_db: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[route]]\nprefix = "+8190"\nconnectors = ["b"]\n\n'
        '[[route]]\ntag = "otp"\nconnectors = ["b"]\n\n'
        '[[route]]\nsender = "BANK"\nconnectors = ["b"]\n'
    )
    async with simulators(2) as (a, b):
        cfg = config(clean_db, [connector("a", a.port), connector("b", b.port)], routes)
        async with running(cfg) as gw:
            creds = await gw.account()
            auth = gw.auth(creds)
            sent = {
                "to a": await send(gw, http, auth, JP_MOBILE, "to a"),
                "prefix": await send(gw, http, auth, DOCOMO, "prefix"),
                "tag": await send(gw, http, auth, JP_MOBILE, "tag", tags="news,otp"),
                "other tag": await send(gw, http, auth, JP_MOBILE, "other tag", tags="news"),
            }
            form = {"recipient": JP_MOBILE, "sender": "BANK", "message": "sender"}
            async with http.post(f"{gw.base_url}/sms/messages/", data=form, headers=auth) as r:
                sent["sender"] = (await r.json())[0]["msgid"]
            views = await settle(gw, http, auth, list(sent.values()))
            metrics = await scrape(gw, http)

    assert sorted(texts(a.submits)) == ["other tag", "to a"]
    assert sorted(texts(b.submits)) == ["prefix", "sender", "tag"]
    assert {name: views[m]["smsc"] for name, m in sent.items()} == {
        "to a": "a",
        "prefix": "b",
        "tag": "b",
        "other tag": "a",
        "sender": "b",
    }
    assert {v["status"] for v in views.values()} == {"DELIVERED"}
    rows = await gw.sql(
        "SELECT m.msgid, m.smsc, p.connector FROM messages m JOIN message_parts p ON p.message_id = m.id"
    )
    assert {msgid: (smsc, part) for msgid, smsc, part in rows} == {
        m: (views[m]["smsc"], views[m]["smsc"]) for m in sent.values()
    }
    assert sample(metrics, 'gateway_sms_submits_total{connector="a",result="ok"}') == 2
    assert sample(metrics, 'gateway_sms_submits_total{connector="b",result="ok"}') == 3
    assert sample(metrics, 'gateway_smpp_bound{connector="a"}') == 1
    assert sample(metrics, 'gateway_smpp_bound{connector="b"}') == 1


async def test_the_single_smpp_section_is_the_connector_default(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    auth = gateway.auth(await gateway.account())
    msgid = await send(gateway, http, auth, JP_MOBILE, "hello")
    views = await settle(gateway, http, auth, [msgid])
    assert views[msgid]["smsc"] == "default" and views[msgid]["status"] == "DELIVERED"
    assert await gateway.sql("SELECT connector FROM message_parts") == [("default",)]
    metrics = await scrape(gateway, http)
    assert sample(metrics, 'gateway_sms_submits_total{connector="default",result="ok"}') == 1
    assert sample(metrics, 'gateway_smpp_bound{connector="default"}') == 1


async def test_a_queued_message_has_no_smsc_yet(clean_db: str, http: aiohttp.ClientSession) -> None:
    # The one connector's SMSC is not there: the message waits, and says where it went: nowhere.
    async with running(config(clean_db, [connector("a", free_port())])) as gw:
        auth = gw.auth(await gw.account())
        msgid = await send(gw, http, auth, JP_MOBILE, "waits")
        shown = await view(gw, http, auth, msgid)
        assert (shown["status"], shown["smsc"]) == ("QUEUED", None)
        assert sample(await scrape(gw, http), 'gateway_smpp_bound{connector="a"}') == 0


# --- failover -----------------------------------------------------------------------------------


async def test_failover_to_the_next_connector_when_the_first_is_down(
    clean_db: str, http: aiohttp.ClientSession, node_smsc: Any, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nprefix = "+81"\nconnectors = ["down", "node"]\n')
    down = connector("down", free_port())  # nobody listens there
    node = connector("node", node_smsc.port)
    async with running(config(clean_db, [down, node], routes)) as gw:
        auth = gw.auth(await gw.account())
        msgids = [await send(gw, http, auth, JP_MOBILE, f"failover {i}") for i in range(5)]
        views = await settle(gw, http, auth, msgids)
    assert {(v["status"], v["smsc"]) for v in views.values()} == {("DELIVERED", "node")}
    assert sorted(texts(await node_smsc.submits())) == [f"failover {i}" for i in range(5)]


async def test_failover_when_the_first_throttles_and_back_once_it_takes_traffic_again(
    clean_db: str, http: aiohttp.ClientSession, sim_smsc: Any, node_smsc: Any, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nconnectors = ["sim", "node"]\n')
    sim = connector("sim", sim_smsc.port)
    node = connector("node", node_smsc.port)
    await sim_smsc.configure(throttle_next=1_000_000)
    async with running(config(clean_db, [sim, node], routes)) as gw:
        assert await gw.app[CONNECTORS]["sim"].wait_bound(10)
        assert await gw.app[CONNECTORS]["node"].wait_bound(10)
        auth = gw.auth(await gw.account())
        throttled = [await send(gw, http, auth, JP_MOBILE, f"throttled {i}") for i in range(6)]
        views = await settle(gw, http, auth, throttled)
        assert {(v["status"], v["smsc"]) for v in views.values()} == {("DELIVERED", "node")}
        assert await sim_smsc.submits() == []
        metrics = await scrape(gw, http)
        assert (sample(metrics, 'gateway_sms_submits_total{connector="sim",result="error"}') or 0) >= 1

        await sim_smsc.configure()  # the first SMSC takes traffic again: once its pause is over

        async def back_on_sim() -> bool:
            msgid = await send(gw, http, auth, JP_MOBILE, "back")
            return (await settle(gw, http, auth, [msgid]))[msgid]["smsc"] == "sim"

        await wait_for(back_on_sim, timeout=20, interval=0.5)
    on_node = [t for t in texts(await node_smsc.submits()) if t.startswith("throttled")]
    assert sorted(on_node) == sorted(f"throttled {i}" for i in range(6))


async def test_the_last_connector_waits_out_throttling_itself(
    clean_db: str, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    """A connector with no other after it keeps the single-SMSC behaviour: pause and resend."""
    await sim_smsc.configure(throttle_next=3)
    async with running(config(clean_db, [connector("only", sim_smsc.port)])) as gw:
        auth = gw.auth(await gw.account())
        msgid = await send(gw, http, auth, JP_MOBILE, "patience")
        views = await settle(gw, http, auth, [msgid], timeout=30)
    assert (views[msgid]["status"], views[msgid]["smsc"]) == ("DELIVERED", "only")
    assert texts(await sim_smsc.submits()) == ["patience"]
    assert sim_smsc.simulator.stats.throttled == 3


# --- receipts and MO ----------------------------------------------------------------------------


async def test_a_receipt_matches_only_messages_sent_over_its_own_connector(
    clean_db: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Both SMSCs hand out the same message id; each one's receipt settles its own message only
    (DELIVRD from a, UNDELIV from b). Matched by id alone, the first receipt to arrive would
    settle both. MO comes in over both connectors."""
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nprefix = "+8190"\nconnectors = ["b"]\n')
    async with simulators(2, first_message_id=0x1234567890) as (a, b):
        a.configure(dlr_delay_ms=1500)
        b.configure(dlr_delay_ms=1500, dlr_stat="UNDELIV")
        async with running(config(clean_db, [connector("a", a.port), connector("b", b.port)], routes)) as gw:
            creds = await gw.account()
            auth = gw.auth(creds)
            await subscribe_sin(clean_db, creds.account.id, "+81312345678", "http://127.0.0.1:9/")
            via_a = await send(gw, http, auth, JP_MOBILE, "over a")
            via_b = await send(gw, http, auth, DOCOMO, "over b")
            views = await settle(gw, http, auth, [via_a, via_b])
            await a.inject_mo("819011112222", "81312345678", encode_gsm7("mo over a"))
            await b.inject_mo("819011113333", "81312345678", encode_gsm7("mo over b"))

            async def both_stored() -> list[Any] | None:
                async with http.get(f"{gw.base_url}/sms/inbounds/", headers=auth) as r:
                    rows = await r.json()
                return rows if len(rows) == 2 else None

            inbound = sorted((r["sender"], r["message"], r["smsc"]) for r in await wait_for(both_stored))
            orphans = await gw.sql("SELECT count(*) FROM orphan_receipts")
            async with http.get(f"{gw.base_url}/metrics") as r:
                metrics = await r.text()
    [submit_a], [submit_b] = a.submits, b.submits
    assert submit_a.message_id == submit_b.message_id  # the collision under test
    assert (views[via_a]["status"], views[via_a]["smsc"]) == ("DELIVERED", "a")
    assert (views[via_b]["status"], views[via_b]["smsc"]) == ("FAIL", "b")
    assert orphans == [(0,)]
    assert inbound == [("+819011112222", "mo over a", "a"), ("+819011113333", "mo over b", "b")]
    assert 'gateway_sms_mo_total{connector="a"} 1.0' in metrics
    assert 'gateway_sms_mo_total{connector="b"} 1.0' in metrics


# --- binds, bind modes, TLS, encoding -------------------------------------------------------------


async def test_a_connector_spreads_its_messages_over_its_binds(
    clean_db: str, http: aiohttp.ClientSession
) -> None:
    async with simulators(1, bind_rate=20) as (sim,):
        async with running(config(clean_db, [connector("a", sim.port, binds=3, window=2)])) as gw:
            assert await gw.app[CONNECTORS]["a"].wait_bound(10)
            auth = gw.auth(await gw.account())
            msgids = [await send(gw, http, auth, JP_MOBILE, f"spread {i}") for i in range(30)]
            views = await settle(gw, http, auth, msgids, timeout=30)
            metrics = await scrape(gw, http)
    assert {v["status"] for v in views.values()} == {"DELIVERED"}
    assert sim.bind_count == 3
    per_bind = Counter(s.peer for s in sim.submits)
    assert len(per_bind) == 3 and min(per_bind.values()) >= 3, per_bind
    assert sample(metrics, 'gateway_smpp_bound{connector="a"}') == 3


async def test_transmitters_and_a_receiver(clean_db: str, http: aiohttp.ClientSession) -> None:
    """bind_mode transmitter_receiver: submits on the transmitters, receipts and MO on the
    receiver (the simulator sends them to a bind that can receive)."""
    async with simulators(1) as (sim,):
        settings = connector("a", sim.port, binds=2, bind_mode="transmitter_receiver")
        async with running(config(clean_db, [settings])) as gw:
            conn = gw.app[CONNECTORS]["a"]
            assert await conn.wait_bound(10)
            auth = gw.auth(await gw.account())
            msgids = [await send(gw, http, auth, JP_MOBILE, f"tx {i}") for i in range(6)]
            views = await settle(gw, http, auth, msgids)
            await sim.inject_mo("819011112222", "81312345678", encode_gsm7("to the receiver"))

            async def stored() -> bool:
                return await gw.sql("SELECT count(*) FROM inbound_messages") == [(1,)]

            await wait_for(stored)
            [receiver] = [c for c in conn.clients if c.config.bind_mode == "receiver"]
            assert receiver.inbound_peak >= 1  # the receipts and the MO came over the receiver
            assert sample(await scrape(gw, http), 'gateway_smpp_bound{connector="a"}') == 3
    assert {v["status"] for v in views.values()} == {"DELIVERED"}
    assert sim.bind_count == 3
    assert {c.config.bind_mode for c in conn.transmitters} == {"transmitter"}
    assert len({s.peer for s in sim.submits}) <= 2


async def test_data_coding_and_ton_npi_of_a_connector(clean_db: str, http: aiohttp.ClientSession) -> None:
    async with simulators(1) as (sim,):
        settings = connector("a", sim.port, data_coding=3, alnum_source_ton=6)
        async with running(config(clean_db, [settings])) as gw:
            auth = gw.auth(await gw.account())
            msgid = await send(gw, http, auth, JP_MOBILE, "café {ok}")
            await settle(gw, http, auth, [msgid])
    [submit] = sim.submits
    assert (submit.data_coding, submit.short_message) == (3, "café {ok}".encode("latin-1"))
    assert submit.source_addr_ton == 6


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


async def test_a_connector_over_tls_with_a_client_certificate(
    clean_db: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it.
    d = tmp_path
    days = ["-days", "2"]
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
        "-out", str(d / "ca.pem"), "-subj", "/CN=test ca", *days,
    )  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"),
            "-out", str(d / f"{name}.csr"), "-subj", f"/CN={name}",
        )  # fmt: skip
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / f"{name}.pem"),
            "-extfile", str(d / f"{name}.ext"), *days,
        )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(d / "ca.pem"))
    server.load_cert_chain(str(d / "server.pem"), str(d / "server.key"))
    server.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no bind
    sim = SmscSimulator(
        SimulatorConfig(port=0, dlr_delay=0.0, fail_prefix=None, summary_interval=0), tls=server
    )
    await sim.start()
    try:
        settings = connector(
            "tls",
            sim.port,
            tls=True,
            tls_ca_file=str(d / "ca.pem"),
            tls_cert_file=str(d / "client.pem"),
            tls_key_file=str(d / "client.key"),
        )
        async with running(config(clean_db, [settings])) as gw:
            auth = gw.auth(await gw.account())
            msgid = await send(gw, http, auth, JP_MOBILE, "over tls")
            views = await settle(gw, http, auth, [msgid])
    finally:
        await sim.stop()
    assert (views[msgid]["status"], views[msgid]["smsc"]) == ("DELIVERED", "tls")
    assert texts(sim.submits) == ["over tls"]

    bad = connector("tls", sim.port, tls=True, tls_ca_file=str(d / "missing.pem"))
    with pytest.raises(ConfigError, match="connector tls: TLS files unusable"):
        create_app(config(clean_db, [bad]))


# --- rules reload -----------------------------------------------------------------------------


async def test_rules_are_reloaded_while_running_and_a_bad_file_leaves_them_in_force(
    clean_db: str, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.routing.source")
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nprefix = "+8190"\nconnectors = ["a"]\n')
    async with simulators(2) as (a, b):
        cfg = config(clean_db, [connector("a", a.port), connector("b", b.port)], routes)
        async with running(cfg) as gw:
            auth = gw.auth(await gw.account())
            # Routed when sent, not when accepted: each is sent before the file changes again.
            first = await send(gw, http, auth, DOCOMO, "before")
            await settle(gw, http, auth, [first])

            routes.write_text('[[route]]\nprefix = "+8190"\nconnectors = ["b", "a"]\n')

            async def reloaded() -> bool:
                return gw.app[ROUTES].table.routes[0].connectors == ("b", "a")

            await wait_for(reloaded)
            second = await send(gw, http, auth, DOCOMO, "after")
            await settle(gw, http, auth, [second])

            routes.write_text('[[route]]\nprefix = "+8190"\nconnectors = ["c"]\n')

            async def refused() -> bool:
                return "refused" in caplog.text

            await wait_for(refused)
            third = await send(gw, http, auth, DOCOMO, "still")
            views = await settle(gw, http, auth, [first, second, third])
    assert [views[m]["smsc"] for m in (first, second, third)] == ["a", "b", "b"]
    assert "route 1 (line 1): unknown connector 'c'" in caplog.text

    routes.write_text('[[route]]\nprefix = "+8190"\nconnectors = ["c"]\n')
    with pytest.raises(ConfigError, match=r"smpp.routes_file .*route 1 \(line 1\): unknown connector 'c'"):
        create_app(config(clean_db, [connector("a", 1), connector("b", 2)], routes))


# --- the rate cap -------------------------------------------------------------------------------

RATE = 20
BURST = 70


def per_second(submits: Sequence[Any]) -> Counter[int]:
    return Counter(int(s.received_at.timestamp()) for s in submits)


async def test_a_connector_capped_at_n_per_second_sends_at_most_n_per_second(
    clean_db: str, http: aiohttp.ClientSession
) -> None:
    """Measured at the SMSC, in the seconds of the clock (the database's second, on
    PostgreSQL, is the same clock on this machine). Both binds share the cap."""
    async with simulators(1) as (sim,):
        settings = connector("capped", sim.port, binds=2, window=20, max_submits_per_second=RATE)
        async with running(config(clean_db, [settings])) as gw:
            assert await gw.app[CONNECTORS]["capped"].wait_bound(10)
            auth = gw.auth(await gw.account())
            msgids = await asyncio.gather(
                *(send(gw, http, auth, JP_MOBILE, f"cap {i}") for i in range(BURST))
            )
            views = await settle(gw, http, auth, msgids, timeout=60)
    assert {v["status"] for v in views.values()} == {"DELIVERED"}
    times = [s.received_at.timestamp() for s in sim.submits]
    assert len(times) == BURST
    # Evenly spaced at 1/RATE s: BURST messages take (BURST - 1) / RATE s at the least.
    assert max(times) - min(times) >= (BURST - 1) / RATE * 0.95
    # +2: the simulator stamps a PDU when it reads it, which a busy event loop can delay past
    # the turn of a second while the next one is read at once.
    assert max(per_second(sim.submits).values()) <= RATE + 2
