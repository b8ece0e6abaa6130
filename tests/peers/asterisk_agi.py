"""The Asterisk stand-in the voice tests play calls with; it lives in the package
(gateway/voice/asterisk_side.py) because `gateway simulate call` uses it too.

One difference for the suite: ANSWER answers after TEST_ANSWER_DELAY, not Asterisk's 500 ms
(ANSWER_DELAY), which would double the voice tests' time while no test but one needs it;
that one passes answer_delay=ANSWER_DELAY."""

from dataclasses import dataclass

from gateway.voice import asterisk_side
from gateway.voice.asterisk_side import (
    AGI_BUF_LEN,
    ANSWER_DELAY,
    ASTERISK_VERSION,
    DEAD,
    INVALID,
    USAGE_BEGIN,
    USAGE_END,
    AsteriskAgi,
    CallTranscript,
    Exchange,
    Recording,
    fastagi_call,
    parse_args,
    run_agi_script,
    write_wav,
)

TEST_ANSWER_DELAY = 0.02


@dataclass
class CallScenario(asterisk_side.CallScenario):
    answer_delay: float = TEST_ANSWER_DELAY


__all__ = [
    "AGI_BUF_LEN",
    "ANSWER_DELAY",
    "ASTERISK_VERSION",
    "DEAD",
    "INVALID",
    "TEST_ANSWER_DELAY",
    "USAGE_BEGIN",
    "USAGE_END",
    "AsteriskAgi",
    "CallScenario",
    "CallTranscript",
    "Exchange",
    "Recording",
    "fastagi_call",
    "parse_args",
    "run_agi_script",
    "write_wav",
]
