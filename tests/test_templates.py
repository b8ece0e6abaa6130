"""Template CRUD, operator approval, and template sends with variable validation."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from gateway.keys import TEMPLATES
from smpp.encoding import decode_short_message
from tests.conftest import Gateway, wait_for

JP = "+818012345678"


async def create(http: aiohttp.ClientSession, gw: Gateway, creds: Any, **body: Any) -> tuple[int, Any]:
    async with http.post(f"{gw.base_url}/sms/templates/", json=body, headers=gw.auth(creds)) as r:
        return r.status, await r.json()


async def test_template_lifecycle_and_send(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any
) -> None:
    creds = await gateway.account(freeform=False)  # templates are the path for non-freeform accounts
    code, tpl = await create(
        http, gateway, creds, name="otp", content="Your code is {code}, {name}. {{literal}}"
    )
    assert code == 201 and tpl["status"] == "PENDING" and len(tpl["template_id"]) == 32
    tid = tpl["template_id"]
    url = f"{gateway.base_url}/sms/templates/{tid}/messages/"
    send = {"sender": "DEMO", "recipient": JP, "variables": {"code": "1234", "name": "Aki"}}

    async with http.post(url, json=send, headers=gateway.auth(creds)) as r:
        assert r.status == 400 and "template" in await r.json()  # PENDING cannot be sent
    await gateway.app[TEMPLATES].set_status(tid, "APPROVED")

    async with http.post(url, json={**send, "variables": {"code": "1"}}, headers=gateway.auth(creds)) as r:
        assert r.status == 422
        assert await r.json() == {"variables": {"name": ["This field is required."]}}
    async with http.post(
        url, json={**send, "variables": {**send["variables"], "x": "1"}}, headers=gateway.auth(creds)
    ) as r:
        assert r.status == 422 and "x" in (await r.json())["variables"]
    async with http.post(url, json={**send, "recipient": "+8108012345678"}, headers=gateway.auth(creds)) as r:
        assert r.status == 400 and "recipient" in await r.json()
    assert await gateway.sql("SELECT id FROM messages") == []

    async with http.post(url, json=send, headers=gateway.auth(creds)) as r:
        assert r.status == 201, await r.text()
        msgid = (await r.json())[0]["msgid"]
    submits = await wait_for(sim_smsc.submits)
    sm = submits[0]
    assert decode_short_message(sm.data_coding, sm.esm_class, sm.short_message).text == (
        "Your code is 1234, Aki. {literal}"
    )
    async with http.get(
        f"{gateway.base_url}/sms/templates/messages/{msgid}/", headers=gateway.auth(creds)
    ) as r:
        body = await r.json()
        assert r.status == 200 and body["msgid"] == msgid and body["template_id"] == tid
    async with http.get(url, headers=gateway.auth(creds)) as r:
        assert [m["msgid"] for m in await r.json()] == [msgid]

    # Editing the text sends it back for approval.
    async with http.put(
        f"{gateway.base_url}/sms/templates/{tid}/",
        json={"content": "New {code}"},
        headers=gateway.auth(creds),
    ) as r:
        assert r.status == 200 and (await r.json())["status"] == "PENDING"
    async with http.get(f"{gateway.base_url}/sms/templates/", headers=gateway.auth(creds)) as r:
        assert [t["template_id"] for t in await r.json()] == [tid]
    async with http.delete(f"{gateway.base_url}/sms/templates/{tid}/", headers=gateway.auth(creds)) as r:
        assert r.status == 200
    async with http.get(f"{gateway.base_url}/sms/templates/{tid}/", headers=gateway.auth(creds)) as r:
        assert r.status == 404
    # The sent message survives its template's deletion.
    async with http.get(f"{gateway.base_url}/sms/messages/{msgid}/", headers=gateway.auth(creds)) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "content": "x"}, "name"),
        ({"content": "x"}, "name"),
        ({"name": "n"}, "content"),
        ({"name": "n", "content": "Hi {"}, "content"),
        ({"name": "n", "content": "Hi {0}"}, "content"),
        ({"name": "n", "content": "Hi {a.b}"}, "content"),
        ({"name": "n", "content": "Hi {a!r}"}, "content"),
        ({"name": "n", "content": "x" * 2001}, "content"),
        ({"name": ["n"], "content": "x"}, "name"),
    ],
)
async def test_template_validation(
    gateway: Gateway, http: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    creds = await gateway.account()
    code, out = await create(http, gateway, creds, **body)
    assert code == 400 and field in out
    assert await gateway.sql("SELECT id FROM templates") == []


async def test_a_change_leaves_absent_and_null_fields_as_they_are(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    creds = await gateway.account()
    _, tpl = await create(http, gateway, creds, name="otp", content="Code {code}")
    url = f"{gateway.base_url}/sms/templates/{tpl['template_id']}/"
    for body, name, content in (
        ({"name": None, "content": "New {code}"}, "otp", "New {code}"),
        ({"name": " renamed "}, "renamed", "New {code}"),
        ({"content": None}, "renamed", "New {code}"),
    ):
        async with http.put(url, json=body, headers=gateway.auth(creds)) as r:
            assert r.status == 200, await r.text()
            out = await r.json()
        assert (out["name"], out["content"]) == (name, content), body
    for body, field in (
        ({"name": ""}, "name"),
        ({"content": "  "}, "content"),
        ({"content": "{"}, "content"),
    ):
        async with http.put(url, json=body, headers=gateway.auth(creds)) as r:
            assert r.status == 400 and list(await r.json()) == [field], body


async def test_templates_are_per_account(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    alice, bob = await gateway.account(name="a"), await gateway.account(name="b")
    _, tpl = await create(http, gateway, alice, name="t", content="hi {x}")
    tid = tpl["template_id"]
    await gateway.app[TEMPLATES].set_status(tid, "APPROVED")
    base = f"{gateway.base_url}/sms/templates/{tid}/"
    for method, url in (
        ("GET", base),
        ("PUT", base),
        ("DELETE", base),
        ("POST", base + "messages/"),
        ("GET", base + "messages/"),
    ):
        async with http.request(
            method,
            url,
            json={"sender": "A", "recipient": JP, "variables": {"x": "1"}},
            headers=gateway.auth(bob),
        ) as r:
            assert r.status == 404, (method, url)
    async with http.get(f"{gateway.base_url}/sms/templates/", headers=gateway.auth(bob)) as r:
        assert await r.json() == []


async def test_form_encoded_template_send(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    creds = await gateway.account(freeform=False)
    _, tpl = await create(http, gateway, creds, name="t", content="hi {x}")
    await gateway.app[TEMPLATES].set_status(tpl["template_id"], "APPROVED")
    async with http.post(
        f"{gateway.base_url}/sms/templates/{tpl['template_id']}/messages/",
        data={"sender": "A", "recipient": JP, "variables": '{"x": "there"}'},
        headers=gateway.auth(creds),
    ) as r:
        assert r.status == 201
    async with http.post(
        f"{gateway.base_url}/sms/templates/{tpl['template_id']}/messages/",
        data={"sender": "A", "recipient": JP, "variables": "{bad"},
        headers=gateway.auth(creds),
    ) as r:
        assert r.status == 400 and "variables" in await r.json()


async def test_a_repeated_long_variable_is_refused_before_it_is_built(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """600 copies of a 60 KB variable made a 36 MB text that took seconds to split into parts."""
    creds = await gateway.account(freeform=False)
    _, tpl = await create(http, gateway, creds, name="t", content="{x}" * 600)
    await gateway.app[TEMPLATES].set_status(tpl["template_id"], "APPROVED")
    url = f"{gateway.base_url}/sms/templates/{tpl['template_id']}/messages/"
    for value, shown in (("a" * 60_000, "36000000 characters"), ("a" * 100, "over 1600 characters")):
        started = time.monotonic()
        async with http.post(
            url, json={"sender": "A", "recipient": JP, "variables": {"x": value}}, headers=gateway.auth(creds)
        ) as r:
            assert r.status == 400
            (reason,) = (await r.json())["variables"]
        assert shown in reason and time.monotonic() - started < 1
    assert await gateway.sql("SELECT id FROM messages") == []
