"""Calls to our DINs through a real Asterisk: scripts, what the caller gets, and the call
records GET /voice/calls/ shows afterwards."""

from __future__ import annotations

import io
import urllib.request
import wave

import pytest

from tests.live.conftest import CALLER, Live

TRANSFER_TO = "+819011112222"  # a mobile number under the default +81 allow-list
TALK_SECONDS = 3  # the answering callee hangs up after this long (its ringing is 2 s)


def test_playback(live: Live) -> None:
    url = live.customer.media_url("tone.wav")
    din = live.din(f"playback {url}")
    mark = live.asterisk.log_size()
    run = live.sipp.call("playback", din)
    assert run.ok, run.report()
    call = live.inbound_call(din)
    assert (call["status"], call["result"], call["actions"], call["error"]) == (
        "COMPLETED",
        "completed",
        [f"playback {url}"],
        None,
    )
    assert call["caller"] == CALLER and call["answer_time"] is not None
    # Asterisk found and played the file the gateway prepared (a missing one only logs).
    log = live.asterisk.log_since(mark)
    assert "Playing '" in log and "does not exist" not in log, log


@pytest.mark.parametrize(
    ("lang", "text"),
    [("en", "Thank you for calling the live suite. Goodbye."), ("ja", "本日はお電話ありがとうございます。")],
)
def test_say(live: Live, lang: str, text: str) -> None:
    din = live.din(f'say {lang} "{text}"')
    mark = live.asterisk.log_size()
    run = live.sipp.call(f"say_{lang}", din)
    assert run.ok, run.report()
    call = live.inbound_call(din)
    assert (call["status"], call["result"], call["actions"], call["error"]) == (
        "COMPLETED",
        "completed",
        [f"say {lang}"],
        None,
    )
    log = live.asterisk.log_since(mark)
    assert "Playing '" in log and "does not exist" not in log, log


def test_the_caller_hears_ringing_before_the_answer(live: Live) -> None:
    """180 Ringing while the gateway fetches the script, then 200 OK (issue 11: the INVITE sat
    at 100 Trying until the bridge answered)."""
    din = live.din(f"playback {live.customer.media_url('tone.wav')}")
    run = live.sipp.call("ringback", din)
    assert run.ok, run.report()
    responses = [line for line in run.received if line.startswith("SIP/2.0")]
    assert "SIP/2.0 200 OK" in responses, responses
    before_answer = responses[: responses.index("SIP/2.0 200 OK")]
    assert "SIP/2.0 180 Ringing" in before_answer, responses


def test_hangup_during_the_last_playback(live: Live) -> None:
    url = live.customer.media_url("long.wav")
    din = live.din(f"playback {url}")
    run = live.sipp.call("hangup_last_playback", din, hold=3)
    assert run.ok, run.report()
    call = live.inbound_call(din)
    assert (call["status"], call["result"], call["actions"]) == ("COMPLETED", "hangup", [f"playback {url}"])


def test_hangup_mid_script_lists_only_what_ran(live: Live) -> None:
    url = live.customer.media_url("long.wav")
    din = live.din(f'playback {url}\nsay en "You will not hear this."\ntransfer {TRANSFER_TO}')
    run = live.sipp.call("hangup_mid_script", din, hold=3)
    assert run.ok, run.report()
    call = live.inbound_call(din)
    assert (call["status"], call["result"], call["actions"]) == ("COMPLETED", "hangup", [f"playback {url}"])


