"""The real xoxzo-cloudpy client from PyPI, unchanged, pointed at our base URL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from xoxzo.cloudpy import XoxzoClient

from tests.conftest import Gateway, wait_for


async def test_xoxzo_cloudpy_send_status_list(gateway: Gateway) -> None:
    creds = await gateway.account()
    client = XoxzoClient(sid=creds.account.sid, auth_token=creds.auth_token, api_host=gateway.base_url)

    sent = await asyncio.to_thread(client.send_sms, "Hello from xoxzo-cloudpy", "+818012345678", "XOXZO")
    assert sent.errors is None, sent.message
    msgid = sent.messages[0]["msgid"]

    async def delivered() -> bool:
        st = await asyncio.to_thread(client.get_sms_delivery_status, msgid)
        assert st.errors is None, st.message
        return bool(st.message["status"] == "DELIVERED")

    await wait_for(delivered)
    st = await asyncio.to_thread(client.get_sms_delivery_status, msgid)
    assert st.message["msgid"] == msgid and st.message["recipient"] == "+818012345678"

    listing = await asyncio.to_thread(client.get_sent_sms_list)
    assert listing.errors is None and [m["msgid"] for m in listing.messages] == [msgid]
    today = datetime.now(UTC).date()
    for flt, expected in (
        (f">={today.isoformat()}", [msgid]),
        (f"={today.isoformat()}", [msgid]),
        (f"<{today.isoformat()}", []),
        (f"<={(today - timedelta(days=1)).isoformat()}", []),
    ):
        got = await asyncio.to_thread(client.get_sent_sms_list, flt)
        assert got.errors is None, (flt, got.message)
        assert [m["msgid"] for m in got.messages] == expected, flt

    bad = await asyncio.to_thread(client.get_sent_sms_list, "=2026-99-99")
    assert bad.errors == 400 and bad.message == {"sent_date": ["Invalid sent_date format"]}
    refused = await asyncio.to_thread(client.send_sms, "x", "+8108012345678", "XOXZO")
    assert refused.errors == 400 and "recipient" in refused.message
    wrong = XoxzoClient(sid=creds.account.sid, auth_token="nope", api_host=gateway.base_url)
    denied = await asyncio.to_thread(wrong.send_sms, "x", "+818012345678", "XOXZO")
    assert denied.errors == 401 and "detail" in denied.message
