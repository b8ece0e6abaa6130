"""Sinch XMS batches over the real server and our SMSC simulator: every field, the answers'
shapes, Sinch's error body, and each recipient going out through the normal queue."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.db.models import OptOut
from gateway.keys import SESSIONS
from gateway.services.accounts import NewCredentials
from tests.conftest import Gateway, basic, wait_for
from tests.test_connectors import config, connector, running

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
A, B, C = "+818012345671", "+818012345672", "+818012345673"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class Sinch:
    """Requests as the Sinch SDK makes them: JSON bodies, the token as a bearer."""

    def __init__(self, http: aiohttp.ClientSession, gw: Gateway, creds: NewCredentials) -> None:
        self.http, self.gw, self.creds = http, gw, creds
        self.base = f"{gw.base_url}/xms/v1/{creds.account.sid}"
        self.headers = {"Authorization": f"Bearer {creds.auth_token}"}

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        async with self.http.request(
            method, self.base + path, json=body, params=params, headers=self.headers
        ) as r:
            return r.status, await r.json()

    async def send(self, **fields: Any) -> dict[str, Any]:
        code, batch = await self.call("POST", "/batches", {"from": "12015555555", **fields})
        assert code == 201, batch
        return dict(batch)


@pytest.fixture
async def api(gateway: Gateway, http: aiohttp.ClientSession) -> Sinch:
    return Sinch(http, gateway, await gateway.account())


async def rows(gw: Gateway, batch_id: str) -> dict[str, tuple[Any, ...]]:
    """recipient -> (status, body, fail_code) of the batch's messages."""
    got = await gw.sql(
        "SELECT m.recipient, m.status, m.body, m.fail_code FROM messages m JOIN batches b"
        " ON b.id = m.batch_id WHERE b.uid = :uid",
        uid=batch_id,
    )
    return {r[0]: tuple(r[1:]) for r in got}


async def test_a_batch_with_parameters_goes_out_one_message_per_recipient(
    gateway: Gateway, api: Sinch, sim_smsc: Any
) -> None:
    batch = await api.send(
        to=[A, B[1:], C, A],  # + optional; a repeated recipient gets one message
        body="Hello ${name}, code ${code}",
        parameters={"name": {A: "Ann", B[1:]: "Bob", "default": "there"}, "code": {"default": "X1"}},
        client_reference="ref-1",
    )
    assert re.fullmatch(r"[0-9a-f]{32}", batch.pop("id"))
    created = batch.pop("created_at")
    assert ISO.fullmatch(created) and batch.pop("modified_at") == created
    assert parse(batch.pop("expire_at")) == parse(created) + timedelta(days=3)
    assert batch == {
        "type": "mt_text",
        "to": [A[1:], B[1:], C[1:]],
        "from": "12015555555",
        "body": "Hello ${name}, code ${code}",
        "parameters": {"name": {A: "Ann", B[1:]: "Bob", "default": "there"}, "code": {"default": "X1"}},
        "canceled": False,
        "delivery_report": "none",
        "client_reference": "ref-1",
        "flash_message": False,
        "feedback_enabled": False,
        "truncate_concat": False,
    }

    async def sent() -> dict[str, bytes] | None:
        submits = await sim_smsc.submits()
        return {s.destination_addr: s.short_message for s in submits} if len(submits) == 3 else None

    assert await wait_for(sent) == {
        A[1:]: b"Hello Ann, code X1",
        B[1:]: b"Hello Bob, code X1",
        C[1:]: b"Hello there, code X1",
    }

    async def delivered() -> bool:
        return {s for s, _, _ in (await rows(gateway, batch_id)).values()} == {"DELIVERED"}

    batch_id = (await api.call("GET", "/batches"))[1]["batches"][0]["id"]
    await wait_for(delivered)
    code, got = await api.call("GET", f"/batches/{batch_id}")
    assert code == 200 and got["to"] == [A[1:], B[1:], C[1:]] and got["client_reference"] == "ref-1"
    # Basic authentication works too, with the SID in the path.
    async with api.http.get(
        f"{api.base}/batches/{batch_id}", headers=basic(api.creds.account.sid, api.creds.auth_token)
    ) as r:
        assert r.status == 200


