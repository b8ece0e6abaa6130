"""The live suite: a real Asterisk, SIPp as the carrier on both sides, and `gateway run`.

Opt-in: every test here is skipped unless GWLIVE_ASTERISK names an Asterisk binary (and
`sipp` is on PATH); nothing starts then. One session starts, in a temporary directory:

- Asterisk on the shipped asterisk/*.conf (tests/live/asterisk.py), its SIP transport on a
  free loopback port, its trunk pointed at the SIPp UAS on another;
- an aiohttp server in a thread serving each DIN's script (tests set them) and media;
- the gateway as a process, FastAGI and AMI wired to that Asterisk, voice files in a
  directory both see (one machine, so one path), outbound HTTP to loopback allowed;
- an account holding the DINs +81312340001..+81312340020 (CLI for the account and the
  inventory, REST for the subscriptions, as a customer does).

Tests then place calls with SIPp (tests/live/sipp.py) and read GET /voice/calls/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import ROOT, free_port
from tests.live.asterisk import DIE_WITH_PARENT, Asterisk, Ports
from tests.live.media import tone, write_rtp_pcap, write_wav
from tests.live.sipp import Sipp

HERE = Path(__file__).resolve().parent
DINS = [f"+8131234{n:04d}" for n in range(1, 21)]
CALLER = "+819012345678"  # what tests/live/sipp/uac.xml sends as From


def missing() -> str | None:
    """Why the live suite cannot run here, or None."""
    binary = os.environ.get("GWLIVE_ASTERISK")
    if not binary:
        return (
            "live suite: set GWLIVE_ASTERISK to an Asterisk 22 binary (docs/operations.md, Live checks)"
        )
    if not os.access(binary, os.X_OK):
        return f"live suite: GWLIVE_ASTERISK={binary} is not an executable"
    if not shutil.which("sipp"):
        return "live suite: sipp is not on PATH"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = missing()
    if reason is None:
        return
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


# -- the customer's web server ----------------------------------------------------------------


class CustomerServer:
    """Scripts per DIN (`scripts[din] = "say en ..."`) and media files, on a loopback port,
    served from a thread of its own so the tests and fixtures stay synchronous."""

    def __init__(self, media_dir: Path) -> None:
        self.media_dir = media_dir
        self.scripts: dict[str, str] = {}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-customer", daemon=True)

    def action_url(self, din: str) -> str:
        return f"{self.base_url}/script/{din.lstrip('+')}"

    def media_url(self, name: str) -> str:
        return f"{self.base_url}/media/{name}"

    async def _script(self, request: web.Request) -> web.Response:
        text = self.scripts.get("+" + request.match_info["din"])
        if text is None:
            return web.Response(status=404)
        return web.Response(text=text)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/script/{din}", self._script)
        app.router.add_static("/media/", self.media_dir)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("customer server did not start")

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


# -- the gateway --------------------------------------------------------------------------------


class Api:
    """The gateway's REST API as one account sees it (blocking calls, JSON answers)."""

    def __init__(self, base_url: str, sid: str, token: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, Any]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def calls(self) -> list[dict[str, Any]]:
        return list(self.get("/voice/calls/"))

    def voicemails(self) -> list[dict[str, Any]]:
        return list(self.get("/voice/voicemails/"))


