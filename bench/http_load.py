"""The HTTP load generator of bench/compare.py, run as its own process so its CPU is not the
gateway's: N messages sent with C concurrent clients (keep-alive) to our API or to Kannel's
sendsms, each asking for status callbacks. Prints one JSON line: the time of the first request
(epoch seconds), accepted/s, latency p50/p99 in ms, and any error answers.

The C connections are opened before the clock starts (a GET that sends nothing), as a client
application holding its connections would have them: smsbox listens with a backlog of 10, so
50 connects at once lose SYNs and wait ~1 s for their retransmission, which would otherwise
land in Kannel's p99 at small N.

    python -m bench.http_load ours   --url http://127.0.0.1:8080 --auth SID:TOKEN --callback URL --n 2000
    python -m bench.http_load kannel --url http://127.0.0.1:13013/cgi-bin/sendsms --auth bench:bench \\
        --callback URL --dlr-mask 27 --n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bench.common import percentile

RECIPIENT = "+818012345678"
SENDER = "BENCH"

Send = Callable[[aiohttp.ClientSession, int], Awaitable[tuple[int, str]]]


def ours(url: str, auth: str, callback: str) -> tuple[Send, str]:
    sid, token = auth.split(":", 1)
    headers = {"Authorization": aiohttp.BasicAuth(sid, token).encode()}

    async def send(http: aiohttp.ClientSession, i: int) -> tuple[int, str]:
        data = {
            "message": f"bench message {i}",
            "recipient": RECIPIENT,
            "sender": SENDER,
            "callbackurl": callback,
        }
        async with http.post(f"{url}/sms/messages/", data=data, headers=headers) as r:
            body = await r.text()
            return (0 if r.status == 201 else r.status), body

    return send, f"{url}/healthz"


def kannel(url: str, auth: str, callback: str, dlr_mask: int) -> tuple[Send, str]:
    user, password = auth.split(":", 1)

    async def send(http: aiohttp.ClientSession, i: int) -> tuple[int, str]:
        params = {
            "username": user,
            "password": password,
            "from": SENDER,
            "to": RECIPIENT,
            "text": f"bench message {i}",
            "dlr-mask": str(dlr_mask),
            # Kannel fills in %d (the DLR type) when it fetches the URL.
            "dlr-url": f"{callback}?i={i}&type=%d",
        }
        async with http.get(url, params=params) as r:
            body = await r.text()
            return (0 if r.status == 202 else r.status), body

    # Any path answers (404 here) without sending anything.
    return send, url.replace("/cgi-bin/sendsms", "/")


async def open_connections(http: aiohttp.ClientSession, url: str, count: int) -> None:
    """`count` requests in flight at once, so the pool ends up holding `count` connections."""
    opened = 0
    all_open = asyncio.Event()

    async def hold() -> None:
        nonlocal opened
        async with http.get(url) as r:
            opened += 1
            if opened == count:
                all_open.set()
            await all_open.wait()
            await r.read()

    await asyncio.gather(*(hold() for _ in range(count)))


async def run(send: Send, warm_url: str, n: int, concurrency: int, start: int) -> dict[str, object]:
    latencies: list[float] = []
    errors: collections.Counter[int] = collections.Counter()
    sample = ""
    todo = iter(range(start, start + n))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:

        async def worker() -> None:
            nonlocal sample
            for i in todo:
                t0 = time.perf_counter()
                try:
                    status, body = await send(http, i)
                except aiohttp.ClientError as exc:
                    status, body = -1, repr(exc)
                latencies.append(time.perf_counter() - t0)
                if status:
                    errors[status] += 1
                    sample = sample or f"{status}: {body[:300]}"

        await open_connections(http, warm_url, concurrency)
        first = time.time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "first_request_at": first,
        "accepted_per_s": n / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": {str(k): v for k, v in errors.items()},
        "error_sample": sample,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("system", choices=["ours", "kannel"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--auth", required=True, help="SID:TOKEN (ours) or user:password (Kannel)")
    ap.add_argument("--callback", required=True, help="status callback (ours) / dlr-url (Kannel)")
    ap.add_argument("--dlr-mask", type=int, default=27)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--start", type=int, default=0, help="index of the first message (its text)")
    args = ap.parse_args()
    send, warm_url = (
        ours(args.url, args.auth, args.callback)
        if args.system == "ours"
        else kannel(args.url, args.auth, args.callback, args.dlr_mask)
    )
    result = asyncio.run(run(send, warm_url, args.n, args.concurrency, args.start))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
