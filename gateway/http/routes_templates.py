"""SMS templates: accounts without the freeform flag send operator-approved texts only."""

from __future__ import annotations

import json
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema

from gateway.http.api import Json, Routes
from gateway.http.fields import documented, reason, words
from gateway.http.responses import Empty, Message, Msgid, Template
from gateway.http.routes_sms import MSGID, Outbound, SentDate
from gateway.keys import ACCOUNT, MESSAGES, TEMPLATES
from gateway.services.templates import MAX_CONTENT, MAX_NAME, placeholders

TEMPLATE_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "Template id (`template_id`)."}
routes = Routes("Templates", path_params={"msgid": MSGID, "uid": TEMPLATE_ID})


def _content(value: Any) -> str:
    content = words(value, MAX_CONTENT)
    reason(lambda: placeholders(content))
    return content


Name = Annotated[
    str,
    BeforeValidator(lambda v: words(v, MAX_NAME).strip()),
    documented(description=f"At most {MAX_NAME} characters.", minLength=1, maxLength=MAX_NAME),
]
Content = Annotated[
    str,
    BeforeValidator(_content),
    documented(
        description=f"At most {MAX_CONTENT} characters, `{{name}}` placeholders.",
        minLength=1,
        maxLength=MAX_CONTENT,
    ),
]


class NewTemplate(BaseModel):
    name: Name
    content: Content


class TemplateChange(BaseModel):
    """What is absent (or null) stays as it is."""

    name: Name | None = None
    content: Content | None = None


def _variables(value: Any) -> Any:
    if isinstance(value, str):  # form-encoded callers cannot nest: the object as a JSON string
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError("Expected a JSON object.") from None
    if not isinstance(value, dict):
        raise ValueError("Expected an object of name: value.")
    return value


VARIABLES = "Placeholder name -> value; exactly the template's placeholders."


class SendTemplate(Outbound):
    variables: Annotated[
        dict[str, Any],
        BeforeValidator(_variables),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "object", "additionalProperties": {"type": "string"}},
                    {"type": "string", "description": "In a form body: the object, encoded as JSON."},
                ],
                "description": VARIABLES,
            }
        ),
    ] = Field(default_factory=dict)


@routes.get("/sms/templates/", returns=list[Template])
async def list_templates(request: web.Request) -> Json:
    """List templates"""
    return await request.app[TEMPLATES].list(request[ACCOUNT].id)


@routes.post("/sms/templates/", status=201, returns=Template)
async def create_template(request: web.Request, body: NewTemplate) -> Json:
    """Create a template

    Created PENDING; the operator approves or rejects it."""
    return await request.app[TEMPLATES].create(request[ACCOUNT].id, body.name, body.content)


@routes.get("/sms/templates/messages/{msgid}/", returns=Message, no_slash=True)
async def get_template_message(request: web.Request) -> Json:
    """Status of a message sent from a template"""
    msgid = request.match_info["msgid"]
    return await request.app[MESSAGES].get(request[ACCOUNT].id, msgid, template_only=True)


@routes.get("/sms/templates/{uid}/", returns=Template, no_slash=True)
async def get_template(request: web.Request) -> Json:
    """A template"""
    return await request.app[TEMPLATES].get(request[ACCOUNT].id, request.match_info["uid"])


@routes.put("/sms/templates/{uid}/", returns=Template)
async def update_template(request: web.Request, body: TemplateChange) -> Json:
    """Change a template

    A changed `content` puts the template back to PENDING."""
    uid = request.match_info["uid"]
    return await request.app[TEMPLATES].update(request[ACCOUNT].id, uid, body.name, body.content)


@routes.delete("/sms/templates/{uid}/", returns=Empty)
async def delete_template(request: web.Request) -> Json:
    """Delete a template"""
    await request.app[TEMPLATES].delete(request[ACCOUNT].id, request.match_info["uid"])
    return {}


@routes.post("/sms/templates/{uid}/messages/", status=201, returns=list[Msgid], errors={422})
async def send_template(request: web.Request, body: SendTemplate) -> Json:
    """Send an SMS from an approved template

    A template that is not APPROVED is 400 `template`; missing or extra variables are 422."""
    account_id = request[ACCOUNT].id
    uid = request.match_info["uid"]
    template, text = await request.app[TEMPLATES].approved_text(account_id, uid, body.variables)
    msgid = await request.app[MESSAGES].create(
        body.outbound(account_id, text, template.id), body_field="variables"
    )
    return [{"msgid": msgid}]


@routes.get("/sms/templates/{uid}/messages/", returns=list[Message])
async def list_template_messages(request: web.Request, query: SentDate) -> Json:
    """Messages sent from a template"""
    account_id = request[ACCOUNT].id
    template = await request.app[TEMPLATES].get_row(account_id, request.match_info["uid"])
    return await request.app[MESSAGES].list(account_id, query.sent_date, template_id=template.id)
