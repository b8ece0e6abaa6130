"""How an outbound call that was never answered ends, over real AMI sockets with the stand-in
playing Asterisk 22 with chan_pjsip (../shared/asterisk-22/ami_busy_originate.txt): a callee's
486, 480, 603, 404 or 503 all come back as `OriginateResponse Reason: 0`, so the record and the
status callback must be settled from the dialled channel's own events, which name the call by
`ChanVariable: GATEWAY_CALLID` because the shipped manager.conf asks for it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.voice.ami import AmiClient
from gateway.voice.dial_outcome import ChannelNews, NewsBoard, Outcome, unanswered_outcome
from tests.conftest import wait_for
from tests.peers.ami_server import AmiServer, Plan
from tests.test_deployment import conf_values
from tests.test_outbound_calls import CALLER, RECIPIENT, Rig, _async, rig  # noqa: F401
from tests.webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
# Every AMI event of an Originate to a callee answering 486, from Asterisk 22 with chan_pjsip
# and the shipped asterisk/*.conf (before channelvars was set).
RECORDING = ROOT / "tests" / "peers" / "recorded" / "asterisk22_ami_busy_originate.txt"


def shipped_channelvars() -> tuple[str, ...]:
    """manager.conf's [general] channelvars, as Asterisk reads the shipped file."""
    values = conf_values((ROOT / "asterisk" / "manager.conf").read_text())
    found = [v for section, key, v in values if (section, key) == ("general", "channelvars")]
    return tuple(v.strip() for v in (found[-1] if found else "").split(",") if v.strip())


def test_shipped_manager_conf_reports_gateway_callid_on_channel_events() -> None:
    """Without it no channel event names its call: a Hangup or DialEnd whose OriginateResponse
    was missed (AMI reconnect) could never be matched, nor a busy told from a failure."""
    assert "GATEWAY_CALLID" in shipped_channelvars()


async def _place(rig: Rig, receiver: Receiver) -> str:  # noqa: F811
    code, body = await rig.post(
        {
            "caller": CALLER,
            "recipient": RECIPIENT,
            "tts_message": "Hello",
            "tts_lang": "en",
            "callbackurl": receiver.url("/cb"),
        }
    )
    assert code == 201, body
    callid: str = body[0]["callid"]
    return callid


async def _one_callback(receiver: Receiver) -> dict[str, Any]:
    await wait_for(lambda: _async(receiver.on("/cb")))
    await asyncio.sleep(0.6)  # a second callback (from the Hangup event) would arrive by now
    [hit] = receiver.on("/cb")
    body: dict[str, Any] = json.loads(hit.body)
    return body


@pytest.mark.parametrize(
    ("outcome", "status", "error"),
    [
        ("busy", "BUSY", "busy (hangup cause 17)"),
        ("unavailable", "NO_ANSWER", "no answer (hangup cause 19)"),
        ("rejected", "FAILED", "the call was rejected (hangup cause 21)"),
        ("unallocated", "FAILED", "the number does not exist (hangup cause 1)"),
        ("congestion", "FAILED", "the network is congested (hangup cause 34)"),
        # The ring timeout: Reason 3 says it (calls_summary.txt: "no answer (originate reason 3)").
        ("noanswer", "NO_ANSWER", "no answer (originate reason 3)"),
        # No channel was ever made: nothing but Reason 0 to go by.
        ("chanunavail", "FAILED", "the call could not be placed (originate reason 0)"),
    ],
)
async def test_unanswered_call_is_settled_from_its_channel(
    rig: Rig,  # noqa: F811
    receiver: Receiver,
    outcome: Any,
    status: str,
    error: str,
) -> None:
    rig.ami.plan(Plan(outcome=outcome))
    callid = await _place(rig, receiver)
    [placed] = await rig.ami.finished_calls(1)
    assert placed.transcript is None  # never answered: no AGI
    st = await rig.final_status(callid)
    assert (st["status"], st["result"]) == (status, status.lower())
    assert st["error"] == error
    assert st["duration"] == 0 and st["cost"] == 0 and st["answer_time"] is None and st["end_time"]
    hit = await _one_callback(receiver)
    assert (hit["status"], hit["error"]) == (status, st["error"])


async def test_busy_whose_originate_response_was_missed_is_settled_by_its_hangup(
    rig: Rig,  # noqa: F811
    receiver: Receiver,
) -> None:
    """The OriginateResponse never reached the gateway (it was reconnecting to AMI): with the
    shipped manager.conf's channelvars the channel's Hangup names the call and ends it BUSY."""
    rig.ami.channelvars = shipped_channelvars()
    rig.ami.plan(Plan(outcome="busy", originate_response=False))
    callid = await _place(rig, receiver)
    st = await rig.final_status(callid)
    assert (st["status"], st["error"]) == ("BUSY", "busy (hangup cause 17)")
    assert (await _one_callback(receiver))["status"] == "BUSY"


