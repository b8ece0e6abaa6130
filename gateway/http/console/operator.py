"""The operator's console pages: accounts, template approval, the number inventory, SMSC binds,
the webhook backlog and usage. The same services as the `gateway` command's operator actions."""

from __future__ import annotations

import asyncio
import hmac
import re
from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web

from gateway.http.console.customer import _form, failed_attempt, login_page_with, throttled
from gateway.http.console.passwords import verify_password
from gateway.http.console.shared import (
    CONSOLE,
    Pages,
    render,
    see_other,
    signed_in,
    signed_out,
)
from gateway.keys import ACCOUNTS, CONFIG, NODE_ID, NUMBERS, REPORTS, SESSIONS, TEMPLATES
from gateway.services.dialing import (
    RIGHTS_COLUMNS,
    get_rights,
    is_phone_number,
    parse_prefixes,
    update_rights,
)
from gateway.services.errors import not_found
from gateway.services.number_import import NumberImportError, parse_numbers_csv
from gateway.services.reports import usage_csv
from gateway.services.senders import SenderService
from gateway.services.smpp_credentials import (
    IssuedCredentials,
    credential_info,
    issue_credentials,
    revoke_credentials,
)

pages = Pages()
P = "/console/operator"
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
# A password the configured hash is checked against when the user name is wrong, so that a wrong
# name takes as long as a wrong password.
_DUMMY_HASH = "scrypt$15$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


@pages.get(P + "/login", "public")
async def login_page(request: web.Request) -> web.StreamResponse:
    enabled = bool(request.app[CONFIG].console.operator_password_hash)
    return login_page_with(
        request, "operator_login.html", error="" if enabled else "Operator sign-in is not configured."
    )


@pages.post(P + "/login", "public")
async def login(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG].console
    if wait := await throttled(request):
        response = login_page_with(
            request, "operator_login.html", error=f"Too many failed sign-ins: wait {wait} s.", status=429
        )
        response.headers["Retry-After"] = str(wait)
        return response
    f = _form(await request.post(), "username", "password")
    name_ok = hmac.compare_digest(f["username"].encode(), cfg.operator_username.encode())
    stored = cfg.operator_password_hash if name_ok else _DUMMY_HASH
    password_ok = bool(cfg.operator_password_hash) and await asyncio.to_thread(
        verify_password, f["password"], stored
    )
    if not (name_ok and password_ok):
        failed_attempt(request)
        return login_page_with(
            request, "operator_login.html", error="Unknown user name or password.", status=401
        )
    return await signed_in(request, f"{P}/", "operator", operator=cfg.operator_username)


@pages.post(P + "/logout", "operator")
async def logout(request: web.Request) -> web.StreamResponse:
    return await signed_out(request, f"{P}/login")


# -- accounts ---------------------------------------------------------------------------------


async def _accounts_page(request: web.Request, **context: object) -> web.Response:
    status = 400 if context.get("error") else 200
    return render(
        request, "op_accounts.html", {"rows": await request.app[ACCOUNTS].list(), **context}, status=status
    )


@pages.get(P + "/", "operator")
async def accounts(request: web.Request) -> web.StreamResponse:
    return await _accounts_page(request)


@pages.post(P + "/accounts", "operator")
async def create_account(request: web.Request) -> web.StreamResponse:
    post = await request.post()
    name = _form(post, "name")["name"].strip()
    if not name or len(name) > 200 or not name.isprintable():
        return await _accounts_page(
            request, error="Give the account a name (at most 200 printable characters)."
        )
    creds = await request.app[ACCOUNTS].create(name, freeform=post.get("freeform") == "on")
    return await _accounts_page(request, created=creds)


DEFAULT = "default"  # as `gateway accounts set`: back to the global setting


def _rights_form(
    values: dict[str, str], current: dict[str, object]
) -> tuple[dict[str, object], list[str], list[str]]:
    """The form's dialing rights as update_rights takes them (columns, callers to add and to
    remove), or ValueError naming the first bad field."""
    columns: dict[str, object] = {}
    prefixes = values["outbound_allow_prefixes"].strip()
    try:
        columns["outbound_allow_prefixes"] = (
            None if prefixes == DEFAULT else ",".join(parse_prefixes(prefixes))
        )
    except ValueError as exc:
        raise ValueError(f"outbound_allow_prefixes: {exc}") from None
    for name in ("outbound_max_concurrent", "outbound_max_per_minute"):
        text = values[name].strip()
        if text == DEFAULT:
            columns[name] = None
        elif text.isascii() and text.isdigit() and len(text) <= 6:
            columns[name] = int(text)
        else:
            raise ValueError(f"{name}: a number >= 0, or {DEFAULT!r}")
    callers = [c.strip() for c in values["verified_callers"].split() if c.strip()]
    for caller in callers:
        if not is_phone_number(caller):
            raise ValueError(f"verified_callers: {caller[:32]!r} is not a valid E.164 number")
    had = set(current["verified_callers"])  # type: ignore[call-overload]
    return columns, sorted(set(callers) - had), sorted(had - set(callers))


