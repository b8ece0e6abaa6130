"""Outbound calls, Xoxzo style: POST /voice/simple/playbacks/ (xoxzo-cloudpy's
call_simple_playback and call_tts_playback). The call's status is read at /voice/calls/<callid>
(routes_voice)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from actions_dsl.values import lang_problem, text_problem, url_problem
from gateway.egress.policy import SsrfPolicy
from gateway.http.errors import json_response
from gateway.http.params import FieldCollector, optional_str, read_params
from gateway.keys import ACCOUNT, URL_POLICY
from gateway.services import validation as v
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

routes = web.RouteTableDef()

# Line breaks and tabs in a TTS message are spacing, not content: spoken the same as a space.
_SPACING = re.compile(r"[\r\n\t]+")
_EITHER = "Give either recording_url, or tts_message and tts_lang."


def _media(p: dict[str, Any], policy: SsrfPolicy) -> Media:
    url = optional_str(p, "recording_url") or ""
    message = optional_str(p, "tts_message") or ""
    lang = (optional_str(p, "tts_lang") or "").strip()
    if url and (message or lang):
        raise FieldErrors.one("recording_url", f"{_EITHER} Not both.")
    if url:
        checked = v.http_url("recording_url", url, policy) or ""
        problem = url_problem(checked)
        if problem is not None:
            raise FieldErrors.one("recording_url", problem.message)
        return Recording(checked)
    if not message and not lang:
        raise FieldErrors.one("recording_url", f"This field is required. {_EITHER}")
    errors: dict[str, list[str]] = {}
    message = _SPACING.sub(" ", message).strip()
    if not message:
        errors["tts_message"] = ["This field is required."]
    elif (problem := text_problem(message)) is not None:
        errors["tts_message"] = [problem.message]
    if not lang:
        errors["tts_lang"] = ["This field is required."]
    elif (problem := lang_problem(lang)) is not None:
        errors["tts_lang"] = [problem.message]
    if errors:
        raise FieldErrors(errors)
    return Tts(message, lang)


@routes.post("/voice/simple/playbacks/")
async def create_playback(request: web.Request) -> web.Response:
    account = request[ACCOUNT]
    params = await read_params(request)
    c = FieldCollector()
    caller = c.check(lambda: v.e164("caller", optional_str(params, "caller")), "")
    recipient = c.check(lambda: v.e164("recipient", optional_str(params, "recipient")), "")
    policy = request.app[URL_POLICY]
    media: Media | None = c.check(lambda: _media(params, policy), None)
    callbackurl = c.check(
        lambda: v.http_url("callbackurl", optional_str(params, "callbackurl"), policy), None
    )
    c.raise_if_any()
    assert media is not None  # no errors: _media returned
    calls = request.app.get(OUTBOUND)
    if calls is None:
        raise ApiError(503, {"detail": "Outbound calls are not enabled on this gateway."})
    try:
        callid = await calls.create(account.id, caller, recipient, media, callbackurl)
    except OutboundRefused as exc:
        raise FieldErrors(exc.errors) from None
    except OutboundLimited as exc:
        response = json_response({"detail": exc.message, "limit": exc.limit}, status=429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except OutboundUnavailable as exc:
        raise ApiError(503, {"detail": str(exc)}) from None
    return json_response([{"callid": callid}], status=201)
