"""The OpenAPI 3.1 description of the API: `GET /openapi.json`, and `GET /docs`, a self-contained
HTML page rendering it (no CDN, no external request: deployments may be offline).

The document is built from the routes the app actually serves: `build_document(app)` walks
`app.router` and describes each (method, path) from the table `OPERATIONS` below. A served route
missing from the table is listed by `undocumented(app)` (the test suite fails on it) and appears
in the document as a bare operation marked `x-undocumented`, so a new route is never invisible.
Table entries for routes the app does not serve are left out.

Aliases: xoxzo-cloudpy omits the trailing slash on some GETs, so those are routed both ways; the
form without the slash is documented as its own operation with `x-alias-of`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from gateway.keys import CONFIG

JSON = dict[str, Any]

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
DOC_PATHS = ("/openapi.json", "/docs")  # public: add to auth.PUBLIC_PREFIXES

# --- reusable schema pieces -------------------------------------------------------------------


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _str(description: str = "", **extra: Any) -> JSON:
    out: JSON = {"type": "string", **extra}
    if description:
        out["description"] = description
    return out


def _nullable(schema: JSON) -> JSON:
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    return out


def _obj(properties: Mapping[str, JSON], required: Iterable[str] = (), **extra: Any) -> JSON:
    return {"type": "object", "properties": dict(properties), "required": list(required), **extra}


def _array(items: JSON) -> JSON:
    return {"type": "array", "items": items}


HEX32 = "^[0-9a-f]{32}$"
E164 = "^\\+[1-9][0-9]{6,14}$"
TIME = _nullable(_str("UTC, `YYYY-mm-dd HH:MM:SS`.", examples=["2026-11-23 10:44:27"]))
URL = _str("http(s) URL, at most 2000 characters.", format="uri", maxLength=2000)

SCHEMAS: dict[str, JSON] = {
    "Detail": _obj({"detail": _str("What went wrong.")}, ["detail"]),
    "FieldErrors": {
        "type": "object",
        "description": "Every bad field at once: field name -> reasons.",
        "additionalProperties": _array(_str()),
        "examples": [{"recipient": ["Enter a valid phone number in E.164 format, e.g. +818012345678."]}],
    },
    "BadRequest": {"anyOf": [_ref("FieldErrors"), _ref("Detail")]},
    "VariableErrors": _obj(
        {
            "variables": {
                "type": "object",
                "additionalProperties": _array(_str()),
                "description": "Template variable name -> reasons (missing or not in the template).",
            }
        },
        ["variables"],
        examples=[{"variables": {"code": ["This field is required."]}}],
    ),
    "Empty": {"type": "object", "maxProperties": 0},
    "MsgidList": _array(_obj({"msgid": _str("Message id (32 characters).")}, ["msgid"])),
    "CallidList": _array(_obj({"callid": _str("Call id (32 characters).")}, ["callid"])),
    "LinkTracking": _obj(
        {
            "url": _str("The URL as it was in the message."),
            "short_url": _str("`<public_base_url>/l/<code>`, what the recipient got."),
            "first_access_time": TIME,
            "access_count": {"type": "integer", "minimum": 0},
        },
        ["url", "short_url", "first_access_time", "access_count"],
    ),
    "Message": _obj(
        {
            "msgid": _str(),
            "status": _str(
                "QUEUED -> DELIVERING (SMSC accepted every part) -> DELIVERED (every receipt"
                " DELIVRD) or FAIL.",
                enum=["QUEUED", "DELIVERING", "DELIVERED", "FAIL"],
            ),
            "recipient": _str(),
            "sender": _str(),
            "parts": {"type": "integer", "minimum": 1},
            "cost": {"type": "number", "description": "parts x the price for the destination prefix."},
            "sent_time": TIME,
            "tags": _array(_str()),
            "url": _str("This message's status URL."),
            "smsc": _nullable(
                _str("The SMSC connector that took the message, or refused it; null before that.")
            ),
            "template_id": _str("Set for messages sent from a template."),
            "link_tracking": {**_array(_ref("LinkTracking")), "description": "When track_link was set."},
        },
        ["msgid", "status", "recipient", "sender", "parts", "cost", "sent_time", "tags", "url", "smsc"],
    ),
    "Template": _obj(
        {
            "template_id": _str(),
            "name": _str(),
            "content": _str("Text with `{placeholder}`s; `{{` and `}}` are literal braces."),
            "status": _str(
                "Set by the operator only; only APPROVED templates can be sent.",
                enum=["PENDING", "APPROVED", "REJECTED"],
            ),
            "created_at": TIME,
            "updated_at": TIME,
        },
        ["template_id", "name", "content", "status", "created_at", "updated_at"],
    ),
    "AutoReply": _obj(
        {
            "rule_id": _str(),
            "match": _str(enum=["keyword", "regex"]),
            "pattern": _str(),
            "reply": _str(),
            "created_at": TIME,
        },
        ["rule_id", "match", "pattern", "reply", "created_at"],
    ),
    "Inbound": _obj(
        {
            "id": _str(),
            "sender": _str(),
            "recipient": _str("The SIN it was sent to."),
            "message": _str(),
            "recv_time": TIME,
        },
        ["id", "sender", "recipient", "message", "recv_time"],
    ),
    "SinchInbound": _obj(
        {
            "type": _str(enum=["mo_text"]),
            "id": _str(),
            "from": _str("Digits, no +."),
            "to": _str("Digits, no +."),
            "body": _str(),
            "received_at": _str("ISO-8601 UTC with milliseconds."),
            "sent_at": _str(),
            "operator_id": _nullable(_str()),
            "client_reference": _nullable(_str()),
        },
        ["type", "id", "from", "to", "body", "received_at", "sent_at", "operator_id", "client_reference"],
    ),
    "SinchInboundList": _obj(
        {
            "count": {"type": "integer"},
            "page": {"type": "integer"},
            "page_size": {"type": "integer"},
            "inbounds": _array(_ref("SinchInbound")),
        },
        ["count", "page", "page_size", "inbounds"],
    ),
    "Call": _obj(
        {
            "callid": _str(),
            "direction": _str(enum=["inbound", "outbound"]),
            "status": _str("QUEUED, IN_PROGRESS, COMPLETED, FAILED, NO_ANSWER, BUSY."),
            "caller": _str(),
            "recipient": _str(),
            "start_time": TIME,
            "answer_time": TIME,
            "end_time": TIME,
            "duration": {"type": "integer", "description": "Seconds."},
            "cost": {"type": "number"},
            "actions": {"type": "array", "description": "The actions run, in order."},
            "result": _nullable(
                _str(
                    "How the call ended: completed, hangup, transferred, voicemail, transfer_busy, "
                    "transfer_no_answer, transfer_failed."
                )
            ),
            "transfer_status": _nullable(
                _str(
                    "Inbound: Asterisk's DIALSTATUS of the last transfer dialled (ANSWER, BUSY, "
                    "NOANSWER, CANCEL, CHANUNAVAIL, CONGESTION, ...); null without a transfer."
                )
            ),
            "transfer_seconds": _nullable(
                {
                    "type": "number",
                    "description": "Inbound, an answered transfer: seconds of conversation, from the "
                    "callee's answer to the end (no ringing), whole seconds of Asterisk's clock; null "
                    "when not answered or when Asterisk's dialplan lacks [gateway-transfer].",
                }
            ),
            "error": _nullable(_str("Why the fallback ran, if it did.")),
        },
        ["callid", "direction", "status", "caller", "recipient", "start_time", "duration", "cost"],
    ),
    "Voicemail": _obj(
        {
            "voicemail_id": _str(),
            "callid": _str(),
            "caller": _str(),
            "recipient": _str(),
            "duration": {"type": "number", "description": "Seconds."},
            "size": {"type": "integer", "description": "Bytes of WAV audio."},
            "created_at": TIME,
            "audio_url": _str("Path of the WAV recording."),
        },
        ["voicemail_id", "callid", "caller", "recipient", "duration", "size", "created_at", "audio_url"],
    ),
    "Index": _obj(
        {
            "name": _str(),
            "docs": _str("Path of the human-readable API documentation.", enum=["/docs"]),
            "openapi": _str("Path of this OpenAPI document.", enum=["/openapi.json"]),
            "health": _str("Path of the liveness check.", enum=["/healthz"]),
            "authentication": _str(),
        },
        ["name", "docs", "openapi", "health", "authentication"],
    ),
    "Health": _obj({"status": _str(enum=["ok"])}, ["status"]),
    "Ready": _obj({"status": _str(enum=["ready"]), "database": _str(enum=["up"])}, ["status", "database"]),
}


def _number_schemas(kind: str) -> dict[str, JSON]:
    cap = kind.capitalize()
    base = {
        kind: _str("The number, E.164."),
        f"{kind}_uid": _str(),
        "country_code": _str("ISO 3166-1 alpha-2."),
        "prefix": _str("Digits."),
        "monthly_cost": {"type": "number"},
    }
    available = {**base, "minute_cost": {"type": "number"}}
    subscription: JSON = dict(base)
    if kind == "din":
        subscription["minute_cost"] = {"type": "number"}
    subscription["action_url"] = _nullable(_str())
    if kind == "din":
        subscription["voicemail_url"] = _nullable(_str())
    subscription["subscribed_at"] = TIME
    return {
        f"{cap}Number": _obj(available, list(available)),
        f"{cap}Subscription": _obj(subscription, list(subscription)),
    }


SCHEMAS.update(_number_schemas("sin"))
SCHEMAS.update(_number_schemas("din"))

ERROR_DESCRIPTIONS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", 'Invalid input: `{"field": ["reason", ...]}` naming every bad field.'),
    401: ("Detail", "Missing or invalid credentials."),
    403: ("Detail", "The account may not do this (freeform SMS not enabled)."),
    404: ("Detail", "Unknown, deleted, or another account's resource."),
    413: ("Detail", "Request body over the configured `http.max_body_bytes`."),
    415: ("Detail", "Unsupported Content-Type: send form-encoded or JSON."),
    422: ("VariableErrors", "Template variables missing or not in the template."),
    429: (
        "Detail",
        "Too many requests: the account's rate limit, too many failed logins from this address, or "
        "(on /l/) too many unknown codes from this address; see the Retry-After header.",
    ),
    503: (
        "Detail",
        "Temporarily unavailable: the database does not answer, or the feature (outbound calls) "
        "is not available on this gateway right now; see the Retry-After header when present.",
    ),
}

BODY_ERRORS = (400, 413, 415)
# Every authenticated route looks the credentials up in the database: 503 while it is away.
AUTH_ERRORS = (401, 429, 503)

# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    tag: str
    operation_id: str
    summary: str
    description: str = ""
    ok_status: int = 200
    ok_schema: JSON | None = None  # JSON body of the success answer
    ok_content: JSON | None = None  # or a ready `content` map (non-JSON answers)
    ok_description: str = "OK"
    ok_headers: JSON | None = None
    query: tuple[JSON, ...] = ()
    body: JSON | None = None  # request body schema (form-encoded and JSON alike)
    json_body: JSON | None = None  # a JSON-only variant, when nesting differs from the form one
    errors: tuple[int, ...] = ()  # besides the ones implied (auth, body, path params)
    security: str = "basic"  # basic | basic+bearer | public | metrics
    path_params: Mapping[str, JSON] = field(default_factory=dict)
    alias_of: str | None = None


def _q(name: str, description: str, schema: JSON | None = None) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or _str(),
    }


SENT_DATE = _q(
    "sent_date",
    "Only messages sent on this day. The Xoxzo filter is the raw query `sent_date<op>YYYY-mm-dd` with"
    " op one of `=`, `<`, `<=`, `>`, `>=` (e.g. `?sent_date>=2026-11-01`): give exactly one, within"
    " the retention period (90 days). Without it: every message within that period. Newest first.",
    _str(format="date"),
)
COUNTRY = _q("country", "ISO 3166-1 alpha-2 code, e.g. JP.", _str(pattern="^[A-Za-z]{2}$"))
PREFIX = _q("prefix", "Digits the number starts with (after +), e.g. 813.", _str(pattern="^[0-9]+$"))
INBOUND_QUERY = (
    _q("to", "Comma-separated list of your numbers (E.164, + optional)."),
    _q("start_date", "ISO-8601 date or date-time (UTC if no offset); default 24 hours ago."),
    _q("end_date", "ISO-8601 date or date-time; must be after start_date."),
    _q("client_reference", "Exact match."),
    _q("page", "Page number, from 0.", {"type": "integer", "minimum": 0, "maximum": 1_000_000}),
    _q("page_size", "At most 100; default 30.", {"type": "integer", "minimum": 1, "maximum": 100}),
)

OUTBOUND_FIELDS: JSON = {
    "recipient": _str("E.164, e.g. +818012345678.", pattern=E164, examples=["+818012345678"]),
    "sender": _str(
        "1-10 letters/digits with at least one letter, or a number of at most 15 digits.",
        pattern="^(\\+?[0-9]{1,15}|[A-Za-z0-9]{1,10})$",
        examples=["DEMO"],
    ),
    "callbackurl": {**URL, "description": "Receives a signed POST on every status change."},
    "tags": _str("Comma-separated, at most 10 tags of 1-64 characters.", examples=["promo,jp"]),
    "track_link": _str(
        "`true`: URLs in the text become tracked short links.", enum=["true", "false", "1", "0", "yes", "no"]
    ),
    "lt_callbackurl": {**URL, "description": "Receives a signed POST on a tracked link's first access."},
}
SEND_SMS = _obj(
    {"message": _str("UTF-8 text; GSM 03.38 when possible, else UCS-2.", minLength=1), **OUTBOUND_FIELDS},
    ["message", "recipient", "sender"],
)
VARIABLES_DOC = "Placeholder name -> value; exactly the template's placeholders."
SEND_TEMPLATE_JSON = _obj(
    {
        **OUTBOUND_FIELDS,
        "variables": {"type": "object", "additionalProperties": _str(), "description": VARIABLES_DOC},
    },
    ["recipient", "sender"],
)
SEND_TEMPLATE_FORM = _obj(
    {**OUTBOUND_FIELDS, "variables": _str(f"{VARIABLES_DOC} A JSON object, encoded as a string.")},
    ["recipient", "sender"],
)
TEMPLATE_FIELDS: JSON = {
    "name": _str("At most 200 characters.", minLength=1, maxLength=200),
    "content": _str("At most 2000 characters, `{name}` placeholders.", minLength=1, maxLength=2000),
}

P_MSGID = {"msgid": _str("Message id.", pattern=HEX32)}
P_TEMPLATE = {"uid": _str("Template id (`template_id`).", pattern=HEX32)}

OPERATIONS: dict[tuple[str, str], Op] = {}


def _add(method: str, path: str, op: Op, *, alias: bool = False) -> None:
    """Register `op`; with alias=True also the same path without its trailing slash."""
    OPERATIONS[(method, path)] = op
    if alias:
        bare = path.rstrip("/")
        OPERATIONS[(method, bare)] = replace(op, operation_id=op.operation_id + "NoSlash", alias_of=path)


def _table() -> None:
    sms, tpl = "SMS", "Templates"
    _add(
        "POST",
        "/sms/messages/",
        Op(
            sms,
            "sendSms",
            "Send a freeform SMS",
            "Needs the account flag `freeform` (else 403). A 201 means the message is committed to"
            " the queue. Recipients on the account's opt-out list are refused (400 `recipient`).",
            ok_status=201,
            ok_schema=_ref("MsgidList"),
            ok_description="Queued.",
            body=SEND_SMS,
            errors=(403,),
        ),
    )
    _add(
        "GET",
        "/sms/messages/",
        Op(
            sms,
            "listSms",
            "List sent messages",
            query=(SENT_DATE,),
            ok_schema=_array(_ref("Message")),
            errors=(400,),
        ),
    )
    _add(
        "GET",
        "/sms/messages/{msgid}/",
        Op(sms, "getSms", "Status of a message", ok_schema=_ref("Message"), path_params=P_MSGID),
        alias=True,
    )
    _add(
        "GET",
        "/sms/templates/",
        Op(tpl, "listTemplates", "List templates", ok_schema=_array(_ref("Template"))),
    )
    _add(
        "POST",
        "/sms/templates/",
        Op(
            tpl,
            "createTemplate",
            "Create a template",
            "Created PENDING; the operator approves or rejects it.",
            ok_status=201,
            ok_schema=_ref("Template"),
            body=_obj(TEMPLATE_FIELDS, ["name", "content"]),
        ),
    )
    _add(
        "GET",
        "/sms/templates/messages/{msgid}/",
        Op(
            tpl,
            "getTemplateMessage",
            "Status of a message sent from a template",
            ok_schema=_ref("Message"),
            path_params=P_MSGID,
        ),
        alias=True,
    )
    _add(
        "GET",
        "/sms/templates/{uid}/",
        Op(tpl, "getTemplate", "A template", ok_schema=_ref("Template"), path_params=P_TEMPLATE),
        alias=True,
    )
    _add(
        "PUT",
        "/sms/templates/{uid}/",
        Op(
            tpl,
            "updateTemplate",
            "Change a template",
            "A changed `content` puts the template back to PENDING.",
            ok_schema=_ref("Template"),
            body=_obj(TEMPLATE_FIELDS),
            path_params=P_TEMPLATE,
        ),
    )
    _add(
        "DELETE",
        "/sms/templates/{uid}/",
        Op(tpl, "deleteTemplate", "Delete a template", ok_schema=_ref("Empty"), path_params=P_TEMPLATE),
    )
    _add(
        "POST",
        "/sms/templates/{uid}/messages/",
        Op(
            tpl,
            "sendTemplate",
            "Send an SMS from an approved template",
            "A template that is not APPROVED is 400 `template`; missing or extra variables are 422.",
            ok_status=201,
            ok_schema=_ref("MsgidList"),
            ok_description="Queued.",
            body=SEND_TEMPLATE_FORM,
            json_body=SEND_TEMPLATE_JSON,
            errors=(422,),
            path_params=P_TEMPLATE,
        ),
    )
    _add(
        "GET",
        "/sms/templates/{uid}/messages/",
        Op(
            tpl,
            "listTemplateMessages",
            "Messages sent from a template",
            query=(SENT_DATE,),
            ok_schema=_array(_ref("Message")),
            errors=(400,),
            path_params=P_TEMPLATE,
        ),
    )
    _numbers("sin", "/sms/sins", "SINs")
    _numbers("din", "/voice/dins", "DINs")
    rules = "/sms/sins/subscriptions/{uid}/autoreplies/"
    p_sin = {"uid": _str("`sin_uid` of your subscription.")}
    _add(
        "GET",
        rules,
        Op(
            "SINs",
            "listAutoReplies",
            "Auto-reply rules of a SIN",
            ok_schema=_array(_ref("AutoReply")),
            path_params=p_sin,
        ),
        alias=True,
    )
    _add(
        "POST",
        rules,
        Op(
            "SINs",
            "addAutoReply",
            "Add an auto-reply rule",
            "The first matching rule answers an MO; opt-out keywords are never matched.",
            ok_status=201,
            ok_schema=_ref("AutoReply"),
            body=_obj(
                {
                    "match": _str(enum=["keyword", "regex"]),
                    "pattern": _str("A single word (keyword), or a regular expression."),
                    "reply": _str("The answer text."),
                },
                ["match", "pattern", "reply"],
            ),
            path_params=p_sin,
        ),
    )
    _add(
        "DELETE",
        rules + "{rule_id}/",
        Op(
            "SINs", "deleteAutoReply", "Delete an auto-reply rule", ok_schema=_ref("Empty"), path_params=p_sin
        ),
    )
    inb = "Inbound"
    _add(
        "GET",
        "/sms/inbounds/",
        Op(
            inb,
            "listInbounds",
            "Received SMS (Xoxzo style)",
            query=INBOUND_QUERY,
            ok_schema=_array(_ref("Inbound")),
            errors=(400,),
        ),
    )
    _add(
        "GET",
        "/sms/inbounds/{uid}/",
        Op(inb, "getInbound", "A received SMS", ok_schema=_ref("Inbound")),
        alias=True,
    )
    _add(
        "POST",
        "/sms/inbounds/{uid}/reply/",
        Op(
            inb,
            "replyInbound",
            "Reply to a received SMS",
            "Sent from the SIN to the original sender, while you hold the SIN (else 403).",
            ok_status=201,
            ok_schema=_ref("MsgidList"),
            body=_obj({"message": _str(minLength=1)}, ["message"]),
            errors=(403,),
        ),
    )
    p_plan = {"plan": _str("Your SID (Sinch `service_plan_id`).")}
    _add(
        "GET",
        "/xms/v1/{plan}/inbounds",
        Op(
            inb,
            "sinchListInbounds",
            "Received SMS (Sinch XMS style)",
            query=INBOUND_QUERY,
            ok_schema=_ref("SinchInboundList"),
            errors=(400,),
            security="basic+bearer",
            path_params=p_plan,
        ),
    )
    _add(
        "GET",
        "/xms/v1/{plan}/inbounds/{uid}",
        Op(
            inb,
            "sinchGetInbound",
            "A received SMS (Sinch XMS style)",
            ok_schema=_ref("SinchInbound"),
            security="basic+bearer",
            path_params=p_plan,
        ),
    )
    voice = "Voice"
    _add(
        "POST",
        "/voice/simple/playbacks/",
        Op(
            voice,
            "createPlayback",
            "Place a call that plays a recording or speaks a text",
            "Give `recording_url`, or `tts_message` and `tts_lang`. Originated through Asterisk AMI."
            "\n\nToll-fraud guards: `recipient` must start with a prefix the operator allows for"
            " your account and must not be a premium-rate, shared-cost or similar number (400"
            " naming `recipient`); `caller` must be one of your DINs or a caller id the operator"
            " verified for your account (400 naming `caller`). Over your account's limit of"
            " outbound calls at once or per minute: 429 with `Retry-After` and"
            ' `{"detail": "...", "limit": "outbound_max_concurrent"}` (or'
            " `outbound_max_per_minute`). Nothing is written or dialled when a call is refused.",
            ok_status=201,
            ok_schema=_ref("CallidList"),
            body=_obj(
                {
                    "caller": _str("E.164: one of your DINs, or a caller id verified for you.", pattern=E164),
                    "recipient": _str("E.164, under a prefix your account may call.", pattern=E164),
                    "recording_url": {**URL, "description": "mp3 or wav to play."},
                    "tts_message": _str("Text to speak."),
                    "tts_lang": _str("Language, e.g. en, ja."),
                    "callbackurl": URL,
                },
                ["caller", "recipient"],
            ),
            errors=(503,),
        ),
    )
    _add(
        "GET",
        "/voice/calls/",
        Op(voice, "listCalls", "Call records, newest first (at most 1000)", ok_schema=_array(_ref("Call"))),
    )
    _add(
        "GET",
        "/voice/calls/{callid}/",
        Op(voice, "getCall", "A call record", ok_schema=_ref("Call")),
        alias=True,
    )
    _add(
        "GET",
        "/voice/voicemails/",
        Op(
            voice,
            "listVoicemails",
            "Voicemails, newest first (at most 1000)",
            ok_schema=_array(_ref("Voicemail")),
        ),
    )
    _add(
        "GET",
        "/voice/voicemails/{vid}/",
        Op(voice, "getVoicemail", "A voicemail's metadata", ok_schema=_ref("Voicemail")),
        alias=True,
    )
    _add(
        "GET",
        "/voice/voicemails/{vid}/audio",
        Op(
            voice,
            "getVoicemailAudio",
            "A voicemail's recording",
            ok_content={"audio/wav": {"schema": {"type": "string", "contentMediaType": "audio/wav"}}},
            ok_description="WAV audio.",
        ),
    )
    pub = "Public"
    _add(
        "GET",
        "/",
        Op(
            pub,
            "index",
            "Where to start: the paths of the documentation and this document",
            ok_schema=_ref("Index"),
            security="public",
        ),
    )
    _add(
        "GET",
        "/l/{code}",
        Op(
            pub,
            "followLink",
            "Tracked link redirect",
            "Records the first access and calls `lt_callbackurl`. Unknown codes are limited per "
            "client address (`links.miss_burst`, `links.miss_per_minute`); past the limit every "
            "code answers 429 until Retry-After.",
            ok_status=302,
            ok_content={},
            ok_description="Redirect to the original URL.",
            ok_headers={"Location": {"schema": _str(format="uri")}},
            errors=(404, 429),
            security="public",
        ),
    )
    _add(
        "GET",
        "/healthz",
        Op(pub, "health", "Liveness: the process serves HTTP", ok_schema=_ref("Health"), security="public"),
    )
    _add(
        "GET",
        "/readyz",
        Op(
            pub,
            "ready",
            "Readiness: the database answers",
            "503 while the database does not answer within 2 s. The SMSC, webhook receivers and "
            "Asterisk are not checked: work for them is queued durably.",
            ok_schema=_ref("Ready"),
            errors=(503,),
            security="public",
        ),
    )
    _add(
        "GET",
        "/openapi.json",
        Op(
            pub,
            "openapi",
            "This OpenAPI document",
            ok_content={"application/json": {"schema": {"type": "object"}}},
            security="public",
        ),
    )
    _add(
        "GET",
        "/docs",
        Op(
            pub,
            "docs",
            "Human-readable API documentation (self-contained HTML)",
            ok_content={"text/html": {"schema": _str()}},
            security="public",
        ),
    )
    _add(
        "GET",
        "/metrics",
        Op(
            "Operations",
            "metrics",
            "Prometheus metrics (text exposition format 0.0.4)",
            "Open unless a metrics token is configured; then `Authorization: Bearer <token>`."
            " Counters are per node; the queue and webhook backlog gauges read the shared database.",
            ok_content={"text/plain": {"schema": _str()}},
            errors=(401, 404),
            security="metrics",
        ),
    )


def _numbers(kind: str, base: str, tag: str) -> None:
    cap, label = kind.capitalize(), kind.upper()
    subs = f"{base}/subscriptions/"
    p_uid = {"uid": _str(f"`{kind}_uid` of your subscription.")}
    number, sub = _ref(f"{cap}Number"), _ref(f"{cap}Subscription")
    urls: JSON = {"action_url": {**URL, "description": "Webhook for this number."}}
    if kind == "din":
        urls["voicemail_url"] = {**URL, "description": "Receives a signed POST on each new voicemail."}
    _add(
        "GET",
        f"{base}/",
        Op(
            tag,
            f"list{cap}s",
            f"{label}s available to subscribe to",
            query=(COUNTRY, PREFIX),
            ok_schema=_array(number),
            errors=(400,),
        ),
        alias=True,
    )
    _add(
        "POST",
        subs,
        Op(
            tag,
            f"subscribe{cap}",
            f"Subscribe to a {label}",
            ok_status=201,
            ok_schema=sub,
            body=_obj({f"{kind}_uid": _str()}, [f"{kind}_uid"]),
        ),
    )
    _add(
        "GET",
        subs,
        Op(tag, f"list{cap}Subscriptions", f"Your {label} subscriptions", ok_schema=_array(sub)),
        alias=True,
    )
    _add(
        "GET",
        subs + "{uid}/",
        Op(tag, f"get{cap}Subscription", f"One {label} subscription", ok_schema=sub, path_params=p_uid),
        alias=True,
    )
    _add(
        "POST",
        subs + "{uid}/",
        Op(
            tag,
            f"set{cap}Urls",
            f"Set the {label}'s webhook URL(s)",
            ok_schema=sub,
            body=_obj(urls),
            path_params=p_uid,
        ),
    )
    _add(
        "DELETE",
        subs + "{uid}/",
        Op(
            tag,
            f"unsubscribe{cap}",
            f"End a {label} subscription",
            ok_schema=_ref("Empty"),
            path_params=p_uid,
        ),
    )


_table()

# --- walking the app --------------------------------------------------------------------------

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def served_operations(app: web.Application) -> list[tuple[str, str]]:
    """(METHOD, path template) for every route the app answers, HEAD left out (aiohttp adds it to
    every GET; it answers like the GET without a body)."""
    out: list[tuple[str, str]] = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*"):
            continue
        key = (route.method, resource.canonical)
        if key not in out:
            out.append(key)
    return out


def undocumented(app: web.Application) -> list[tuple[str, str]]:
    return [key for key in served_operations(app) if key not in OPERATIONS]


def _response(schema_name: str, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _operation(method: str, path: str, op: Op) -> JSON:
    params: list[JSON] = []
    for name in _PARAM.findall(path):
        schema = op.path_params.get(name, _str())
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": schema.get("description", ""),
                "schema": {k: v for k, v in schema.items() if k != "description"},
            }
        )
    params.extend(copy.deepcopy(list(op.query)))
    ok: JSON = {"description": op.ok_description}
    if op.ok_content is not None:
        if op.ok_content:
            ok["content"] = copy.deepcopy(op.ok_content)
    elif op.ok_schema is not None:
        ok["content"] = {"application/json": {"schema": copy.deepcopy(op.ok_schema)}}
    if op.ok_headers:
        ok["headers"] = copy.deepcopy(op.ok_headers)
    responses: JSON = {str(op.ok_status): ok}
    codes = set(op.errors)
    if op.security in ("basic", "basic+bearer"):
        codes.update(AUTH_ERRORS)
    if op.body is not None:
        codes.update(BODY_ERRORS)
    if _PARAM.search(path) and op.security != "metrics":
        codes.add(404)
    for code in sorted(codes):
        schema_name, description = ERROR_DESCRIPTIONS[code]
        responses[str(code)] = _response(schema_name, description)
        if code in (429, 503):
            responses[str(code)]["headers"] = {
                "Retry-After": {
                    "description": "Whole seconds until a new request is worth trying.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
    out: JSON = {"tags": [op.tag], "operationId": op.operation_id, "summary": op.summary}
    description = op.description
    if op.alias_of:
        description = (description + "\n\n" if description else "") + (
            f"Same as `{method} {op.alias_of}`, without the trailing slash (xoxzo-cloudpy omits it)."
        )
        out["x-alias-of"] = op.alias_of
    if description:
        out["description"] = description
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": copy.deepcopy(op.body)},
                "application/json": {"schema": copy.deepcopy(op.json_body or op.body)},
            },
        }
    out["responses"] = responses
    if op.security == "public":
        out["security"] = []
    elif op.security == "basic+bearer":
        out["security"] = [{"basicAuth": []}, {"bearerAuth": []}]
    elif op.security == "metrics":
        out["security"] = [{}, {"metricsToken": []}]
    return out


DESCRIPTION = """\
Self-hosted SMS and voice gateway, compatible with Xoxzo's cloud telephony API.

