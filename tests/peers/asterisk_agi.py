"""The Asterisk stand-in the voice tests play calls with; it lives in the package
(gateway/voice/asterisk_side.py) because `gateway simulate call` uses it too."""

from gateway.voice.asterisk_side import (
    AGI_BUF_LEN,
    ASTERISK_VERSION,
    DEAD,
    INVALID,
    USAGE_BEGIN,
    USAGE_END,
    AsteriskAgi,
    CallScenario,
    CallTranscript,
    Exchange,
    Recording,
    fastagi_call,
    parse_args,
    run_agi_script,
    write_wav,
)

__all__ = [
    "AGI_BUF_LEN",
    "ASTERISK_VERSION",
    "DEAD",
    "INVALID",
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
