"""SMS in end to end: MO deliver_sm injected at the SMSC at a fixed rate, through the gateway
(running as its own process), to a real local webhook server.

Prints the offered and sustained MO/s and the p50/p99/max latency from the SMSC sending the
deliver_sm to the webhook receiving the POST, and the gateway's peak RSS.

    .venv/bin/python -m bench.sms_in --rate 500 --seconds 10 [--db postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs

from aiohttp import web

from bench.common import (
    cpu_seconds,
    create_database,
    drain_output,
    free_port,
    peak_rss_mib,
    percentile,
    start_process,
    stop_process,
)
from gateway.db import migrate
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Number, NumberSubscription
from gateway.services.accounts import AccountService
from smpp.encoding import encode_gsm7
from smpp.simulator import SimulatorConfig, SmscSimulator

SIN = "+81312345678"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=500, help="MO per second offered by the SMSC")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sms-in-"))
    db_url, drop_database = await create_database(args.db, work)

    # Webhook receiver: records when each MO (by its text) arrived.
    arrivals: dict[str, float] = {}
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        fields = parse_qs((await request.read()).decode())
        arrivals.setdefault(fields["message"][0], time.perf_counter())
        arrived.set()
        return web.Response(status=204)

    async def wait_arrivals(predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                arrived.clear()
                await arrived.wait()

    hook_app = web.Application()
    hook_app.router.add_post("/mo", hook)
    hook_runner = web.AppRunner(hook_app, access_log=None)
    await hook_runner.setup()
    hook_port = free_port()
    await web.TCPSite(hook_runner, "127.0.0.1", hook_port).start()

    await asyncio.to_thread(migrate.upgrade, db_url)
    engine = create_engine(db_url)
    sessions = session_factory(engine)
    creds = await AccountService(sessions).create("bench")
    async with sessions.begin() as s:
        num = Number(
            uid=secrets.token_hex(16),
            number=SIN,
            country_code="JP",
            prefix="813",
            sms=True,
            voice=False,
            monthly_cost=Decimal(0),
            minute_cost=Decimal(0),
        )
        s.add(num)
        await s.flush()
        s.add(
            NumberSubscription(
                number_id=num.id,
                account_id=creds.account.id,
                kind="sin",
                action_url=f"http://127.0.0.1:{hook_port}/mo",
            )
        )
    await engine.dispose()

    smsc = SmscSimulator(SimulatorConfig(port=0, dlr_delay=0, fail_prefix=None, summary_interval=0))
    await smsc.start()
    env = {
        "GATEWAY_DATABASE_URL": db_url,
        "GATEWAY_HTTP_PORT": str(free_port()),
        "GATEWAY_SMPP_PORT": str(smsc.port),
        "GATEWAY_SIMULATOR_ENABLED": "false",
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_WEBHOOKS_POLL_INTERVAL": "0.5",
        "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",  # the webhook receiver is on loopback
    }
    gw = await start_process("-m", "gateway", "run", env=env, cwd=work)
    drain = asyncio.get_running_loop().create_task(drain_output(gw))
    try:
        await smsc.wait_for_receiver()
        # Warm-up.
        for i in range(20):
            await smsc.inject_mo("819011112222", SIN[1:], encode_gsm7(f"warm {i}"))
        await wait_arrivals(lambda: len(arrivals) >= 20, 30)

        sent: dict[str, float] = {}
        total = int(args.rate * args.seconds)
        cpu0 = cpu_seconds([gw.pid])
        start = time.perf_counter()
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            text = f"mo {i}"
            sent[text] = time.perf_counter()
            await smsc.inject_mo("819011112222", SIN[1:], encode_gsm7(text))
        offered_s = time.perf_counter() - start
        with contextlib.suppress(TimeoutError):
            await wait_arrivals(lambda: sum(1 for t in sent if t in arrivals) >= total, 60)
        cpu_ms = (cpu_seconds([gw.pid]) - cpu0) * 1000 / total
        got = [arrivals[t] - sent[t] for t in sent if t in arrivals]
        last = max(arrivals[t] for t in sent if t in arrivals)
        print(f"engine              {args.db}")
        print(f"offered             {total} MO at {total / offered_s:,.0f}/s")
        print(f"delivered           {len(got)} ({total - len(got)} missing)")
        print(f"sustained MO/s      {len(got) / (last - start):,.0f}")
        print(f"latency p50         {percentile(got, 50) * 1000:.1f} ms  (deliver_sm sent -> webhook POST)")
        print(f"latency p99         {percentile(got, 99) * 1000:.1f} ms")
        print(f"latency max         {max(got) * 1000:.1f} ms")
        print(f"gateway CPU/MO      {cpu_ms:.2f} ms  (user + system, all its threads)")
        print(f"gateway peak RSS    {peak_rss_mib(gw.pid):.0f} MiB")
    finally:
        drain.cancel()
        await stop_process(gw)
        await smsc.stop()
        await hook_runner.cleanup()
        await drop_database()


if __name__ == "__main__":
    asyncio.run(main())
