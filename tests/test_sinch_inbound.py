"""MO webhooks in Sinch's `mo_text` JSON for SINs set to it (the Xoxzo form stays the default),
and `client_reference` linking a reply to the batch it answers."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gateway.keys import NUMBERS
from gateway.services.number_import import parse_numbers_csv
from tests.conftest import Gateway, wait_for
from tests.test_inbound import CUSTOMER, form, hits, mo, verify
from tests.test_sinch_batches import Sinch
from tests.webhook_receiver import Receiver

SIN, OTHER_SIN = "+81312345678", "+81312345679"
OTHER_CUSTOMER = "+819033334444"


async def subscribe(
    http: aiohttp.ClientSession, gw: Gateway, creds: Any, number: str, **urls: str
) -> tuple[int, dict[str, Any]]:
    """Takes `number` as a SIN and sets `urls` on it (JSON)."""
    uid = next(n["uid"] for n in await gw.app[NUMBERS].list_inventory() if n["number"] == number)
    auth = gw.auth(creds)
    async with http.post(f"{gw.base_url}/sms/sins/subscriptions/", data={"sin_uid": uid}, headers=auth) as r:
        assert r.status == 201, await r.text()
    return await set_urls(http, gw, creds, uid, **urls)


async def set_urls(
    http: aiohttp.ClientSession, gw: Gateway, creds: Any, uid: str, **urls: str
) -> tuple[int, Any]:
    async with http.post(
        f"{gw.base_url}/sms/sins/subscriptions/{uid}/", json=urls, headers=gw.auth(creds)
    ) as r:
        return r.status, await r.json()


async def test_sinch_mo_webhooks_with_the_client_reference_of_the_batch_replied_to(
    gateway: Gateway, http: aiohttp.ClientSession, sim_smsc: Any, receiver: Receiver
) -> None:
    await gateway.app[NUMBERS].import_numbers(
        parse_numbers_csv(
            f"number,country_code,sms,voice,monthly_cost,minute_cost\n{SIN},JP,1,0,1,0\n{OTHER_SIN},JP,1,0,1,0\n"
        )
    )
    creds = await gateway.account()
    code, sub = await subscribe(
        http, gateway, creds, SIN, action_url=receiver.url("/sinch"), webhook_format="sinch"
    )
    assert code == 200 and sub["webhook_format"] == "sinch", sub
    code, sub = await subscribe(http, gateway, creds, OTHER_SIN, action_url=receiver.url("/xoxzo"))
    assert code == 200 and sub["webhook_format"] == "xoxzo"  # the default

    # A batch from the SIN to the customer: the customer's answer carries its client_reference.
    api = Sinch(http, gateway, creds)
    first = await api.send(
        **{"from": SIN[1:]}, to=[CUSTOMER], body="Coming Friday? Reply YES/NO", client_reference="rsvp-1"
    )
    latest = await api.send(**{"from": SIN[1:]}, to=[CUSTOMER], body="Reminder", client_reference="rsvp-2")
    await api.send(**{"from": "SHOP"}, to=[CUSTOMER], body="Not from the SIN", client_reference="shop")
    assert first["id"] != latest["id"]

    async def sent() -> bool:
        return len(await sim_smsc.submits()) == 3

    await wait_for(sent)
    await mo(sim_smsc, "YES", source=CUSTOMER, dest=SIN)
    await mo(sim_smsc, "Who is this?", source=OTHER_CUSTOMER, dest=SIN)  # no batch went to them
    await mo(sim_smsc, "Hi", source=CUSTOMER, dest=OTHER_SIN)  # the Xoxzo form, and no batch from it
    reports = await hits(receiver, "/sinch", 2)
    by_sender = {json.loads(h.body)["from"]: h for h in reports}
    hit = by_sender[CUSTOMER[1:]]
    assert hit.headers["Content-Type"].startswith("application/json")
    verify(creds.account.webhook_secret, hit)
    body = json.loads(hit.body)
    assert set(body) == {
        "type",
        "id",
        "from",
        "to",
        "body",
        "received_at",
        "sent_at",
        "operator_id",
        "client_reference",
    }
    assert (body["type"], body["from"], body["to"], body["body"]) == ("mo_text", CUSTOMER[1:], SIN[1:], "YES")
    assert body["client_reference"] == "rsvp-2"  # the latest batch from this SIN to this number
    assert json.loads(by_sender[OTHER_CUSTOMER[1:]].body)["client_reference"] is None

    [xoxzo] = await hits(receiver, "/xoxzo", 1)
    assert form(xoxzo)["message"] == "Hi" and form(xoxzo)["sender"] == CUSTOMER

    # The listings show the link too, and filter by it.
    bearer = {"Authorization": f"Bearer {creds.auth_token}"}
    url = f"{gateway.base_url}/xms/v1/{creds.account.sid}/inbounds"
    async with http.get(url, params={"client_reference": "rsvp-2"}, headers=bearer) as r:
        listed = await r.json()
    assert [m["id"] for m in listed["inbounds"]] == [body["id"]]
    async with http.get(f"{url}/{body['id']}", headers=bearer) as r:
        assert (await r.json())["client_reference"] == "rsvp-2"


async def test_the_webhook_format_is_checked(
    gateway: Gateway, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    await gateway.app[NUMBERS].import_numbers(
        parse_numbers_csv(f"number,country_code,sms,voice,monthly_cost,minute_cost\n{SIN},JP,1,1,1,0\n")
    )
    creds = await gateway.account()
    code, body = await subscribe(
        http, gateway, creds, SIN, action_url=receiver.url("/x"), webhook_format="json"
    )
    assert code == 400 and set(body) == {"webhook_format"}, body
    uid = next(n["uid"] for n in await gateway.app[NUMBERS].list_inventory() if n["number"] == SIN)
    code, body = await set_urls(http, gateway, creds, uid, webhook_format="sinch")  # alone: a change
    assert code == 200 and body["webhook_format"] == "sinch" and body["action_url"] is None
    code, body = await set_urls(http, gateway, creds, uid, action_url=receiver.url("/y"))
    assert code == 200 and body["webhook_format"] == "sinch"  # kept when not given
    auth = gateway.auth(creds)
    async with http.post(
        f"{gateway.base_url}/voice/dins/subscriptions/", data={"din_uid": uid}, headers=auth
    ) as r:
        assert r.status == 201
    async with http.post(
        f"{gateway.base_url}/voice/dins/subscriptions/{uid}/", data={"webhook_format": "sinch"}, headers=auth
    ) as r:
        assert r.status == 400 and "webhook_format" in await r.json()
