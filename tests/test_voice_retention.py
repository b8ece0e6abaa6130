"""Call records, voicemails and recordings are deleted `voice.retention_days` after the call
ended (rows and WAV files), and nothing younger or still running is touched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import aiohttp

from gateway.db.models import Call, Recording, Voicemail
from gateway.keys import SESSIONS
from gateway.voice.retention import VoiceRetention
from tests.conftest import Gateway

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class Kept(NamedTuple):
    callid: str
    voicemail: str
    recording: str
    voicemail_file: Path
    recording_file: Path


async def _call(gw: Gateway, account_id: int, tmp: Path, ended: datetime | None) -> Kept:
    """A call with a voicemail and a recording, each with its WAV file."""
    files = []
    async with gw.app[SESSIONS].begin() as s:
        call = Call(
            uid=uuid.uuid4().hex,
            account_id=account_id,
            direction="inbound",
            caller="+818011112222",
            recipient="+815012345678",
            status="COMPLETED" if ended else "IN_PROGRESS",
            started_at=(ended or NOW) - timedelta(minutes=1),
            ended_at=ended,
        )
        s.add(call)
        await s.flush()
        uids = []
        for model in (Voicemail, Recording):
            path = tmp / f"{uuid.uuid4().hex}.wav"
            path.write_bytes(b"RIFF")
            files.append(path)
            row = model(
                uid=uuid.uuid4().hex,
                call_id=call.id,
                account_id=account_id,
                caller=call.caller,
                recipient=call.recipient,
                duration=Decimal(1),
                path=str(path),
                size=4,
            )
            s.add(row)
            uids.append(row.uid)
    return Kept(call.uid, uids[0], uids[1], files[0], files[1])


async def test_what_ended_before_the_retention_period_is_deleted_rows_and_files(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    creds = await gateway.account()
    aid = creds.account.id
    old = await _call(gateway, aid, tmp_path, NOW - timedelta(days=31))
    recent = await _call(gateway, aid, tmp_path, NOW - timedelta(days=29))
    running = await _call(gateway, aid, tmp_path, None)

    assert await VoiceRetention(gateway.app[SESSIONS], 0).sweep(NOW) == 0  # 0: keep forever
    assert await VoiceRetention(gateway.app[SESSIONS], 30).sweep(NOW) == 1

    async def status(path: str) -> int:
        async with http.get(f"{gateway.base_url}{path}", headers=gateway.auth(creds)) as r:
            return r.status

    callid, vm, rec, vm_file, rec_file = old
    assert [
        await status(p)
        for p in (f"/voice/calls/{callid}/", f"/voice/voicemails/{vm}/", f"/voice/recordings/{rec}/")
    ] == [404, 404, 404]
    assert not vm_file.exists() and not rec_file.exists()
    for callid, vm, rec, vm_file, rec_file in (recent, running):
        assert await status(f"/voice/calls/{callid}/") == 200
        assert await status(f"/voice/voicemails/{vm}/audio") == 200
        assert await status(f"/voice/recordings/{rec}/audio") == 200
        assert vm_file.exists() and rec_file.exists()
    # A second pass finds nothing more.
    assert await VoiceRetention(gateway.app[SESSIONS], 30).sweep(NOW) == 0
