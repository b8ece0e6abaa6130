"""Hostile Authorization headers: raw non-ASCII bytes, and guessing from one address."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import event

from gateway.keys import CONFIG, ENGINE
from tests.conftest import Gateway, basic, gateway_config, start_gateway


async def raw_request(
    gw: Gateway, path: str, authorization: bytes, source: str = "127.0.0.1"
) -> tuple[int, dict[str, str], Any]:
    """One request over a plain socket, the Authorization header's bytes exactly as given."""
    host, port = gw.app[CONFIG].http.host, gw.app[CONFIG].http.port
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nHost: gw\r\nAuthorization: "
        + authorization
        + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(10):
        raw = await reader.read(-1)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic \xff\xfe\xfd",  # not base64, not even ASCII
        b"Basic d\xc3\xa9mo",  # UTF-8 inside the base64 text
        b"Bearer t\xc3\xa9st",  # on a non-Sinch route: wrong scheme
        b"Basic " + b64(b"\xff\xfe:\xfa\xfb"),  # decodes to bytes that are not UTF-8
        b"Basic " + b64("sïd:tøken".encode()),  # decodes to a non-ASCII SID and token
        b"Basic " + b64(b"sid:tok\xe9n"),  # Latin-1 token
        b"\xe9\xe9 \xe9",  # not even a scheme
    ],
)
async def test_non_ascii_authorization_is_401_not_500(gateway: Gateway, authorization: bytes) -> None:
    status, _, body = await raw_request(gateway, "/sms/messages/", authorization)
    assert status == 401, body
    assert isinstance(body.get("detail"), str)


@pytest.mark.parametrize("token", [b"t\xc3\xa9st", b"\xff\xfe", b"x\xe9"])
async def test_non_ascii_bearer_on_sinch_routes_is_401_not_500(gateway: Gateway, token: bytes) -> None:
    creds = await gateway.account()
    status, _, body = await raw_request(gateway, f"/xms/v1/{creds.account.sid}/inbounds", b"Bearer " + token)
    assert status == 401, body
    assert isinstance(body.get("detail"), str)


# -- failed authentication is throttled per client address --------------------------------------

BURST = 3
PER_SECOND = 0.5  # a token every 2 s


@pytest_asyncio.fixture
async def strict_gateway(clean_db: str, sim_smsc: Any) -> AsyncIterator[Gateway]:
    gw = await start_gateway(
        gateway_config(
            clean_db,
            sim_smsc.host,
            sim_smsc.port,
            ratelimit__auth_failures_burst=BURST,
            ratelimit__auth_failures_per_second=PER_SECOND,
        )
    )
    yield gw
    await gw.runner.cleanup()


class AccountQueries:
    """Counts the statements that look an account up by SID (what authentication costs), from
    the engine's own event. Background loops read the accounts table too (the dispatcher skips
    disabled accounts' messages), so only lookups by `accounts.sid` count."""

    def __init__(self, gw: Gateway) -> None:
        self.count = 0
        self._engine = gw.app[ENGINE].sync_engine
        event.listen(self._engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM accounts" in statement and "accounts.sid =" in statement:
            self.count += 1

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


def client_from(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0), force_close=True))


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any, str | None]:
    async with http.get(url, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def test_failed_authentication_is_throttled_per_address(strict_gateway: Gateway) -> None:
    gw = strict_gateway
    alice, bob = await gw.account(name="alice"), await gw.account(name="bob")
    url = f"{gw.base_url}/sms/messages/"
    wrong = basic(alice.account.sid, "guess")
    sinch_url = f"{gw.base_url}/xms/v1/{alice.account.sid}/inbounds"
    queries = AccountQueries(gw)
    async with client_from("127.0.0.1") as here, client_from("127.0.0.2") as there:
        try:
            # Missing or malformed credentials cost no lookup: 401, not counted.
            for _ in range(BURST * 3):
                assert (await get(here, url, {"Authorization": "Basic !!!"}))[0] == 401
                assert (await get(here, url, {}))[0] == 401
            assert queries.count == 0
            for _ in range(BURST):
                assert (await get(here, url, wrong))[0] == 401
            assert queries.count == BURST

            # The burst is spent: 429 with Retry-After and a JSON body, before any lookup.
            status, body, retry_after = await get(here, url, wrong)
            assert status == 429 and retry_after is not None and int(retry_after) >= 1
            assert "Too many failed authentication attempts" in body["detail"]
            for _ in range(20):
                assert (await get(here, url, basic(f"{_:032x}", "guess")))[0] == 429
            assert (await get(here, sinch_url, {"Authorization": "Bearer guess"}))[0] == 429
            # A valid credential not seen lately is throttled too: telling it apart would
            # take the very query the throttle saves.
            assert (await get(here, url, gw.auth(bob)))[0] == 429
            assert queries.count == BURST

            # Another address is not affected: its failures are its own, its logins work.
            assert (await get(there, url, wrong))[0] == 401
            assert (await get(there, url, gw.auth(alice)))[0] == 200
            # A credential that authenticated moments ago (from anywhere) costs no query,
            # so it still works from the throttled address: clients behind the same NAT
            # or proxy as a guesser keep working while they are active.
            before = queries.count
            status, _, _ = await get(here, url, gw.auth(alice))
            assert status == 200 and queries.count == before

            # Refilled after Retry-After: one more failure is looked up, then 429 again.
            await asyncio.sleep(int(retry_after) + 0.2)
            assert (await get(here, url, gw.auth(bob)))[0] == 200
            assert (await get(here, url, wrong))[0] == 401
            assert (await get(here, url, wrong))[0] == 429
        finally:
            queries.close()