async def test_what_cannot_be_sent_fails_at_once_and_is_never_submitted(
    gateway: Gateway, api: Sinch, sim_smsc: Any
) -> None:
    async with gateway.app[SESSIONS].begin() as s:
        s.add(OptOut(account_id=api.creds.account.id, number=B))
    batch = await api.send(
        to=[A, B, C],
        body="Hi ${name}",
        parameters={"name": {A: "Ann", B: "Bob"}},  # C has no value and there is no default
    )

    async def settled() -> dict[str, tuple[Any, ...]] | None:
        got = await rows(gateway, batch["id"])
        return got if got[A][0] == "DELIVERED" else None

    got = await wait_for(settled)
    assert got[B] == ("FAIL", "Hi Bob", 402)  # opted out: Aborted, unroutable
    assert got[C][0] == "FAIL" and got[C][2] == 405  # unmatched parameter
    assert [s.destination_addr for s in await sim_smsc.submits()] == [A[1:]]


async def test_a_thousand_recipients_are_one_request_each_checked_and_routed_on_its_own(
    clean_db: str, http: aiohttp.ClientSession, sim_smsc: Any, node_smsc: Any, tmp_path: Path
) -> None:
    """Every recipient is a message of its own: the opt-out list and the routing rules (by
    sender and destination) apply to each, as to a single SMS."""
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nsender = "SHOP"\nprefix = "+8190"\nconnectors = ["node"]\n')
    cfg = config(clean_db, [connector("sim", sim_smsc.port), connector("node", node_smsc.port)], routes)
    async with running(cfg) as gw:
        api = Sinch(http, gw, await gw.account())
        docomo = [f"+819012{i:06d}" for i in range(500)]
        others = [f"+818012{i:06d}" for i in range(500)]
        opted = [docomo[7], others[0], others[499]]
        async with gw.app[SESSIONS].begin() as s:
            s.add_all(OptOut(account_id=api.creds.account.id, number=n) for n in opted)
        batch = await api.send(**{"from": "SHOP"}, to=docomo + others, body="Sale today")
        assert len(batch["to"]) == 1000
        assert (await gw.sql("SELECT count(*) FROM messages"))[0][0] == 1000
        elsewhere = await api.send(to=[docomo[0]], body="Not from SHOP")  # no rule: the first connector

        async def all_sent() -> bool:
            return len(await sim_smsc.submits()) + len(await node_smsc.submits()) == 998

        await wait_for(all_sent, timeout=60)
        on_node = [s.destination_addr for s in await node_smsc.submits()]
        assert sorted(on_node) == sorted(n[1:] for n in docomo if n not in opted)
        on_sim = Counter(s.destination_addr for s in await sim_smsc.submits())
        assert on_sim == Counter([docomo[0][1:]] + [n[1:] for n in others if n not in opted])
        code, report = await api.call("GET", f"/batches/{batch['id']}/delivery_report", type="full")
        assert code == 200 and report["total_message_count"] == 1000
        aborted = [s for s in report["statuses"] if s["status"] == "Aborted"]
        assert aborted == [
            {"code": 402, "status": "Aborted", "count": 3, "recipients": [n[1:] for n in opted]}
        ]
        assert elsewhere["from"] == "12015555555"
        code, body = await api.call(
            "POST", "/batches", {"from": "X", "to": [*docomo, *others, "+818099999999"], "body": "x"}
        )
        assert (
            code == 400
            and body["code"] == "syntax_constraint_violation"
            and "to: At most 1000" in body["text"]
        )


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"from": None}, "from"),
        ({"from": "not a sender!"}, "from"),
        ({"to": []}, "to"),
        ({"to": ["+8108012345678"]}, "to"),  # the national trunk 0: no E.164 number
        ({"to": ["01FC66621VHDBN119Z8PMV1QPU"]}, "to"),  # groups are not supported
        ({"to": "+818012345671"}, None),  # a text is a comma-separated list (form bodies)
        ({"to": 818012345671}, "to"),
        ({"body": ""}, "body"),
        ({"body": "a\x07b"}, "body"),
        ({"type": "mt_binary"}, "type"),
        ({"delivery_report": "sometimes"}, "delivery_report"),
        ({"parameters": {"name": "Ann"}}, "parameters"),
        ({"parameters": ["a"]}, "parameters"),
        ({"parameters": {"a$b": {"default": "x"}}}, "parameters"),
        ({"send_at": "tomorrow"}, "send_at"),
        ({"send_at": "2030-01-01T00:00:00Z", "expire_at": "2029-12-31T00:00:00Z"}, "expire_at"),
        ({"send_at": "2030-01-01T00:00:00Z", "expire_at": "2030-01-04T00:00:01Z"}, "expire_at"),
        ({"callback_url": "ftp://example.com/"}, "callback_url"),
        ({"client_reference": "x" * 129}, "client_reference"),
        ({"max_number_of_message_parts": 0}, "max_number_of_message_parts"),
        ({"flash_message": "perhaps"}, "flash_message"),
    ],
)
async def test_bad_fields_are_sinch_errors_naming_the_field(
    gateway: Gateway, api: Sinch, fields: dict[str, Any], named: str | None
) -> None:
    body = {"from": "12015555555", "to": [A], "body": "Hi", **fields}
    code, answer = await api.call("POST", "/batches", {k: v for k, v in body.items() if v is not None})
    if named is None:
        assert code == 201, answer
        return
    assert code == 400, answer
    assert set(answer) == {"code", "text"} and answer["code"] == "syntax_constraint_violation"
    assert answer["text"].startswith(f"{named}: "), answer
    assert (await gateway.sql("SELECT count(*) FROM batches"))[0][0] == 0


