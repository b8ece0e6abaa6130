"""Sender-id allow-lists: an account sends only from senders the operator allowed it or from the
SINs it holds, on every send path; the operator's command; the upgrade's grandfathering."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from alembic import command

from gateway.db import migrate
from gateway.keys import SESSIONS, TEMPLATES
from gateway.services.senders import SenderService
from tests.conftest import ENGINES, Gateway
from tests.procs import subscribe_sin
from tests.test_cli_and_run import run_cli
from tests.test_migrations import _empty_database, _sql

JP = "+818012345678"
SIN = "+81312345678"


async def _send(
    http: aiohttp.ClientSession, gw: Gateway, auth: dict[str, str], sender: str
) -> tuple[int, dict]:
    body = {"message": "hi", "recipient": JP, "sender": sender}
    async with http.post(f"{gw.base_url}/sms/messages/", json=body, headers=auth) as r:
        return r.status, await r.json()


async def test_only_allowed_senders_and_own_sins(
    gateway: Gateway, http: aiohttp.ClientSession, clean_db: str
) -> None:
    creds = await gateway.account(senders=())
    auth = gateway.auth(creds)
    status, body = await _send(http, gateway, auth, "SHOP")
    assert status == 400 and list(body) == ["sender"] and "not allowed" in body["sender"][0]
    assert await gateway.sql("SELECT count(*) FROM messages") == [(0,)]

    senders = SenderService(gateway.app[SESSIONS])
    assert await senders.add(creds.account.sid, ["SHOP", "My Shop", "+15550001111"])
    for sender in ("SHOP", "My Shop", "15550001111", "+15550001111"):
        status, body = await _send(http, gateway, auth, sender)
        assert status == 201, (sender, body)
    for sender in ("shop", "OTHER", "+15550002222", SIN):  # exact; not anybody's number
        assert (await _send(http, gateway, auth, sender))[0] == 400, sender

    await subscribe_sin(clean_db, creds.account.id, SIN, "http://127.0.0.1:9/")
    assert (await _send(http, gateway, auth, SIN[1:]))[0] == 201  # its SIN, as digits

    other = await gateway.account(senders=())  # one account's list is not another's
    assert (await _send(http, gateway, gateway.auth(other), "SHOP"))[0] == 400
    assert (await _send(http, gateway, gateway.auth(other), SIN))[0] == 400

    assert await senders.remove(creds.account.sid, ["SHOP"])
    assert (await _send(http, gateway, auth, "SHOP"))[0] == 400


async def test_batches_templates_and_tracked_links_are_checked_too(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    creds = await gateway.account(senders=("SHOP",))
    auth = gateway.auth(creds)
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()  # so the batch can still change
    batch = {"from": "BANK", "to": [JP], "body": "hi", "send_at": later}
    url = f"{gateway.base_url}/xms/v1/{creds.account.sid}/batches"
    async with http.post(url, json=batch, headers=auth) as r:
        assert r.status == 400
        body = await r.json()
    assert body["code"] == "syntax_constraint_violation" and body["text"].startswith("from: Sender 'BANK'")
    async with http.post(url, json={**batch, "from": "SHOP"}, headers=auth) as r:
        assert r.status == 201, await r.text()
        batch_id = (await r.json())["id"]
    async with http.post(f"{url}/{batch_id}", json={"from": "BANK"}, headers=auth) as r:  # update
        assert r.status == 400 and (await r.json())["text"].startswith("from:")

    tracked = {"message": "see https://example.com/", "recipient": JP, "track_link": True}
    async with http.post(
        f"{gateway.base_url}/sms/messages/", json={**tracked, "sender": "BANK"}, headers=auth
    ) as r:
        assert r.status == 400 and list(await r.json()) == ["sender"]

    async with http.post(
        f"{gateway.base_url}/sms/templates/", json={"name": "t", "content": "Hi"}, headers=auth
    ) as r:
        assert r.status == 201, await r.text()
        template = (await r.json())["template_id"]
    await gateway.app[TEMPLATES].set_status(template, "APPROVED")
    send = f"{gateway.base_url}/sms/templates/{template}/messages/"
    async with http.post(send, json={"recipient": JP, "sender": "BANK"}, headers=auth) as r:
        assert r.status == 400 and list(await r.json()) == ["sender"], await r.text()
    async with http.post(send, json={"recipient": JP, "sender": "SHOP"}, headers=auth) as r:
        assert r.status == 201, await r.text()


async def test_operator_command(clean_db: str) -> None:
    env = {"GATEWAY_DATABASE_URL": clean_db}
    code, out, err = await run_cli(env, "accounts", "create", "--name", "acme", "--sender", "ACME")
    assert code == 0, err
    created = json.loads(out)
    assert created["senders"] == ["ACME"]
    sid = created["sid"]
    code, out, err = await run_cli(env, "accounts", "senders", sid, "add", "My Shop", "81312345678")
    assert code == 0, err
    listed = json.loads(out)
    assert [s["sender"] for s in listed["senders"]] == ["+81312345678", "ACME", "My Shop"]
    assert {s["origin"] for s in listed["senders"]} == {"operator"} and listed["sins"] == []
    code, out, _ = await run_cli(env, "accounts", "senders", sid, "remove", "ACME")
    assert code == 0 and [s["sender"] for s in json.loads(out)["senders"]] == ["+81312345678", "My Shop"]
    for bad in ("TWELVECHARSX", "a  b", "12345678901234567", "shop!"):
        code, _, err = await run_cli(env, "accounts", "senders", sid, "add", bad)
        assert code == 2 and "nothing changed" in err, (bad, err)
    code, _, err = await run_cli(env, "accounts", "senders", "nosuchsid", "list")
    assert code == 1 and "no account" in err


@pytest.mark.parametrize("engine", ENGINES)
def test_upgrade_grandfathers_the_senders_accounts_used(engine: str, tmp_path: Path) -> None:
    """What an account sent from before the lists existed stays allowed (origin 'migration'),
    except numbers of the inventory: holding the SIN is what allows those."""
    with _empty_database(engine, tmp_path) as url:
        cfg = migrate.alembic_config(url)
        command.upgrade(cfg, "0011")
        message = (
            "INSERT INTO messages (msgid, account_id, sender, recipient, body, parts, cost, status,"
            " tags, track_link, created_at, attempts, next_attempt_at) VALUES"
            " ('{msgid}', {account}, '{sender}', '+818012345678', 'x', 1, 1, 'DELIVERED', '', false,"
            " '2026-01-01 00:00:00', 1, '2026-01-01 00:00:00')"
        )
        account = (
            "INSERT INTO accounts (id, sid, token_hash, name, freeform, webhook_secret, disabled, created_at)"
            " VALUES ({id}, 'sid{id}', 'hash', 'old', false, 'secret', false, '2026-01-01 00:00:00')"
        )
        asyncio.run(
            _sql(
                url,
                account.format(id=1),
                account.format(id=2),
                "INSERT INTO numbers (uid, number, country_code, prefix, sms, voice, monthly_cost,"
                " minute_cost, created_at) VALUES ('n1', '+81312345678', 'JP', '3', true, false, 0, 0,"
                " '2026-01-01 00:00:00')",
                message.format(msgid="m1", account=1, sender="SHOP"),
                message.format(msgid="m2", account=1, sender="SHOP"),
                message.format(msgid="m3", account=1, sender="15550001111"),
                message.format(msgid="m4", account=1, sender="81312345678"),  # an inventory SIN
                message.format(msgid="m5", account=2, sender="+15550001111"),
            )
        )
        command.upgrade(cfg, "head")
        got = asyncio.run(
            _sql(url, "SELECT account_id, sender, origin FROM sender_ids ORDER BY account_id, sender")
        )
        assert got == [
            (1, "+15550001111", "migration"),
            (1, "SHOP", "migration"),
            (2, "+15550001111", "migration"),
        ]
