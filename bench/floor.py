"""The least CPU per message any gateway built on our fixed choices can spend: no database, no
validation, no SMPP session, no logging; only what every message out costs in aiohttp and
smpplib whatever the gateway does around it.

A process (the "floor") serves POST /sms/messages/ with aiohttp: it reads the form and answers
201 with a JSON body, encodes the message's `submit_sm` with smpplib, reads a `deliver_sm`
receipt with our own walk (as the gateway does) and encodes its `deliver_sm_resp`, and POSTs
two JSON status callbacks with an aiohttp client session to a receiver in another process.
The load comes from `bench/http_load.py` (the same generator and arguments as
`bench/compare.py` uses for our gateway: N messages, C keep-alive clients).

It prints the floor process's CPU per message (user + system) and its rate; compare that with
the gateway's "CPU per message out" in `bench/compare.py`, where each message costs the same
HTTP request, the same two callbacks and the same PDUs, plus everything this leaves out.

    .venv/bin/python -m bench.floor [--n 20000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid

import aiohttp
from aiohttp import web

from bench.common import ROOT, cpu_seconds, free_port, start_process, stop_process
from smpp.client_wire import (
    SequenceGenerator,
    decode_receipt,
    encode_request,
    encode_response,
    parse_deliver_sm,
    submit_sm_message_id,
)

RECEIPT_TEXT = (
    b"id:%s sub:001 dlvrd:001 submit date:2612051200 done date:2612051201 stat:DELIVRD err:000 text:"
)


def receipt(sequence: SequenceGenerator, msgid: str) -> bytes:
    """A deliver_sm receipt as an SMSC sends it (addresses, esm_class 0x04, the text)."""
    return encode_request(
        sequence,
        "deliver_sm",
        source_addr="818012345678",
        destination_addr="BENCH",
        esm_class=0x04,
        short_message=RECEIPT_TEXT % msgid.encode(),
    )[1]


def submit_sm_resp(seq: int, msgid: str) -> bytes:
    body = msgid.encode() + b"\x00"
    header = (16 + len(body)).to_bytes(4, "big") + bytes.fromhex("80000004 00000000") + seq.to_bytes(4, "big")
    return header + body


async def floor(port: int, callback: str, ready: str) -> None:
    http = aiohttp.ClientSession()
    ours = SequenceGenerator()
    # What the SMSC sends back, built once: its side is not the floor's CPU.
    resp, dlr = submit_sm_resp(1, "0123456789abcdef"), receipt(SequenceGenerator(), "0123456789abcdef")

    async def callbacks(msgid: str, recipient: str) -> None:
        for status in ("DELIVERING", "DELIVERED"):
            body = {"msgid": msgid, "status": status, "recipient": recipient}
            async with http.post(callback, json=body) as r:
                await r.read()

    async def send(request: web.Request) -> web.Response:
        form = await request.post()
        msgid = uuid.uuid4().hex
        # The PDUs the gateway writes and reads for this message.
        seq, _ = encode_request(
            ours,
            "submit_sm",
            source_addr=str(form["sender"]),
            destination_addr=str(form["recipient"])[1:],
            short_message=str(form["message"]).encode(),
            registered_delivery=1,
        )
        submit_sm_message_id(resp)
        assert decode_receipt(parse_deliver_sm(dlr)) is not None
        encode_response("deliver_sm_resp", seq)
        asyncio.get_running_loop().create_task(callbacks(msgid, str(form["recipient"])))
        return web.json_response([{"msgid": msgid}], status=201)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/sms/messages/", send)
    app.router.add_get("/healthz", healthz)
    try:
        await serve(app, port, ready)
    finally:
        await http.close()


async def receiver(port: int, ready: str) -> None:
    count = 0

    async def hit(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.Response(text="ok")

    async def seen(request: web.Request) -> web.Response:
        return web.Response(text=str(count))

    app = web.Application()
    app.router.add_post("/cb", hit)
    app.router.add_get("/count", seen)
    await serve(app, port, ready)


async def serve(app: web.Application, port: int, ready: str) -> None:
    """Serve `app` on 127.0.0.1:port, say `ready` on stdout, and run until killed."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(ready, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def measure(n: int, concurrency: int) -> None:
    rx_port, floor_port = free_port(), free_port()
    rx = await start_process("-m", "bench.floor", "--role", "receiver", "--port", str(rx_port), ready="ready")
    fl = await start_process(
        "-m", "bench.floor", "--role", "floor", "--port", str(floor_port),
        "--callback", f"http://127.0.0.1:{rx_port}/cb", ready="ready",
    )  # fmt: skip
    try:
        cpu0 = cpu_seconds([fl.pid], tree=False)
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.http_load", "ours", "--url", f"http://127.0.0.1:{floor_port}",
            "--auth", "sid:token", "--callback", f"http://127.0.0.1:{rx_port}/cb",
            "--n", str(n), "--concurrency", str(concurrency),
            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await load.communicate()
        result = json.loads(out.decode().strip().splitlines()[-1])
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"http://127.0.0.1:{rx_port}/count") as r:
                    if int(await r.text()) >= 2 * n:
                        break
                await asyncio.sleep(0.05)
        done = time.time()
        cpu1 = cpu_seconds([fl.pid], tree=False)
    finally:
        for proc in (fl, rx):
            await stop_process(proc)
    print(f"messages            {n:,} at concurrency {concurrency}")
    print(f"API accepted/s      {result['accepted_per_s']:,.0f}")
    e2e = n / (done - result["first_request_at"])
    print(f"end to end msg/s    {e2e:,.0f}  (first POST -> last callback)")
    print(f"floor CPU/message   {(cpu1 - cpu0) * 1000 / n:.3f} ms  (one request, two callbacks, three PDUs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--role", choices=["floor", "receiver"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--callback", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "floor":
        asyncio.run(floor(args.port, args.callback, "ready"))
    elif args.role == "receiver":
        asyncio.run(receiver(args.port, "ready"))
    else:
        asyncio.run(measure(args.n, args.concurrency))


if __name__ == "__main__":
    main()