async def _account_page(
    request: web.Request, *, error: str = "", issued: IssuedCredentials | None = None
) -> web.Response:
    sid = request.match_info["sid"]
    info = await request.app[ACCOUNTS].get(sid)
    rights = await get_rights(request.app[SESSIONS], sid)
    if info is None or rights is None:
        raise not_found()
    listed = await SenderService(request.app[SESSIONS]).list(sid)
    senders, sins = listed if listed is not None else ([], [])
    context = {
        "a": info,
        "rights": rights,
        "senders": senders,
        "sins": sins,
        "error": error,
        "DEFAULT": DEFAULT,
        "smpp": await credential_info(request.app[SESSIONS], sid),
        "issued": issued,  # a new password: on this answer only
    }
    return render(request, "op_account.html", context, status=400 if error else 200)


@pages.get(P + "/accounts/{sid}", "operator")
async def account(request: web.Request) -> web.StreamResponse:
    return await _account_page(request)


@pages.post(P + "/accounts/{sid}/dialing", "operator")
async def set_dialing(request: web.Request) -> web.StreamResponse:
    """The account's toll-fraud overrides, as `gateway accounts set --outbound-...`."""
    sid = request.match_info["sid"]
    current = await get_rights(request.app[SESSIONS], sid)
    if current is None:
        raise not_found()
    f = _form(await request.post(), *RIGHTS_COLUMNS, "verified_callers")
    try:
        columns, add, remove = _rights_form(f, current)
    except ValueError as exc:
        return await _account_page(request, error=str(exc))
    await update_rights(request.app[SESSIONS], sid, columns, add, remove)  # type: ignore[arg-type]
    return see_other(f"{P}/accounts/{sid}")


_N = TypeVar("_N", int, float)


@pages.post(P + "/accounts/{sid}/ratelimit", "operator")
async def set_rate_limit(request: web.Request) -> web.StreamResponse:
    """The account's API rate limit, as `gateway accounts set --rate --burst`."""
    sid = request.match_info["sid"]
    f = _form(await request.post(), "rate", "burst")
    try:
        rate = _optional(f["rate"], "rate", float)
        burst = _optional(f["burst"], "burst", int)
        info = await request.app[ACCOUNTS].set_rate_limit(sid, rate, burst)
    except ValueError as exc:
        if await request.app[ACCOUNTS].get(sid) is None:
            raise not_found() from None
        return await _account_page(request, error=str(exc))
    if info is None:
        raise not_found()
    return see_other(f"{P}/accounts/{sid}")


def _optional(text: str, name: str, kind: type[_N]) -> _N | None:
    """A form's number, or None for "default" (the gateway-wide setting)."""
    text = text.strip()
    if text == DEFAULT:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name}: a number, or {DEFAULT!r}") from None


@pages.post(P + "/accounts/{sid}/senders/{action:add|remove}", "operator")
async def set_senders(request: web.Request) -> web.StreamResponse:
    """The account's allowed sender ids, as `gateway accounts senders SID add|remove`."""
    sid, action = request.match_info["sid"], request.match_info["action"]
    sender = _form(await request.post(), "sender")["sender"].strip()
    senders = SenderService(request.app[SESSIONS])
    try:
        found = await (senders.add if action == "add" else senders.remove)(sid, [sender])
    except ValueError as exc:
        if await request.app[ACCOUNTS].get(sid) is None:
            raise not_found() from None
        return await _account_page(request, error=f"sender: {exc}")
    if not found:
        raise not_found()
    return see_other(f"{P}/accounts/{sid}")


@pages.post(P + "/accounts/{sid}/smpp/{action:issue|revoke}", "operator")
async def smpp_credentials(request: web.Request) -> web.StreamResponse:
    """The account's login to the SMPP server, as `gateway accounts smpp-credentials SID`: a new
    system_id and password (the old pair stops binding; the password is shown on this answer
    only), or none at all."""
    sid, sessions = request.match_info["sid"], request.app[SESSIONS]
    if request.match_info["action"] == "revoke":
        if not await revoke_credentials(sessions, sid):
            raise not_found()
        return see_other(f"{P}/accounts/{sid}")
    issued = await issue_credentials(sessions, sid)
    if issued is None:
        raise not_found()
    return await _account_page(request, issued=issued)


