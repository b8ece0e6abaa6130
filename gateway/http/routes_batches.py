"""Sinch XMS batches: /xms/v1/<service_plan_id>/batches (send, list, read, update, replace,
cancel, dry run), as Sinch's REST API and its SDKs use them. Errors are Sinch's
`{"code", "text"}`, as on every /xms/ route. Sending needs the account's freeform flag, as
`POST /sms/messages/` does."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from gateway.http.api import Json, Query, Routes
from gateway.http.fields import (
    Flag,
    MessageText,
    Sender,
    Url,
    When,
    documented,
    e164_or_digits,
    no_controls,
    optional,
    string,
    whole,
)
from gateway.http.responses import (
    SinchBatch,
    SinchBatchList,
    SinchBatchReport,
    SinchDryRun,
    SinchRecipientReport,
    SinchReportList,
)
from gateway.http.routes_inbound import PLAN, Window
from gateway.keys import ACCOUNT, BATCHES
from gateway.services import sinch
from gateway.services.batches import BatchRequest, BatchUpdate
from gateway.services.errors import forbidden

BATCH_ID = {"type": "string", "description": "The batch `id`."}
RECIPIENT = {"type": "string", "description": "The recipient, E.164 with or without +."}
routes = Routes(
    "Sinch batches",
    security="basic+bearer",
    path_params={"plan": PLAN, "batch_id": BATCH_ID, "recipient": RECIPIENT},
)
BASE = "/xms/v1/{plan}/batches"
MAX_CLIENT_REFERENCE = 128
MAX_PARAMETER_NAME = 64
_PARAMETER_NAME = re.compile(rf"[^${{}}]{{1,{MAX_PARAMETER_NAME}}}")


def _numbers(value: Any, *, empty_ok: bool) -> tuple[str, ...]:
    """A list of E.164 numbers (+ optional), or in a form body a comma-separated text;
    deduplicated, in order."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")] if value.strip() else []
    if not isinstance(value, list):
        raise ValueError("Expected a list of phone numbers.")
    if not value and not empty_ok:
        raise ValueError("At least one recipient.")
    if len(value) > sinch.MAX_RECIPIENTS:
        raise ValueError(f"At most {sinch.MAX_RECIPIENTS} recipients.")
    out = []
    for item in value:
        try:
            out.append(e164_or_digits(item))
        except ValueError as exc:
            raise ValueError(f"{str(item)[:32]!r}: {exc} (groups are not supported)") from None
    return tuple(dict.fromkeys(out))


_NUMBERS_SCHEMA = WithJsonSchema(
    {
        "type": "array",
        "items": {"type": "string", "pattern": r"^\+?[1-9][0-9]{6,14}$"},
        "maxItems": sinch.MAX_RECIPIENTS,
        "description": "E.164 numbers (+ optional); in a form body, comma-separated.",
    }
)
Recipients = Annotated[
    tuple[str, ...], BeforeValidator(lambda v: _numbers(v, empty_ok=False)), _NUMBERS_SCHEMA
]
MoreRecipients = Annotated[
    tuple[str, ...], BeforeValidator(lambda v: _numbers(v, empty_ok=True)), _NUMBERS_SCHEMA
]


def _parameters(value: Any) -> dict[str, dict[str, str]] | None:
    if isinstance(value, str):  # form-encoded callers cannot nest: the object as a JSON string
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError:
            raise ValueError("Expected a JSON object.") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("Expected an object: name -> {recipient or default: value}.")
    out: dict[str, dict[str, str]] = {}
    for name, values in value.items():
        if not _PARAMETER_NAME.fullmatch(name):
            raise ValueError(f"Parameter names are 1-{MAX_PARAMETER_NAME} characters without $, {{ or }}.")
        if not isinstance(values, dict):
            raise ValueError(f"{name[:32]!r}: expected an object of recipient or default: value.")
        out[name] = {str(k): no_controls(string(v)) for k, v in values.items()}
    return out


Parameters = Annotated[
    dict[str, dict[str, str]] | SkipJsonSchema[None],
    BeforeValidator(_parameters),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
            "description": "`${name}` in the body -> {recipient (E.164) or `default`: value}; in a form"
            " body, the object encoded as JSON.",
        }
    ),
]


def _reference(value: Any) -> str | None:
    text = optional(value)
    if text is not None and len(text) > MAX_CLIENT_REFERENCE:
        raise ValueError(f"At most {MAX_CLIENT_REFERENCE} characters.")
    return None if text is None else no_controls(text)


ClientReference = Annotated[
    str | SkipJsonSchema[None], BeforeValidator(_reference), documented(maxLength=MAX_CLIENT_REFERENCE)
]
MaxParts = Annotated[int | SkipJsonSchema[None], whole(1, 255, 0), Field(ge=1, le=255)]
ReportType = Literal["none", "summary", "full", "per_recipient", "per_recipient_final"]
BatchType = Literal["mt_text"]


def _type(value: Any) -> str:
    if value not in (None, "", "mt_text"):
        raise ValueError("Only mt_text batches are supported.")
    return "mt_text"