async def test_malformed_json_forbidden_and_unknown(
    gateway: Gateway, api: Sinch, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        api.base + "/batches", data=b'{"to": [', headers={**api.headers, "Content-Type": "application/json"}
    ) as r:
        assert r.status == 400 and (await r.json())["code"] == "syntax_invalid_json"
    plain = Sinch(http, gateway, await gateway.account(freeform=False, name="templates-only"))
    code, body = await plain.call("POST", "/batches", {"from": "X1", "to": [A], "body": "Hi"})
    assert (code, body["code"]) == (403, "forbidden")
    for method in ("GET", "DELETE"):
        code, body = await api.call(method, "/batches/" + "0" * 32)
        assert (code, body["code"]) == (404, "not_found"), method
    # Another account's batch is as unknown as one that never was.
    theirs = await plain.call("GET", "/batches")
    assert theirs == (200, {"count": 0, "page": 0, "page_size": 30, "batches": []})
    mine = await api.send(to=[A], body="Hi")
    other = Sinch(http, gateway, await gateway.account(name="other"))
    assert await other.call("GET", f"/batches/{mine['id']}") == await other.call(
        "GET", "/batches/" + "0" * 32
    )
    async with http.get(
        f"{api.base}/batches", headers={"Authorization": f"Bearer {other.creds.auth_token}"}
    ) as r:
        assert r.status == 401  # the plan in the path is not the token's


async def test_list_filters_and_pages(gateway: Gateway, api: Sinch) -> None:
    first = await api.send(to=[A], body="one", client_reference="x")
    second = await api.send(**{"from": "SHOP"}, to=[B], body="two")
    third = await api.send(to=[C], body="three", client_reference="x")
    code, page = await api.call("GET", "/batches", page_size="2")
    assert code == 200 and (page["count"], page["page"], page["page_size"]) == (3, 0, 2)
    assert [b["id"] for b in page["batches"]] == [third["id"], second["id"]]  # newest first
    code, page = await api.call("GET", "/batches", page_size="2", page="1")
    assert [b["id"] for b in page["batches"]] == [first["id"]]
    code, page = await api.call("GET", "/batches", client_reference="x")
    assert [b["id"] for b in page["batches"]] == [third["id"], first["id"]]
    code, page = await api.call("GET", "/batches", **{"from": "SHOP,+19999999999"})
    assert [b["id"] for b in page["batches"]] == [second["id"]]
    code, page = await api.call("GET", "/batches", **{"from": "+12015555555"})
    assert page["count"] == 2
    later = iso(datetime.now(UTC) + timedelta(minutes=1))
    assert (await api.call("GET", "/batches", start_date=later))[1]["count"] == 0
    old = iso(datetime.now(UTC) - timedelta(days=2))
    assert (await api.call("GET", "/batches", start_date=old, end_date=later))[1]["count"] == 3
    for bad in ({"page_size": "101"}, {"page": "-1"}, {"start_date": "x"}, {"colour": "red"}):
        code, body = await api.call("GET", "/batches", **bad)
        assert code == 400 and body["text"].startswith(f"{next(iter(bad))}: "), body


async def test_dry_run(api: Sinch, gateway: Gateway, sim_smsc: Any) -> None:
    body = {
        "from": "12015555555",
        "to": [A, B, C],
        "body": "Hello ${name}! " + "x" * 150,
        "parameters": {"name": {A: "John", B: "渋谷", "default": "there"}},
    }
    code, run = await api.call(
        "POST", "/batches/dry_run", body, per_recipient="true", number_of_recipients="2"
    )
    assert code == 200, run
    assert run["number_of_recipients"] == 3 and run["number_of_messages"] == 2 + 3 + 2
    assert run["per_recipient"] == [
        {"recipient": A[1:], "body": "Hello John! " + "x" * 150, "number_of_parts": 2, "encoding": "text"},
        {"recipient": B[1:], "body": "Hello 渋谷! " + "x" * 150, "number_of_parts": 3, "encoding": "unicode"},
    ]
    assert await api.call("POST", "/batches/dry_run", body) == (
        200,
        {"number_of_recipients": 3, "number_of_messages": 7},
    )
    assert (await gateway.sql("SELECT count(*) FROM batches"))[0][0] == 0 and await sim_smsc.submits() == []