async def test_without_channelvars_a_busy_callee_can_only_be_failed(
    rig: Rig,  # noqa: F811
    receiver: Receiver,
) -> None:
    """What manager.conf without channelvars gives: no event names the call, so after waiting
    for a Hangup it cannot match, Reason 0 is all there is."""
    rig.ami.channelvars = ()
    rig.ami.plan(Plan(outcome="busy"))
    callid = await _place(rig, receiver)
    st = await rig.final_status(callid)
    assert (st["status"], st["error"]) == ("FAILED", "the call could not be placed (originate reason 0)")


async def test_answered_call_whose_originate_response_was_missed_is_not_called_unanswered(
    rig: Rig,  # noqa: F811
    receiver: Receiver,
) -> None:
    """DialEnd ANSWER was heard, the OriginateResponse and the FastAGI call were not: the
    Hangup (cause 16) ends it FAILED as answered, not as a call nobody picked up."""
    rig.ami.plan(Plan(outcome="answer_no_agi", hold_seconds=0.2, originate_response=False))
    callid = await _place(rig, receiver)
    st = await rig.final_status(callid)
    assert (st["status"], st["error"]) == (
        "FAILED",
        "the call was answered but the playback never ran (hangup cause 16)",
    )


def test_news_of_calls_is_bounded() -> None:
    """Every node hears every call's events; what it keeps is capped, the oldest dropped."""
    board = NewsBoard(limit=3)
    for n in range(5):
        board.of(f"call{n}").cause = str(n)
    assert len(board) == 3
    assert board.get("call0") is None and board.get("call1") is None
    news = board.get("call4")
    assert news is not None and news.cause == "4"


def test_outcome_falls_back_from_cause_to_dial_status_to_reason() -> None:
    assert unanswered_outcome(ChannelNews(cause="17", dial_status="NOANSWER"), "0") == Outcome(
        "BUSY", "busy (hangup cause 17)"
    )
    # A cause Asterisk knows and this table does not: Asterisk's wording is kept.
    assert unanswered_outcome(
        ChannelNews(cause="42", cause_text="Switching equipment congestion"), "0"
    ) == Outcome("FAILED", "the call failed (hangup cause 42 Switching equipment congestion)")
    assert unanswered_outcome(ChannelNews(dial_status="CHANUNAVAIL"), "0") == Outcome(
        "FAILED", "the callee's line is unavailable (dial status CHANUNAVAIL)"
    )
    assert unanswered_outcome(ChannelNews(), "0").status == "FAILED"
    assert unanswered_outcome(ChannelNews(cause="17"), "3") == Outcome(
        "NO_ANSWER", "no answer (originate reason 3)"
    )


def _recorded_events() -> list[list[tuple[str, str]]]:
    events, current = [], []
    for line in RECORDING.read_text().splitlines():
        if not line.strip():
            if current:
                events.append(current)
            current = []
            continue
        key, _, value = line.partition(":")
        current.append((key.strip(), value.strip()))
    if current:
        events.append(current)
    return events


async def test_stand_in_busy_originate_matches_the_asterisk_recording() -> None:
    """Event by event, the stand-in sends the headers real Asterisk sent for a 486 (the
    recording had no channelvars), with the same values where they do not name this call."""
    ami = AmiServer(secret="s3cret", channelvars=())
    await ami.start()
    client = AmiClient(ami.host, ami.port, "gateway", "s3cret")
    seen: list[Any] = []
    client.add_listener(lambda m: seen.append(m) if m.event != "FullyBooted" else None)
    try:
        await client.start()
        assert await client.wait_connected(5)
        ami.plan(Plan(outcome="busy"))
        callid = "5700fe7488fa472f966e96b890062231"
        await client.send_action(
            "Originate",
            [
                ("Channel", "PJSIP/+819011114444@trunk"),
                ("Context", "gateway-outbound"),
                ("Exten", "s"),
                ("Priority", "1"),
                ("CallerID", "+815011112222"),
                ("Variable", f"GATEWAY_CALLID={callid}"),
                ("Timeout", "30000"),
                ("Async", "true"),
            ],
            action_id=f"gw-originate-{callid}",
        )
        recorded = _recorded_events()
        await wait_for(lambda: _async(len(seen) >= len(recorded)))
    finally:
        await client.close()
        await ami.close()
    assert [m.event for m in seen] == [dict(e)["Event"] for e in recorded]
    varying = {"Timestamp", "Channel", "Uniqueid", "Linkedid", "DestChannel", "DestUniqueid", "DestLinkedid"}
    for got, want in zip(seen, recorded, strict=True):
        assert [k for k, _ in got.headers] == [k for k, _ in want], want[0]
        for key, value in want:
            if key not in varying:
                assert got.get(key) == value, (want[0], key)
    response = seen[4]
    assert (response.get("Channel"), response.get("Uniqueid")) == ("PJSIP/+819011114444@trunk", "<unknown>")
