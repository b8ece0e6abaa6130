"""The official Sinch Python SDK (PyPI `sinch`), unchanged, pointed at our base URL: a client built
with `service_plan_id` + `sms_api_token`, its SMS origin set to the gateway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Gateway, wait_for

sinch = pytest.importorskip("sinch", reason="the Sinch SDK is not installed (requirements-test.lock)")

A, B = "+818012345671", "+818012345672"


def client(gw: Gateway, sid: str, token: str) -> Any:
    sdk = sinch.SinchClient(service_plan_id=sid, sms_api_token=token, sms_region="us")
    sdk.configuration.sms_origin_with_service_plan_id = gw.base_url
    return sdk


async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_batches_with_the_sinch_sdk(gateway: Gateway, sim_smsc: Any) -> None:
    creds = await gateway.account()
    sms = client(gateway, creds.account.sid, creds.auth_token).sms

    sent = await call(
        sms.batches.send_sms,
        to=[A, B],
        from_="12015555555",
        body="Hello ${name}",
        parameters={"name": {A: "John", "default": "there"}},
        delivery_report="full",
        client_reference="sdk-ref",
    )
    assert sent.type == "mt_text" and sent.to == [A[1:], B[1:]] and sent.from_ == "12015555555"
    assert sent.canceled is False and sent.delivery_report == "full" and sent.client_reference == "sdk-ref"
    assert sent.expire_at - sent.created_at == timedelta(days=3)

    async def sent_both() -> bool:
        return len(await sim_smsc.submits()) == 2

    await wait_for(sent_both)
    assert {s.short_message for s in await sim_smsc.submits()} == {b"Hello John", b"Hello there"}

    async def delivered() -> bool:
        report = await call(sms.delivery_reports.get, batch_id=sent.id)
        return [(s.status, s.count) for s in report.statuses] == [("Delivered", 2)]

    await wait_for(delivered)
    full = await call(
        sms.delivery_reports.get, batch_id=sent.id, report_type="full", status=["DELIVERED"], code=[0]
    )
    assert full.type == "delivery_report_sms" and full.total_message_count == 2
    assert full.client_reference == "sdk-ref" and sorted(full.statuses[0].recipients) == [A[1:], B[1:]]
    one = await call(sms.delivery_reports.get_for_number, batch_id=sent.id, recipient=A[1:])
    assert (one.recipient, one.status, one.code, one.type) == (
        A[1:],
        "Delivered",
        0,
        "recipient_delivery_report_sms",
    )
    reports = await call(sms.delivery_reports.list, page_size=1)
    assert await call(lambda: sorted(r.recipient for r in reports.iterator())) == [A[1:], B[1:]]

    got = await call(sms.batches.get, batch_id=sent.id)
    assert got.id == sent.id and got.parameters == {"name": {A: "John", "default": "there"}}

    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    scheduled = await call(
        sms.batches.send_sms, to=[A], from_="SHOP", body="Later", send_at=later, flash_message=True
    )
    assert scheduled.send_at == later and scheduled.expire_at == later + timedelta(days=3)
    assert scheduled.flash_message is True
    updated = await call(sms.batches.update_sms, batch_id=scheduled.id, to_add=[B], body="Later still")
    assert updated.to == [A[1:], B[1:]] and updated.body == "Later still"
    replaced = await call(
        sms.batches.replace_sms, batch_id=scheduled.id, to=[B], from_="SHOP", body="New", send_at=later
    )
    assert replaced.id == scheduled.id and replaced.to == [B[1:]] and replaced.body == "New"
    cancelled = await call(sms.batches.cancel, batch_id=scheduled.id)
    assert cancelled.canceled is True

    run = await call(
        sms.batches.dry_run_sms,
        to=[A, B],
        from_="X",
        body="Hi ${n}",
        parameters={"n": {"default": "you"}},
        per_recipient=True,
    )
    assert run.number_of_recipients == 2 and run.number_of_messages == 2
    assert [(r.recipient, r.body, r.encoding) for r in run.per_recipient] == [
        (A[1:], "Hi you", "text"),
        (B[1:], "Hi you", "text"),
    ]

    page = await call(sms.batches.list, page_size=1)
    assert len(page.content()) == 1 and page.has_next_page
    # The SDK's paging (count, page, page_size) walks both pages; it blocks, so off the loop.
    assert await call(lambda: {b.id for b in page.iterator()}) == {sent.id, scheduled.id}

    with pytest.raises(sinch.core.exceptions.SinchException) as exc:
        await call(sms.batches.get, batch_id="0" * 32)
    assert exc.value.response_status_code == 404
    with pytest.raises(sinch.core.exceptions.SinchException) as exc:
        await call(sms.batches.send_sms, to=["+8108012345678"], from_="X", body="Hi")
    assert exc.value.response_status_code == 400
    assert exc.value.http_response.body["code"] == "syntax_constraint_violation"
