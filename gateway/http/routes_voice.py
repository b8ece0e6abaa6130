"""Call records, voicemails and recordings: /voice/calls/, /voice/voicemails/,
/voice/recordings/ (per account)."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from gateway.db.models import Recording, Voicemail
from gateway.http import responses
from gateway.http.api import Content, Json, Routes
from gateway.keys import ACCOUNT, REPORTS
from gateway.services.errors import not_found
from gateway.services.views import call_json, recording_json, voicemail_json

routes = Routes("Voice")
LIST_LIMIT = 1000
AUDIO = {"type": "string", "contentMediaType": "audio/wav"}


@routes.get("/voice/calls/", returns=list[responses.Call])
async def list_calls(request: web.Request) -> Json:
    """Call records, newest first (at most 1000)"""
    return [call_json(c) for c in await request.app[REPORTS].calls(request[ACCOUNT].id, LIST_LIMIT)]


@routes.get("/voice/calls/{callid}/", returns=responses.Call, no_slash=True)
async def get_call(request: web.Request) -> Json:
    """A call record"""
    return call_json(await request.app[REPORTS].call(request[ACCOUNT].id, request.match_info["callid"]))


async def _voicemail(request: web.Request) -> tuple[Voicemail, str]:
    return await request.app[REPORTS].voicemail(request[ACCOUNT].id, request.match_info["vid"])


@routes.get("/voice/voicemails/", returns=list[responses.Voicemail])
async def list_voicemails(request: web.Request) -> Json:
    """Voicemails, newest first (at most 1000)"""
    rows = await request.app[REPORTS].voicemails(request[ACCOUNT].id, LIST_LIMIT)
    return [voicemail_json(v, uid) for v, uid in rows]


@routes.get("/voice/voicemails/{vid}/", returns=responses.Voicemail, no_slash=True)
async def get_voicemail(request: web.Request) -> Json:
    """A voicemail's metadata"""
    v, uid = await _voicemail(request)
    return voicemail_json(v, uid)


@routes.get("/voice/voicemails/{vid}/audio", returns=Content({"audio/wav": AUDIO}))
async def get_voicemail_audio(request: web.Request) -> Json:
    """A voicemail's recording (WAV)"""
    v, _ = await _voicemail(request)
    if not await asyncio.to_thread(os.path.isfile, v.path):
        raise not_found("The recording is no longer stored.")
    return web.FileResponse(v.path, headers={"Content-Type": "audio/wav"})


async def _recording(request: web.Request) -> tuple[Recording, str]:
    return await request.app[REPORTS].recording(request[ACCOUNT].id, request.match_info["rid"])


@routes.get("/voice/recordings/", returns=list[responses.Recording])
async def list_recordings(request: web.Request) -> Json:
    """Recordings made by scripts' `record` command, newest first (at most 1000)"""
    rows = await request.app[REPORTS].recordings(request[ACCOUNT].id, LIST_LIMIT)
    return [recording_json(r, uid) for r, uid in rows]


@routes.get("/voice/recordings/{rid}/", returns=responses.Recording, no_slash=True)
async def get_recording(request: web.Request) -> Json:
    """A recording's metadata"""
    r, uid = await _recording(request)
    return recording_json(r, uid)


@routes.get("/voice/recordings/{rid}/audio", returns=Content({"audio/wav": AUDIO}))
async def get_recording_audio(request: web.Request) -> Json:
    """A recording (WAV)"""
    r, _ = await _recording(request)
    if not await asyncio.to_thread(os.path.isfile, r.path):
        raise not_found("The recording is no longer stored.")
    return web.FileResponse(r.path, headers={"Content-Type": "audio/wav"})
