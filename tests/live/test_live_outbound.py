"""Outbound calls (POST /voice/simple/playbacks/) originated over a real Asterisk's AMI to the
carrier's side played by SIPp, and the record GET /voice/calls/ shows for each outcome."""

from __future__ import annotations

from typing import Any

from tests.live.conftest import DINS, Live

RECIPIENT = "+819011114444"


def _place(live: Live, **fields: str) -> str:
    status, body = live.api.request(
        "POST", "/voice/simple/playbacks/", {"caller": DINS[-1], "recipient": RECIPIENT, **fields}
    )
    assert status == 201, body
    return str(body[0]["callid"])


def _record(live: Live, callid: str) -> dict[str, Any]:
    return live.wait_call(lambda c: c["callid"] == callid)


def test_outbound_answered(live: Live) -> None:
    url = live.customer.media_url("tone.wav")
    with live.sipp.carrier("outbound_answered_callee", "answer") as callee:
        callid = _place(live, recording_url=url)
        call = _record(live, callid)
    assert callee.ok, callee.report()  # answered, and Asterisk hung up after the playback
    assert (call["direction"], call["status"], call["result"], call["actions"]) == (
        "outbound",
        "COMPLETED",
        "completed",
        [f"playback {url}"],
    )
    assert (call["caller"], call["recipient"]) == (DINS[-1], RECIPIENT)
    assert call["answer_time"] is not None and call["cost"] > 0


def test_outbound_busy(live: Live) -> None:
    with live.sipp.carrier("outbound_busy_callee", "busy") as callee:
        callid = _place(live, tts_message="You will not hear this.", tts_lang="en")
        call = _record(live, callid)
    assert callee.ok, callee.report()
    assert (call["status"], call["actions"], call["cost"]) == ("BUSY", [], 0.0), call


def test_outbound_no_answer(live: Live) -> None:
    """The callee rings past voice.outbound_ring_timeout (8 s here): Asterisk CANCELs it."""
    with live.sipp.carrier("outbound_no_answer_callee", "noanswer") as callee:
        callid = _place(live, tts_message="You will not hear this.", tts_lang="en")
        call = _record(live, callid)
    assert callee.ok, callee.report()  # it got the CANCEL
    assert (call["status"], call["actions"], call["cost"]) == ("NO_ANSWER", [], 0.0), call
