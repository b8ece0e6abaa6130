"""DIN inventory and subscriptions through the real xoxzo-cloudpy client's DIN methods."""

from __future__ import annotations

import asyncio
from typing import Any

from xoxzo.cloudpy import XoxzoClient

from gateway.keys import NUMBERS
from gateway.services.number_import import parse_numbers_csv
from tests.conftest import Gateway

INVENTORY = """number,country_code,prefix,sms,voice,monthly_cost,minute_cost
+81312345678,JP,813,false,true,1000,3.5
+81312345679,JP,813,true,true,1000,3.5
+81612345678,JP,816,false,true,800,3
+14155550123,US,1415,false,true,200,1.25
+81399990000,JP,813,true,false,500,0
"""


def client(gw: Gateway, creds: Any) -> XoxzoClient:
    return XoxzoClient(sid=creds.account.sid, auth_token=creds.auth_token, api_host=gw.base_url)


async def call(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def test_din_calls_of_the_xoxzo_client(gateway: Gateway) -> None:
    await gateway.app[NUMBERS].import_numbers(parse_numbers_csv(INVENTORY))
    alice = client(gateway, await gateway.account(name="alice"))
    bob = client(gateway, await gateway.account(name="bob"))

    listing = await call(alice.get_din_list)
    assert listing.errors is None
    dins = {d["din"]: d for d in listing.messages}
    assert set(dins) == {"81312345678", "81312345679", "81612345678", "14155550123"}  # voice only
    assert dins["14155550123"] == {
        "din": "14155550123",
        "din_uid": dins["14155550123"]["din_uid"],
        "country_code": "1",
        "prefix": "415",
        "monthly_cost": 200.0,
        "minute_cost": 1.25,
    }
    assert (dins["81612345678"]["country_code"], dins["81612345678"]["prefix"]) == ("81", "6")
    jp = await call(alice.get_din_list, "country=JP")
    assert {d["din"] for d in jp.messages} == {"81312345678", "81312345679", "81612345678"}
    tokyo = await call(alice.get_din_list, "prefix=813")
    assert {d["din"] for d in tokyo.messages} == {"81312345678", "81312345679"}
    bad = await call(alice.get_din_list, "colour=red")
    assert bad.errors == 400 and "colour" in bad.message

    uid = dins["81312345678"]["din_uid"]
    sub = await call(alice.subscribe_din, uid)
    assert sub.errors is None and sub.message["din"] == "81312345678" and sub.message["prefix"] == "3"
    assert (await call(alice.subscribe_din, "nope")).errors == 400
    assert (await call(bob.subscribe_din, uid)).errors == 400  # taken
    assert "81312345678" not in {d["din"] for d in (await call(bob.get_din_list)).messages}

    set_url = await call(alice.set_action_url, uid, "https://example.com/actions")
    assert set_url.errors is None and set_url.message["action_url"] == "https://example.com/actions"
    assert (await call(alice.set_action_url, uid, "not a url")).errors == 400
    assert (await call(bob.set_action_url, uid, "https://evil.example/")).errors == 404
    subs = await call(alice.get_subscription_list)
    assert [s["din_uid"] for s in subs.messages] == [uid]
    assert (await call(bob.get_subscription_list)).messages == []

    assert (await call(bob.unsubscribe_din, uid)).errors == 404
    assert (await call(alice.unsubscribe_din, uid)).errors is None
    assert (await call(alice.unsubscribe_din, uid)).errors == 404
    assert (await call(alice.get_subscription_list)).messages == []
