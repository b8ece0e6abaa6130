"""Parser for the call action language returned by customers' action_url endpoints.

Pure: standard library only, no I/O. See actions_dsl.parser for the language reference.
"""

from .actions import Action, Playback, Say, Transfer, VoicemailPlayback, VoicemailSay
from .chars import is_safe_agi_text
from .errors import ActionSyntaxError, ParseErrors
from .parser import COMMANDS, parse

__all__ = [
    "COMMANDS",
    "Action",
    "ActionSyntaxError",
    "ParseErrors",
    "Playback",
    "Say",
    "Transfer",
    "VoicemailPlayback",
    "VoicemailSay",
    "is_safe_agi_text",
    "parse",
]
