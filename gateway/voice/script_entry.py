"""Entry of the per-call pyst2 AGI script (asterisk/agi/din_agi.py): one process per call,
the same call flow as FastAGI, configured by GATEWAY_CONFIG / GATEWAY_* like the gateway."""

from __future__ import annotations

from gateway.config import load_config
from gateway.db.engine import create_engine, session_factory
from gateway.egress.client import policy_session
from gateway.egress.policy import SsrfPolicy
from gateway.services.numbers import NumberService
from gateway.voice.assembly import call_service
from gateway.voice.interfaces import AgiChannel


async def main(channel: AgiChannel) -> None:
    config = load_config()
    engine = create_engine(config.database.url, pool_size=1)
    try:
        sessions = session_factory(engine)
        async with (
            policy_session(SsrfPolicy.from_config(config.outbound_http)) as http,
            call_service(
                config.voice, sessions, NumberService(sessions), http, base_url=config.public_base_url
            ) as calls,
        ):
            await calls.handle(channel)
    finally:
        await engine.dispose()
