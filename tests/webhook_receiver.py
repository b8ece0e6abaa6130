"""A real HTTP server standing in for customers' callback endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest_asyncio
from aiohttp import web

from tests.conftest import serve_app

REPLAY_WINDOW = 300  # seconds: what receivers are told to accept (docs/security.md)


def genuine(secret: str, headers: Mapping[str, str], body: bytes, seen: dict[str, float]) -> bool:
    """The receiver recipe, as documented: signature over `timestamp.delivery_id.body`, a fresh
    timestamp, and each delivery id acted on once within the window (`seen`: id -> when)."""
    ts = headers.get("X-Gateway-Timestamp", "")
    delivery_id = headers.get("X-Gateway-Delivery-Id", "")
    signed = ts.encode() + b"." + delivery_id.encode() + b"." + body
    expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(headers.get("X-Gateway-Signature-256", ""), expected):
        return False
    now = time.time()
    if not ts.isdigit() or abs(now - int(ts)) > REPLAY_WINDOW:
        return False
    for old in [d for d, t in seen.items() if now - t > REPLAY_WINDOW]:
        del seen[old]
    if delivery_id in seen:
        return False  # a retry of one already handled (or a replay): answer 2xx, do nothing
    seen[delivery_id] = now
    return True


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    base_url: str = ""
    hits: list[Hit] = field(default_factory=list)
    # Status codes to answer, consumed in order per path; afterwards 200.
    script: dict[str, list[int]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # text/plain bodies to answer with per path (SIN webhooks reply this way).
    replies: dict[str, str] = field(default_factory=dict)
    # Seconds to wait before answering, consumed in order per path; afterwards none.
    delays: dict[str, list[float]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(Hit(request.path, dict(request.headers), await request.read()))
        self.arrived.set()
        if delays := self.delays.get(request.path):
            await asyncio.sleep(delays.pop(0))
        codes = self.script.get(request.path)
        status = codes.pop(0) if codes else 200
        if status == 200 and request.path in self.replies:
            return web.Response(status=200, text=self.replies[request.path], content_type="text/plain")
        return web.Response(status=status)  # no body: a text/plain body would be an SMS reply


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    async with serve_app(app) as rec.base_url:
        yield rec
