"""SMS out through the real HTTP server, on SQLite and PostgreSQL, against our SMSC simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from smpp.encoding import decode_short_message
from tests.conftest import Gateway, basic, wait_for

JP = "+818012345678"


async def send(http: aiohttp.ClientSession, gw: Gateway, creds: Any, **fields: Any) -> aiohttp.ClientResponse:
    data = {"message": "Hello", "recipient": JP, "sender": "DEMO", **fields}
    return await http.post(f"{gw.base_url}/sms/messages/", data=data, headers=gw.auth(creds))


async def status(http: aiohttp.ClientSession, gw: Gateway, creds: Any, msgid: str) -> dict[str, Any]:
    async with http.get(f"{gw.base_url}/sms/messages/{msgid}/", headers=gw.auth(creds)) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def final_status(http: aiohttp.ClientSession, gw: Gateway, creds: Any, msgid: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        st = await status(http, gw, creds, msgid)
        return st if st["status"] in ("DELIVERED", "FAIL") else None

    result: dict[str, Any] = await wait_for(done)
    return result


def texts(submits: list[Any]) -> list[str]:
    return [decode_short_message(s.data_coding, s.esm_class, s.short_message).text for s in submits]


async def test_send_reaches_smsc_and_is_delivered(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    creds = await gateway.account()
    r = await send(http, gateway, creds, message="Hello from the gateway", tags="promo,jp")
    assert r.status == 201
    body = await r.json()
    assert len(body) == 1 and len(body[0]["msgid"]) == 32
    msgid = body[0]["msgid"]
    st = await final_status(http, gateway, creds, msgid)
    assert st["status"] == "DELIVERED"
    assert st["recipient"] == JP and st["sender"] == "DEMO"
    assert st["parts"] == 1 and st["cost"] == 8.0  # price for prefix 81
    assert st["tags"] == ["promo", "jp"]
    assert st["url"] == f"{gateway.base_url}/sms/messages/{msgid}/"
    assert datetime.strptime(st["sent_time"], "%Y-%m-%d %H:%M:%S")
    submits = await sim_smsc.submits()
    assert texts(submits) == ["Hello from the gateway"]
    assert submits[0].destination_addr == "818012345678" and submits[0].source_addr == "DEMO"
    assert submits[0].registered_delivery & 1
    # The xoxzo client reads status without the trailing slash.
    async with http.get(f"{gateway.base_url}/sms/messages/{msgid}", headers=gateway.auth(creds)) as r2:
        assert r2.status == 200 and (await r2.json())["msgid"] == msgid


async def test_json_body_and_japanese_multipart(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    creds = await gateway.account()
    text = "こんにちは、ゲートウェイのテストです。" * 5  # 95 UCS-2 chars -> 2 parts
    async with http.post(
        f"{gateway.base_url}/sms/messages/",
        json={"message": text, "recipient": "+819012345678", "sender": "81312345678"},
        headers=gateway.auth(creds),
    ) as r:
        assert r.status == 201, await r.text()
        msgid = (await r.json())[0]["msgid"]
    st = await final_status(http, gateway, creds, msgid)
    assert st["status"] == "DELIVERED"
    assert st["parts"] == 2 and st["cost"] == 19.0  # 2 x the 8190 prefix price
    submits = await sim_smsc.submits()
    assert [s.data_coding for s in submits] == [8, 8]
    assert "".join(texts(submits)) == text


async def test_gsm7_extension_characters(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    creds = await gateway.account()
    text = "Price {EUR} [x] ~|^ € \\" + "a" * 140  # extension chars count twice: > 160 septets
    r = await send(http, gateway, creds, message=text)
    msgid = (await r.json())[0]["msgid"]
    st = await final_status(http, gateway, creds, msgid)
    assert st["parts"] == 2
    submits = await sim_smsc.submits()
    assert all(s.data_coding == 0 for s in submits)
    assert "".join(texts(submits)) == text


async def test_receipt_failure_marks_fail(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    await sim_smsc.configure(dlr_stat="UNDELIV")
    creds = await gateway.account()
    msgid = (await (await send(http, gateway, creds)).json())[0]["msgid"]
    assert (await final_status(http, gateway, creds, msgid))["status"] == "FAIL"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"recipient": "+8108012345678"}, "recipient"),
        ({"recipient": "08012345678"}, "recipient"),
        ({"recipient": ""}, "recipient"),
        ({"sender": "TOOLONGSENDER"}, "sender"),
        ({"sender": "bad!sender"}, "sender"),
        ({"sender": "two  spaces"}, "sender"),
        ({"sender": "1234567890123456"}, "sender"),
        ({"message": ""}, "message"),
        ({"message": "x\x00y"}, "message"),
        ({"message": "あ" * 700}, "message"),
        ({"callbackurl": "ftp://example.com/x"}, "callbackurl"),
        ({"callbackurl": "not a url"}, "callbackurl"),
        ({"lt_callbackurl": "javascript:alert(1)"}, "lt_callbackurl"),
        ({"tags": "a,,b"}, "tags"),
        ({"tags": ",".join(f"t{i}" for i in range(11))}, "tags"),
        ({"track_link": "maybe"}, "track_link"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    gateway: Gateway, http: aiohttp.ClientSession, fields: dict[str, str], field: str
) -> None:
    creds = await gateway.account()
    r = await send(http, gateway, creds, **fields)
    assert r.status == 400
    body = await r.json()
    assert field in body and isinstance(body[field], list) and body[field][0]
    assert await gateway.sql("SELECT id FROM messages") == []


async def test_several_bad_fields_reported_together(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    creds = await gateway.account()
    async with http.post(f"{gateway.base_url}/sms/messages/", data={}, headers=gateway.auth(creds)) as r:
        assert r.status == 400
        assert set(await r.json()) == {"message", "recipient", "sender"}


async def test_malformed_bodies(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    creds = await gateway.account()
    url = f"{gateway.base_url}/sms/messages/"
    async with http.post(
        url, data=b"{not json", headers={"Content-Type": "application/json", **gateway.auth(creds)}
    ) as r:
        assert r.status == 400 and "body" in await r.json()
    async with http.post(url, json=["a"], headers=gateway.auth(creds)) as r:
        assert r.status == 400 and "body" in await r.json()
    async with http.post(
        url, json={"message": {"x": 1}, "recipient": JP, "sender": "A"}, headers=gateway.auth(creds)
    ) as r:
        assert r.status == 400 and "message" in await r.json()
    async with http.post(
        url, data=b"x" * 200_000, headers={"Content-Type": "application/json", **gateway.auth(creds)}
    ) as r:
        assert r.status == 413 and "detail" in await r.json()
    assert await gateway.sql("SELECT id FROM messages") == []


async def test_json_bodies_take_booleans_and_numbers_as_forms_spell_them(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """A JSON client writes `true` where a form writes "true", and a number unquoted."""
    creds = await gateway.account()
    url = f"{gateway.base_url}/sms/messages/"
    body = {"message": "See https://example.com/x", "recipient": JP, "sender": 12345, "track_link": True}
    async with http.post(url, json=body, headers=gateway.auth(creds)) as r:
        assert r.status == 201, await r.text()
        msgid = (await r.json())[0]["msgid"]
    st = await status(http, gateway, creds, msgid)
    assert st["sender"] == "12345" and len(st["link_tracking"]) == 1
    async with http.post(url, json={**body, "track_link": False}, headers=gateway.auth(creds)) as r:
        assert r.status == 201
        assert "link_tracking" not in await status(http, gateway, creds, (await r.json())[0]["msgid"])
    async with http.post(url, json={**body, "track_link": [True]}, headers=gateway.auth(creds)) as r:
        assert r.status == 400 and await r.json() == {"track_link": ["Expected a string."]}


async def test_freeform_flag_required(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    creds = await gateway.account(freeform=False)
    r = await send(http, gateway, creds)
    assert r.status == 403 and "detail" in await r.json()


async def test_auth_and_tenant_isolation(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    alice, bob = await gateway.account(name="alice"), await gateway.account(name="bob")
    url = f"{gateway.base_url}/sms/messages/"
    async with http.get(url) as r:
        assert r.status == 401 and "detail" in await r.json()
    async with http.get(url, headers=basic(alice.account.sid, "wrong")) as r:
        assert r.status == 401 and "detail" in await r.json()
    async with http.get(url, headers={"Authorization": "Basic !!!"}) as r:
        assert r.status == 401
    async with http.get(url, headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 401
    msgid = (await (await send(http, gateway, alice)).json())[0]["msgid"]
    async with http.get(f"{url}{msgid}/", headers=gateway.auth(bob)) as r:
        assert r.status == 404
    async with http.get(url, headers=gateway.auth(bob)) as r:
        assert await r.json() == []
    async with http.get(f"{url}{'0' * 32}/", headers=gateway.auth(alice)) as r:
        assert r.status == 404 and "detail" in await r.json()


async def _backdate(gw: Gateway, msgid: str, when: datetime) -> None:
    async with gw.app[__import__("gateway.keys", fromlist=["SESSIONS"]).SESSIONS].begin() as s:
        from sqlalchemy import update

        from gateway.db.models import Message

        await s.execute(update(Message).where(Message.msgid == msgid).values(created_at=when))


async def test_list_with_sent_date_operators(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    creds = await gateway.account()
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    days = {}
    for ago in (0, 1, 2, 100):
        msgid = (await (await send(http, gateway, creds)).json())[0]["msgid"]
        await _backdate(gateway, msgid, today - timedelta(days=ago))
        days[ago] = msgid
    d1 = (today - timedelta(days=1)).date().isoformat()

    async def listing(query: str) -> tuple[int, Any]:
        async with http.get(f"{gateway.base_url}/sms/messages/{query}", headers=gateway.auth(creds)) as r:
            return r.status, await r.json()

    status_code, all_recent = await listing("")
    assert status_code == 200
    assert [m["msgid"] for m in all_recent] == [
        days[0],
        days[1],
        days[2],
    ]  # newest first, 100 days ago hidden
    expected = {
        "=": [days[1]],
        "<": [days[2]],
        "<=": [days[1], days[2]],
        ">": [days[0]],
        ">=": [days[0], days[1]],
    }
    for op, want in expected.items():
        for q in (
            f"?sent_date{op}{d1}",
            "?sent_date" + op.replace("<", "%3C").replace(">", "%3E").replace("=", "%3D") + d1,
        ):
            code, body = await listing(q)
            assert code == 200, (q, body)
            assert [m["msgid"] for m in body] == want, q
    assert await listing("?sent_date=2026-13-01") == (400, {"sent_date": ["Invalid sent_date format"]})
    old = (today - timedelta(days=120)).date().isoformat()
    assert await listing(f"?sent_date>={old}") == (400, {"sent_date": ["Invalid sent_date"]})
    assert await listing("?foo=bar") == (400, {"sent_date": ["This field is required"]})


async def test_list_is_capped(db_url: str, clean_db: str, sim_smsc: Any, http: aiohttp.ClientSession) -> None:
    from tests.conftest import gateway_config, start_gateway

    gw = await start_gateway(gateway_config(clean_db, sim_smsc.host, sim_smsc.port, sms__list_limit=3))
    try:
        creds = await gw.account()
        for _ in range(5):
            assert (await send(http, gw, creds)).status == 201
        async with http.get(f"{gw.base_url}/sms/messages/", headers=gw.auth(creds)) as r:
            assert len(await r.json()) == 3
    finally:
        await gw.runner.cleanup()


async def test_unknown_route_and_method_are_json(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    creds = await gateway.account()
    async with http.get(f"{gateway.base_url}/nope/", headers=gateway.auth(creds)) as r:
        assert r.status == 404 and "detail" in await r.json()
    async with http.patch(f"{gateway.base_url}/sms/messages/", headers=gateway.auth(creds)) as r:
        assert r.status == 405 and "detail" in json.loads(await r.text())


async def test_nul_characters_are_refused_not_500(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """PostgreSQL cannot store NUL; found by schemathesis as a 500 on template creation."""
    import base64

    creds = await gateway.account()
    auth = gateway.auth(creds)
    async with http.post(
        f"{gateway.base_url}/sms/templates/", json={"name": "a\x00b", "content": "x"}, headers=auth
    ) as r:
        assert r.status == 400 and "name" in await r.json()
    async with http.post(
        f"{gateway.base_url}/sms/templates/", data={"name": "n", "content": "x\x00"}, headers=auth
    ) as r:
        assert r.status == 400 and "content" in await r.json()
    async with http.get(f"{gateway.base_url}/sms/messages/%00/", headers=auth) as r:
        assert r.status == 404  # no id contains NUL; 400 is not documented there
    async with http.get(f"{gateway.base_url}/sms/inbounds/?to=%00", headers=auth) as r:
        assert r.status == 400
    bad = base64.b64encode(f"{creds.account.sid}\x00:{creds.auth_token}".encode()).decode()
    async with http.get(f"{gateway.base_url}/sms/messages/", headers={"Authorization": f"Basic {bad}"}) as r:
        assert r.status == 401
    assert await gateway.sql("SELECT id FROM templates") == []
