"""Inbound SMS listings (Xoxzo style /sms/inbounds/ and Sinch style /xms/v1/<plan>/inbounds) and replies."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema

from gateway.db.models import InboundMessage
from gateway.http.api import Json, Query, Routes, refusal
from gateway.http.fields import MessageText, When, optional, whole
from gateway.http.responses import Inbound, Msgid, SinchInbound, SinchInboundList
from gateway.keys import ACCOUNT, INBOUND
from gateway.services import sinch
from gateway.services.views import fmt_time

PLAN = {"type": "string", "description": "Your SID (Sinch `service_plan_id`)."}
routes = Routes("Inbound", path_params={"plan": PLAN})

_NUMBER = re.compile(r"\+?([0-9]{5,15})")
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 30


def _to_list(value: Any) -> tuple[str, ...]:
    text = optional(value)
    out = []
    for item in text.split(",") if text else []:
        item = item.strip()
        number = _NUMBER.fullmatch(item)  # ASCII digits: str.isdigit() also takes "²" and "١"
        if number is None:
            raise ValueError(f"Invalid number {item[:32]!r} in the comma-separated list.")
        out.append(f"+{number.group(1)}")
    return tuple(out)


def _day_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=24)


class Window(Query):
    """Paging through what was created (or received) in a time window: the Sinch listings."""

    start_date: When = Field(
        default_factory=_day_ago,
        description="ISO-8601 date or date-time (UTC if no offset); default 24 hours ago.",
    )
    end_date: When | None = Field(None, description="ISO-8601 date or date-time; must be after start_date.")
    client_reference: str | SkipJsonSchema[None] = Field(None, description="Exact match.")
    page: Annotated[int, whole(0, MAX_PAGE, 0), Field(ge=0, le=MAX_PAGE)] = Field(
        0, description="Page number, from 0."
    )
    page_size: Annotated[int, whole(1, MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE), Field(ge=1, le=MAX_PAGE_SIZE)] = (
        Field(DEFAULT_PAGE_SIZE, description=f"At most {MAX_PAGE_SIZE}; default {DEFAULT_PAGE_SIZE}.")
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_date is not None and self.end_date <= self.start_date:
            raise refusal(type(self), {"end_date": "Must be after start_date."})
        return self

    def span(self) -> dict[str, Any]:
        """The window and page as the services' list methods take them."""
        return {
            "start": self.start_date,
            "end": self.end_date,
            "client_reference": self.client_reference,
            "page": self.page,
            "page_size": self.page_size,
        }

    def page_of(self, count: int, key: str, items: list[dict[str, Any]]) -> Json:
        """Sinch's list envelope: `count` matches in all, this page's `items` under `key`."""
        return {"count": count, "page": self.page, "page_size": self.page_size, key: items}


class InboundFilters(Window):
    to: Annotated[tuple[str, ...], BeforeValidator(_to_list), WithJsonSchema({"type": "string"})] = Field(
        (), description="Comma-separated list of your numbers (E.164, + optional)."
    )


async def _list(request: web.Request, q: InboundFilters) -> tuple[int, list[InboundMessage]]:
    return await request.app[INBOUND].list(request[ACCOUNT].id, to=q.to, **q.span())


class Reply(BaseModel):
    message: MessageText


def xoxzo_json(row: InboundMessage) -> dict[str, Any]:
    return {
        "id": row.uid,
        "sender": row.sender,
        "recipient": row.recipient,
        "message": row.body,
        "recv_time": fmt_time(row.received_at),
        "smsc": row.smsc,
    }


@routes.get("/sms/inbounds/", returns=list[Inbound])
async def list_inbounds(request: web.Request, query: InboundFilters) -> Json:
    """Received SMS (Xoxzo style)"""
    _, rows = await _list(request, query)
    return [xoxzo_json(r) for r in rows]


@routes.get("/sms/inbounds/{uid}/", returns=Inbound, no_slash=True)
async def get_inbound(request: web.Request) -> Json:
    """A received SMS"""
    return xoxzo_json(await request.app[INBOUND].get(request[ACCOUNT].id, request.match_info["uid"]))


@routes.post("/sms/inbounds/{uid}/reply/", status=201, returns=list[Msgid], errors={403})
async def reply_inbound(request: web.Request, body: Reply) -> Json:
    """Reply to a received SMS

    Sent from the SIN to the original sender, while you hold the SIN (else 403)."""
    uid = request.match_info["uid"]
    return [{"msgid": await request.app[INBOUND].reply(request[ACCOUNT].id, uid, body.message)}]


@routes.get("/xms/v1/{plan}/inbounds", returns=SinchInboundList, security="basic+bearer")
async def sinch_list_inbounds(request: web.Request, query: InboundFilters) -> Json:
    """Received SMS (Sinch XMS style)"""
    count, rows = await _list(request, query)
    return query.page_of(count, "inbounds", [sinch.inbound_json(r) for r in rows])


@routes.get("/xms/v1/{plan}/inbounds/{uid}", returns=SinchInbound, security="basic+bearer")
async def sinch_get_inbound(request: web.Request) -> Json:
    """A received SMS (Sinch XMS style)"""
    return sinch.inbound_json(await request.app[INBOUND].get(request[ACCOUNT].id, request.match_info["uid"]))
