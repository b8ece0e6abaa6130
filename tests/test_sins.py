"""SIN inventory, subscriptions and auto-reply rules over the real server.

xoxzo-cloudpy 0.4.1 has only the DIN calls; these requests are shaped exactly like its
get_din_list / subscribe_din / get_subscription_list / set_action_url / unsubscribe_din
(form-encoded bodies, HTTP Basic, the same URL patterns) under /sms/sins/."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from gateway.keys import NUMBERS
from gateway.services.errors import FieldErrors
from gateway.services.number_import import COLUMNS, parse_numbers_csv
from gateway.services.numbers import AutoReply, SubscriptionTarget, first_auto_reply
from tests.conftest import Gateway

# The prefix column in its three forms: the older leading digits (813), the local area prefix
# (50), none (derived).
INVENTORY = f"""{",".join(COLUMNS)}
+81312345678,JP,813,true,true,1000,0
+81312345679,JP,,true,false,1000,0.5
+815012345678,JP,50,true,false,500.25,0
+14155550100,US,,true,true,2,0.01
+14155550101,US,1415,false,true,2,0.01
"""
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


async def seed(gw: Gateway) -> dict[str, str]:
    """Imports INVENTORY; number -> uid."""
    await gw.app[NUMBERS].import_numbers(parse_numbers_csv(INVENTORY))
    return {n["number"]: n["uid"] for n in await gw.app[NUMBERS].list_inventory()}


class Sins:
    """The xoxzo-cloudpy DIN client's requests, aimed at /sms/sins/."""

    def __init__(self, http: aiohttp.ClientSession, gw: Gateway, creds: Any) -> None:
        self.http, self.url, self.auth = http, f"{gw.base_url}/sms/sins/", gw.auth(creds)

    async def _call(self, method: str, url: str, data: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.request(method, url, data=data, headers=self.auth) as r:
            return r.status, await r.json()

    async def get_list(self, search_string: str | None = None) -> tuple[int, Any]:
        return await self._call("GET", self.url + (f"?{search_string}" if search_string else ""))

    async def subscribe(self, sin_uid: str) -> tuple[int, Any]:
        return await self._call("POST", self.url + "subscriptions/", {"sin_uid": sin_uid})

    async def unsubscribe(self, sin_uid: str) -> tuple[int, Any]:
        return await self._call("DELETE", self.url + "subscriptions/" + sin_uid + "/")

    async def subscriptions(self) -> tuple[int, Any]:
        return await self._call("GET", self.url + "subscriptions/")

    async def set_action_url(self, sin_uid: str, action_url: str) -> tuple[int, Any]:
        return await self._call(
            "POST", self.url + "subscriptions/" + sin_uid + "/", {"action_url": action_url}
        )

    def rules_url(self, sin_uid: str) -> str:
        return self.url + "subscriptions/" + sin_uid + "/autoreplies/"

    async def add_rule(self, sin_uid: str, **body: str) -> tuple[int, Any]:
        return await self._call("POST", self.rules_url(sin_uid), body)

    async def rules(self, sin_uid: str) -> tuple[int, Any]:
        return await self._call("GET", self.rules_url(sin_uid))

    async def delete_rule(self, sin_uid: str, rule_id: str) -> tuple[int, Any]:
        return await self._call("DELETE", self.rules_url(sin_uid) + rule_id + "/")


def numbers_of(listing: list[dict[str, Any]]) -> list[str]:
    """E.164 of the listed SINs (answered as digits, without +)."""
    return ["+" + n["sin"] for n in listing]


async def test_available_sins_and_filters(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    uids = await seed(gateway)
    api = Sins(http, gateway, await gateway.account())

    code, listing = await api.get_list()
    assert code == 200
    # Only SMS-capable numbers, ordered by number; the voice-only +14155550101 is not a SIN.
    assert numbers_of(listing) == ["+14155550100", "+81312345678", "+81312345679", "+815012345678"]
    # As Xoxzo answers: digits without +, the dialling code, the local area prefix (no trunk 0).
    assert listing[3] == {
        "sin": "815012345678",
        "sin_uid": uids["+815012345678"],
        "country_code": "81",
        "prefix": "50",
        "monthly_cost": 500.25,
        "minute_cost": 0.0,
    }
    assert [(n["country_code"], n["prefix"]) for n in listing[:3]] == [("1", "415"), ("81", "3"), ("81", "3")]
    for query, expected in (
        ("country=JP", ["+81312345678", "+81312345679", "+815012345678"]),
        ("country=us", ["+14155550100"]),
        ("country=FR", []),
        ("prefix=813", ["+81312345678", "+81312345679"]),
        ("prefix=81", ["+81312345678", "+81312345679", "+815012345678"]),
        ("prefix=8131234567", ["+81312345678", "+81312345679"]),
        ("country=JP&prefix=8150", ["+815012345678"]),
        ("country=US&prefix=81", []),
        ("country=&prefix=", numbers_of(listing)),
    ):
        code, got = await api.get_list(query)
        assert (code, numbers_of(got)) == (200, expected), query

    async with http.get(f"{gateway.base_url}/sms/sins?country=JP", headers=api.auth) as r:
        assert r.status == 200 and len(await r.json()) == 3  # without the trailing slash too

    for query, body in (
        ("area=03", {"area": ["Unknown filter; use country or prefix."]}),
        ("country=JPN", {"country": ["Enter a 2-letter ISO country code, e.g. JP."]}),
        ("prefix=%2B81", {"prefix": ["Enter digits only, e.g. 813."]}),
        ("prefix=8_", {"prefix": ["Enter digits only, e.g. 813."]}),
        ("country=JP&country=US", {"country": ["Give this filter at most once."]}),
        (
            "prefix>=81&country=J",
            {
                "prefix>": ["Unknown filter; use country or prefix."],
                "country": ["Enter a 2-letter ISO country code, e.g. JP."],
            },
        ),
    ):
        assert await api.get_list(query) == (400, body), query

    async with http.get(f"{gateway.base_url}/sms/sins/") as r:
        assert r.status == 401


async def test_subscription_lifecycle(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    uids = await seed(gateway)
    creds = await gateway.account()
    api = Sins(http, gateway, creds)
    uid = uids["+81312345678"]

    code, sub = await api.subscribe(uid)
    assert code == 201, sub
    assert TIME.fullmatch(sub.pop("subscribed_at"))
    assert sub == {
        "sin": "81312345678",
        "sin_uid": uid,
        "country_code": "81",
        "prefix": "3",
        "monthly_cost": 1000.0,
        "minute_cost": 0.0,
        "action_url": None,
        "webhook_format": "xoxzo",
        "mo_delivery": "webhook",
    }
    # Taken numbers leave the available list (for everybody).
    code, listing = await api.get_list("prefix=813")
    assert numbers_of(listing) == ["+81312345679"]

    code, subs = await api.subscriptions()
    assert code == 200 and [s["sin_uid"] for s in subs] == [uid] and subs[0]["action_url"] is None
    async with http.get(f"{api.url}subscriptions", headers=api.auth) as r:
        assert r.status == 200 and [s["sin_uid"] for s in await r.json()] == [uid]

    code, out = await api.set_action_url(uid, "https://example.com/mo?x=1")
    assert code == 200 and out["action_url"] == "https://example.com/mo?x=1" and out["sin_uid"] == uid
    for bad in ("ftp://example.com/", "not a url", "https://"):
        assert await api.set_action_url(uid, bad) == (400, {"action_url": ["Enter a valid http(s) URL."]})
    assert await api.set_action_url(uid, "") == (400, {"action_url": ["This field is required."]})
    async with http.post(f"{api.url}subscriptions/{uid}/", json={}, headers=api.auth) as r:
        assert r.status == 400 and await r.json() == {"action_url": ["This field is required."]}
    async with http.get(f"{api.url}subscriptions/{uid}", headers=api.auth) as r:
        assert r.status == 200 and (await r.json())["action_url"] == "https://example.com/mo?x=1"

    target = await gateway.app[NUMBERS].subscription_for_number("+81312345678", "sin")
    assert isinstance(target, SubscriptionTarget) and target == (
        target.subscription_id,
        creds.account.id,
        "https://example.com/mo?x=1",
        target.number_id,
        "xoxzo",
        None,  # status_url: DINs only
        "webhook",
    )
    assert await gateway.app[NUMBERS].subscription_for_number("81312345678", "sin") == target
    assert await gateway.app[NUMBERS].subscription_for_number("+81312345678", "din") is None
    assert await gateway.app[NUMBERS].subscription_for_number("+81312345679", "sin") is None
    (row,) = await gateway.sql("SELECT id FROM numbers WHERE number = '+81312345678'")
    assert target.number_id == row[0]

    assert await api.unsubscribe(uid) == (200, {})
    assert await api.subscriptions() == (200, [])
    assert await api.unsubscribe(uid) == (404, {"detail": "No such SIN subscription."})
    assert await api.unsubscribe("0" * 32) == (404, {"detail": "No such SIN subscription."})
    assert await api.set_action_url(uid, "https://example.com/") == (
        404,
        {"detail": "No such SIN subscription."},
    )
    assert await gateway.app[NUMBERS].subscription_for_number("+81312345678", "sin") is None
    code, listing = await api.get_list("prefix=813")
    assert numbers_of(listing) == ["+81312345678", "+81312345679"]  # free again
    # ...and can be taken again, JSON body this time.
    async with http.post(f"{api.url}subscriptions/", json={"sin_uid": uid}, headers=api.auth) as r:
        assert r.status == 201 and (await r.json())["action_url"] is None


async def test_subscribe_refusals(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    uids = await seed(gateway)
    alice = Sins(http, gateway, await gateway.account(name="alice"))
    bob = Sins(http, gateway, await gateway.account(name="bob"))

    async with http.post(f"{alice.url}subscriptions/", data={}, headers=alice.auth) as r:
        assert r.status == 400 and await r.json() == {"sin_uid": ["This field is required."]}
    assert await alice.subscribe("f" * 32) == (400, {"sin_uid": ["No such SIN."]})
    assert await alice.subscribe(uids["+14155550101"]) == (
        400,
        {"sin_uid": ["This number does not support SMS."]},
    )
    assert (await alice.subscribe(uids["+81312345678"]))[0] == 201
    assert await alice.subscribe(uids["+81312345678"]) == (
        400,
        {"sin_uid": ["You are already subscribed to this SIN."]},
    )
    assert await bob.subscribe(uids["+81312345678"]) == (400, {"sin_uid": ["This SIN is not available."]})
    assert len(await gateway.sql("SELECT id FROM number_subscriptions")) == 1

    # Two accounts racing for one number: exactly one wins.
    results = await asyncio.gather(alice.subscribe(uids["+81312345679"]), bob.subscribe(uids["+81312345679"]))
    assert sorted(code for code, _ in results) == [201, 400]
    assert len(await gateway.sql("SELECT id FROM number_subscriptions")) == 2


async def test_tenant_isolation(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    uids = await seed(gateway)
    alice = Sins(http, gateway, await gateway.account(name="alice"))
    bob = Sins(http, gateway, await gateway.account(name="bob"))
    uid = uids["+81312345678"]
    assert (await alice.subscribe(uid))[0] == 201
    assert (await alice.set_action_url(uid, "https://alice.example/mo"))[0] == 200
    code, rule = await alice.add_rule(uid, match="keyword", pattern="hours", reply="9-17")
    assert code == 201

    not_found = {"detail": "No such SIN subscription."}
    assert await bob.set_action_url(uid, "https://bob.example/") == (404, not_found)
    assert await bob.unsubscribe(uid) == (404, not_found)
    assert await bob.rules(uid) == (404, not_found)
    assert await bob.add_rule(uid, match="keyword", pattern="x", reply="y") == (404, not_found)
    assert await bob.delete_rule(uid, rule["rule_id"]) == (404, not_found)
    async with http.get(f"{bob.url}subscriptions/{uid}/", headers=bob.auth) as r:
        assert r.status == 404
    assert await bob.subscriptions() == (200, [])
    code, listing = await bob.get_list("country=JP")
    assert uid not in [n["sin_uid"] for n in listing]

    # Alice's subscription and rule are untouched.
    code, subs = await alice.subscriptions()
    assert [(s["sin_uid"], s["action_url"]) for s in subs] == [(uid, "https://alice.example/mo")]
    assert (await alice.rules(uid))[1] == [rule]


async def test_auto_reply_rules(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    uids = await seed(gateway)
    api = Sins(http, gateway, await gateway.account())
    uid = uids["+81312345678"]
    assert (await api.subscribe(uid))[0] == 201
    assert await api.rules(uid) == (200, [])

    code, kw = await api.add_rule(uid, match="keyword", pattern="Hours", reply="Open 9-17, Mon-Fri.")
    assert code == 201, kw
    assert TIME.fullmatch(kw.pop("created_at")) and len(kw["rule_id"]) == 32
    assert kw == {
        "rule_id": kw["rule_id"],
        "match": "keyword",
        "pattern": "Hours",
        "reply": "Open 9-17, Mon-Fri.",
    }
    async with http.post(
        api.rules_url(uid),
        json={"match": "regex", "pattern": r"(?i)\border\s+#?(\d+)", "reply": "We are on it."},
        headers=api.auth,
    ) as r:
        assert r.status == 201
        rx = await r.json()
    code, rules = await api.rules(uid)
    assert code == 200 and [r["rule_id"] for r in rules] == [kw["rule_id"], rx["rule_id"]]
    async with http.get(api.rules_url(uid).rstrip("/"), headers=api.auth) as r:
        assert r.status == 200 and len(await r.json()) == 2

    for body, errors in (
        ({}, {"match", "pattern", "reply"}),
        ({"match": "glob", "pattern": "x", "reply": "y"}, {"match"}),
        ({"match": "keyword", "pattern": "two words", "reply": "y"}, {"pattern"}),
        ({"match": "keyword", "pattern": "stop", "reply": "y"}, {"pattern"}),
        ({"match": "keyword", "pattern": "HOURS", "reply": "y"}, {"pattern"}),  # duplicate keyword
        ({"match": "keyword", "pattern": "x", "reply": "   "}, {"reply"}),
        ({"match": "keyword", "pattern": "x", "reply": "y" * 1001}, {"reply"}),
        ({"match": "keyword", "pattern": "x", "reply": "bell\x07"}, {"reply"}),
        ({"match": "regex", "pattern": "(unclosed", "reply": "y"}, {"pattern"}),
        ({"match": "regex", "pattern": "a" * 201, "reply": "y"}, {"pattern"}),
        # RE2 (linear time) has no backreferences or lookaround, and caps the program size.
        ({"match": "regex", "pattern": r"(a)\1", "reply": "y"}, {"pattern"}),
        ({"match": "regex", "pattern": r"(?=a)b", "reply": "y"}, {"pattern"}),
        ({"match": "regex", "pattern": r"(?<!a)b", "reply": "y"}, {"pattern"}),
        ({"match": "regex", "pattern": r"\pL{10}", "reply": "y"}, {"pattern"}),
        ({"match": "regex", "pattern": r"\pL{1000}", "reply": "y"}, {"pattern"}),
        ({"match": "regex", "pattern": r"(\w)\1", "reply": ""}, {"pattern", "reply"}),
    ):
        code, out = await api.add_rule(uid, **body)
        assert (code, set(out)) == (400, errors), (body, out)
    code, out = await api.add_rule(uid, match="regex", pattern="(unclosed", reply="y")
    assert out["pattern"][0].startswith("Invalid regular expression: missing )")
    code, out = await api.add_rule(uid, match="regex", pattern=r"(a)\1", reply="y")
    assert out == {
        "pattern": [
            "Invalid regular expression: invalid escape sequence: \\1. "
            "RE2 syntax: backreferences and lookaround are not supported."
        ]
    }
    code, out = await api.add_rule(uid, match="regex", pattern=r"\pL{1000}", reply="y")
    assert out == {"pattern": ["Too complex: at most 2000 RE2 instructions once compiled."]}
    assert len((await api.rules(uid))[1]) == 2  # nothing stored by the refusals

    # Repeats, nested ones too: RE2 matches them in linear time.
    assert (await api.add_rule(uid, match="regex", pattern=r"^(\d{1,3}\.){3}\d+$", reply="ip"))[0] == 201
    assert (await api.add_rule(uid, match="regex", pattern="(a|a)*b", reply="ab"))[0] == 201
    assert (await api.add_rule(uid, match="keyword", pattern="予約", reply="ok"))[0] == 201

    # What the inbound pipeline gets.
    target = await gateway.app[NUMBERS].subscription_for_number("+81312345678", "sin")
    assert target is not None
    rules = await gateway.app[NUMBERS].rules_for_subscription(target.subscription_id)
    assert [r.rule_id for r in rules] == [r["rule_id"] for r in (await api.rules(uid))[1]]
    assert all(isinstance(r, AutoReply) for r in rules)
    assert rules[0].regex is None and rules[1].regex is not None

    def reply_to(body: str) -> str | None:
        rule = first_auto_reply(rules, body)
        return None if rule is None else rule.reply

    assert reply_to("hours?") == "Open 9-17, Mon-Fri."
    assert reply_to("  HOURS please") == "Open 9-17, Mon-Fri."
    assert reply_to("opening hours") is None  # keyword is the first word only
    assert reply_to("Hourself") is None
    assert reply_to("about my ORDER #123") == "We are on it."
    assert reply_to("10.0.0.1") == "ip"
    assert reply_to("a" * 5000) is None  # `re` backtracked for hours here
    assert reply_to("a" * 1000 + "b") == "ab"
    assert reply_to("a" * 1600 + "b") is None  # only the first MAX_MATCH_INPUT characters count
    assert reply_to("予約 したい") == "ok"
    assert reply_to("") is None

    # Delete one rule; unknown ids are 404.
    assert await api.delete_rule(uid, kw["rule_id"]) == (200, {})
    assert await api.delete_rule(uid, kw["rule_id"]) == (404, {"detail": "No such auto-reply rule."})
    ids = [r["rule_id"] for r in (await api.rules(uid))[1]]
    assert len(ids) == 4 and ids[0] == rx["rule_id"] and kw["rule_id"] not in ids

    # Unsubscribing removes the remaining rules with the subscription.
    assert await api.unsubscribe(uid) == (200, {})
    assert await gateway.sql("SELECT id FROM auto_reply_rules") == []
    assert await gateway.app[NUMBERS].rules_for_subscription(target.subscription_id) == []


async def test_rule_limit(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    uids = await seed(gateway)
    api = Sins(http, gateway, await gateway.account())
    uid = uids["+81312345679"]
    assert (await api.subscribe(uid))[0] == 201
    for i in range(50):
        assert (await api.add_rule(uid, match="keyword", pattern=f"k{i}", reply="r"))[0] == 201
    assert await api.add_rule(uid, match="keyword", pattern="one_more", reply="r") == (
        400,
        {"sin_uid": ["At most 50 auto-reply rules per SIN."]},
    )


async def test_din_kind_is_independent(gateway: Gateway) -> None:
    """The same service backs the DIN API: voice capability, `din_uid` errors, its own holder."""
    uids = await seed(gateway)
    numbers = gateway.app[NUMBERS]
    alice, bob = await gateway.account(name="alice"), await gateway.account(name="bob")
    both = uids["+81312345678"]  # sms and voice

    await numbers.subscribe(alice.account.id, "sin", both)
    din = await numbers.subscribe(bob.account.id, "din", both)  # same number, other kind: allowed
    assert din["din"] == "81312345678" and din["din_uid"] == both and din["minute_cost"] == 0.0
    assert "sin" not in din
    assert [n["din"] for n in await numbers.list_available("din")] == ["14155550100", "14155550101"]
    with pytest.raises(FieldErrors) as exc:
        await numbers.subscribe(alice.account.id, "din", uids["+81312345679"])  # no voice
    assert exc.value.body == {"din_uid": ["This number does not support voice."]}
    assert [s["din_uid"] for s in await numbers.list_subscriptions(bob.account.id, "din")] == [both]
    assert await numbers.list_subscriptions(bob.account.id, "sin") == []
    sin_target = await numbers.subscription_for_number("+81312345678", "sin")
    din_target = await numbers.subscription_for_number("+81312345678", "din")
    assert sin_target is not None and din_target is not None
    assert (sin_target.account_id, din_target.account_id) == (alice.account.id, bob.account.id)
    assert sin_target.number_id == din_target.number_id
    with pytest.raises(ValueError):
        await numbers.list_available("fax")  # type: ignore[arg-type]
