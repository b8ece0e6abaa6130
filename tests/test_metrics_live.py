"""/metrics counts the work the gateway really did (hooks wired in the app factory)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from tests.conftest import Gateway, wait_for
from tests.webhook_receiver import Receiver


def value(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_metrics_reflect_traffic(
    gateway: Gateway, http: aiohttp.ClientSession, receiver: Receiver, sim_smsc: Any
) -> None:
    creds = await gateway.account()
    for i in range(3):
        async with http.post(
            f"{gateway.base_url}/sms/messages/",
            data={
                "message": f"m{i}",
                "recipient": "+818012345678",
                "sender": "DEMO",
                "callbackurl": receiver.url("/cb"),
            },
            headers=gateway.auth(creds),
        ) as r:
            assert r.status == 201

    async def scraped() -> str | None:
        async with http.get(f"{gateway.base_url}/metrics") as r:
            assert r.status == 200 and r.content_type.startswith("text/plain")
            text = await r.text()
        done = value(text, "gateway_webhook_posts_total", '{code="2xx"}') >= 6
        return (
            text if done and value(text, "gateway_sms_receipts_total", '{state="DELIVERED"}') >= 3 else None
        )

    text = await wait_for(scraped)
    assert value(text, "gateway_sms_submits_total", '{connector="default",result="ok"}') == 3
    assert value(text, "gateway_smpp_bound", '{connector="default"}') == 1
    assert value(text, "gateway_sms_queue_depth") == 0 and value(text, "gateway_db_up") == 1
    assert 'route="/sms/messages/"' in text
    # DLR latency: one observation per message settled by its receipt.
    assert value(text, "gateway_sms_settled_total", '{status="DELIVERED"}') == 3
    assert value(text, "gateway_sms_delivery_seconds_count") == 3
    assert value(text, "gateway_sms_delivery_seconds_bucket", '{le="+Inf"}') == 3
    assert 0 <= value(text, "gateway_sms_delivery_seconds_sum") < 3 * 60
