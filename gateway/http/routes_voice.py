"""Call records and voicemails: /voice/calls/, /voice/voicemails/ (per account)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from aiohttp import web
from sqlalchemy import select

from gateway.db.models import Call, Voicemail
from gateway.http.errors import json_response, not_found
from gateway.keys import ACCOUNT, SESSIONS
from gateway.services.views import fmt_time

routes = web.RouteTableDef()
LIST_LIMIT = 1000


def call_json(c: Call) -> dict[str, Any]:
    return {
        "callid": c.uid,
        "direction": c.direction,
        "status": c.status,
        "caller": c.caller,
        "recipient": c.recipient,
        "start_time": fmt_time(c.started_at),
        "answer_time": fmt_time(c.answered_at),
        "end_time": fmt_time(c.ended_at),
        "duration": c.duration,
        "cost": float(c.cost),
        "actions": json.loads(c.actions or "[]"),
        "result": c.result,
        "transfer_status": c.transfer_status,
        "transfer_seconds": None if c.transfer_seconds is None else float(c.transfer_seconds),
        "error": c.error,
    }


def voicemail_json(v: Voicemail, call_uid: str) -> dict[str, Any]:
    return {
        "voicemail_id": v.uid,
        "callid": call_uid,
        "caller": v.caller,
        "recipient": v.recipient,
        "duration": float(v.duration),
        "size": v.size,
        "created_at": fmt_time(v.created_at),
        "audio_url": f"/voice/voicemails/{v.uid}/audio",
    }


@routes.get("/voice/calls/")
async def list_calls(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as s:
        rows = (
            await s.execute(
                select(Call)
                .where(Call.account_id == request[ACCOUNT].id)
                .order_by(Call.started_at.desc(), Call.id.desc())
                .limit(LIST_LIMIT)
            )
        ).scalars()
        return json_response([call_json(c) for c in rows])


@routes.get("/voice/calls/{callid}/")
@routes.get("/voice/calls/{callid}")
async def get_call(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as s:
        row = (
            await s.execute(
                select(Call).where(
                    Call.uid == request.match_info["callid"], Call.account_id == request[ACCOUNT].id
                )
            )
        ).scalar_one_or_none()
    if row is None:
        raise not_found("No such call.")
    return json_response(call_json(row))


async def _voicemail(request: web.Request) -> tuple[Voicemail, str]:
    async with request.app[SESSIONS]() as s:
        row = (
            await s.execute(
                select(Voicemail, Call.uid)
                .join(Call, Call.id == Voicemail.call_id)
                .where(
                    Voicemail.uid == request.match_info["vid"], Voicemail.account_id == request[ACCOUNT].id
                )
            )
        ).one_or_none()
    if row is None:
        raise not_found("No such voicemail.")
    return row[0], row[1]


@routes.get("/voice/voicemails/")
async def list_voicemails(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as s:
        rows = await s.execute(
            select(Voicemail, Call.uid)
            .join(Call, Call.id == Voicemail.call_id)
            .where(Voicemail.account_id == request[ACCOUNT].id)
            .order_by(Voicemail.created_at.desc(), Voicemail.id.desc())
            .limit(LIST_LIMIT)
        )
        return json_response([voicemail_json(v, uid) for v, uid in rows])


@routes.get("/voice/voicemails/{vid}/")
@routes.get("/voice/voicemails/{vid}")
async def get_voicemail(request: web.Request) -> web.Response:
    v, uid = await _voicemail(request)
    return json_response(voicemail_json(v, uid))


@routes.get("/voice/voicemails/{vid}/audio")
async def voicemail_audio(request: web.Request) -> web.StreamResponse:
    v, _ = await _voicemail(request)
    if not await asyncio.to_thread(os.path.isfile, v.path):
        raise not_found("The recording is no longer stored.")
    return web.FileResponse(v.path, headers={"Content-Type": "audio/wav"})
