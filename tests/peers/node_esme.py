"""An ESME that is not our code: the npm `smpp` package's client (tests/peers/node_smsc/esme.js),
driven over its stdin/stdout (JSON lines), for tests of the gateway's SMPP server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from tests.peers.node_smsc import NODE_SMSC_DIR, _require, ensure_node_modules


class NodeEsme:
    def __init__(self, port: int, system_id: str, password: str, mode: str = "transceiver") -> None:
        self.args = ["--port", str(port), "--system-id", system_id, "--password", password, "--mode", mode]
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(ensure_node_modules)
        self._proc = await asyncio.create_subprocess_exec(
            _require("node"),
            str(NODE_SMSC_DIR / "esme.js"),
            *self.args,
            cwd=str(NODE_SMSC_DIR),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        await self._proc.wait()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            async with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()

    def send(self, command: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command).encode() + b"\n")

    async def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first event (seen so far or to come) for which `match` holds."""

        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if match(e)), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        event = found()
        assert event is not None
        return event

    async def event(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        return await self.wait(
            lambda e: e["event"] == kind and all(e.get(k) == v for k, v in fields.items()), timeout
        )

    async def submit(self, tag: str, **fields: Any) -> dict[str, Any]:
        self.send({"op": "submit", "tag": tag, **fields})
        return await self.event("submit_sm_resp", tag=tag)

    def received(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]
