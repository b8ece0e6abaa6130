"""The web console in headless Chromium (Debian's `chromium`, driven by Python playwright)
against a real gateway bound to the SMSC simulator: sign in, create a template, approve it as
the operator, send it and watch the message's timeline reach DELIVERED, reply to an MO, play a
voicemail left by a call through FastAGI (the audio element loads a WAV of the right
duration), and what a browser must not get: another account's page, a forged form, an expired
session.

On both engines, like the rest of the suite: one browser for the module, one gateway per
engine (each test has its own accounts and browser contexts).

GWTEST_SCREENSHOTS=1 also writes the README's screenshots to docs/img/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from sqlalchemy import update

from gateway.app import FASTAGI
from gateway.db.models import ConsoleSession
from gateway.keys import NUMBERS, SESSIONS
from gateway.services.accounts import NewCredentials
from smpp.encoding import decode_short_message, encode_gsm7
from tests.conftest import ROOT, Gateway, gateway_config, serve_app, start_gateway, wait_for, wipe
from tests.console_rig import OPERATOR, OPERATOR_PASSWORD, take_number, with_operator
from tests.peers.asterisk_agi import CallScenario, fastagi_call
from tests.peers.simulator_peer import SimulatorPeer

CHROMIUM = os.environ.get("GWTEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("GWTEST_SCREENSHOTS") == "1"
CUSTOMER = "+819011112222"
TIMEOUT = 15_000  # ms, for anything the gateway does in the background

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"no Chromium at {CHROMIUM}: apt-get install chromium chromium-driver (scripts/test does)",
    ),
]


@dataclass
class Rig:
    gw: Gateway
    sim: SimulatorPeer
    browser: Browser
    base: str  # the customer's server: action_url script and status callbacks
    callbacks: list[int]  # status answers given, in order (the first is a 503)

    @property
    def actions_url(self) -> str:
        return f"{self.base}/actions"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the module, both engines' tests: launching it is the slow part."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(db_url: str, browser: Browser) -> AsyncIterator[Rig]:
    """A gateway per engine on the suite's database of that engine, emptied once: the tests
    keep apart by their own accounts and numbers."""
    await wipe(db_url)
    sim = await SimulatorPeer.start()

    async def actions(request: web.Request) -> web.Response:
        return web.Response(text='voicemail say en "Please leave a message."', content_type="text/plain")

    answered: list[int] = []

    async def status(request: web.Request) -> web.Response:
        answered.append(503 if not answered else 200)  # the first callback fails, then they pass
        return web.Response(status=answered[-1])

    app = web.Application()
    app.router.add_get("/actions", actions)
    app.router.add_post("/status", status)
    async with serve_app(app) as base:
        gw = await start_gateway(with_operator(gateway_config(db_url, sim.host, sim.port)))
        try:
            yield Rig(gw, sim, browser, base, answered)
        finally:
            await gw.runner.cleanup()
            await sim.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def context(rig: Rig) -> AsyncIterator[BrowserContext]:
    ctx = await rig.browser.new_context(viewport={"width": 1100, "height": 800})
    ctx.set_default_timeout(TIMEOUT)
    yield ctx
    await ctx.close()


async def sign_in(ctx: BrowserContext, gw: Gateway, creds: NewCredentials) -> Page:
    page = await ctx.new_page()
    await page.goto(f"{gw.base_url}/console/")
    await page.get_by_label("Account SID").fill(creds.account.sid)
    await page.get_by_label("Auth token").fill(creds.auth_token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


async def shot(page: Page, name: str, *, phone: bool = False) -> None:
    if not SCREENSHOTS:
        return
    if phone:
        await page.set_viewport_size({"width": 390, "height": 780})
    await page.screenshot(path=str(ROOT / "docs" / "img" / f"console-{name}.png"), full_page=not phone)
    if phone:
        await page.set_viewport_size({"width": 1100, "height": 800})


async def test_a_template_is_approved_sent_and_delivered(rig: Rig, context: BrowserContext) -> None:
    gw = rig.gw
    creds = await gw.account(name="Acme Ltd", freeform=False)
    page = await sign_in(context, gw, creds)
    await page.get_by_role("link", name="Templates").click()
    await page.get_by_label("Name", exact=True).fill("Delivery notice")
    await page.get_by_label("Text, with").fill("Hello {name}, your parcel arrives today.")
    await page.get_by_role("button", name="Create").click()
    row = page.get_by_role("row", name="Delivery notice")
    await expect(row.get_by_text("PENDING")).to_be_visible()

    operator = await rig.browser.new_context()
    try:
        op = await operator.new_page()
        await op.goto(f"{gw.base_url}/console/operator/login")
        await op.get_by_label("User name").fill(OPERATOR)
        await op.get_by_label("Password").fill(OPERATOR_PASSWORD)
        await op.get_by_role("button", name="Sign in").click()
        await expect(op.get_by_role("heading", name="Accounts")).to_be_visible()
        await op.get_by_role("link", name="Templates").click()
        pending = op.get_by_role("row", name="Delivery notice")
        await shot(op, "operator-templates")
        await pending.get_by_role("button", name="Approve").click()
        await expect(op.get_by_text("Nothing waiting.")).to_be_visible()
    finally:
        await operator.close()

    await page.reload()
    await expect(row.get_by_text("APPROVED")).to_be_visible()
    await row.get_by_role("link", name="Send").click()
    await page.get_by_label("Recipient").fill(CUSTOMER)
    await page.get_by_label("Sender").fill("ACME")
    await page.get_by_label("{name}").fill("Ms Sato")
    await page.get_by_label("Status callback URL").fill(f"{rig.base}/status")
    await page.get_by_role("button", name="Send").click()
    # The page reloads itself until the status is final: the simulator's receipt ends it.
    await expect(page.locator("#status")).to_have_text("DELIVERED", timeout=TIMEOUT)
    timeline = page.locator("#timeline")
    await expect(timeline).to_contain_text("Queued")
    await expect(timeline).to_contain_text("SMSC id")
    await expect(timeline).to_contain_text("Final: DELIVERED")
    # Its status callbacks: the receiver's first answer was a 503, retried; the page shows each
    # attempt once they are through (the page stopped reloading itself at DELIVERED).
    msgid = page.url.rsplit("/", 1)[1]

    async def callbacks_done() -> bool:
        rows = await gw.sql("SELECT status FROM webhook_deliveries WHERE ref = :m", m=msgid)
        return len(rows) == 2 and all(s == "DONE" for (s,) in rows)  # DELIVERING, DELIVERED

    await wait_for(callbacks_done, timeout=15)
    await page.reload()
    callbacks = page.locator("section.callback")
    await expect(callbacks.first).to_contain_text("Attempt 1: HTTP 503; next try at")
    await expect(callbacks.first).to_contain_text("Attempt 2: HTTP 200, delivered")
    await shot(page, "message")
    submits = [
        decode_short_message(s.data_coding, s.esm_class, s.short_message).text
        for s in await rig.sim.submits()
    ]
    assert "Hello Ms Sato, your parcel arrives today." in submits
    await page.get_by_role("link", name="Messages").click()
    await expect(page.get_by_role("cell", name="DELIVERED")).to_be_visible()
    await page.get_by_role("link", name="Overview").click()
    await shot(page, "overview")
    await shot(page, "overview-phone", phone=True)


async def test_replying_to_an_mo_from_the_page(rig: Rig, context: BrowserContext) -> None:
    gw = rig.gw
    creds = await gw.account(name="Replies Inc")
    sin = "+81311117777"
    await take_number(gw, creds, sin, "sin")
    await rig.sim.inject_mo(CUSTOMER[1:], sin[1:], encode_gsm7("Is my order ready?"), data_coding=0)
    await wait_for(lambda: gw.sql("SELECT id FROM inbound_messages WHERE recipient = :r", r=sin))
    page = await sign_in(context, gw, creds)
    await page.get_by_role("link", name="Inbound").click()
    await page.get_by_role("link", name=CUSTOMER).click()
    await expect(page.locator("#thread")).to_contain_text("Is my order ready?")
    await page.get_by_label(f"Reply from {sin}").fill("Yes, ready for pick-up.")
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#thread li.out")).to_contain_text("Yes, ready for pick-up.")
    await shot(page, "inbound")

    async def sent() -> bool:
        return any(
            s.destination_addr == CUSTOMER[1:]
            and decode_short_message(s.data_coding, s.esm_class, s.short_message).text
            == "Yes, ready for pick-up."
            for s in await rig.sim.submits()
        )

    await wait_for(sent)


async def test_a_voicemail_plays_in_the_page(rig: Rig, context: BrowserContext) -> None:
    gw = rig.gw
    creds = await gw.account(name="Voice Co")
    din = "+81322227777"
    uid = await take_number(gw, creds, din, "din")
    await gw.app[NUMBERS].set_action_url(creds.account.id, "din", uid, rig.actions_url)
    await fastagi_call(
        "127.0.0.1",
        gw.app[FASTAGI].port,
        CallScenario(dnid=din, callerid=CUSTOMER, record_seconds=1.5),
        timeout=30,
    )
    [(seconds,)] = await wait_for(
        lambda: gw.sql("SELECT duration FROM voicemails WHERE recipient = :d", d=din)
    )
    page = await sign_in(context, gw, creds)
    await page.get_by_role("link", name="Calls").click()
    audio = page.locator("audio[data-voicemail]")
    duration = await audio.evaluate(
        """a => new Promise((ok, fail) => {
            if (a.readyState >= 1) return ok(a.duration);
            a.addEventListener('loadedmetadata', () => ok(a.duration));
            a.addEventListener('error', () => fail(new Error('audio error ' + (a.error && a.error.code))));
            a.load();
        })"""
    )
    assert abs(duration - float(seconds)) < 0.05 and duration > 1.0, (duration, seconds)
    assert await page.get_by_role("link", name="Download (WAV)").get_attribute("download") is not None
    await shot(page, "calls")


async def test_what_a_browser_must_not_get(rig: Rig, context: BrowserContext) -> None:
    gw = rig.gw
    a, b = await gw.account(name="A"), await gw.account(name="B")
    sin = "+81311118888"
    await take_number(gw, a, sin, "sin")
    await rig.sim.inject_mo(CUSTOMER[1:], sin[1:], encode_gsm7("secret of A"), data_coding=0)
    [(mo,)] = await wait_for(lambda: gw.sql("SELECT uid FROM inbound_messages WHERE recipient = :r", r=sin))
    page = await sign_in(context, gw, b)
    response = await page.goto(f"{gw.base_url}/console/inbound/{mo}")
    assert response is not None and response.status == 404
    assert "secret of A" not in await page.content()
    # A form whose CSRF token was tampered with is refused, and nothing is created.
    await page.goto(f"{gw.base_url}/console/templates")
    await page.get_by_label("Name", exact=True).fill("forged")
    await page.get_by_label("Text, with").fill("forged")
    await page.locator("form[action='/console/templates'] input[name=csrf]").evaluate("e => e.value = 'x'")
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("alert")).to_contain_text("stale")
    assert await gw.sql("SELECT id FROM templates WHERE name = 'forged'") == []
    # An expired session: the next page is the sign-in form.
    async with gw.app[SESSIONS].begin() as s:
        await s.execute(update(ConsoleSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    await page.goto(f"{gw.base_url}/console/overview")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.url.endswith("/console/login")


async def test_keyboard_only_and_a_phone_screen(rig: Rig) -> None:
    """Signing in with the keyboard alone, the skip link first in the tab order, and no page
    wider than a 390 px phone screen (wide tables scroll inside their box)."""
    gw = rig.gw
    creds = await gw.account(name="Keyboard user")
    ctx = await rig.browser.new_context(
        viewport={"width": 390, "height": 780}, is_mobile=True, has_touch=True
    )
    try:
        page = await ctx.new_page()
        await page.goto(f"{gw.base_url}/console/login")
        # The SID field has the focus on arrival (autofocus: once the page has loaded, which
        # goto() does not wait for on its own; typing earlier lost the first keys).
        await expect(page.locator("#sid")).to_be_focused()
        await page.keyboard.type(creds.account.sid)
        await page.keyboard.press("Tab")
        await page.keyboard.type(creds.auth_token)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "main"
        for path in ("overview", "messages", "templates", "inbound", "numbers", "calls", "keys"):
            await page.goto(f"{gw.base_url}/console/{path}")
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (path, overflow)
    finally:
        await ctx.close()
