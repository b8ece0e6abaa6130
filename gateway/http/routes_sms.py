"""Xoxzo-compatible SMS routes. Paths end with `/`; the xoxzo-cloudpy client reads a message
without the trailing slash, so both forms are routed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field, PlainValidator, ValidationInfo, WithJsonSchema

from gateway.http.api import Json, Query, Routes
from gateway.http.fields import E164, Flag, MessageText, Sender, Tags, Url, reason, request_of
from gateway.http.responses import Message, Msgid
from gateway.keys import ACCOUNT, CONFIG, MESSAGES
from gateway.services.errors import forbidden
from gateway.services.messages import DateFilter, OutboundRequest, parse_sent_date_query

HEX32 = "^[0-9a-f]{32}$"
MSGID = {"type": "string", "pattern": HEX32, "description": "Message id."}
routes = Routes("SMS", path_params={"msgid": MSGID})


class Outbound(BaseModel):
    """What every SMS send takes besides its text."""

    recipient: E164 = Field(description="E.164, e.g. +818012345678.")
    sender: Sender = Field(
        description="1-11 letters, digits and single spaces with at least one letter, or a number of at"
        " most 15 digits: one the operator allowed for your account, or one of your SINs."
    )
    callbackurl: Url = Field(None, description="Receives a signed POST on every status change.")
    tags: Tags = ()
    track_link: Flag = Field(False, description="`true`: URLs in the text become tracked short links.")
    lt_callbackurl: Url = Field(None, description="Receives a signed POST on a tracked link's first access.")

    def outbound(self, account_id: int, text: str, template_id: int | None = None) -> OutboundRequest:
        fields = self.model_dump(include=set(Outbound.model_fields))
        return OutboundRequest(account_id=account_id, text=text, template_id=template_id, **fields)


class SendSms(Outbound):
    message: MessageText = Field(description="UTF-8 text; GSM 03.38 when possible, else UCS-2.")


def _sent_date(raw: Any, info: ValidationInfo) -> DateFilter | None:
    retention = request_of(info).app[CONFIG].sms.retention_days
    return reason(lambda: parse_sent_date_query(raw, datetime.now(UTC).date(), retention))


class SentDate(Query):
    """Xoxzo's filter is the raw query `sent_date<op>YYYY-mm-dd`, not a name=value pair."""

    sent_date: Annotated[
        DateFilter | None, PlainValidator(_sent_date), WithJsonSchema({"type": "string", "format": "date"})
    ] = Field(
        None,
        description="Only messages sent on this day. The Xoxzo filter is the raw query"
        " `sent_date<op>YYYY-mm-dd` with op one of `=`, `<`, `<=`, `>`, `>=` (e.g."
        " `?sent_date>=2026-11-01`): give exactly one, within the retention period (90 days)."
        " Without it: every message within that period. Newest first.",
    )

    @classmethod
    def read(cls, request: web.Request) -> tuple[dict[str, str], dict[str, list[str]]]:
        raw = request.query_string
        return ({"sent_date": raw} if raw else {}), {}


def _freeform(request: web.Request) -> None:
    if not request[ACCOUNT].freeform:
        raise forbidden("Freeform SMS is not enabled for this account; send an approved template.")


@routes.post("/sms/messages/", status=201, returns=list[Msgid], errors={403}, guard=_freeform)
async def send_sms(request: web.Request, body: SendSms) -> Json:
    """Send a freeform SMS

    Needs the account flag `freeform` (else 403). A 201 means the message is committed to the
    queue. Recipients on the account's opt-out list are refused (400 `recipient`)."""
    msgid = await request.app[MESSAGES].create(body.outbound(request[ACCOUNT].id, body.message))
    return [{"msgid": msgid}]


@routes.get("/sms/messages/", returns=list[Message])
async def list_sms(request: web.Request, query: SentDate) -> Json:
    """List sent messages"""
    return await request.app[MESSAGES].list(request[ACCOUNT].id, query.sent_date)


@routes.get("/sms/messages/{msgid}/", returns=Message, no_slash=True)
async def get_sms(request: web.Request) -> Json:
    """Status of a message"""
    return await request.app[MESSAGES].get(request[ACCOUNT].id, request.match_info["msgid"])