def test_voicemail(live: Live) -> None:
    """Greeting, beep, then the caller's 2 s of voice ended by # (tests/live/media.py)."""
    din = live.din('voicemail say en "Please leave a message."')
    run = live.sipp.call("voicemail", din)
    assert run.ok, run.report()
    call = live.inbound_call(din)
    assert (call["status"], call["result"], call["actions"]) == (
        "COMPLETED",
        "voicemail",
        ["voicemail say en"],
    )
    [vm] = [v for v in live.api.voicemails() if v["callid"] == call["callid"]]
    assert vm["recipient"] == din and vm["caller"] == CALLER
    assert vm["duration"] > 0 and vm["size"] > 44
    req = urllib.request.Request(live.api.base_url + vm["audio_url"], headers=live.api.headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        audio = r.read()
    with wave.open(io.BytesIO(audio)) as w:
        assert (w.getnchannels(), w.getframerate()) == (1, 8000)
        assert w.getnframes() > 0


def test_transfer_answered(live: Live) -> None:
    """The callee rings 2 s (uas_answer.xml), then talks 3 s and hangs up: the record keeps
    the talk time, stamped by the dialplan's [gateway-transfer] when the callee answered."""
    din = live.din(f"transfer {TRANSFER_TO}")
    mark = live.asterisk.log_size()
    with live.sipp.carrier("transfer_answered_callee", "answer", hold=TALK_SECONDS) as callee:
        run = live.sipp.call("transfer_answered", din)
    assert run.ok, run.report()
    assert callee.ok, callee.report()
    call = live.inbound_call(din)
    assert (call["status"], call["result"], call["actions"]) == (
        "COMPLETED",
        "transferred",
        [f"transfer {TRANSFER_TO}"],
    )
    assert call.get("transfer_status") == "ANSWER", call
    # Whole seconds of Asterisk's clock: the talk within a second, not ring + talk (5 s).
    seconds = call.get("transfer_seconds")
    assert seconds is not None and abs(seconds - TALK_SECONDS) <= 1, call
    log = live.asterisk.log_since(mark)
    assert (
        "Executing [s@gateway-transfer:1] Set(" in log and "Executing [s@gateway-transfer:2] Return(" in log
    ), log
    assert "non-existent" not in log and "app_stack module is not available" not in log, log
    # pjsip.conf's send_connected_line=no: no re-INVITE reaches the caller's carrier leg.
    assert not any(line.startswith("INVITE ") for line in run.received), run.received


def test_transfer_busy(live: Live) -> None:
    din = live.din(f"transfer {TRANSFER_TO}")
    with live.sipp.carrier("transfer_busy_callee", "busy") as callee:
        run = live.sipp.call("transfer_busy", din)
    assert run.ok, run.report()
    assert callee.ok, callee.report()
    call = live.inbound_call(din)
    assert (call["status"], call["result"], call["actions"]) == (
        "COMPLETED",
        "transfer_busy",
        [f"transfer {TRANSFER_TO}"],
    )
    assert call.get("transfer_status") == "BUSY", call


def test_caller_hangs_up_while_the_transfer_target_rings(live: Live) -> None:
    din = live.din(f"transfer {TRANSFER_TO}")
    with live.sipp.carrier("transfer_ringing_callee", "noanswer") as callee:
        run = live.sipp.call("transfer_ringing", din, hold=4)
    assert run.ok, run.report()
    assert callee.ok, callee.report()  # it got Asterisk's CANCEL
    call = live.inbound_call(din)
    assert (call["status"], call["result"], call["actions"]) == (
        "COMPLETED",
        "hangup",
        [f"transfer {TRANSFER_TO}"],
    )
    assert call.get("transfer_status") == "CANCEL", call


def test_gateway_down_the_caller_hears_the_no_service_message(live: Live) -> None:
    """The dialplan's own fallback: FastAGI unreachable -> Answer, Playback(ss-noservice)."""
    din = live.din(f"playback {live.customer.media_url('tone.wav')}")
    live.gateway.stop()
    try:
        mark = live.asterisk.log_size()
        run = live.sipp.call("gateway_down", din)
        log = live.asterisk.log_since(mark)
    finally:
        live.gateway.start()
    assert run.ok, run.report()  # answered, then Asterisk hung up
    assert "SIP/2.0 200 OK" in run.received, run.received
    assert "Playing 'ss-noservice" in log and "does not exist" not in log, log
    assert [c for c in live.api.calls() if c["recipient"] == din] == []
