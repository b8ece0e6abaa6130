"""What the API answers, as models: the OpenAPI document's response schemas come from here.
The answers themselves are built by gateway/services/views.py (the status callbacks send the
same shapes); schemathesis checks every answer against these schemas."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import SkipJsonSchema

from gateway.services.sinch import SinchStatus

Time = Annotated[
    str | None, Field(description="UTC, `YYYY-mm-dd HH:MM:SS`.", examples=["2026-11-23 10:44:27"])
]
NoPlus = Annotated[str, Field(description="Digits, no +.")]


class Detail(BaseModel):
    detail: str = Field(description="What went wrong.")


class FieldErrors(RootModel[dict[str, list[str]]]):
    model_config = ConfigDict(
        json_schema_extra={
            "description": "Every bad field at once: field name -> reasons.",
            "examples": [{"recipient": ["Enter a valid phone number in E.164 format, e.g. +818012345678."]}],
        }
    )


class BadRequest(RootModel[FieldErrors | Detail]):
    pass


class SinchError(BaseModel):
    code: str = Field(examples=["syntax_constraint_violation"])
    text: str = Field(description="What went wrong; for bad input, `field: reason; ...`.")


class VariableErrors(BaseModel):
    variables: dict[str, list[str]] = Field(
        description="Template variable name -> reasons (missing or not in the template).",
        examples=[{"code": ["This field is required."]}],
    )


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"maxProperties": 0})


class Msgid(BaseModel):
    msgid: str = Field(description="Message id (32 characters).")


class Callid(BaseModel):
    callid: str = Field(description="Call id (32 characters).")


class LinkTracking(BaseModel):
    url: str = Field(description="The URL as it was in the message.")
    short_url: str = Field(description="`<public_base_url>/l/<code>`, what the recipient got.")
    first_access_time: Time
    access_count: int = Field(ge=0)


class Message(BaseModel):
    msgid: str
    status: Literal["QUEUED", "DELIVERING", "DELIVERED", "FAIL"] = Field(
        description="QUEUED -> DELIVERING (SMSC accepted every part) -> DELIVERED (every receipt"
        " DELIVRD) or FAIL."
    )
    recipient: str
    sender: str
    parts: int = Field(ge=1)
    cost: float = Field(description="parts x the price for the destination prefix.")
    sent_time: Time
    tags: list[str]
    url: str = Field(description="This message's status URL.")
    smsc: str | None = Field(
        description="The SMSC connector that took the message, or refused it; null before that."
    )
    template_id: str | SkipJsonSchema[None] = Field(
        None, description="Set for messages sent from a template."
    )
    link_tracking: list[LinkTracking] | SkipJsonSchema[None] = Field(
        None, description="When track_link was set."
    )


class Template(BaseModel):
    template_id: str
    name: str
    content: str = Field(description="Text with `{placeholder}`s; `{{` and `}}` are literal braces.")
    status: Literal["PENDING", "APPROVED", "REJECTED"] = Field(
        description="Set by the operator only; only APPROVED templates can be sent."
    )
    created_at: Time
    updated_at: Time


class AutoReply(BaseModel):
    rule_id: str
    match: Literal["keyword", "regex"]
    pattern: str
    reply: str
    created_at: Time


class Inbound(BaseModel):
    id: str
    sender: str
    recipient: str = Field(description="The SIN it was sent to.")
    message: str
    recv_time: Time
    smsc: str | None = Field(description="The SMSC connector it came over (NULL for older messages).")


class SinchInbound(BaseModel):
    type: Literal["mo_text"]
    id: str
    from_: NoPlus = Field(alias="from")
    to: NoPlus
    body: str
    received_at: str = Field(description="ISO-8601 UTC with milliseconds.")
    sent_at: str
    operator_id: str | None
    client_reference: str | None


class SinchInboundList(BaseModel):
    count: int
    page: int
    page_size: int
    inbounds: list[SinchInbound]


IsoTime = Annotated[
    str, Field(description="ISO-8601 UTC with milliseconds.", examples=["2026-11-23T10:44:27.123Z"])
]


class SinchBatch(BaseModel):
    id: str
    type: Literal["mt_text"]
    to: list[NoPlus]
    from_: str = Field(alias="from", description="The sender; a number without +.")
    body: str = Field(description="As given, with its `${parameter}`s.")
    parameters: dict[str, dict[str, str]] | SkipJsonSchema[None] = None
    canceled: bool
    created_at: IsoTime
    modified_at: IsoTime
    delivery_report: Literal["none", "summary", "full", "per_recipient", "per_recipient_final"]
    send_at: IsoTime | SkipJsonSchema[None] = None
    expire_at: IsoTime
    callback_url: str | SkipJsonSchema[None] = None
    client_reference: str | SkipJsonSchema[None] = None
    flash_message: bool
    feedback_enabled: bool
    truncate_concat: bool
    max_number_of_message_parts: int | SkipJsonSchema[None] = None


class SinchBatchList(BaseModel):
    count: int = Field(description="Batches matching the filters, over all pages.")
    page: int
    page_size: int
    batches: list[SinchBatch]


class DryRunRecipient(BaseModel):
    recipient: NoPlus
    body: str = Field(description="The text this recipient would get.")
    number_of_parts: int
    encoding: Literal["text", "unicode"]


class SinchDryRun(BaseModel):
    number_of_recipients: int
    number_of_messages: int = Field(description="SMS parts all the recipients' messages would take.")
    per_recipient: list[DryRunRecipient] | SkipJsonSchema[None] = None


class StatusCount(BaseModel):
    code: int = Field(
        description="Sinch's delivery report code: 0 delivered, 400 queued, 401 dispatched, ..."
    )
    status: SinchStatus
    count: int
    recipients: list[NoPlus] | SkipJsonSchema[None] = Field(None, description="In a full report.")


class SinchBatchReport(BaseModel):
    type: Literal["delivery_report_sms"]
    batch_id: str
    total_message_count: int
    statuses: list[StatusCount] = Field(description="One entry per status and code that has recipients.")
    client_reference: str | SkipJsonSchema[None] = None


class SinchRecipientReport(BaseModel):
    type: Literal["recipient_delivery_report_sms"]
    batch_id: str
    recipient: NoPlus
    code: int
    status: SinchStatus
    at: IsoTime = Field(description="When the message reached this status.")
    client_reference: str | SkipJsonSchema[None] = None
    number_of_message_parts: int | SkipJsonSchema[None] = Field(
        None, description="When the batch set max_number_of_message_parts."
    )


class SinchReportList(BaseModel):
    count: int = Field(description="Reports matching the filters, over all pages.")
    page: int
    page_size: int
    delivery_reports: list[SinchRecipientReport]


class CallStep(BaseModel):
    digits: str | None = Field(description="The keys pressed; null for the action_url's fetch.")
    url: str | None = Field(description="The script's URL, as set (without the query the gateway adds).")
    status: int | None = Field(description="The HTTP status it answered; null when none came.")
    error: str | None = Field(description="Why its script did not run (the fallback did), if so.")


class _CallAudio(BaseModel):
    callid: str
    caller: str
    recipient: str
    duration: float = Field(description="Seconds.")
    size: int = Field(description="Bytes of WAV audio.")
    created_at: Time
    audio_url: str = Field(description="Path of the WAV recording.")


class Recording(_CallAudio):
    recording_id: str


class Call(BaseModel):
    callid: str
    direction: Literal["inbound", "outbound"]
    status: str = Field(description="QUEUED, IN_PROGRESS, COMPLETED, FAILED, NO_ANSWER, BUSY, REJECTED.")
    caller: str
    recipient: str
    start_time: Time
    answer_time: Time = None
    end_time: Time = None
    duration: int = Field(description="Seconds.")
    cost: float
    actions: list[Any] = Field([], description="The actions run, in order.")
    result: str | None = Field(
        None,
        description="How the call ended: completed, hangup, transferred, voicemail, transfer_busy, "
        "transfer_no_answer, transfer_failed, rejected.",
    )
    transfer_status: str | None = Field(
        None,
        description="Inbound: Asterisk's DIALSTATUS of the last transfer dialled (ANSWER, BUSY, "
        "NOANSWER, CANCEL, CHANUNAVAIL, CONGESTION, ...); null without a transfer.",
    )
    transfer_seconds: float | None = Field(
        None,
        description="Inbound, an answered transfer: seconds of conversation, from the callee's answer"
        " to the end (no ringing), whole seconds of Asterisk's clock; null when not answered or when"
        " Asterisk's dialplan lacks [gateway-transfer].",
    )
    error: str | None = Field(None, description="Why the fallback ran, if it did.")
    steps: list[CallStep] = Field(
        [],
        description="Inbound: each script fetched, in order: the action_url's first, then one per "
        "gather (with the keys pressed; a gather without keys and without --no-input fetches "
        "nothing and shows url null).",
    )


class Voicemail(_CallAudio):
    voicemail_id: str


class _Number(BaseModel):
    country_code: str = Field(description="The country's dialling code, e.g. 81.", examples=["81"])
    prefix: str = Field(
        description="Local area prefix, without the trunk 0 (3 for Tokyo, 50 for 050 numbers).",
        examples=["3"],
    )
    monthly_cost: float
    minute_cost: float


class SinNumber(_Number):
    sin: NoPlus = Field(examples=["81312345678"])
    sin_uid: str


class DinNumber(_Number):
    din: NoPlus = Field(examples=["81312345678"])
    din_uid: str


class SinSubscription(SinNumber):
    action_url: str | None
    webhook_format: Literal["xoxzo", "sinch"] = Field(
        description="How MOs are POSTed: form-encoded (xoxzo) or Sinch's mo_text JSON (sinch)."
    )
    mo_delivery: Literal["webhook", "smpp", "both"] = Field(
        description="Where MOs go: the webhook, your SMPP receiver, or both."
    )
    subscribed_at: Time


class DinSubscription(DinNumber):
    action_url: str | None
    voicemail_url: str | None
    status_url: str | None
    subscribed_at: Time


class Index(BaseModel):
    name: str
    docs: Literal["/docs"] = Field(description="Path of the human-readable API documentation.")
    openapi: Literal["/openapi.json"] = Field(description="Path of this OpenAPI document.")
    health: Literal["/healthz"] = Field(description="Path of the liveness check.")
    authentication: str


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    database: Literal["up"]
