"""Sinch delivery reports: read through the API (per batch, per recipient, listed) and POSTed to
the batch's callback_url in Sinch's shapes, signed and retried like every webhook."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from gateway.db.models import OptOut
from gateway.keys import SESSIONS
from gateway.services.accounts import NewCredentials
from tests.conftest import Gateway, free_port, gateway_config, start_gateway, wait_for
from tests.test_sinch_batches import Sinch, iso
from tests.webhook_receiver import Receiver, genuine

A, B, C = "+818012345671", "+818012345672", "+818012345673"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
async def api(gateway: Gateway, http: aiohttp.ClientSession) -> Sinch:
    return Sinch(http, gateway, await gateway.account())


async def opt_out(gw: Gateway, creds: NewCredentials, number: str) -> None:
    async with gw.app[SESSIONS].begin() as s:
        s.add(OptOut(account_id=creds.account.id, number=number))


async def settled(gw: Gateway, batch_id: str) -> None:
    async def done() -> bool:
        rows = await gw.sql(
            "SELECT m.status FROM messages m JOIN batches b ON b.id = m.batch_id WHERE b.uid = :uid",
            uid=batch_id,
        )
        return bool(rows) and all(r[0] in ("DELIVERED", "FAIL") for r in rows)

    await wait_for(done)


async def test_batch_and_recipient_reports(gateway: Gateway, api: Sinch) -> None:
    await opt_out(gateway, api.creds, C)
    batch = await api.send(to=[A, B, C], body="Hi", client_reference="r-7", max_number_of_message_parts=2)
    await settled(gateway, batch["id"])
    path = f"/batches/{batch['id']}/delivery_report"

    code, summary = await api.call("GET", path)
    assert code == 200
    assert summary == {
        "type": "delivery_report_sms",
        "batch_id": batch["id"],
        "total_message_count": 3,
        "statuses": [
            {"code": 402, "status": "Aborted", "count": 1},
            {"code": 0, "status": "Delivered", "count": 2},
        ],
        "client_reference": "r-7",
    }
    code, full = await api.call("GET", path, type="full")
    assert [s["recipients"] for s in full["statuses"]] == [[C[1:]], [A[1:], B[1:]]]
    code, only = await api.call("GET", path, type="full", status="DELIVERED")  # any case, as the SDK sends
    assert [s["status"] for s in only["statuses"]] == ["Delivered"] and only["total_message_count"] == 3
    code, only = await api.call("GET", path, code="402,7")
    assert [s["code"] for s in only["statuses"]] == [402]
    # Sinch's SDK repeats the batch id in the query, and may name the client reference.
    assert await api.call("GET", path, batch_id=batch["id"], client_reference="r-7") == (200, summary)
    code, body = await api.call("GET", path, client_reference="other")
    assert (code, body["code"]) == (404, "not_found")
    for bad in ({"type": "partial"}, {"status": "Lost"}, {"code": "x"}):
        code, body = await api.call("GET", path, **bad)
        assert code == 400 and body["text"].startswith(f"{next(iter(bad))}: "), body

    code, one = await api.call("GET", f"{path}/{A[1:]}")
    assert code == 200 and ISO.fullmatch(one.pop("at"))
    assert one == {
        "type": "recipient_delivery_report_sms",
        "batch_id": batch["id"],
        "recipient": A[1:],
        "code": 0,
        "status": "Delivered",
        "client_reference": "r-7",
        "number_of_message_parts": 1,
    }
    assert (await api.call("GET", f"{path}/{C}"))[1]["status"] == "Aborted"
    for unknown in ("+819099999999", "not-a-number"):
        code, body = await api.call("GET", f"{path}/{unknown}")
        assert (code, body["code"]) == (404, "not_found"), unknown
    code, body = await api.call("GET", "/batches/" + "0" * 32 + "/delivery_report")
    assert (code, body["code"]) == (404, "not_found")


async def test_the_list_of_recipient_reports(gateway: Gateway, api: Sinch) -> None:
    first = await api.send(to=[A, B], body="one", client_reference="x")
    await opt_out(gateway, api.creds, C)
    second = await api.send(to=[C], body="two")
    await settled(gateway, first["id"])
    code, page = await api.call("GET", "/delivery_reports")
    assert code == 200 and (page["count"], page["page"], page["page_size"]) == (3, 0, 30)
    assert [(r["batch_id"], r["recipient"]) for r in page["delivery_reports"]] == [
        (second["id"], C[1:]),
        (first["id"], B[1:]),
        (first["id"], A[1:]),
    ]
    code, page = await api.call("GET", "/delivery_reports", page_size="2", page="1")
    assert [r["recipient"] for r in page["delivery_reports"]] == [A[1:]] and page["count"] == 3
    code, page = await api.call("GET", "/delivery_reports", status="Aborted")
    assert [r["recipient"] for r in page["delivery_reports"]] == [C[1:]] and page["count"] == 1
    code, page = await api.call("GET", "/delivery_reports", code="0", page_size="1")
    assert page["count"] == 2 and len(page["delivery_reports"]) == 1
    code, page = await api.call("GET", "/delivery_reports", client_reference="x")
    assert {r["client_reference"] for r in page["delivery_reports"]} == {"x"} and page["count"] == 2
    later = iso(datetime.now(UTC) + timedelta(minutes=1))
    assert (await api.call("GET", "/delivery_reports", start_date=later))[1]["count"] == 0


def posted(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(h.body) for h in receiver.on(path)]


async def test_per_recipient_callbacks(gateway: Gateway, api: Sinch, receiver: Receiver) -> None:
    await opt_out(gateway, api.creds, C)
    every = await api.send(
        to=[A, C], body="Hi", delivery_report="per_recipient", callback_url=receiver.url("/all")
    )
    final = await api.send(
        to=[B, C], body="Hi", delivery_report="per_recipient_final", callback_url=receiver.url("/final")
    )

    async def arrived() -> bool:
        return len(receiver.on("/all")) >= 3 and len(receiver.on("/final")) >= 2

    await wait_for(arrived)
    await asyncio.sleep(0.5)  # nothing more comes
    got = sorted((r["recipient"], r["status"], r["code"]) for r in posted(receiver, "/all"))
    assert got == [(A[1:], "Delivered", 0), (A[1:], "Dispatched", 401), (C[1:], "Aborted", 402)]
    got = sorted((r["recipient"], r["status"], r["code"]) for r in posted(receiver, "/final"))
    assert got == [(B[1:], "Delivered", 0), (C[1:], "Aborted", 402)]
    for hit in receiver.on("/all") + receiver.on("/final"):
        assert genuine(api.creds.account.webhook_secret, hit.headers, hit.body, {})
        report = json.loads(hit.body)
        assert report["type"] == "recipient_delivery_report_sms" and ISO.fullmatch(report["at"])
        assert report["batch_id"] in (every["id"], final["id"])


async def test_summary_and_full_callbacks_once_every_recipient_is_final(
    gateway: Gateway, api: Sinch, receiver: Receiver
) -> None:
    await opt_out(gateway, api.creds, C)
    summary = await api.send(
        to=[A, C],
        body="Hi",
        delivery_report="summary",
        callback_url=receiver.url("/summary"),
        client_reference="s",
    )
    full = await api.send(to=[B], body="Hi", delivery_report="full", callback_url=receiver.url("/full"))

    async def both() -> bool:
        return bool(receiver.on("/summary")) and bool(receiver.on("/full"))

    await wait_for(both)
    await asyncio.sleep(1.5)  # one report per batch, however many sweeps run
    [report] = posted(receiver, "/summary")
    assert report == {
        "type": "delivery_report_sms",
        "batch_id": summary["id"],
        "total_message_count": 2,
        "statuses": [
            {"code": 402, "status": "Aborted", "count": 1},
            {"code": 0, "status": "Delivered", "count": 1},
        ],
        "client_reference": "s",
    }
    [report] = posted(receiver, "/full")
    assert report["batch_id"] == full["id"]
    assert report["statuses"] == [{"code": 0, "status": "Delivered", "count": 1, "recipients": [B[1:]]}]
    assert genuine(
        api.creds.account.webhook_secret, receiver.on("/full")[0].headers, receiver.on("/full")[0].body, {}
    )


async def test_cancel_and_expiry_are_reported(
    clean_db: str, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    gw = await start_gateway(gateway_config(clean_db, "127.0.0.1", free_port()))  # no SMSC: nothing goes out
    try:
        api = Sinch(http, gw, await gw.account())
        later = iso(datetime.now(UTC) + timedelta(hours=1))
        cancelled = await api.send(
            to=[A],
            body="x",
            send_at=later,
            delivery_report="per_recipient",
            callback_url=receiver.url("/cancel"),
        )
        assert (await api.call("DELETE", f"/batches/{cancelled['id']}"))[0] == 200
        await api.send(
            to=[A, B],
            body="y",
            expire_at=iso(datetime.now(UTC) + timedelta(seconds=1)),
            delivery_report="summary",
            callback_url=receiver.url("/expired"),
        )

        async def both() -> bool:
            return bool(receiver.on("/cancel")) and bool(receiver.on("/expired"))

        await wait_for(both)
        [report] = posted(receiver, "/cancel")
        assert (report["recipient"], report["status"], report["code"]) == (A[1:], "Cancelled", 407)
        [report] = posted(receiver, "/expired")
        # Sinch's table of codes: Internal Expiry (406) is Aborted; Expired is the SMSC's word.
        assert report["statuses"] == [{"code": 406, "status": "Aborted", "count": 2}]
    finally:
        await gw.runner.cleanup()