**Authentication**: HTTP Basic with your SID and auth token on every API route. The Sinch-style
`/xms/v1/<service_plan_id>/...` routes also take `Authorization: Bearer <auth token>` with your
SID as the service plan id.

**Requests** accept form-encoded (`application/x-www-form-urlencoded`) and JSON bodies.

**Errors** are JSON: 400 `{"field": ["reason", ...]}` naming every bad field at once; 401, 403,
404, 413, 415 and 429 `{"detail": "..."}`; 422 `{"variables": {"name": ["reason"]}}` for
template variables. Nothing is written when a request is refused.

**Rate limit**: when enabled, each account has a token bucket (a sustained rate and a burst).
Over it the answer is 429 with a `Retry-After` header in seconds. The buckets are kept per
gateway node: behind a load balancer with N nodes an account can reach N times the rate.
"""


def build_document(app: web.Application, server_url: str | None = None) -> JSON:
    """The OpenAPI document for exactly the routes `app` serves."""
    if server_url is None:
        cfg = app.get(CONFIG)
        server_url = cfg.public_base_url if cfg is not None else "/"
    paths: JSON = {}
    tags: list[str] = []
    for method, path in served_operations(app):
        op = OPERATIONS.get((method, path))
        if op is None:
            name = re.sub(r"[^A-Za-z0-9]+", "_", f"{method}_{path}").strip("_")
            entry: JSON = {
                "tags": ["Undocumented"],
                "operationId": f"undocumented_{name}",
                "summary": "Undocumented route",
                "x-undocumented": True,
                "responses": {"default": {"description": "Not described yet."}},
            }
            params = [
                {"name": n, "in": "path", "required": True, "schema": _str()} for n in _PARAM.findall(path)
            ]
            if params:
                entry["parameters"] = params
            tag = "Undocumented"
        else:
            entry, tag = _operation(method, path, op), op.tag
        if tag not in tags:
            tags.append(tag)
        paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Voice/SMS gateway API", "version": API_VERSION, "description": DESCRIPTION},
        "servers": [{"url": server_url}],
        "tags": [{"name": t} for t in tags],
        "security": [{"basicAuth": []}],
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic", "description": "SID : auth token."},
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The auth token; only on /xms/ routes, whose path names the SID.",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The metrics token, when the operator configured one.",
                },
            },
        },
    }


# --- serving ----------------------------------------------------------------------------------

DOCS_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#fafbfc}
main{max-width:980px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin:32px 0 8px;border-bottom:1px solid #d8dee6;padding-bottom:4px}
pre,code{font:13px/1.4 ui-monospace,Menlo,Consolas,monospace}
.intro{white-space:pre-wrap;background:#fff;border:1px solid #d8dee6;padding:12px;border-radius:6px}
details{background:#fff;border:1px solid #d8dee6;border-radius:6px;margin:6px 0}
summary{cursor:pointer;padding:8px 10px}
.m{display:inline-block;min-width:64px;font-weight:700;font-family:ui-monospace,monospace}
.GET{color:#1a6fb3}.POST{color:#1b7f3b}.PUT{color:#9a6700}.DELETE{color:#b42318}
.body{padding:0 14px 10px}.alias{color:#6b7785;font-size:13px}
table{border-collapse:collapse;width:100%;margin:6px 0}
td,th{border:1px solid #e3e8ee;padding:4px 6px;text-align:left;vertical-align:top}
ul.s{margin:2px 0;padding-left:18px}.req{color:#b42318}.t{color:#6b7785}
"""

