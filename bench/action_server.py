"""The customer's action_url for bench/agi.py, in a process of its own so that its answers are
not held up by the load generator's event loop (whose clock measures the gateway).

    python -m bench.action_server --port P --delay 0.02 --script 'say en "Hello"'

GET /actions: `--script` after `--delay` seconds. GET /burst: `say en "<text>"` and
`playback <this server>/greeting.wav` after `--burst-delay` seconds; with --unique-say the
text differs per call (one synthesis each), else it is the same every time (cached).
GET /greeting.wav: a 0.5 s WAV. GET /hits: how many of each were served, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
from pathlib import Path

from aiohttp import web

from gateway.voice.asterisk_side import write_wav


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--script", required=True)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--burst-delay", type=float, default=0.02)
    ap.add_argument("--unique-say", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        write_wav(str(Path(tmp) / "greeting.wav"), 0.5)
        wav = (Path(tmp) / "greeting.wav").read_bytes()
    base = f"http://127.0.0.1:{args.port}"
    hits = {"actions": 0, "burst": 0, "media": 0}
    counter = itertools.count(1)

    async def actions(request: web.Request) -> web.Response:
        hits["actions"] += 1
        if args.delay:
            await asyncio.sleep(args.delay)
        return web.Response(text=args.script.replace("{base}", base), content_type="text/plain")

    async def burst(request: web.Request) -> web.Response:
        hits["burst"] += 1
        await asyncio.sleep(args.burst_delay)
        text = f"Hello caller {next(counter)}" if args.unique_say else "Hello caller"
        script = f'say en "{text}"\nplayback {base}/greeting.wav\n'
        return web.Response(text=script, content_type="text/plain")

    async def media(request: web.Request) -> web.Response:
        hits["media"] += 1
        return web.Response(body=wav, content_type="audio/wav")

    async def count(request: web.Request) -> web.Response:
        return web.json_response(hits)

    app = web.Application()
    app.router.add_get("/actions", actions)
    app.router.add_get("/burst", burst)
    app.router.add_get("/greeting.wav", media)
    app.router.add_get("/hits", count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
    print("listening", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
