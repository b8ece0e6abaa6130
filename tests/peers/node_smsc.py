"""An SMSC that is not our code: the npm `smpp` package's server (tests/peers/node_smsc/smsc.js).

`NodeSmsc` starts `node smsc.js` as a subprocess and drives it through its HTTP control API;
it implements the `SmscPeer` protocol of tests/peers/base.py. The `node_smsc` pytest fixture
yields a started one. Node.js and npm are required: without them the fixture fails loudly
(it never skips, so CI cannot silently lose these tests).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import pytest_asyncio

from tests.peers.base import ReceivedSubmit

NODE_SMSC_DIR = Path(__file__).resolve().parent / "node_smsc"
SMSC_JS = NODE_SMSC_DIR / "smsc.js"
START_TIMEOUT_S = 15.0
NPM_CI_TIMEOUT_S = 300.0


class NodeSmscError(RuntimeError):
    """The node SMSC could not be installed, started or driven."""


def _pinned_smpp_version() -> str:
    package = json.loads((NODE_SMSC_DIR / "package.json").read_text())
    version: str = package["dependencies"]["smpp"]
    return version


def _installed_smpp_version() -> str | None:
    try:
        package = json.loads((NODE_SMSC_DIR / "node_modules" / "smpp" / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = package.get("version")
    return version if isinstance(version, str) else None


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise NodeSmscError(
            f"`{tool}` was not found on PATH. The node SMSC test peer (tests/peers/node_smsc/) needs "
            "Node.js >= 18 with npm; install them (e.g. `apt-get install nodejs npm`) -- these tests "
            "are not skipped on purpose."
        )
    return path


def ensure_node_modules() -> None:
    """Run `npm ci` in tests/peers/node_smsc unless the pinned `smpp` is already installed.

    Blocking; guarded by an exclusive file lock so parallel test processes install only once.
    """
    _require("node")
    pinned = _pinned_smpp_version()
    if _installed_smpp_version() == pinned:
        return
    npm = _require("npm")
    digest = hashlib.sha256(str(NODE_SMSC_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"node-smsc-npm-ci-{digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _installed_smpp_version() == pinned:  # another process installed it meanwhile
                return
            try:
                result = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=NODE_SMSC_DIR,
                    capture_output=True,
                    text=True,
                    timeout=NPM_CI_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise NodeSmscError(f"`npm ci` in {NODE_SMSC_DIR} timed out after {exc.timeout} s") from exc
            if result.returncode != 0 or _installed_smpp_version() != pinned:
                raise NodeSmscError(
                    f"`npm ci` in {NODE_SMSC_DIR} failed (exit {result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr}"
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class NodeSmsc:
    """SmscPeer backed by node-smpp's `smpp.createServer` (see tests/peers/node_smsc/smsc.js)."""

    def __init__(
        self,
        system_id: str = "gateway",
        password: str = "secret",
        host: str = "127.0.0.1",
        quiet: bool = False,
    ) -> None:
        self.host = host
        self.quiet = quiet  # no line per PDU on stderr (benchmarks)
        self.port = 0  # known after start()
        self.control_port = 0
        self.system_id = system_id
        self.password = password
        self._proc: asyncio.subprocess.Process | None = None
        self._http: aiohttp.ClientSession | None = None
        self._stderr_lines: collections.deque[str] = collections.deque(maxlen=500)
        self._stderr_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._proc is not None:
            raise NodeSmscError("NodeSmsc already started")
        await asyncio.to_thread(ensure_node_modules)
        node = _require("node")
        self._proc = await asyncio.create_subprocess_exec(
            node,
            str(SMSC_JS),
            "--host",
            self.host,
            "--port",
            "0",
            "--control-port",
            "0",
            "--system-id",
            self.system_id,
            "--password",
            self.password,
            "--exit-with-stdin",
            *(["--quiet"] if self.quiet else []),
            cwd=NODE_SMSC_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._proc.stderr is not None
        self._stderr_task = asyncio.create_task(self._drain_stderr(self._proc.stderr))
        try:
            ports = await asyncio.wait_for(self._read_ports(), START_TIMEOUT_S)
        except (TimeoutError, NodeSmscError, ValueError, KeyError) as exc:
            await self.stop()
            reason = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
            raise NodeSmscError(f"starting node SMSC {reason}; node stderr:\n{self.log_tail()}") from exc
        self.port = ports["smpp_port"]
        self.control_port = ports["control_port"]
        self._http = aiohttp.ClientSession(
            base_url=f"http://{self.host}:{self.control_port}",
            timeout=aiohttp.ClientTimeout(total=10),
        )

    async def _read_ports(self) -> dict[str, int]:
        assert self._proc is not None and self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            await self._proc.wait()
            raise NodeSmscError(f"node exited with {self._proc.returncode} before printing its ports")
        data = json.loads(line)
        return {"smpp_port": int(data["smpp_port"]), "control_port": int(data["control_port"])}

    async def _drain_stderr(self, stderr: asyncio.StreamReader) -> None:
        while line := await stderr.readline():
            self._stderr_lines.append(line.decode(errors="replace").rstrip("\n"))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._stderr_task, 2)
            self._stderr_task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def log_tail(self, lines: int = 200) -> str:
        """The last lines node wrote to stderr (one per SMPP event)."""
        return "\n".join(list(self._stderr_lines)[-lines:])

    # -- control API -----------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._http is None:
            raise NodeSmscError("NodeSmsc is not started")
        async with self._http.request(method, path, json=body) as resp:
            payload = await resp.json(content_type=None)
            if resp.status != 200:
                error = payload.get("error") if isinstance(payload, dict) else payload
                raise NodeSmscError(f"{method} {path} -> HTTP {resp.status}: {error}")
            return payload

    async def submits(self) -> list[ReceivedSubmit]:
        """Every accepted submit_sm so far, in arrival order."""
        return [
            ReceivedSubmit(
                source_addr=item["source_addr"],
                source_addr_ton=item["source_addr_ton"],
                destination_addr=item["destination_addr"],
                data_coding=item["data_coding"],
                esm_class=item["esm_class"],
                registered_delivery=item["registered_delivery"],
                short_message=bytes.fromhex(item["short_message_hex"]),
                message_id=item["message_id"],
            )
            for item in await self.raw_submits()
        ]

    async def raw_submits(self) -> list[dict[str, Any]]:
        """GET /submits as-is (adds npi, protocol_id, message_payload_hex, received_at...)."""
        result: list[dict[str, Any]] = await self._call("GET", "/submits")
        return result

    async def configure(
        self,
        *,
        throttle_next: int = 0,
        drop_after: int | None = None,
        dlr_mode: str = "both",
        id_format: str = "hex",
        dlr_id_format: str | None = None,
        dlr_stat: str = "DELIVRD",
        dlr_delay_ms: int = 0,
        reject_binds: bool = False,
        respond_delay_ms: int = 0,
        dlr_err: str = "000",  # the err field of DLR texts (this peer only)
    ) -> None:
        """Change behaviour from now on; every call resets omitted knobs to these defaults."""
        await self._call(
            "POST",
            "/configure",
            {
                "throttle_next": throttle_next,
                "drop_after": drop_after,
                "dlr_mode": dlr_mode,
                "id_format": id_format,
                "dlr_id_format": dlr_id_format,
                "dlr_stat": dlr_stat,
                "dlr_delay_ms": dlr_delay_ms,
                "reject_binds": reject_binds,
                "respond_delay_ms": respond_delay_ms,
                "dlr_err": dlr_err,
            },
        )

    async def bind_count(self) -> int:
        """Successful binds since start (a reconnect shows as +1)."""
        result = await self._call("GET", "/binds")
        return int(result["count"])

    async def inject_mo(
        self,
        source: str,
        destination: str,
        short_message: bytes,
        data_coding: int = 0,
        esm_class: int = 0,
    ) -> None:
        """Send a mobile-originated deliver_sm to the bound ESME (error if none is bound)."""
        await self._call(
            "POST",
            "/mo",
            {
                "source": source,
                "destination": destination,
                "short_message_hex": short_message.hex(),
                "data_coding": data_coding,
                "esm_class": esm_class,
            },
        )

    async def deliver_resps(self) -> list[dict[str, Any]]:
        """Every deliver_sm_resp the ESME sent: command_status, kind ("dlr"/"mo"), message_id, attempt."""
        result: list[dict[str, Any]] = await self._call("GET", "/deliver_resps")
        return result

    async def deliver_resp_statuses(self) -> list[int]:
        """command_status of every deliver_sm_resp the ESME sent, in arrival order."""
        return [int(item["command_status"]) for item in await self.deliver_resps()]

    async def mo_stream(
        self, source: str, destination: str, rate: float, count: int, tag: str = "mo"
    ) -> None:
        """Start sending `count` MO at `rate` per second, text "<tag> <i> <epoch ms sent>"; returns
        at once (progress in `stats()["mo_stream"]`)."""
        await self._call(
            "POST",
            "/mo_stream",
            {"source": source, "destination": destination, "rate": rate, "count": count, "tag": tag},
        )

    async def stats(self) -> dict[str, Any]:
        """Counters and epoch-millisecond times: submits, first/last_submit_at, dlrs_sent, mo_sent,
        deliver_resps, mo_stream."""
        result: dict[str, Any] = await self._call("GET", "/stats")
        return result

    async def disconnect_all(self) -> int:
        """Destroy every SMPP connection; returns how many there were."""
        result = await self._call("POST", "/disconnect")
        return int(result["closed"])

    async def reset(self) -> None:
        """Default knobs; forget submits, binds and deliver_sm_resps; cancel pending DLRs."""
        await self._call("POST", "/reset")


@pytest_asyncio.fixture
async def node_smsc() -> AsyncIterator[NodeSmsc]:
    """A started node-smpp SMSC (credentials gateway/secret), stopped after the test."""
    peer = NodeSmsc()
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()
        # Shown by pytest only when the test fails ("Captured stdout teardown").
        print(f"--- node SMSC log (smpp port {peer.port}) ---\n{peer.log_tail()}")


__all__ = ["NodeSmsc", "NodeSmscError", "ensure_node_modules", "node_smsc"]