TextType = Annotated[BatchType, BeforeValidator(_type)]


class NewBatch(BaseModel):
    """An mt_text batch, as Sinch's `POST /batches` takes it."""

    from_: Sender = Field(
        alias="from",
        description="The sender, as `sender` of the SMS API: allowed for your account, or your SIN.",
    )
    to: Recipients = Field(description=f"1 to {sinch.MAX_RECIPIENTS} recipients.")
    body: MessageText = Field(description="The text; `${name}` is replaced per recipient from `parameters`.")
    type: TextType = "mt_text"
    parameters: Parameters = None
    delivery_report: ReportType = Field("none", description="Which delivery report callbacks to send.")
    send_at: When | None = Field(None, description="Sent from then on (now when absent or past).")
    expire_at: When | None = Field(
        None,
        description="Not sent after, nor delivered by the SMSC after (its validity period); after"
        " send_at, at most (and by default) 3 days after it.",
    )
    callback_url: Url = Field(None, description="Receives the delivery reports.")
    client_reference: ClientReference = None
    flash_message: Flag = Field(False, description="`true`: a flash SMS (message class 0), shown at once.")
    feedback_enabled: Flag = False
    truncate_concat: Flag = Field(False, description="`true`: a longer text is cut to one SMS.")
    max_number_of_message_parts: MaxParts = Field(
        None, description="A recipient whose text needs more parts fails (Aborted, 411)."
    )

    def request(self) -> BatchRequest:
        return BatchRequest(
            sender=self.from_,
            recipients=self.to,
            body=self.body,
            parameters=self.parameters,
            delivery_report=self.delivery_report,
            send_at=self.send_at,
            expire_at=self.expire_at,
            callback_url=self.callback_url,
            client_reference=self.client_reference,
            flash_message=self.flash_message,
            feedback_enabled=self.feedback_enabled,
            truncate_concat=self.truncate_concat,
            max_parts=self.max_number_of_message_parts,
        )


class BatchChange(BaseModel):
    """What is absent (or null) stays as it is."""

    from_: Sender | None = Field(None, alias="from")
    to_add: MoreRecipients = ()
    to_remove: MoreRecipients = ()
    body: MessageText | None = None
    type: TextType = "mt_text"
    parameters: Parameters = None
    delivery_report: ReportType | None = None
    send_at: When | None = None
    expire_at: When | None = None
    callback_url: Url = None
    client_reference: ClientReference = None
    flash_message: Flag = False
    feedback_enabled: Flag = False
    truncate_concat: Flag = False
    max_number_of_message_parts: MaxParts = None

    def update(self) -> BatchUpdate:
        given = self.model_fields_set - {"to_add", "to_remove", "type"}
        names = {"from_": "sender", "max_number_of_message_parts": "max_parts"}
        changes = {names.get(f, f): getattr(self, f) for f in given if getattr(self, f) is not None}
        return BatchUpdate(changes, self.to_add, self.to_remove)


class Batches(Window):
    from_: Annotated[
        tuple[str, ...],
        BeforeValidator(lambda v: tuple(s.strip() for s in (optional(v) or "").split(",") if s.strip())),
        WithJsonSchema({"type": "string"}),
    ] = Field((), alias="from", description="Comma-separated senders.")


class DryRunOptions(Query):
    per_recipient: Flag = Field(False, description="`true`: each recipient's text, parts and encoding.")
    number_of_recipients: Annotated[int, whole(0, sinch.MAX_RECIPIENTS, 100), Field(ge=0, le=1000)] = Field(
        100, description="At most this many recipients in `per_recipient`; default 100."
    )


def _freeform(request: web.Request) -> None:
    if not request[ACCOUNT].freeform:
        raise forbidden("Freeform SMS is not enabled for this account.")


def _uid(request: web.Request) -> str:
    return request.match_info["batch_id"]


@routes.post(BASE, status=201, returns=SinchBatch, errors={403}, guard=_freeform)
async def send_batch(request: web.Request, body: NewBatch) -> Json:
    """Send a batch (Sinch)

    One text to up to 1,000 recipients, each a message of its own in the queue, sent at the
    dispatcher's rate: opted-out recipients and texts a parameter has no value for fail at once
    (see the delivery report). Needs the account flag `freeform` (else 403)."""
    return await request.app[BATCHES].create(request[ACCOUNT].id, body.request())


@routes.get(BASE, returns=SinchBatchList)
async def list_batches(request: web.Request, query: Batches) -> Json:
    """Your batches, newest first (Sinch)"""
    count, batches = await request.app[BATCHES].list_batches(
        request[ACCOUNT].id, senders=query.from_, **query.span()
    )
    return query.page_of(count, "batches", batches)


@routes.post(BASE + "/dry_run", returns=SinchDryRun)
async def dry_run_batch(request: web.Request, body: NewBatch, query: DryRunOptions) -> Json:
    """What a batch would send, without sending it (Sinch)

    The recipients' texts after parameters, their parts and encoding; nothing is stored nor
    checked against opt-outs."""
    return request.app[BATCHES].dry_run(body.request(), query.per_recipient, query.number_of_recipients)