class Gateway:
    def __init__(self, workdir: Path, env: dict[str, str], http_port: int) -> None:
        self.workdir = workdir
        self.env = env
        self.base_url = f"http://127.0.0.1:{http_port}"
        self.log = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            env=self.env,
            cwd=self.workdir,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def start(self, timeout: float = 90) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*DIE_WITH_PARENT, sys.executable, "-m", "gateway", "run"],
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not healthy within {timeout} s:\n{self.tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# -- the session ----------------------------------------------------------------------------


class Live:
    """Everything a live test needs: the running parts and their ports."""

    def __init__(self, root: Path, asterisk: Asterisk, gateway: Gateway, customer: CustomerServer, api: Api):
        self.root = root
        self.asterisk = asterisk
        self.gateway = gateway
        self.customer = customer
        self.api = api
        self.ports = asterisk.ports
        self.sipp = Sipp(root / "sipp", asterisk.ports.sip, asterisk.ports.carrier)
        self._next_din = 0

    def din(self, script: str) -> str:
        """A DIN of the account, not used by any test before, whose action_url serves `script`."""
        din = DINS[self._next_din]
        self._next_din += 1
        self.customer.scripts[din] = script
        return din

    def wait_call(self, pred: Any, timeout: float = 60) -> dict[str, Any]:
        """The first call record matching `pred` once it is final (not QUEUED/IN_PROGRESS)."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = [c for c in self.api.calls() if pred(c)]
            if seen and seen[0]["status"] not in ("QUEUED", "IN_PROGRESS"):
                return seen[0]
            time.sleep(0.3)
        raise AssertionError(f"no final call record within {timeout} s (matching: {seen})\n{self.logs()}")

    def inbound_call(self, din: str, timeout: float = 60) -> dict[str, Any]:
        return self.wait_call(lambda c: c["direction"] == "inbound" and c["recipient"] == din, timeout)

    def logs(self) -> str:
        return f"--- asterisk ---\n{self.asterisk.tail()}\n--- gateway ---\n{self.gateway.tail()}"


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    binary = os.environ["GWLIVE_ASTERISK"]
    modules = os.environ.get("GWLIVE_ASTERISK_MODULES") or str(
        Path(binary).resolve().parents[1] / "lib" / "asterisk" / "modules"
    )
    root = Path(tmp_path_factory.mktemp("live"))
    # `asterisk -rx` (how the suite waits for and stops Asterisk) reaches it over a Unix socket
    # under root, and such a path has at most 107 bytes.
    if len(str(root / "asterisk" / "run" / "asterisk.ctl")) > 107:
        raise RuntimeError(f"{root}: too long for Asterisk's control socket path, use a shorter --basetemp")
    ports = Ports(sip=free_port(), ami=free_port(), fastagi=free_port(), carrier=free_port())
    ami_secret, fastagi_key = secrets.token_hex(16), secrets.token_hex(16)

    media = root / "customer"
    write_wav(media / "tone.wav", tone(2.0, 440.0))
    write_wav(media / "long.wav", tone(20.0, 440.0))
    sipp_dir = root / "sipp"
    # The caller's voice in every call: 4 s of silence (while a greeting and the beep play),
    # 2 s of a tone, then # (which ends a voicemail recording).
    write_rtp_pcap(sipp_dir / "caller.pcap", silence=4.0, seconds=2.0, digit="#")

    asterisk = Asterisk(binary, modules, root / "asterisk", ports, ami_secret, fastagi_key)
    customer = CustomerServer(media)
    http_port = free_port()
    voice_dir = root / "voice"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'gateway.sqlite3'}",
        "GATEWAY_DATA_DIR": str(root / "gateway-data"),
        "GATEWAY_HTTP_HOST": "127.0.0.1",
        "GATEWAY_HTTP_PORT": str(http_port),
        # The built-in SMSC simulator on free ports: this suite is about voice.
        "GATEWAY_SIMULATOR_ENABLED": "true",
        "GATEWAY_SMPP_PORT": str(free_port()),
        "GATEWAY_SIMULATOR_CONTROL_PORT": str(free_port()),
        "GATEWAY_VOICE_FASTAGI_HOST": "127.0.0.1",
        "GATEWAY_VOICE_FASTAGI_PORT": str(ports.fastagi),
        "GATEWAY_VOICE_FASTAGI_SECRET": fastagi_key,
        "GATEWAY_VOICE_DATA_DIR": str(voice_dir),
        "GATEWAY_VOICE_TRUNK": "trunk",
        "GATEWAY_VOICE_DIAL_TIMEOUT": "20",
        "GATEWAY_VOICE_VOICEMAIL_MAX_SECONDS": "20",
        "GATEWAY_VOICE_AMI_ENABLED": "true",
        "GATEWAY_VOICE_AMI_HOST": "127.0.0.1",
        "GATEWAY_VOICE_AMI_PORT": str(ports.ami),
        "GATEWAY_VOICE_AMI_USERNAME": "gateway",
        "GATEWAY_VOICE_AMI_SECRET": ami_secret,
        "GATEWAY_VOICE_OUTBOUND_PRICES": "81=3.0",
        "GATEWAY_VOICE_OUTBOUND_RING_TIMEOUT": "8",
        "GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK": "true",
        "GATEWAY_LOG_LEVEL": "INFO",
    }
    gateway = Gateway(root, env, http_port)
    try:
        asterisk.start()
        customer.start()
        gateway.start()
        account = json.loads(gateway.cli("accounts", "create", "--name", "live", "--freeform"))
        csv = "number,country_code,prefix,sms,voice,monthly_cost,minute_cost\n" + "".join(
            f"{d},JP,813,false,true,0,2.0\n" for d in DINS
        )
        gateway.cli("numbers", "import", "-", stdin=csv)
        api = Api(gateway.base_url, account["sid"], account["auth_token"])
        live = Live(root, asterisk, gateway, customer, api)
        for number in api.get("/voice/dins/?country=JP"):
            status, sub = api.request("POST", "/voice/dins/subscriptions/", {"din_uid": number["din_uid"]})
            assert status == 201, sub
            status, body = api.request(
                "POST",
                f"/voice/dins/subscriptions/{number['din_uid']}/",
                {"action_url": customer.action_url(number["din"])},
            )
            assert status == 200, body
        print(f"\nlive suite: {asterisk.version()} in {root}", file=sys.stderr)
        yield live
    finally:
        gateway.stop()
        customer.stop()
        asterisk.stop()
