"""Xoxzo-compatible SMS routes. Paths end with `/`; the xoxzo-cloudpy client reads a message
without the trailing slash, so both forms are routed."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.egress.policy import SsrfPolicy
from gateway.http.errors import json_response
from gateway.http.params import FieldCollector, optional_str, read_params
from gateway.keys import ACCOUNT, CONFIG, MESSAGES, TEMPLATES, URL_POLICY
from gateway.services import validation as v
from gateway.services.errors import FieldErrors, forbidden
from gateway.services.messages import OutboundRequest, parse_sent_date_query
from gateway.services.templates import render

routes = web.RouteTableDef()


def _outbound(
    account_id: int,
    p: dict[str, Any],
    text: str,
    c: FieldCollector,
    policy: SsrfPolicy,
    template_id: int | None = None,
) -> OutboundRequest:
    return OutboundRequest(
        account_id=account_id,
        recipient=c.check(lambda: v.e164("recipient", optional_str(p, "recipient")), ""),
        sender=c.check(lambda: v.sender(optional_str(p, "sender")), ""),
        text=text,
        callbackurl=c.check(lambda: v.http_url("callbackurl", optional_str(p, "callbackurl"), policy), None),
        tags=tuple(c.check(lambda: v.tags(optional_str(p, "tags")), [])),
        track_link=c.check(lambda: v.boolean("track_link", optional_str(p, "track_link")), False),
        lt_callbackurl=c.check(
            lambda: v.http_url("lt_callbackurl", optional_str(p, "lt_callbackurl"), policy), None
        ),
        template_id=template_id,
    )


@routes.post("/sms/messages/")
async def send_sms(request: web.Request) -> web.Response:
    account = request[ACCOUNT]
    params = await read_params(request)
    if not account.freeform:
        raise forbidden("Freeform SMS is not enabled for this account; send an approved template.")
    c = FieldCollector()
    text = c.check(lambda: v.message_text("message", optional_str(params, "message")), "")
    req = _outbound(account.id, params, text, c, request.app[URL_POLICY])
    c.raise_if_any()
    msgid = await request.app[MESSAGES].create(req)
    return json_response([{"msgid": msgid}], status=201)


@routes.get("/sms/messages/")
async def list_sms(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG].sms
    flt = parse_sent_date_query(request.query_string, datetime.now(UTC).date(), cfg.retention_days)
    return json_response(await request.app[MESSAGES].list(request[ACCOUNT].id, flt))


@routes.get("/sms/messages/{msgid}/")
@routes.get("/sms/messages/{msgid}")
async def get_sms(request: web.Request) -> web.Response:
    return json_response(await request.app[MESSAGES].get(request[ACCOUNT].id, request.match_info["msgid"]))


@routes.get("/sms/templates/")
async def list_templates(request: web.Request) -> web.Response:
    return json_response(await request.app[TEMPLATES].list(request[ACCOUNT].id))


@routes.post("/sms/templates/")
async def create_template(request: web.Request) -> web.Response:
    params = await read_params(request)
    out = await request.app[TEMPLATES].create(request[ACCOUNT].id, params.get("name"), params.get("content"))
    return json_response(out, status=201)


@routes.get("/sms/templates/messages/{msgid}/")
@routes.get("/sms/templates/messages/{msgid}")
async def get_template_message(request: web.Request) -> web.Response:
    out = await request.app[MESSAGES].get(
        request[ACCOUNT].id, request.match_info["msgid"], template_only=True
    )
    return json_response(out)


@routes.get("/sms/templates/{uid}/")
@routes.get("/sms/templates/{uid}")
async def get_template(request: web.Request) -> web.Response:
    return json_response(await request.app[TEMPLATES].get(request[ACCOUNT].id, request.match_info["uid"]))


@routes.put("/sms/templates/{uid}/")
async def update_template(request: web.Request) -> web.Response:
    params = await read_params(request)
    out = await request.app[TEMPLATES].update(request[ACCOUNT].id, request.match_info["uid"], params)
    return json_response(out)


@routes.delete("/sms/templates/{uid}/")
async def delete_template(request: web.Request) -> web.Response:
    await request.app[TEMPLATES].delete(request[ACCOUNT].id, request.match_info["uid"])
    return json_response({})


@routes.post("/sms/templates/{uid}/messages/")
async def send_template(request: web.Request) -> web.Response:
    account = request[ACCOUNT]
    params = await read_params(request)
    template = await request.app[TEMPLATES].get_row(account.id, request.match_info["uid"])
    c = FieldCollector()
    req = _outbound(account.id, params, "", c, request.app[URL_POLICY], template.id)
    c.raise_if_any()
    if template.status != "APPROVED":
        raise FieldErrors.one(
            "template", f"Template is {template.status}; only APPROVED templates can be sent."
        )
    variables = params.get("variables", {})
    if isinstance(variables, str):  # form-encoded callers cannot nest; accept a JSON string
        try:
            variables = json.loads(variables) if variables.strip() else {}
        except ValueError:
            raise FieldErrors.one("variables", "Expected a JSON object.") from None
    if not isinstance(variables, dict):
        raise FieldErrors.one("variables", "Expected an object of name: value.")
    text = render(template.content, variables)
    msgid = await request.app[MESSAGES].create(dataclasses.replace(req, text=text), body_field="variables")
    return json_response([{"msgid": msgid}], status=201)


@routes.get("/sms/templates/{uid}/messages/")
async def list_template_messages(request: web.Request) -> web.Response:
    account = request[ACCOUNT]
    template = await request.app[TEMPLATES].get_row(account.id, request.match_info["uid"])
    cfg = request.app[CONFIG].sms
    flt = parse_sent_date_query(request.query_string, datetime.now(UTC).date(), cfg.retention_days)
    return json_response(await request.app[MESSAGES].list(account.id, flt, template_id=template.id))
