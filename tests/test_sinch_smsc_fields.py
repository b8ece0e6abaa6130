"""What of a Sinch batch reaches the SMSC, seen by an SMSC that is not our code (the npm `smpp`
server): `flash_message` as message class 0 in data_coding, `expire_at` as the submit_sm's
validity_period; and how the SMSC's receipts (stat and err) read as Sinch statuses and codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest

from gateway.services import sinch
from smpp.client_wire import absolute_time
from smpp.encoding import DC_DEFAULT, decode_short_message, flash, plan
from tests.conftest import Gateway, gateway_config, start_gateway, wait_for
from tests.test_sinch_batches import Sinch, iso, parse
from tests.webhook_receiver import Receiver

A, B = "+818012345671", "+818012345672"


def test_class_0_data_coding_and_smpp_absolute_time() -> None:
    # GSM 03.38 general data coding group: bit 4 says the class bits count; class 0 is 00.
    assert flash(plan("Hi")).data_coding == 0x10
    assert flash(plan("渋谷")).data_coding == 0x18
    assert flash(plan("x" * 200)).payloads == plan("x" * 200).payloads
    with pytest.raises(ValueError):
        flash(plan("Hi", 0x03))  # Latin-1 (an SMSC's own charset) has no message class
    # Decoded as the alphabet they name, as a handset does.
    assert decode_short_message(0x18, 0, "渋谷".encode("utf-16-be")).text == "渋谷"
    assert decode_short_message(0x10, 0, b"Hi").text == "Hi"
    # SMPP 3.4 7.1.1: YYMMDDhhmmss, tenths of a second, quarter hours from UTC, direction.
    at = datetime(2026, 12, 5, 10, 15, 30, 345_000, tzinfo=UTC)
    assert absolute_time(at) == "261205101530300+"
    assert absolute_time(at.astimezone(timezone(timedelta(hours=9)))) == "261205101530300+"


def test_a_receipts_error_code_is_read_as_a_number_or_not_at_all() -> None:
    read = [
        ("UNDELIV", "011", ("Failed", 11)),
        ("UNDELIV", "3:1234", ("Failed", 1234)),  # the network_error_code TLV, as the parser writes it
        ("UNDELIV", None, ("Failed", 402)),
        ("UNDELIV", "1e3", ("Failed", 402)),
        ("UNDELIV", "-5", ("Failed", 402)),
        ("UNDELIV", "9" * 10, ("Failed", 402)),
        ("REJECTD", "<b>x</b>", ("Rejected", 408)),
        ("EXPIRED", "000", ("Expired", 406)),
        ("SKIPPED", "45", ("Failed", 45)),
    ]
    for stat, err, want in read:
        assert sinch.receipt_outcome(sinch.Receipt(stat, err)) == want, (stat, err)


@pytest.fixture
async def gw(clean_db: str, node_smsc: Any) -> Any:
    gw = await start_gateway(gateway_config(clean_db, node_smsc.host, node_smsc.port))
    yield gw
    await gw.runner.cleanup()


@pytest.fixture
async def api(gw: Gateway, http: aiohttp.ClientSession) -> Sinch:
    return Sinch(http, gw, await gw.account())


async def test_flash_and_validity_reach_the_smsc(api: Sinch, node_smsc: Any) -> None:
    expire = datetime.now(UTC).replace(microsecond=456_000) + timedelta(hours=2)
    await api.send(
        to=[A, B],
        body="Alert ${name}",
        parameters={"name": {A: "Ann", B: "渋谷"}},  # A's text is GSM 7-bit, B's UCS-2
        flash_message=True,
        expire_at=iso(expire),
    )
    plain = await api.send(to=[A], body="x" * 200)  # two parts, no flash, the default expiry
    async with api.http.post(
        f"{api.gw.base_url}/sms/messages/",
        data={"recipient": A, "sender": "DEMO", "message": "not a batch"},
        headers=api.gw.auth(api.creds),
    ) as r:
        assert r.status == 201

    async def all_five() -> list[dict[str, Any]] | None:
        got = await node_smsc.raw_submits()
        return got if len(got) == 5 else None

    by_text: dict[str, list[dict[str, Any]]] = {}
    for s in await wait_for(all_five):
        body = bytes.fromhex(s["short_message_hex"])
        text = decode_short_message(s["data_coding"], s["esm_class"], body).text
        by_text.setdefault(text, []).append(s)
    [ann], [shibuya] = by_text["Alert Ann"], by_text["Alert 渋谷"]
    assert (ann["data_coding"], shibuya["data_coding"]) == (0x10, 0x18)
    # node-smpp reads the validity_period as an instant: expire_at, to the tenth of a second.
    assert (
        ann["validity_period"]
        == shibuya["validity_period"]
        == "{}.400Z".format(expire.strftime("%Y-%m-%dT%H:%M:%S"))
    )
    parts = by_text["x" * 153] + by_text["x" * 47]
    assert {p["data_coding"] for p in parts} == {DC_DEFAULT}
    default_expiry = parse(plain["expire_at"]).replace(microsecond=0)
    for p in parts:
        assert parse(p["validity_period"]).replace(microsecond=0) == default_expiry
    [single] = by_text["not a batch"]
    assert (single["data_coding"], single["validity_period"]) == (DC_DEFAULT, None)


RECEIPTS = [  # stat and err the SMSC reports -> Sinch status and code
    ("UNDELIV", "011", "Failed", 11),
    ("DELETED", "034", "Deleted", 34),
    ("UNDELIV", "000", "Failed", 402),  # no error code: never 0, which is Delivered's
    ("EXPIRED", "000", "Expired", 406),
    ("REJECTD", "000", "Rejected", 408),
    ("UNKNOWN", "000", "Unknown", 402),
]


async def test_the_receipts_error_code_is_the_sinch_code(
    gw: Gateway, api: Sinch, node_smsc: Any, receiver: Receiver
) -> None:
    batches = []
    for stat, err, _, _ in RECEIPTS:
        await node_smsc.configure(dlr_stat=stat, dlr_err=err)
        batch = await api.send(
            to=[A], body="Hi", delivery_report="per_recipient_final", callback_url=receiver.url("/dr")
        )
        batches.append(batch["id"])

        async def failed(batch_id: str = batch["id"]) -> bool:
            code, one = await api.call("GET", f"/batches/{batch_id}/delivery_report/{A}")
            return code == 200 and one["status"] not in ("Queued", "Dispatched")

        await wait_for(failed)
    for batch_id, (_, _, status, code) in zip(batches, RECEIPTS, strict=True):
        got = await api.call("GET", f"/batches/{batch_id}/delivery_report/{A}")
        assert (got[1]["status"], got[1]["code"]) == (status, code), got
        got = await api.call("GET", f"/batches/{batch_id}/delivery_report", type="full")
        assert got[1]["statuses"] == [{"code": code, "status": status, "count": 1, "recipients": [A[1:]]}]

    async def called_back() -> list[dict[str, Any]] | None:
        hits = [json.loads(h.body) for h in receiver.on("/dr")]
        return hits if len(hits) == len(RECEIPTS) else None

    posted = {r["batch_id"]: (r["status"], r["code"]) for r in await wait_for(called_back)}
    assert posted == {b: (status, code) for b, (_, _, status, code) in zip(batches, RECEIPTS, strict=True)}
    _, page = await api.call("GET", "/delivery_reports", code="11,34")
    assert sorted(r["code"] for r in page["delivery_reports"]) == [11, 34]
