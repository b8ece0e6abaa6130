"""What the webhook sender writes when a POST fails: a retry never reopens a delivery that
another node finished meanwhile (its lease had lapsed, say, on a stalled node)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest_asyncio
from aiohttp import web
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Account, WebhookDelivery
from gateway.egress.client import policy_session
from gateway.egress.policy import SsrfPolicy
from gateway.services import outbox
from gateway.workers.webhook_sender import WebhookSender
from tests.conftest import serve_app


@pytest_asyncio.fixture
async def sessions(clean_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(clean_db)
    yield session_factory(engine)
    await engine.dispose()


async def _state(sessions: async_sessionmaker[AsyncSession]) -> tuple[str, int]:
    async with sessions() as s:
        status, attempts = (await s.execute(select(WebhookDelivery.status, WebhookDelivery.attempts))).one()
        return status, attempts


async def test_a_retry_never_reopens_a_delivery_another_node_finished(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    posts: list[float] = []
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        posts.append(time.monotonic())
        arrived.set()
        await release.wait()
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve_app(app) as base:
        async with sessions.begin() as s:
            account = Account(sid="s", token_hash="h", name="n", webhook_secret="w")
            s.add(account)
            await s.flush()
            row = outbox.json_row(
                account_id=account.id, kind="sms.status", ref="m1", url=f"{base}/hook", payload={}
            )
            await s.execute(insert(WebhookDelivery), [row])
        http = policy_session(SsrfPolicy(allow_private=True, allow_loopback=True))
        sender = WebhookSender(sessions, http, timeout=5.0, first_retry=0.2, poll_interval=0.05)
        running = asyncio.create_task(sender.run())
        try:
            await asyncio.wait_for(arrived.wait(), 10)
            # Another node, after this one's lease lapsed, delivered it and wrote DONE.
            async with sessions.begin() as s:
                await s.execute(
                    update(WebhookDelivery).values(
                        status="DONE", done_at=datetime.now(UTC), claimed_until=None, claimed_by=None
                    )
                )
            release.set()  # this node's POST now fails: a retryable 500
            deadline = time.monotonic() + 10
            while (await _state(sessions))[1] < 1:  # its outcome is written
                assert time.monotonic() < deadline, "the 500 was never recorded"
                await asyncio.sleep(0.02)
            assert await _state(sessions) == ("DONE", 1)
            await asyncio.sleep(1.0)  # five times the retry delay
            assert len(posts) == 1, "a finished delivery was sent again"
            assert await _state(sessions) == ("DONE", 1)
        finally:
            sender.lifecycle.request_stop()
            await running
            await http.close()
