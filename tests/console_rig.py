"""What the console tests share: a cookie-keeping HTTP client that signs in and posts forms the
way a browser does (the CSRF field read from the page), the operator's credentials, and the
inventory the tenants take their numbers from."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.config import Config
from gateway.http.console.passwords import hash_password
from gateway.keys import NUMBERS
from gateway.services.accounts import NewCredentials
from gateway.services.number_import import parse_numbers_csv
from tests.conftest import Gateway

OPERATOR, OPERATOR_PASSWORD = "ops", "correct horse battery staple"
OPERATOR_HASH = hash_password(OPERATOR_PASSWORD)  # once per session: scrypt takes ~50 ms
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def with_operator(cfg: Config) -> Config:
    cfg.console.operator_username = OPERATOR
    cfg.console.operator_password_hash = OPERATOR_HASH
    return cfg


@dataclass
class Page:
    status: int
    text: str
    headers: Any
    url: str

    @property
    def csrf(self) -> str:
        match = CSRF.search(self.text)
        assert match, self.text[:500]
        return html.unescape(match.group(1))


class ConsoleClient:
    """One browser: its own cookie jar (IP-address hosts allowed, as a browser does)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, *, follow: bool = True) -> Page:
        async with self.http.get(self.gw.base_url + path, allow_redirects=follow) as r:
            return Page(r.status, await r.text(errors="replace"), r.headers, str(r.url))

    async def post(
        self, path: str, data: dict[str, Any] | aiohttp.FormData, *, follow: bool = True, **kw: Any
    ) -> Page:
        async with self.http.post(self.gw.base_url + path, data=data, allow_redirects=follow, **kw) as r:
            return Page(r.status, await r.text(errors="replace"), r.headers, str(r.url))

    async def submit(self, form_page: str, action: str, fields: dict[str, Any], **kw: Any) -> Page:
        """Load `form_page`, then post `fields` to `action` with the page's CSRF token."""
        token = (await self.get(form_page)).csrf
        return await self.post(action, {"csrf": token, **fields}, **kw)

    async def login(self, creds: NewCredentials) -> Page:
        page = await self.submit(
            "/console/login", "/console/login", {"sid": creds.account.sid, "token": creds.auth_token}
        )
        assert page.status == 200 and page.url.endswith("/console/overview"), (page.status, page.url)
        return page

    async def operator_login(self, password: str = OPERATOR_PASSWORD) -> Page:
        return await self.submit(
            "/console/operator/login",
            "/console/operator/login",
            {"username": OPERATOR, "password": password},
        )


def inventory(*numbers: tuple[str, bool, bool]) -> str:
    lines = ["number,country_code,prefix,sms,voice,monthly_cost,minute_cost"]
    lines += [f"{n},JP,813,{str(sms).lower()},{str(voice).lower()},100,3.5" for n, sms, voice in numbers]
    return "\n".join(lines) + "\n"


async def take_number(gw: Gateway, creds: NewCredentials, number: str, kind: str) -> str:
    """Import `number` (SMS for a SIN, voice for a DIN) and subscribe the account to it; its uid."""
    numbers = gw.app[NUMBERS]
    await numbers.import_numbers(parse_numbers_csv(inventory((number, kind == "sin", kind == "din"))))
    [row] = [n for n in await numbers.list_inventory(prefix=number[1:]) if n["number"] == number]
    await numbers.subscribe(creds.account.id, kind, row["uid"])  # type: ignore[arg-type]
    return str(row["uid"])


async def bind_states(client: ConsoleClient) -> dict[tuple[str, str], str]:
    """(node, bind) -> state, as the operator's SMSC binds page shows them."""
    page = await client.get("/console/operator/smsc")
    assert page.status == 200, page.status
    rows = re.findall(r'<tr data-node="([^"]+)" data-bind="([^"]+)" data-state="(\w+)">', page.text)
    return {(html.unescape(node), bind): state for node, bind, state in rows}


async def has(states: Awaitable[dict[tuple[str, str], str]], expected: dict[tuple[str, str], str]) -> bool:
    got = await states
    return all(got.get(key) == value for key, value in expected.items())
