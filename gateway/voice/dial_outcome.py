"""How an originated call that was never answered ended, from what Asterisk said about it.

OriginateResponse's `Reason` alone cannot say: with chan_pjsip a callee's 486 (busy), 480,
603, 404 or 503 all end the dial as a hangup of the dialled channel, so main/pbx.c
pbx_dial_reason finds no cause of the dial's own and answers `Reason: 0`, the same as "could not
be placed". The dialled channel's own events say what happened, and they name the call by
`GATEWAY_CALLID` when manager.conf has `channelvars=GATEWAY_CALLID`:

* `HangupRequest` (before the OriginateResponse) and `Hangup` (just after it) carry the Q.931
  `Cause` chan_pjsip made of the SIP response (res_pjsip.c ast_sip_hangup_sip2cause);
* `DialEnd` (before the OriginateResponse) carries the `DialStatus` main/dial.c makes of that
  cause (ast_hangup_cause_to_dial_status), which is coarser: every cause it does not know,
  a 404 included, becomes NOANSWER.

So unless the Reason itself says what happened (3: the ring timeout, which has no DialEnd),
the cause decides, then the dial status, and Reason 0 only when neither was heard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

# OriginateResponse `Reason` is the last control frame seen on the dialled channel
# (AST_CONTROL_*, see main/pbx.c pbx_dial_reason): 4 answered, 3 still ringing when the
# timeout struck, 5 busy, 8 congestion (also: rejected, out of order), 1 hung up, 0 failed
# (which with chan_pjsip includes every final SIP response: see above).
REASONS: Mapping[str, tuple[str, str]] = {
    "1": ("NO_ANSWER", "the callee hung up before answering"),
    "3": ("NO_ANSWER", "no answer"),
    "5": ("BUSY", "busy"),
    "8": ("FAILED", "congestion or rejected by the network"),
    "0": ("FAILED", "the call could not be placed"),
}
# Reasons that say what the callee did; with any other the channel's own events decide.
TOLD_REASONS = frozenset({"1", "3", "5", "8"})

# Hangup `Cause` (Q.931, include/asterisk/causes.h) of a call that was never answered.
CAUSES: Mapping[str, tuple[str, str]] = {
    "1": ("FAILED", "the number does not exist"),  # SIP 404, 485, 604
    "3": ("FAILED", "no route to the number"),  # SIP 420
    "16": ("FAILED", "the call ended before it was answered"),
    "17": ("BUSY", "busy"),  # SIP 486, 600
    "18": ("NO_ANSWER", "no answer"),  # SIP 408
    "19": ("NO_ANSWER", "no answer"),  # SIP 480, 483; the ring timeout
    "20": ("FAILED", "the callee's line is not registered"),
    "21": ("FAILED", "the call was rejected"),  # SIP 401, 403, 407, 603
    "22": ("FAILED", "the number has changed"),  # SIP 410
    "27": ("FAILED", "the destination is out of order"),  # SIP 502
    "28": ("FAILED", "the number is incomplete or invalid"),  # SIP 484
    "34": ("FAILED", "the network is congested"),  # SIP 503
    "38": ("FAILED", "the network is out of order"),
    "41": ("FAILED", "temporary failure in the network"),
    "58": ("FAILED", "no common codec with the callee"),  # SIP 488, 606
}
# DialEnd `DialStatus` (main/dial.c). An Originate has no caller who could hang up, so CANCEL
# means Asterisk itself stopped the dial (shutting down, say): not the callee's doing.
DIAL_STATUSES: Mapping[str, tuple[str, str]] = {
    "BUSY": ("BUSY", "busy"),
    "NOANSWER": ("NO_ANSWER", "no answer"),
    "CANCEL": ("FAILED", "Asterisk stopped dialling before an answer"),
    "CONGESTION": ("FAILED", "the network is congested"),
    "CHANUNAVAIL": ("FAILED", "the callee's line is unavailable"),
}


@dataclass
class ChannelNews:
    """What the dialled channel's events said about one call so far."""

    cause: str = ""
    cause_text: str = ""
    dial_status: str = ""
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Outcome:
    status: str  # BUSY, NO_ANSWER or FAILED
    error: str


def unanswered_outcome(news: ChannelNews | None, reason: str | None) -> Outcome:
    """The status and error text of a call never answered: from a Reason that tells, else the
    Hangup cause, else the DialEnd status, else the Reason (None: no OriginateResponse seen)."""
    if reason in TOLD_REASONS:
        status, text = REASONS[reason]
        return Outcome(status, f"{text} (originate reason {reason})")
    if news is not None and news.cause:
        if news.cause in CAUSES:
            # Asterisk's own wording is left out: HangupRequest, which often comes first, has
            # none, and the record must not depend on which event was read first.
            status, text = CAUSES[news.cause]
            return Outcome(status, f"{text} (hangup cause {news.cause})")
        detail = f"{news.cause} {news.cause_text}".strip()
        return Outcome("FAILED", f"the call failed (hangup cause {detail})")
    if news is not None and news.dial_status:
        status, text = DIAL_STATUSES.get(news.dial_status, ("FAILED", "the call failed"))
        return Outcome(status, f"{text} (dial status {news.dial_status})")
    if reason is None:
        return Outcome("FAILED", "the call ended before it was answered (cause ?)")
    status, text = REASONS.get(reason, ("FAILED", "the call failed"))
    return Outcome(status, f"{text} (originate reason {reason or '?'})")


class NewsBoard:
    """ChannelNews by call id, for calls of this node and of others alike (every node sees
    every event): bounded, the oldest dropped first, so events of calls settled elsewhere
    cannot pile up."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._news: dict[str, ChannelNews] = {}

    def of(self, callid: str) -> ChannelNews:
        news = self._news.get(callid)
        if news is None:
            if len(self._news) >= self._limit:
                self._news.pop(next(iter(self._news)))
            news = self._news[callid] = ChannelNews()
        return news

    def get(self, callid: str) -> ChannelNews | None:
        return self._news.get(callid)

    def forget(self, callid: str) -> None:
        self._news.pop(callid, None)

    def __len__(self) -> int:
        return len(self._news)
