"""The customer's console pages. Each reads or changes only the signed-in account's rows: the
account id comes from the session, never from the request, and the services filter by it (an
id of another account is the same 404 as an unknown one). Forms are validated with the REST
API's own request models, and changes go through the same services as the REST routes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel

from gateway.http.api import validated
from gateway.http.console.shared import (
    CONSOLE,
    Pages,
    clear_session_cookie,
    current_session,
    login_form,
    render,
    see_other,
    session_of,
    set_session_cookie,
)
from gateway.http.ratelimit import AUTH_FAILURES, client_key, retry_after_seconds
from gateway.http.routes_inbound import Reply
from gateway.http.routes_sins import DinUrls, NewAutoReply, SinUrls
from gateway.http.routes_templates import NewTemplate, SendTemplate
from gateway.keys import ACCOUNTS, CALLS, INBOUND, MESSAGES, NUMBERS, REPORTS, TEMPLATES
from gateway.services import validation
from gateway.services.errors import ApiError, FieldErrors, not_found
from gateway.services.numbers import Kind
from gateway.services.reports import MESSAGE_STATUSES, SEARCH_LIMIT, MessageSearch
from gateway.services.templates import placeholders

pages = Pages()
P = "/console"
MAX_PAGE = 10_000


def _form(form: Mapping[str, Any], *names: str) -> dict[str, str]:
    """The named text fields (a file or a missing field reads as empty)."""
    return {n: v if isinstance(v := form.get(n), str) else "" for n in names}


def checked(model: type[BaseModel], data: Mapping[str, Any], request: web.Request) -> Any:
    """`data` through the REST API's model for the same action: FieldErrors names each field."""
    return validated(model, data, request)


def _errors(exc: FieldErrors) -> dict[str, str]:
    return {k: v[0] if isinstance(v, list) and v else str(v) for k, v in exc.body.items()}


# -- signing in -------------------------------------------------------------------------------


async def throttled(request: web.Request) -> int:
    """Seconds this address must wait before another sign-in attempt (0: go ahead): the same
    bucket as failed API credentials."""
    failures = request.app.get(AUTH_FAILURES)
    wait = failures.wait(client_key(request.remote)) if failures is not None else 0.0
    return retry_after_seconds(wait) if wait > 0 else 0


def failed_attempt(request: web.Request) -> None:
    if (failures := request.app.get(AUTH_FAILURES)) is not None:
        failures.take(client_key(request.remote))


async def end_previous(request: web.Request) -> None:
    """Signing in again in the same browser ends the session it had (whoever it was)."""
    if (old := await current_session(request)) is not None:
        await request.app[CONSOLE].sessions.end(old)


def login_page_with(
    request: web.Request, template: str, *, error: str = "", status: int = 200
) -> web.Response:
    return login_form(request, template, {"error": error}, status=status)