@routes.get(BASE + "/{batch_id}", returns=SinchBatch)
async def get_batch(request: web.Request) -> Json:
    """A batch (Sinch)"""
    return await request.app[BATCHES].get(request[ACCOUNT].id, _uid(request))


@routes.post(BASE + "/{batch_id}", returns=SinchBatch, errors={403}, guard=_freeform)
async def update_batch(request: web.Request, body: BatchChange) -> Json:
    """Update a batch (Sinch)

    Only before any of it was sent (400 after); recipients are added with `to_add` and removed
    with `to_remove`, the other fields given replace the batch's."""
    return await request.app[BATCHES].update(request[ACCOUNT].id, _uid(request), body.update())


@routes.put(BASE + "/{batch_id}", returns=SinchBatch, errors={403}, guard=_freeform)
async def replace_batch(request: web.Request, body: NewBatch) -> Json:
    """Replace a batch (Sinch)

    Only before any of it was sent (400 after): the batch keeps its id and gets the new fields."""
    return await request.app[BATCHES].replace(request[ACCOUNT].id, _uid(request), body.request())


@routes.delete(BASE + "/{batch_id}", returns=SinchBatch)
async def cancel_batch(request: web.Request) -> Json:
    """Cancel a batch (Sinch)

    Recipients not sent yet fail as Cancelled (407) and are never sent; those already on their
    way go on."""
    return await request.app[BATCHES].cancel(request[ACCOUNT].id, _uid(request))


# -- delivery reports ---------------------------------------------------------------------------

_STATUS_NAMES = {s.lower(): s for s in sinch.STATUSES}


def _statuses(value: Any) -> frozenset[str]:
    out = set()
    for item in (optional(value) or "").split(","):
        if item.strip():
            status = _STATUS_NAMES.get(item.strip().lower())
            if status is None:
                raise ValueError(f"Unknown status {item.strip()[:32]!r}; one of {', '.join(sinch.STATUSES)}.")
            out.add(status)
    return frozenset(out)


def _codes(value: Any) -> frozenset[int]:
    out = set()
    for item in (optional(value) or "").split(","):
        if item.strip():
            if not re.fullmatch(r"[0-9]{1,4}", item.strip()):
                raise ValueError(f"Expected comma-separated codes, e.g. 0,402; got {item.strip()[:32]!r}.")
            out.add(int(item))
    return frozenset(out)


Statuses = Annotated[frozenset[str], BeforeValidator(_statuses), WithJsonSchema({"type": "string"})]
Codes = Annotated[frozenset[int], BeforeValidator(_codes), WithJsonSchema({"type": "string"})]
_STATUS_DOC = "Comma-separated statuses to include (any case), e.g. Delivered,Failed."
_CODE_DOC = "Comma-separated codes to include, e.g. 0,402."


class ReportFilters(Query):
    type: Literal["summary", "full"] = Field("summary", description="`full` lists the recipients too.")
    status: Statuses = Field(frozenset(), description=_STATUS_DOC)
    code: Codes = Field(frozenset(), description=_CODE_DOC)
    client_reference: str | SkipJsonSchema[None] = Field(
        None, description="When given, the batch's must be this (else 404)."
    )
    batch_id: str | SkipJsonSchema[None] = Field(
        None, description="Ignored: Sinch's SDK repeats the path's batch id here."
    )


class Reports(Window):
    status: Statuses = Field(frozenset(), description=_STATUS_DOC)
    code: Codes = Field(frozenset(), description=_CODE_DOC)


@routes.get(BASE + "/{batch_id}/delivery_report", returns=SinchBatchReport)
async def batch_delivery_report(request: web.Request, query: ReportFilters) -> Json:
    """A batch's delivery report (Sinch)

    How many recipients have each status and code; `type=full` lists them."""
    return await request.app[BATCHES].delivery_report(
        request[ACCOUNT].id,
        _uid(request),
        full=query.type == "full",
        statuses=query.status,
        codes=query.code,
        client_reference=query.client_reference,
    )


@routes.get(BASE + "/{batch_id}/delivery_report/{recipient}", returns=SinchRecipientReport)
async def recipient_delivery_report(request: web.Request) -> Json:
    """One recipient's delivery report (Sinch)"""
    recipient = "+" + request.match_info["recipient"].removeprefix("+")  # no match unless E.164
    return await request.app[BATCHES].recipient_report(request[ACCOUNT].id, _uid(request), recipient)


@routes.get("/xms/v1/{plan}/delivery_reports", returns=SinchReportList)
async def list_delivery_reports(request: web.Request, query: Reports) -> Json:
    """Recipient delivery reports of your batches, newest first (Sinch)

    Of the batch messages created between `start_date` (default 24 hours ago) and `end_date`."""
    count, reports = await request.app[BATCHES].list_reports(
        request[ACCOUNT].id, statuses=query.status, codes=query.code, **query.span()
    )
    return query.page_of(count, "delivery_reports", reports)