DOCS_SCRIPT = r"""
(function () {
  "use strict";
  var spec = JSON.parse(document.getElementById("spec").textContent);
  var root = document.getElementById("app");
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    (kids || []).forEach(function (k) {
      e.appendChild(typeof k === "string" ? document.createTextNode(k) : k);
    });
    return e;
  }
  function deref(s) {
    var seen = 0;
    while (s && s.$ref && seen++ < 20) {
      s = s.$ref.split("/").slice(1).reduce(function (o, p) { return o[p]; }, spec);
    }
    return s || {};
  }
  function typeOf(s) {
    var t = s.type || (s.anyOf ? "one of" : s.$ref ? "" : "any");
    t = Array.isArray(t) ? t.join(" | ") : t;
    if (s.format) t += " (" + s.format + ")";
    if (s.enum) t += " " + s.enum.map(function (v) { return JSON.stringify(v); }).join(" | ");
    if (s.pattern) t += " /" + s.pattern + "/";
    return t;
  }
  function schemaTree(s, depth) {
    var name = s && s.$ref ? s.$ref.split("/").pop() : "";
    s = deref(s);
    var line = el("span", {}, [el("span", {"class": "t"}, [(name ? name + ": " : "") + typeOf(s)])]);
    if (s.description) line.appendChild(document.createTextNode(" - " + s.description));
    var out = el("div", {}, [line]);
    if (depth > 6) return out;
    if (s.anyOf) {
      var alts = el("ul", {"class": "s"});
      s.anyOf.forEach(function (a) { alts.appendChild(el("li", {}, [schemaTree(a, depth + 1)])); });
      out.appendChild(alts);
    }
    function sub(label, schema) {
      return el("ul", {"class": "s"}, [el("li", {}, [label, schemaTree(schema, depth + 1)])]);
    }
    if (s.items) out.appendChild(sub("items: ", s.items));
    if (s.properties) {
      var ul = el("ul", {"class": "s"});
      var req = s.required || [];
      Object.keys(s.properties).forEach(function (p) {
        var li = el("li", {}, [el("code", {}, [p])]);
        if (req.indexOf(p) >= 0) li.appendChild(el("span", {"class": "req"}, [" *"]));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(schemaTree(s.properties[p], depth + 1));
        ul.appendChild(li);
      });
      out.appendChild(ul);
    }
    if (s.additionalProperties && typeof s.additionalProperties === "object") {
      out.appendChild(sub("<name>: ", s.additionalProperties));
    }
    return out;
  }
  function operation(path, method, op) {
    var m = method.toUpperCase();
    var summary = el("summary", {}, [el("span", {"class": "m " + m}, [m]),
      " ", el("code", {}, [path]), "  " + (op.summary || "")]);
    if (op["x-alias-of"]) summary.appendChild(el("span", {"class": "alias"}, ["  (alias)"]));
    var body = el("div", {"class": "body"});
    if (op.description) body.appendChild(el("p", {}, [op.description]));
    var sec = op.security || spec.security || [];
    var names = sec.map(function (r) { return Object.keys(r).join(" + ") || "none"; });
    body.appendChild(el("p", {}, ["Auth: " + (names.length ? names.join(" or ") : "none")]));
    if (op.parameters) {
      var head = ["Parameter", "In", "Schema / description"].map(function (h) { return el("th", {}, [h]); });
      var t = el("table", {}, [el("tr", {}, head)]);
      op.parameters.forEach(function (p) {
        var cell = el("td", {}, [schemaTree(p.schema || {}, 0)]);
        if (p.description) cell.appendChild(el("div", {}, [p.description]));
        var req = p.required ? el("span", {"class": "req"}, [" *"]) : "";
        var name = el("td", {}, [el("code", {}, [p.name]), req]);
        t.appendChild(el("tr", {}, [name, el("td", {}, [p["in"]]), cell]));
      });
      body.appendChild(t);
    }
    if (op.requestBody) {
      body.appendChild(el("h4", {}, ["Request body"]));
      Object.keys(op.requestBody.content).forEach(function (ct) {
        var schema = op.requestBody.content[ct].schema;
        body.appendChild(el("div", {}, [el("code", {}, [ct]), schemaTree(schema, 0)]));
      });
    }
    body.appendChild(el("h4", {}, ["Responses"]));
    var rt = el("table");
    Object.keys(op.responses).forEach(function (code) {
      var r = op.responses[code];
      var cell = el("td", {}, [r.description || ""]);
      Object.keys(r.content || {}).forEach(function (ct) {
        cell.appendChild(el("div", {}, [el("code", {}, [ct]), schemaTree(r.content[ct].schema || {}, 0)]));
      });
      Object.keys(r.headers || {}).forEach(function (h) {
        var text = ": " + (r.headers[h].description || "");
        cell.appendChild(el("div", {}, ["Header ", el("code", {}, [h]), text]));
      });
      rt.appendChild(el("tr", {}, [el("td", {}, [el("b", {}, [code])]), cell]));
    });
    body.appendChild(rt);
    return el("details", {}, [summary, body]);
  }
  root.appendChild(el("h1", {}, [spec.info.title]));
  root.appendChild(el("p", {}, ["Version " + spec.info.version + " - OpenAPI " + spec.openapi + " - ",
    el("a", {href: "openapi.json"}, ["openapi.json"])]));
  root.appendChild(el("div", {"class": "intro"}, [spec.info.description || ""]));
  var byTag = {};
  Object.keys(spec.paths).forEach(function (path) {
    Object.keys(spec.paths[path]).forEach(function (method) {
      var op = spec.paths[path][method];
      var tag = (op.tags || ["Other"])[0];
      (byTag[tag] = byTag[tag] || []).push(operation(path, method, op));
    });
  });
  (spec.tags || []).map(function (t) { return t.name; }).concat(Object.keys(byTag)).forEach(function (tag) {
    if (!byTag[tag]) return;
    root.appendChild(el("h2", {id: tag}, [tag]));
    byTag[tag].forEach(function (d) { root.appendChild(d); });
    delete byTag[tag];
  });
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only our own inline script and style run; nothing is loaded from anywhere, not even this host.
DOCS_CSP = (
    f"default-src 'none'; script-src {_csp_hash(DOCS_SCRIPT)}; style-src {_csp_hash(DOCS_STYLE)};"
    " img-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _embed_json(doc: JSON) -> str:
    """JSON safe inside <script type="application/json">: no `</script>` or `<!--` can appear."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_docs(doc: JSON) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_html_escape(doc['info']['title'])} - API documentation</title>"
        f'<style>{DOCS_STYLE}</style></head><body><main id="app">'
        '<noscript><p>This page renders <a href="openapi.json">openapi.json</a>'
        " with JavaScript.</p></noscript>"
        "</main>"
        f'<script type="application/json" id="spec">{_embed_json(doc)}</script>'
        f"<script>{DOCS_SCRIPT}</script></body></html>\n"
    )


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build_document(request.app))


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    html = render_docs(build_document(request.app))
    return web.Response(
        text=html,
        content_type="text/html",
        headers={"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"},
    )