@pages.get(P, "public")
async def root(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is not None and session.role == "operator":
        return see_other(f"{P}/operator/")
    return see_other(f"{P}/overview" if session is not None else f"{P}/login")


@pages.get(P + "/", "public")
async def root_slash(request: web.Request) -> web.StreamResponse:
    return await root(request)


@pages.get(P + "/login", "public")
async def login_page(request: web.Request) -> web.StreamResponse:
    return login_page_with(request, "login.html")


@pages.post(P + "/login", "public")
async def login(request: web.Request) -> web.StreamResponse:
    if wait := await throttled(request):
        response = login_page_with(
            request, "login.html", error=f"Too many failed sign-ins: wait {wait} s.", status=429
        )
        response.headers["Retry-After"] = str(wait)
        return response
    f = _form(await request.post(), "sid", "token")
    account = await request.app[ACCOUNTS].authenticate(f["sid"].strip(), f["token"].strip())
    if account is None:
        failed_attempt(request)
        return login_page_with(request, "login.html", error="Unknown SID or auth token.", status=401)
    await end_previous(request)
    token, _ = await request.app[CONSOLE].sessions.start("customer", account_id=account.id)
    response = see_other(f"{P}/overview")
    set_session_cookie(request, response, token)
    return response


@pages.post(P + "/logout", "customer")
async def logout(request: web.Request) -> web.StreamResponse:
    await request.app[CONSOLE].sessions.end(session_of(request))
    response = see_other(f"{P}/login")
    clear_session_cookie(request, response)
    return response


# -- overview and messages ------------------------------------------------------------------


@pages.get(P + "/overview", "customer")
async def overview(request: web.Request) -> web.StreamResponse:
    data = await request.app[REPORTS].overview(session_of(request).account_id)
    return render(request, "overview.html", {"o": data})


def _search(query: Mapping[str, str]) -> tuple[MessageSearch, dict[str, str]]:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if recipient := query.get("recipient", "").strip():
        try:
            values["recipient"] = validation.e164("recipient", recipient)
        except FieldErrors as exc:
            errors.update(_errors(exc))
    if (status := query.get("status", "")) and status not in MESSAGE_STATUSES:
        errors["status"] = "Unknown status."
    elif status:
        values["status"] = status
    for name, key in (("from", "day_from"), ("to", "day_to")):
        if text := query.get(name, "").strip():
            try:
                values[key] = date.fromisoformat(text)
            except ValueError:
                errors[name] = "Enter a date as YYYY-MM-DD."
    if tag := query.get("tag", "").strip():
        values["tag"] = tag[:64]
    if msgid := query.get("msgid", "").strip():
        values["msgid"] = msgid[:64]
    page = query.get("page", "0")
    if page.isascii() and page.isdigit() and int(page) <= MAX_PAGE:
        values["page"] = int(page)
    else:
        errors["page"] = f"A page number from 0 to {MAX_PAGE}."
    return MessageSearch(**values), errors


@pages.get(P + "/messages", "customer")
async def messages(request: web.Request) -> web.StreamResponse:
    search, errors = _search(request.query)
    rows = (
        [] if errors else await request.app[REPORTS].search_messages(session_of(request).account_id, search)
    )
    older = None
    if len(rows) == SEARCH_LIMIT:
        older = "?" + urlencode({**request.query, "page": str(search.page + 1)})
    context = {
        "rows": rows,
        "q": request.query,
        "errors": errors,
        "statuses": MESSAGE_STATUSES,
        "older": older,
    }
    return render(request, "messages.html", context)


@pages.get(P + "/messages/{msgid}", "customer")
async def message(request: web.Request) -> web.StreamResponse:
    t = await request.app[REPORTS].timeline(session_of(request).account_id, request.match_info["msgid"])
    return render(request, "message.html", {"t": t})


# -- templates --------------------------------------------------------------------------------


async def _templates_page(
    request: web.Request, errors: Mapping[str, str] | None = None, form: Mapping[str, str] | None = None
) -> web.Response:
    rows = await request.app[TEMPLATES].list(session_of(request).account_id)
    status = 400 if errors else 200
    return render(
        request, "templates.html", {"rows": rows, "errors": errors or {}, "form": form or {}}, status=status
    )


@pages.get(P + "/templates", "customer")
async def templates(request: web.Request) -> web.StreamResponse:
    return await _templates_page(request)


@pages.post(P + "/templates", "customer")
async def create_template(request: web.Request) -> web.StreamResponse:
    f = _form(await request.post(), "name", "content")
    try:
        body = checked(NewTemplate, f, request)
    except FieldErrors as exc:
        return await _templates_page(request, _errors(exc), f)
    await request.app[TEMPLATES].create(session_of(request).account_id, body.name, body.content)
    return see_other(f"{P}/templates")


async def _send_page(
    request: web.Request, errors: Mapping[str, str] | None = None, form: Mapping[str, str] | None = None
) -> web.Response:
    row = await request.app[TEMPLATES].get_row(session_of(request).account_id, request.match_info["uid"])
    context = {"t": row, "names": placeholders(row.content), "errors": errors or {}, "form": form or {}}
    return render(request, "send.html", context, status=400 if errors else 200)


@pages.get(P + "/templates/{uid}/send", "customer")
async def send_page(request: web.Request) -> web.StreamResponse:
    return await _send_page(request)


@pages.post(P + "/templates/{uid}/send", "customer")
async def send(request: web.Request) -> web.StreamResponse:
    account_id = session_of(request).account_id
    uid = request.match_info["uid"]
    template = await request.app[TEMPLATES].get_row(account_id, uid)
    post = await request.post()
    f = _form(post, "sender", "recipient", "tags", "callbackurl")
    names = placeholders(template.content)
    variables = _form(post, *(f"var_{n}" for n in names))
    try:
        body = checked(SendTemplate, {**f, "variables": {n: variables[f"var_{n}"] for n in names}}, request)
        _, text = await request.app[TEMPLATES].approved_text(account_id, uid, body.variables)
        msgid = await request.app[MESSAGES].create(
            body.outbound(account_id, text, template.id), body_field="variables"
        )
    except FieldErrors as exc:
        return await _send_page(request, _errors(exc), {**f, **variables})
    except ApiError as exc:
        if exc.status != 422:  # missing or extra variables
            raise
        bad = {f"var_{k}": v[0] for k, v in exc.body.get("variables", {}).items()}
        return await _send_page(request, bad, {**f, **variables})
    return see_other(f"{P}/messages/{msgid}")


# -- inbound ----------------------------------------------------------------------------------


@pages.get(P + "/inbound", "customer")
async def inbound(request: web.Request) -> web.StreamResponse:
    rows = await request.app[REPORTS].conversations(session_of(request).account_id)
    return render(request, "inbound.html", {"rows": rows})


async def _thread_page(request: web.Request, error: str = "", text: str = "") -> web.Response:
    mo, items = await request.app[REPORTS].thread(session_of(request).account_id, request.match_info["uid"])
    context = {"mo": mo, "items": items, "error": error, "text": text}
    return render(request, "thread.html", context, status=400 if error else 200)


@pages.get(P + "/inbound/{uid}", "customer")
async def thread(request: web.Request) -> web.StreamResponse:
    return await _thread_page(request)


@pages.post(P + "/inbound/{uid}/reply", "customer")
async def reply(request: web.Request) -> web.StreamResponse:
    f = _form(await request.post(), "message")
    uid = request.match_info["uid"]
    try:
        body = checked(Reply, f, request)
        await request.app[INBOUND].reply(session_of(request).account_id, uid, body.message)
    except FieldErrors as exc:
        return await _thread_page(request, "; ".join(_errors(exc).values()), f["message"])
    return see_other(f"{P}/inbound/{uid}")


@pages.get(P + "/optouts", "customer")
async def optouts(request: web.Request) -> web.StreamResponse:
    rows = await request.app[REPORTS].opt_outs(session_of(request).account_id)
    return render(request, "optouts.html", {"rows": rows})


# -- numbers ----------------------------------------------------------------------------------


async def _numbers_page(
    request: web.Request, *, errors: Mapping[str, str] | None = None, test: Any = None, tested: str = ""
) -> web.Response:
    account_id = session_of(request).account_id
    numbers = request.app[NUMBERS]
    sins = await numbers.list_subscriptions(account_id, "sin")
    context = {
        "sins": sins,
        "rules": {s["sin_uid"]: await numbers.list_rules(account_id, s["sin_uid"]) for s in sins},
        "dins": await numbers.list_subscriptions(account_id, "din"),
        "errors": errors or {},
        "test": test,
        "tested": tested,
    }
    return render(request, "numbers.html", context, status=400 if errors else 200)


@pages.get(P + "/numbers", "customer")
async def numbers_page(request: web.Request) -> web.StreamResponse:
    return await _numbers_page(request)


def _kind(request: web.Request) -> Kind:
    kind = request.match_info["kind"]
    if kind == "sin":
        return "sin"
    if kind == "din":
        return "din"
    raise not_found()


@pages.post(P + "/numbers/{kind}/{uid}", "customer")
async def set_urls(request: web.Request) -> web.StreamResponse:
    kind, uid = _kind(request), request.match_info["uid"]
    account_id = session_of(request).account_id
    post = await request.post()
    if kind == "din":
        f = _form(post, "action_url", "voicemail_url")
        model: type[BaseModel] = DinUrls
    else:
        f = _form(post, "action_url", "webhook_format")
        model = SinUrls
    await request.app[NUMBERS].get_subscription(account_id, kind, uid)  # 404 before validation
    try:
        body = checked(model, f, request)
    except FieldErrors as exc:
        return await _numbers_page(
            request, errors={uid: "; ".join(f"{k}: {v}" for k, v in _errors(exc).items())}
        )
    await request.app[NUMBERS].set_action_url(
        account_id,
        kind,
        uid,
        body.action_url,
        getattr(body, "voicemail_url", None),
        getattr(body, "webhook_format", None),
    )
    return see_other(f"{P}/numbers")


@pages.post(P + "/numbers/sin/{uid}/autoreplies", "customer")
async def add_auto_reply(request: web.Request) -> web.StreamResponse:
    uid = request.match_info["uid"]
    account_id = session_of(request).account_id
    await request.app[NUMBERS].get_subscription(account_id, "sin", uid)  # 404 before validation
    f = _form(await request.post(), "match", "pattern", "reply")
    try:
        body = checked(NewAutoReply, f, request)
        await request.app[NUMBERS].add_rule(account_id, uid, body.match, body.pattern, body.reply)
    except FieldErrors as exc:
        problems = "; ".join(f"{k}: {v}" for k, v in _errors(exc).items())
        return await _numbers_page(request, errors={uid: problems})
    return see_other(f"{P}/numbers")


@pages.post(P + "/numbers/sin/{uid}/autoreplies/{rule_id}/delete", "customer")
async def delete_auto_reply(request: web.Request) -> web.StreamResponse:
    uid, rule_id = request.match_info["uid"], request.match_info["rule_id"]
    await request.app[NUMBERS].delete_rule(session_of(request).account_id, uid, rule_id)
    return see_other(f"{P}/numbers")


@pages.post(P + "/numbers/din/{uid}/test", "customer")
async def test_action_url(request: web.Request) -> web.StreamResponse:
    """Fetch the DIN's action_url as a call would (same URL policy, limits and query) and show
    the parsed actions or the script's errors."""
    uid = request.match_info["uid"]
    sub = await request.app[NUMBERS].get_subscription(session_of(request).account_id, "din", uid)
    din = "+" + str(sub["din"])
    check = await request.app[CALLS].check_script(sub["action_url"], din, din)
    return await _numbers_page(request, test=check, tested=uid)


# -- calls and voicemails --------------------------------------------------------------------


@pages.get(P + "/calls", "customer")
async def calls(request: web.Request) -> web.StreamResponse:
    account_id = session_of(request).account_id
    reports = request.app[REPORTS]
    return render(
        request,
        "calls.html",
        {
            "calls": await reports.calls(account_id, 200),
            "voicemails": await reports.voicemails(account_id, 200),
        },
    )


@pages.get(P + "/voicemails/{vid}/audio", "customer")
async def voicemail_audio(request: web.Request) -> web.StreamResponse:
    v, _ = await request.app[REPORTS].voicemail(session_of(request).account_id, request.match_info["vid"])
    if not await asyncio.to_thread(os.path.isfile, v.path):
        raise not_found()
    headers = {"Content-Type": "audio/wav"}
    if request.query.get("download"):
        headers["Content-Disposition"] = f'attachment; filename="voicemail-{v.uid}.wav"'
    return web.FileResponse(v.path, headers=headers)


# -- keys -------------------------------------------------------------------------------------


@pages.get(P + "/keys", "customer")
async def keys(request: web.Request) -> web.StreamResponse:
    return render(request, "keys.html", {})


@pages.post(P + "/keys/token", "customer")
async def rotate_token(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    assert session.account is not None
    token = await request.app[ACCOUNTS].rotate_token(session.account.sid)
    # Whoever signed in with the old token is signed out; this browser stays.
    await request.app[CONSOLE].sessions.end_others(session.account_id, keep=session.token_hash)
    return render(request, "keys.html", {"new_token": token})


@pages.post(P + "/keys/webhook-secret", "customer")
async def rotate_webhook_secret(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    assert session.account is not None
    secret = await request.app[ACCOUNTS].rotate_webhook_secret(session.account.sid)
    return render(request, "keys.html", {"new_secret": secret})
