"""How long an answered transfer's conversation lasted, on Asterisk's own clock.

No variable Dial sets tells when the callee answered: Asterisk 22's app_dial.c sets
ANSWEREDTIME_MS to the caller channel's up time (since the gateway's own ANSWER, so the actions
before the transfer and the ringing count too), and RINGTIME / PROGRESSTIME are the first ringing
and progress, not the answer. So the bridge dials with Dial's `U(<context>)` option: app_dial
runs that subroutine on the callee's channel once it answers, before the two are bridged, and
the shipped asterisk/extensions.conf context stores the time there on the caller's channel
(`MASTER_CHANNEL(GATEWAY_BRIDGED_AT)=${EPOCH}`). After the Dial the bridge reads it and Asterisk's
`${EPOCH}` then; both come from the same clock, so the gateway's clock does not matter.

`${EPOCH}` is whole seconds (the only clock the core gives without another module); carriers
bill in seconds. An Asterisk whose dialplan lacks the context (an old extensions.conf) or that
runs without app_stack still bridges the call (app_dial goes on when the subroutine fails); the
variable is then unset and the seconds unknown.
"""

from __future__ import annotations

# The dialplan context the U() option runs (asterisk/extensions.conf) and what it sets.
TRANSFER_GOSUB = "gateway-transfer"
BRIDGED_AT_VARIABLE = "GATEWAY_BRIDGED_AT"
NOW_EXPRESSION = "${EPOCH}"

# A Unix time in seconds as Asterisk writes it: digits, no sign, before the year 5138.
_MAX_EPOCH_DIGITS = 11
# Whole-second stamps and the reads after the Dial: how far past the Dial's own duration a
# believable answer may go (it is then cut to that duration).
_SLACK_SECONDS = 2


def dial_option() -> str:
    """The Dial option that has the callee's answer time recorded."""
    return f"U({TRANSFER_GOSUB})"


def bridged_seconds(bridged_at: str | None, now: str | None, dial_seconds: float) -> float | None:
    """Seconds from the callee's answer to the end of the Dial, or None when unknown.

    `bridged_at` and `now` are what Asterisk answered for GATEWAY_BRIDGED_AT and `${EPOCH}`
    (None when unset or unreadable); `dial_seconds` the Dial's duration measured here, an upper
    bound a true answer passes only by the one-second resolution and the time the reads after
    the Dial took. Anything else (not a plain number, an answer after the end, longer than the
    Dial) is a peer not to be believed: None."""
    at, end = _epoch(bridged_at), _epoch(now)
    if at is None or end is None or end < at:
        return None
    seconds = float(end - at)
    if seconds > dial_seconds + _SLACK_SECONDS:
        return None
    return min(seconds, round(dial_seconds, 3))


def _epoch(value: str | None) -> int | None:
    if not value or len(value) > _MAX_EPOCH_DIGITS or not value.isascii() or not value.isdigit():
        return None
    return int(value)