async def test_parts_limit_and_truncation(gateway: Gateway, api: Sinch, sim_smsc: Any) -> None:
    long = "y" * 200  # two parts
    limited = await api.send(to=[A], body=long, max_number_of_message_parts=1)
    assert limited["max_number_of_message_parts"] == 1
    cut = await api.send(to=[B], body=long, truncate_concat=True)
    assert cut["truncate_concat"] is True

    async def sent() -> bool:
        return len(await sim_smsc.submits()) == 1

    await wait_for(sent)
    [submit] = await sim_smsc.submits()
    assert (submit.destination_addr, submit.short_message) == (B[1:], b"y" * 160)
    assert (await rows(gateway, limited["id"]))[A][::2] == ("FAIL", 411)


async def test_update_and_replace_before_sending_only(gateway: Gateway, api: Sinch, sim_smsc: Any) -> None:
    later = iso(datetime.now(UTC) + timedelta(hours=1))
    batch = await api.send(to=[A, B], body="Meeting at 10", send_at=later, delivery_report="summary")
    assert batch["send_at"] == later
    code, updated = await api.call(
        "POST",
        f"/batches/{batch['id']}",
        {"to_add": [C], "to_remove": [A[1:]], "body": "Meeting at 11", "client_reference": "moved"},
    )
    assert code == 200, updated
    assert updated["id"] == batch["id"] and updated["to"] == [B[1:], C[1:]]
    assert (updated["body"], updated["client_reference"], updated["delivery_report"]) == (
        "Meeting at 11",
        "moved",
        "summary",
    )
    assert updated["send_at"] == later and updated["modified_at"] >= updated["created_at"]
    assert {r: v[:2] for r, v in (await rows(gateway, batch["id"])).items()} == {
        B: ("QUEUED", "Meeting at 11"),
        C: ("QUEUED", "Meeting at 11"),
    }

    code, replaced = await api.call(
        "PUT", f"/batches/{batch['id']}", {"from": "SHOP", "to": [A], "body": "New"}
    )
    assert code == 200, replaced
    assert (replaced["id"], replaced["to"], replaced["from"], replaced["body"]) == (
        batch["id"],
        [A[1:]],
        "SHOP",
        "New",
    )
    assert "send_at" not in replaced and replaced["delivery_report"] == "none"  # replaced, not merged

    async def sent() -> bool:
        return len(await sim_smsc.submits()) == 1

    await wait_for(sent)  # no send_at any more: it went out
    assert (await sim_smsc.submits())[0].short_message == b"New"

    async def delivered() -> bool:
        return (await rows(gateway, batch["id"]))[A][0] == "DELIVERED"

    await wait_for(delivered)
    code, body = await api.call("POST", f"/batches/{batch['id']}", {"body": "Too late"})
    assert code == 400 and "started sending" in body["text"]
    code, body = await api.call(
        "PUT", f"/batches/{batch['id']}", {"from": "SHOP", "to": [A], "body": "Too late"}
    )
    assert code == 400 and "started sending" in body["text"]
    code, body = await api.call("POST", f"/batches/{batch['id']}", {"to_remove": [A]})
    assert code == 400


async def test_cancel_before_sending(gateway: Gateway, api: Sinch, sim_smsc: Any) -> None:
    batch = await api.send(to=[A, B], body="Later", send_at=iso(datetime.now(UTC) + timedelta(seconds=2)))
    code, cancelled = await api.call("DELETE", f"/batches/{batch['id']}")
    assert code == 200 and cancelled["canceled"] is True and cancelled["id"] == batch["id"]
    assert {v[0] for v in (await rows(gateway, batch["id"])).values()} == {"FAIL"}
    assert {v[2] for v in (await rows(gateway, batch["id"])).values()} == {407}
    code, _ = await api.call("POST", f"/batches/{batch['id']}", {"body": "revive"})
    assert code == 400
    await asyncio.sleep(3)  # past send_at: still nothing
    assert await sim_smsc.submits() == []
