"""Outbound calls, Xoxzo style: POST /voice/simple/playbacks/ (xoxzo-cloudpy's
call_simple_playback and call_tts_playback). The call's status is read at /voice/calls/<callid>
(routes_voice)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Self

from aiohttp import web
from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from actions_dsl.values import lang_problem, text_problem, url_problem
from gateway.egress.policy import SsrfPolicy
from gateway.http.api import Json, Routes, refusal
from gateway.http.errors import json_response
from gateway.http.fields import (
    MAX_URL,
    REQUIRED,
    E164OrDigits,
    OptionalText,
    Url,
    optional,
    reason,
    request_of,
)
from gateway.http.responses import Callid
from gateway.keys import ACCOUNT, URL_POLICY
from gateway.services import validation
from gateway.services.errors import ApiError, FieldErrors
from gateway.voice.outbound import (
    OUTBOUND,
    Media,
    OutboundLimited,
    OutboundRefused,
    OutboundUnavailable,
    Recording,
    Tts,
)

routes = Routes("Voice")

# Line breaks and tabs in a TTS message are spacing, not content: spoken the same as a space.
_SPACING = re.compile(r"[\r\n\t]+")
_EITHER = "Give either recording_url, or tts_message and tts_lang."


def _media(p: Mapping[str, Any], policy: SsrfPolicy) -> tuple[Media | None, dict[str, str]]:
    """The call's media from recording_url, or tts_message and tts_lang, judged together; or
    the problems, field -> reason."""
    try:
        url = optional(p.get("recording_url")) or ""
        message = optional(p.get("tts_message")) or ""
        lang = (optional(p.get("tts_lang")) or "").strip()
    except ValueError:  # not text: the field's own type reports it
        return None, {}
    if url and (message or lang):
        return None, {"recording_url": f"{_EITHER} Not both."}
    if url:
        try:
            checked = reason(lambda: validation.http_url("", url, policy)) or ""
        except ValueError as exc:
            return None, {"recording_url": str(exc)}
        problem = url_problem(checked)
        return (None, {"recording_url": problem.message}) if problem else (Recording(checked), {})
    if not message and not lang:
        return None, {"recording_url": f"{REQUIRED} {_EITHER}"}
    errors: dict[str, str] = {}
    message = _SPACING.sub(" ", message).strip()
    if not message:
        errors["tts_message"] = REQUIRED
    elif (problem := text_problem(message)) is not None:
        errors["tts_message"] = problem.message
    if not lang:
        errors["tts_lang"] = REQUIRED
    elif (problem := lang_problem(lang)) is not None:
        errors["tts_lang"] = problem.message
    return (None, errors) if errors else (Tts(message, lang), {})


class Playback(BaseModel):
    caller: E164OrDigits = Field(
        description="E.164 (the + may be left out): one of your DINs, or a caller id verified for you."
    )
    recipient: E164OrDigits = Field(
        description="E.164 (the + may be left out), under a prefix your account may call."
    )
    recording_url: OptionalText = Field(
        None, description="mp3 or wav to play.", json_schema_extra={"format": "uri", "maxLength": MAX_URL}
    )
    tts_message: OptionalText = Field(None, description="Text to speak.")
    tts_lang: OptionalText = Field(None, description="Language, e.g. en, ja.")
    callbackurl: Url = None
    _media: Media | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _either(cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo) -> Self:
        media, problems = _media(data if isinstance(data, Mapping) else {}, request_of(info).app[URL_POLICY])
        try:
            playback = handler(data)
        except ValidationError as exc:
            raise refusal(cls, problems, also=exc) from None
        if problems:
            raise refusal(cls, problems)
        playback._media = media
        return playback

    @property
    def media(self) -> Media:
        assert self._media is not None  # validated
        return self._media


@routes.post("/voice/simple/playbacks/", status=201, returns=list[Callid], errors={503})
async def create_playback(request: web.Request, body: Playback) -> Json:
    """Place a call that plays a recording or speaks a text

    Give `recording_url`, or `tts_message` and `tts_lang`. Originated through Asterisk AMI.

    Toll-fraud guards: `recipient` must start with a prefix the operator allows for your account
    and must not be a premium-rate, shared-cost or similar number (400 naming `recipient`);
    `caller` must be one of your DINs or a caller id the operator verified for your account (400
    naming `caller`). Over your account's limit of outbound calls at once or per minute: 429 with
    `Retry-After` and `{"detail": "...", "limit": "outbound_max_concurrent"}` (or
    `outbound_max_per_minute`). Nothing is written or dialled when a call is refused."""
    calls = request.app.get(OUTBOUND)
    if calls is None:
        raise ApiError(503, {"detail": "Outbound calls are not enabled on this gateway."})
    try:
        callid = await calls.create(
            request[ACCOUNT].id, body.caller, body.recipient, body.media, body.callbackurl
        )
    except OutboundRefused as exc:
        raise FieldErrors(exc.errors) from None
    except OutboundLimited as exc:
        response = json_response({"detail": exc.message, "limit": exc.limit}, status=429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except OutboundUnavailable as exc:
        raise ApiError(503, {"detail": str(exc)}) from None
    return [{"callid": callid}]
