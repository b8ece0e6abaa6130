"""Inbound SMS listings (Xoxzo style /sms/inbounds/ and Sinch style /xms/v1/<plan>/inbounds) and replies."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.db.models import InboundMessage
from gateway.http.errors import json_response
from gateway.http.params import optional_str, read_params
from gateway.keys import ACCOUNT, INBOUND
from gateway.services import validation as v
from gateway.services.errors import FieldErrors
from gateway.services.views import fmt_time

routes = web.RouteTableDef()

LIST_PARAMS = {"to", "start_date", "end_date", "client_reference", "page", "page_size"}
_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"\+?([0-9]{5,15})")
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 30


def _parse_when(field: str, value: str) -> datetime:
    text = value.strip().replace(" ", "T")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FieldErrors.one(
            field, "Expected an ISO-8601 date or date-time, e.g. 2026-11-23T10:00:00Z."
        ) from None
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise FieldErrors.one(field, "Out of range: between years 1 and 9999 in UTC.") from None


def _int(field: str, value: str | None, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    try:
        if not _INT.fullmatch(value):  # int() would also take "١", " 5" and "1_0"
            raise ValueError(value)
        n = int(value)  # ValueError past 4300 digits
    except ValueError:
        raise FieldErrors.one(field, "Expected a whole number.") from None
    if not lo <= n <= hi:
        raise FieldErrors.one(field, f"Must be between {lo} and {hi}.")
    return n


def _to_list(value: str | None) -> list[str]:
    if not value:
        return []
    out = []
    for item in value.split(","):
        item = item.strip()
        number = _NUMBER.fullmatch(item)  # ASCII digits: str.isdigit() also takes "²" and "١"
        if number is None:
            raise FieldErrors.one("to", f"Invalid number {item[:32]!r} in the comma-separated list.")
        out.append(f"+{number.group(1)}")
    return out


async def _list(request: web.Request) -> tuple[int, int, int, list[InboundMessage]]:
    q = request.query
    unknown = sorted(set(q) - LIST_PARAMS)
    if unknown:
        raise FieldErrors({name: ["Unknown parameter."] for name in unknown})
    now = datetime.now(UTC)
    # A repeated filter would silently lose all but its first value (`to` takes a comma list).
    errors: dict[str, list[str]] = {
        name: ["Give this parameter at most once."] for name in sorted(set(q)) if len(q.getall(name)) > 1
    }

    def check(fn: Any, fallback: Any) -> Any:
        try:
            return fn()
        except FieldErrors as exc:
            errors.update(exc.body)
            return fallback

    start = (
        check(lambda: _parse_when("start_date", q["start_date"]), now)
        if "start_date" in q
        else now - timedelta(hours=24)
    )
    end = check(lambda: _parse_when("end_date", q["end_date"]), None) if "end_date" in q else None
    page = check(lambda: _int("page", q.get("page"), 0, 0, 1_000_000), 0)
    page_size = check(lambda: _int("page_size", q.get("page_size"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE), 1)
    to = check(lambda: _to_list(q.get("to")), [])
    if errors:
        raise FieldErrors(errors)
    if end is not None and end <= start:
        raise FieldErrors.one("end_date", "Must be after start_date.")
    count, rows = await request.app[INBOUND].list(
        request[ACCOUNT].id,
        to=to,
        start=start,
        end=end,
        client_reference=q.get("client_reference"),
        page=page,
        page_size=page_size,
    )
    return count, page, page_size, rows


def xoxzo_json(row: InboundMessage) -> dict[str, Any]:
    return {
        "id": row.uid,
        "sender": row.sender,
        "recipient": row.recipient,
        "message": row.body,
        "recv_time": fmt_time(row.received_at),
    }


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def sinch_json(row: InboundMessage) -> dict[str, Any]:
    return {
        "type": "mo_text",
        "id": row.uid,
        "from": row.sender.lstrip("+"),
        "to": row.recipient.lstrip("+"),
        "body": row.body,
        "received_at": _iso(row.received_at),
        "sent_at": _iso(row.received_at),
        "operator_id": row.operator_id,
        "client_reference": row.client_reference,
    }


@routes.get("/sms/inbounds/")
async def list_inbounds(request: web.Request) -> web.Response:
    _, _, _, rows = await _list(request)
    return json_response([xoxzo_json(r) for r in rows])


@routes.get("/sms/inbounds/{uid}/")
@routes.get("/sms/inbounds/{uid}")
async def get_inbound(request: web.Request) -> web.Response:
    row = await request.app[INBOUND].get(request[ACCOUNT].id, request.match_info["uid"])
    return json_response(xoxzo_json(row))


@routes.post("/sms/inbounds/{uid}/reply/")
async def reply(request: web.Request) -> web.Response:
    params = await read_params(request)
    text = v.message_text("message", optional_str(params, "message"))
    msgid = await request.app[INBOUND].reply(request[ACCOUNT].id, request.match_info["uid"], text)
    return json_response([{"msgid": msgid}], status=201)


@routes.get("/xms/v1/{plan}/inbounds")
async def sinch_list(request: web.Request) -> web.Response:
    count, page, page_size, rows = await _list(request)
    return json_response(
        {"count": count, "page": page, "page_size": page_size, "inbounds": [sinch_json(r) for r in rows]}
    )


@routes.get("/xms/v1/{plan}/inbounds/{uid}")
async def sinch_get(request: web.Request) -> web.Response:
    row = await request.app[INBOUND].get(request[ACCOUNT].id, request.match_info["uid"])
    return json_response(sinch_json(row))
