"""Parser for the call action language returned by customers' action_url endpoints.

Pure: standard library only, no I/O. See actions_dsl.parser for the language reference.
"""

from .actions import (
    Action,
    Gather,
    HangupCall,
    Pause,
    Playback,
    Prompt,
    Record,
    Reject,
    Say,
    Transfer,
    VoicemailPlayback,
    VoicemailSay,
)
from .chars import is_safe_agi_text
from .errors import ActionSyntaxError, ParseErrors
from .parser import COMMANDS, parse

__all__ = [
    "COMMANDS",
    "Action",
    "ActionSyntaxError",
    "Gather",
    "HangupCall",
    "ParseErrors",
    "Pause",
    "Playback",
    "Prompt",
    "Record",
    "Reject",
    "Say",
    "Transfer",
    "VoicemailPlayback",
    "VoicemailSay",
    "is_safe_agi_text",
    "parse",
]