@pages.post(P + "/accounts/{sid}/{action:disable|enable|freeform-on|freeform-off}", "operator")
async def account_action(request: web.Request) -> web.StreamResponse:
    sid, action = request.match_info["sid"], request.match_info["action"]
    accounts_ = request.app[ACCOUNTS]
    if action in ("disable", "enable"):
        info = await accounts_.set_disabled(sid, action == "disable")
        if info is not None and info.disabled:
            await request.app[CONSOLE].sessions.end_account(info.id)
    else:
        info = await accounts_.update_flags(sid, freeform=action == "freeform-on")
    if info is None:
        raise not_found()
    return see_other(f"{P}/accounts/{sid}" if request.query.get("back") == "account" else f"{P}/")


# -- templates --------------------------------------------------------------------------------


@pages.get(P + "/templates", "operator")
async def pending_templates(request: web.Request) -> web.StreamResponse:
    return render(request, "op_templates.html", {"rows": await request.app[REPORTS].pending_templates()})


@pages.post(P + "/templates/{uid}/{action}", "operator")
async def decide_template(request: web.Request) -> web.StreamResponse:
    status = {"approve": "APPROVED", "reject": "REJECTED"}.get(request.match_info["action"])
    if status is None:
        raise not_found()
    await request.app[TEMPLATES].set_status(request.match_info["uid"], status)
    return see_other(f"{P}/templates")


# -- numbers ----------------------------------------------------------------------------------


async def _numbers_page(
    request: web.Request, *, errors: list[str] | None = None, result: object = None
) -> web.Response:
    rows = await request.app[NUMBERS].list_inventory()
    return render(
        request,
        "op_numbers.html",
        {"rows": rows, "errors": errors or [], "result": result},
        status=400 if errors else 200,
    )


@pages.get(P + "/numbers", "operator")
async def numbers(request: web.Request) -> web.StreamResponse:
    return await _numbers_page(request)


@pages.post(P + "/numbers", "operator")
async def import_numbers(request: web.Request) -> web.StreamResponse:
    """The CSV as `gateway numbers import` reads it: all or nothing, every bad line named."""
    upload = (await request.post()).get("file")
    data = upload.file.read() if isinstance(upload, web.FileField) else b""
    if not data:
        return await _numbers_page(request, errors=["Choose a CSV file to import."])
    try:
        result = await request.app[NUMBERS].import_numbers(parse_numbers_csv(data))
    except NumberImportError as exc:
        return await _numbers_page(
            request, errors=[*exc.errors, f"{len(exc.errors)} error(s); nothing imported"]
        )
    return await _numbers_page(request, result=result)


# -- SMSC binds, webhooks, usage ---------------------------------------------------------------


@pages.get(P + "/smsc", "operator")
async def smsc(request: web.Request) -> web.StreamResponse:
    """Every node's binds, as each node last wrote them to the database."""
    now = datetime.now(UTC)
    rows = [
        {"b": b, "state": "stale" if b.stale_after < now else "bound" if b.bound else "down"}
        for b in await request.app[REPORTS].smsc_binds()
    ]
    return render(request, "op_smsc.html", {"rows": rows, "node": request.app[NODE_ID]})


@pages.get(P + "/webhooks", "operator")
async def webhooks(request: web.Request) -> web.StreamResponse:
    totals, *hosts = await request.app[REPORTS].webhook_backlog()
    return render(request, "op_webhooks.html", {"totals": totals["totals"], "hosts": hosts})


def _month(request: web.Request) -> str:
    month = request.query.get("month") or datetime.now(UTC).strftime("%Y-%m")
    if not _MONTH.fullmatch(month):
        raise not_found()
    return month


@pages.get(P + "/usage", "operator")
async def usage(request: web.Request) -> web.StreamResponse:
    month = _month(request)
    return render(request, "op_usage.html", {"month": month, "rows": await request.app[REPORTS].usage(month)})


@pages.get(P + "/usage.csv", "operator")
async def usage_export(request: web.Request) -> web.StreamResponse:
    month = _month(request)
    body = usage_csv(month, await request.app[REPORTS].usage(month))
    return web.Response(
        text=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="usage-{month}.csv"'},
    )
