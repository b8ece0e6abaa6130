"""SMS out end to end: N messages POSTed concurrently through the API to a fast SMSC peer
(our simulator in its own process, receipts immediate) until every one is DELIVERED.

Prints accepted/s (API), end-to-end msg/s (first POST to last DELIVERED), API latency
p50/p99, and the gateway's peak RSS. The gateway runs as its own process, as deployed.

    .venv/bin/python bench/sms_out.py --messages 5000 --concurrency 50 [--db postgresql]

Binds: with `--bind-rate K` the simulator serves each bind at most K submit_sm a second (an
SMSC that caps every bind), and `--binds N` gives the gateway's connector N binds, so the
end-to-end rate grows with N up to what the gateway itself can do:

    .venv/bin/python -m bench.sms_out --messages 2000 --bind-rate 100 --binds 1
    .venv/bin/python -m bench.sms_out --messages 2000 --bind-rate 100 --binds 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import (
    cpu_seconds,
    create_database,
    drain_output,
    free_port,
    peak_rss_mib,
    percentile,
    rss_mib,
    start_process,
    stop_process,
)
from gateway.db.engine import create_engine


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--window", type=int, default=10, help="per bind")
    ap.add_argument("--binds", type=int, default=1, help="binds of the gateway's connector")
    ap.add_argument("--bind-rate", type=float, default=0.0, help="submit_sm/s the SMSC serves per bind")
    # INFO, the default, logs three lines per message here (queued, submitted, final status).
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--log-format", choices=["text", "json"], default="text")
    ap.add_argument(
        "--callbacks", action="store_true", help="a callbackurl on each message (receiver: this process)"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="send the N messages this many times into the same gateway, printing its RSS after each",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sms-out-"))
    db_url, drop_database = await create_database(args.db, work)

    smsc_port, http_port = free_port(), free_port()
    env = {
        "GATEWAY_DATABASE_URL": db_url,
        "GATEWAY_HTTP_PORT": str(http_port),
        "GATEWAY_SMPP_PORT": str(smsc_port),
        "GATEWAY_SIMULATOR_ENABLED": "false",
        "GATEWAY_SMPP_WINDOW": str(args.window),
        "GATEWAY_SMPP_BINDS": str(args.binds),
        "GATEWAY_LOG_LEVEL": args.log_level,
        "GATEWAY_LOG_FORMAT": args.log_format,
        "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",  # the callback receiver
    }
    smsc = await start_process(
        "-m",
        "smpp.simulator_cli",
        "--port",
        str(smsc_port),
        "--dlr-delay",
        "0",
        "--summary-interval",
        "0",
        "--bind-rate",
        str(args.bind_rate),
        "--log-level",
        "WARNING",
        ready="listening",
    )
    subprocs = [smsc]
    received = [0]
    all_received = asyncio.Event()
    callback_url = ""
    receiver = None
    if args.callbacks:

        async def hook(request: web.Request) -> web.Response:
            await request.read()
            received[0] += 1
            if received[0] >= 2 * (50 + args.rounds * args.messages):  # DELIVERING, DELIVERED; warm-up
                all_received.set()
            return web.Response()

        app = web.Application()
        app.router.add_post("/cb", hook)
        receiver = web.AppRunner(app, access_log=None)
        await receiver.setup()
        cb_port = free_port()
        await web.TCPSite(receiver, "127.0.0.1", cb_port).start()
        callback_url = f"http://127.0.0.1:{cb_port}/cb"
    try:
        await (await start_process("-m", "gateway", "migrate", env=env)).communicate()
        creds = json.loads(await _create_account(env))
        gw = await start_process("-m", "gateway", "run", env=env, cwd=work)
        subprocs.append(gw)
        drain = asyncio.get_running_loop().create_task(drain_output(gw))
        base = f"http://127.0.0.1:{http_port}"
        auth = {"Authorization": aiohttp.encode_basic_auth(creds["sid"], creds["auth_token"])}
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            await _wait_up(http, base)
            # Warm-up: connections, caches, the bind.
            await asyncio.gather(*(_post(http, base, auth, i, callback_url) for i in range(50)))
            engine = create_engine(db_url)
            await _wait_count(engine, 50)
            latencies: list[float] = []
            queue: asyncio.Queue[int] = asyncio.Queue()

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    t0 = time.perf_counter()
                    await _post(http, base, auth, i, callback_url)
                    latencies.append(time.perf_counter() - t0)

            cpu0 = cpu_seconds([gw.pid])
            start = time.perf_counter()
            for n in range(1, args.rounds + 1):
                for i in range(args.messages):
                    queue.put_nowait(i)
                began = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                accepted_s = time.perf_counter() - began
                await _wait_count(engine, 50 + n * args.messages)
                if args.rounds > 1:
                    # Memory the gateway holds on to after each round: a cache fills up and stops,
                    # a leak keeps growing.
                    print(
                        f"round {n:<3}          {args.messages / (time.perf_counter() - began):,.0f} msg/s, "
                        f"RSS {rss_mib(gw.pid):.0f} MiB now, {peak_rss_mib(gw.pid):.0f} MiB peak",
                        flush=True,
                    )
            e2e_s = time.perf_counter() - start
            sent = args.rounds * args.messages
            if args.callbacks:
                await all_received.wait()
            cb_s = time.perf_counter() - start
            cpu_ms = (cpu_seconds([gw.pid]) - cpu0) * 1000 / sent
            await engine.dispose()
        rss = peak_rss_mib(gw.pid)
        drain.cancel()
        cap = f"{args.bind_rate:g}/s per bind" if args.bind_rate else "no cap"
        print(f"engine            {args.db}, window {args.window}, concurrency {args.concurrency}")
        print(f"binds             {args.binds} (SMSC: {cap})")
        print(f"messages          {args.messages}" + (f" x {args.rounds} rounds" if args.rounds > 1 else ""))
        print(f"accepted/s        {args.messages / accepted_s:,.0f}   (the last round)")
        print(f"end-to-end msg/s  {sent / e2e_s:,.0f}   (first POST to last DELIVERED: {e2e_s:.2f} s)")
        if args.callbacks:
            print(f"callbacks done    {cb_s:.2f} s after the first POST (2 per message)")
        print(f"API latency p50   {percentile(latencies, 50) * 1000:.1f} ms")
        print(f"API latency p99   {percentile(latencies, 99) * 1000:.1f} ms")
        print(f"gateway CPU/msg   {cpu_ms:.2f} ms   (user + system, all its threads)")
        print(f"gateway peak RSS  {rss:.0f} MiB")
    finally:
        for p in reversed(subprocs):
            await stop_process(p)
        if receiver is not None:
            await receiver.cleanup()
        await drop_database()


async def _create_account(env: dict[str, str]) -> str:
    proc = await start_process(
        "-m", "gateway", "accounts", "create", "--name", "bench", "--freeform", "--sender", "BENCH", env=env
    )
    out, _ = await proc.communicate()
    text_out = out.decode()
    return text_out[text_out.index("{") :]


async def _post(
    http: aiohttp.ClientSession, base: str, auth: dict[str, str], i: int, callback_url: str
) -> None:
    data = {"message": f"bench message {i}", "recipient": "+818012345678", "sender": "BENCH"}
    if callback_url:
        data["callbackurl"] = callback_url
    async with http.post(f"{base}/sms/messages/", data=data, headers=auth) as r:
        if r.status != 201:
            raise RuntimeError(f"POST answered {r.status}: {await r.text()}")
        await r.read()


async def _wait_up(http: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):
        try:
            async with http.get(f"{base}/healthz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("gateway did not come up")


async def _wait_count(engine: AsyncEngine, n: int) -> None:
    while True:
        async with engine.connect() as conn:
            done = (
                await conn.execute(text("SELECT count(*) FROM messages WHERE status = 'DELIVERED'"))
            ).scalar_one()
        if done >= n:
            return
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main())
