"""Outbound calls (POST /voice/simple/playbacks/): originate over AMI, play on answer.

The life of a call, as the `calls` row shows it (direction "outbound"):

1. `create` checks the toll-fraud guards (gateway/services/dialing.py: destination prefix and
   number type, a caller id the account holds, its concurrent and per-minute call limits,
   counted in the calls table under a lock on the account's row so they hold across nodes),
   writes the row (QUEUED) and only then sends Asterisk an Originate
   (`Channel=PJSIP/<recipient>@<trunk>`, `Context=gateway-outbound`, `Exten=s`, `Priority=1`,
   `CallerID=<caller>`, `Variable=GATEWAY_CALLID=<callid>`, `Async=true`, `Timeout=<ms>`) whose
   ActionID names the call, so its OriginateResponse finds the row on any gateway node, across
   AMI reconnects. AMI not connected, or Asterisk refusing the action: the row is deleted again
   and the caller gets OutboundUnavailable (HTTP 503). Sent but not confirmed (connection lost,
   no answer in time): the row stays QUEUED, since Asterisk may well be dialling; the events or
   the stale sweep settle it.
2. The callee answers: Asterisk runs the gateway-outbound dialplan, which calls
   `AGI(agi://<gateway>/outbound,<callid>)`; `play` marks the call IN_PROGRESS (answered_at),
   runs the recording or the TTS message on the channel through the Executor, hangs up and
   finalises the row: ended_at, duration (from answer), cost (started minutes x the per-minute
   price for the recipient's prefix), COMPLETED (FAILED when the media could not be played).
   The dialplan and the OriginateResponse race; either order gives the same record.
3. OriginateResponse `Success` marks the call IN_PROGRESS if `play` did not get there first;
   `Failure` ends it NO_ANSWER, BUSY or FAILED as the dialled channel's own events say
   (gateway/voice/dial_outcome.py): with chan_pjsip every SIP refusal (486 busy included)
   comes back as `Reason: 0`, so unless the Reason says more (3: the ring timeout), the Hangup
   cause (from HangupRequest, or the Hangup that follows the response within moments, waited
   for up to `hangup_grace`) decides, then DialEnd's DialStatus, and Reason 0 only when
   neither was heard. Those events name the
   call by `ChanVariable: GATEWAY_CALLID=<callid>`, which manager.conf's
   `channelvars=GATEWAY_CALLID` adds; what each node heard is kept per call, bounded.
4. A Hangup event (matched by the uniqueid the OriginateResponse or `play` gave, else by its
   ChanVariable) for a call still open after a grace period: never answered (its
   OriginateResponse was missed, e.g. during an AMI reconnect) -> settled from the channel's
   events as in 3; answered (OriginateResponse, `play` or DialEnd ANSWER said so) but its
   playback never started (the FastAGI connection never came; `play` marks the start in the
   row's `actions`) -> FAILED. A started playback, here or on another node, is left to `play`,
   which writes the record itself; if the record is still open `orphan_grace` later, the node
   playing it died: the call is ended FAILED at the time of the Hangup event, by whichever
   node's event handler gets there first.
5. `sweep` fails QUEUED calls nobody reported on (events lost while AMI was down), and
   IN_PROGRESS calls answered longer ago than any playback can last (`max_call_seconds`: the
   node playing it died and the Hangup event was lost too, e.g. a single node that crashed),
   with an unknown duration recorded as 0.

Every transition is one guarded UPDATE (`ended_at IS NULL`, plus the expected state), so
whichever path gets there first wins, and the status callback (outbox kind "voice.status",
the same JSON as GET /voice/calls/<callid>) is written once, in the transaction that ended
the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actions_dsl import Action, Playback, Say
from actions_dsl.values import lang_problem, text_problem, url_problem
from gateway.db.models import Call
from gateway.keys import SESSIONS
from gateway.logs import log_context
from gateway.services import outbox
from gateway.services.dialing import DEFAULT_DENY_NUMBER_TYPES, DialPolicy, DialRights, load_rights
from gateway.services.pricing import PriceList
from gateway.services.views import call_json
from gateway.voice.ami import AmiClient, AmiConnectionLost, AmiMessage, AmiNotConnected
from gateway.voice.dial_outcome import TOLD_REASONS, NewsBoard, unanswered_outcome
from gateway.voice.interfaces import AgiChannel, AgiError, CallOutcome, Hangup

log = logging.getLogger(__name__)

OUTBOUND_SCRIPT = "outbound"  # agi://<gateway>/outbound,<callid> in the gateway-outbound context
ACTION_PREFIX = "gw-originate-"
CALLID = re.compile(r"[0-9a-f]{32}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_TRUNK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")

_CAUSE = re.compile(r"[0-9]{1,3}")
_DIAL_STATUS = re.compile(r"[A-Z]{1,16}")

AgiHandler = Callable[[AgiChannel], Awaitable[None]]


class OutboundUnavailable(Exception):
    """The call could not be handed to Asterisk (not connected, or refused); nothing was kept."""


class OutboundRefused(Exception):
    """The toll-fraud guards refused the call (HTTP 400); nothing was written or sent."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        super().__init__(str(dict(errors)))
        self.errors = dict(errors)


class OutboundLimited(Exception):
    """The account is at one of its call limits (HTTP 429); nothing was written or sent."""

    def __init__(self, limit: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.limit = limit  # the config key: outbound_max_concurrent / outbound_max_per_minute
        self.message = message
        self.retry_after = retry_after


def price_table_problem(prices: Mapping[str, float]) -> str | None:
    """Why `prices` cannot bill outbound calls, or None. All-zero counts as no table: it bills
    every call at 0, which is the free dialling toll fraud wants (set a real price, even a small
    one, for destinations that truly cost nothing)."""
    if not prices:
        return "voice.outbound_prices is empty"
    if any(p < 0 for p in prices.values()):
        return "voice.outbound_prices has a negative price"
    if all(p == 0 for p in prices.values()):
        return "every price in voice.outbound_prices is 0"
    return None


class ActionRunner(Protocol):
    """What plays the call: gateway.voice.executor.Executor."""

    async def run(self, channel: AgiChannel, actions: Sequence[Action]) -> CallOutcome: ...


@dataclass(frozen=True)
class Recording:
    url: str


@dataclass(frozen=True)
class Tts:
    message: str
    lang: str


Media = Recording | Tts


@dataclass(frozen=True)
class OutboundSettings:
    """Everything outbound calls need from the configuration."""

    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = "gateway"
    ami_secret: str = ""
    trunk: str = "trunk"  # Channel=PJSIP/<recipient>@<trunk>
    context: str = "gateway-outbound"
    ring_timeout: float = 30.0  # seconds the callee's phone may ring (Originate Timeout)
    # Price per started minute (from answer) by recipient prefix, digits after +; longest wins.
    prices: Mapping[str, float] = field(default_factory=dict)
    allow_prefixes: str = "+81"  # comma-separated; an account's own list replaces it
    deny_number_types: str = DEFAULT_DENY_NUMBER_TYPES
    max_concurrent: int = 10  # per account, unless the account has its own
    max_per_minute: int = 30
    originate_timeout: float = 10.0  # how long to wait for Asterisk to confirm an Originate
    reconnect_max_seconds: float = 30.0
    hangup_grace: float = 5.0
    stale_seconds: float = 300.0  # QUEUED this long past the ring timeout: FAILED by the sweep
    # A started playback whose record is still open this long after the Hangup: its node died.
    orphan_grace: float = 30.0
    # IN_PROGRESS this long after the answer: FAILED by the sweep (no playback lasts that long).
    max_call_seconds: float = 4 * 3600.0
    sweep_interval: float = 30.0


def check_number(field_name: str, value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError(f"{field_name} must be an E.164 number, got {value!r}")
    return value


def check_media(media: Media) -> Media:
    if isinstance(media, Recording):
        problem = url_problem(media.url)
    else:
        problem = lang_problem(media.lang) or text_problem(media.message)
    if problem is not None:
        raise ValueError(problem.message)
    return media


class OutboundCalls:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ami: AmiClient,
        runner: ActionRunner,
        *,
        trunk: str,
        ring_timeout: float,
        prices: PriceList,
        context: str = "gateway-outbound",
        originate_timeout: float = 10.0,
        hangup_grace: float = 5.0,
        stale_seconds: float = 300.0,
        orphan_grace: float = 30.0,
        max_call_seconds: float = 4 * 3600.0,
        wake_webhooks: Callable[[], None] | None = None,
        policy: DialPolicy | None = None,
        max_concurrent: int = 10,
        max_per_minute: int = 30,
    ) -> None:
        if not _TRUNK.fullmatch(trunk):
            raise ValueError(f"trunk must be a PJSIP endpoint name, got {trunk!r}")
        if not _TRUNK.fullmatch(context):
            raise ValueError(f"context must be a dialplan context name, got {context!r}")
        if ring_timeout <= 0:
            raise ValueError(f"ring_timeout must be positive, got {ring_timeout!r}")
        self._sessions = sessions
        self.ami = ami
        self._runner = runner
        self._trunk = trunk
        self._context = context
        self._ring_timeout = ring_timeout
        self._prices = prices
        self._originate_timeout = originate_timeout
        self._hangup_grace = hangup_grace
        self._stale_seconds = stale_seconds
        self._orphan_grace = orphan_grace
        self._max_call = timedelta(seconds=max_call_seconds)
        self._wake = wake_webhooks
        self._policy = policy or DialPolicy.parse("+81")
        if max_concurrent < 0 or max_per_minute < 0:
            raise ValueError("outbound call limits must be >= 0")
        self._max_concurrent = max_concurrent
        self._max_per_minute = max_per_minute
        self._playing: set[str] = set()  # callids whose play() runs in this process
        self._uniqueids: dict[str, str] = {}  # Asterisk channel uniqueid -> callid
        self._news = NewsBoard()  # what each dialled channel's events said, by callid
        self._tasks: set[asyncio.Task[None]] = set()
        self._remove_listener = ami.add_listener(self._on_event)

    # -- API side ---------------------------------------------------------------------------

    async def create(
        self, account_id: int, caller: str, recipient: str, media: Media, callbackurl: str | None = None
    ) -> str:
        """Record the call and originate it; returns the callid. Raises OutboundRefused (a
        guard said no), OutboundLimited (the account is at a limit) or OutboundUnavailable
        (Asterisk cannot take it); no row is left behind then."""
        check_number("caller", caller)
        check_number("recipient", recipient)
        check_media(media)
        callid = uuid.uuid4().hex
        async with self._sessions.begin() as s:
            rights = await load_rights(s, account_id, lock=True)
            self._check(rights, account_id, caller, recipient)
            assert rights is not None
            if not self.ami.connected:
                raise OutboundUnavailable("The voice service is not connected to Asterisk; try again later.")
            await self._check_limits(s, rights)
            s.add(
                Call(
                    uid=callid,
                    account_id=account_id,
                    direction="outbound",
                    caller=caller,
                    recipient=recipient,
                    status="QUEUED",
                    started_at=datetime.now(UTC),
                    actions="[]",
                    recording_url=media.url if isinstance(media, Recording) else None,
                    tts_message=media.message if isinstance(media, Tts) else None,
                    tts_lang=media.lang if isinstance(media, Tts) else None,
                    callbackurl=callbackurl,
                )
            )
        log.info("originating", extra={"callid": callid})
        headers = [
            ("Channel", f"PJSIP/{recipient}@{self._trunk}"),
            ("Context", self._context),
            ("Exten", "s"),
            ("Priority", "1"),
            ("CallerID", caller),
            ("Variable", f"GATEWAY_CALLID={callid}"),
            ("Timeout", str(int(self._ring_timeout * 1000))),
            ("Async", "true"),
        ]
        try:
            response = await self.ami.send_action(
                "Originate", headers, action_id=ACTION_PREFIX + callid, timeout=self._originate_timeout
            )
        except AmiNotConnected:
            await self._discard(callid)
            raise OutboundUnavailable(
                "The voice service is not connected to Asterisk; try again later."
            ) from None
        except (AmiConnectionLost, TimeoutError) as exc:
            # Written, not confirmed: Asterisk may be dialling. Keep the call; its events or
            # the sweep settle it, and a retry by the customer cannot ring the callee twice.
            log.warning("Originate not confirmed (%s); kept as QUEUED", exc, extra={"callid": callid})
            return callid
        if not response.success:
            log.error("Asterisk refused the Originate: %s", response.message, extra={"callid": callid})
            await self._discard(callid)
            raise OutboundUnavailable("The voice service refused the call; try again later.")
        return callid

    def _check(self, rights: DialRights | None, account_id: int, caller: str, recipient: str) -> None:
        errors: dict[str, list[str]] = {}
        problem = self._policy.refusal(recipient, rights.allow_prefixes if rights else ())
        if problem is None and not self._prices.covers(recipient):
            problem = "has no price on this gateway"  # it would be billed 0
        if problem is not None:
            errors["recipient"] = [f"This account may not call {recipient}: it {problem}."]
        if rights is None or caller not in rights.callers:
            errors["caller"] = [
                "Use a DIN this account holds, or a caller id the operator verified for this account."
            ]
        if errors:
            log.warning(
                "outbound call refused by the toll-fraud guards",
                extra={"account_id": account_id, "fields": sorted(errors)},
            )
            raise OutboundRefused(errors)

    async def _check_limits(self, s: AsyncSession, rights: DialRights) -> None:
        """The account's open and last-minute outbound calls, counted in the calls table (so
        across every node); the caller holds the account's row lock, so two requests cannot
        both take the last slot."""
        mine = (Call.account_id == rights.account_id, Call.direction == "outbound")
        limit = self._max_concurrent if rights.max_concurrent is None else rights.max_concurrent
        open_calls = await s.scalar(select(func.count()).where(*mine, Call.ended_at.is_(None))) or 0
        if open_calls >= limit:
            raise OutboundLimited(
                "outbound_max_concurrent",
                f"This account may have at most {limit} outbound calls at once; retry when one ends.",
                5,  # when a call ends is unknowable; a short hint keeps clients polling slowly
            )
        limit = self._max_per_minute if rights.max_per_minute is None else rights.max_per_minute
        now = datetime.now(UTC)
        count, oldest = (
            await s.execute(
                select(func.count(), func.min(Call.started_at)).where(
                    *mine, Call.started_at > now - timedelta(seconds=60)
                )
            )
        ).one()
        if count >= limit:
            wait = 60 if oldest is None else math.ceil(60 - (now - oldest).total_seconds())
            raise OutboundLimited(
                "outbound_max_per_minute",
                f"This account may place at most {limit} outbound calls per minute.",
                max(1, wait),
            )

    async def _discard(self, callid: str) -> None:
        async with self._sessions.begin() as s:
            await s.execute(delete(Call).where(Call.uid == callid, Call.status == "QUEUED"))

    # -- the answered call (FastAGI) --------------------------------------------------------

    async def play(self, channel: AgiChannel, callid: str) -> None:
        """Play call `callid`'s recording or TTS message on the answered channel, hang up and
        write the record. Called by the FastAGI handler for `agi://.../outbound,<callid>`."""
        callid = callid.strip()
        env = channel.env
        if not CALLID.fullmatch(callid):
            log.warning("outbound AGI with a bad call id %r (channel %r)", callid[:64], env.get("channel"))
            await _hang_up(channel)
            return
        with log_context(callid=callid):
            await self._play(channel, callid)

    async def _play(self, channel: AgiChannel, callid: str) -> None:
        loaded = await self._answered(callid, channel.env)
        if loaded is None:
            await _hang_up(channel)
            return
        action, answered_at = loaded
        self._playing.add(callid)
        outcome = CallOutcome()
        try:
            outcome = await self._runner.run(channel, [action])
            if outcome.result != "hangup" and not await _hang_up(channel):
                outcome.result = "hangup"  # the callee was gone before the message ended
        except asyncio.CancelledError:
            outcome.result = "hangup"
            raise
        except Exception:  # the record must still be written
            log.exception("outbound call failed", extra={"callid": callid})
            outcome.error = "internal error"
        finally:
            self._playing.discard(callid)
            await asyncio.shield(self._played(callid, outcome, answered_at))

    async def _answered(self, callid: str, env: Mapping[str, str]) -> tuple[Action, datetime] | None:
        now = datetime.now(UTC)
        async with self._sessions.begin() as s:
            row = await s.scalar(select(Call).where(Call.uid == callid, Call.direction == "outbound"))
            if row is None:
                log.warning("outbound AGI for an unknown call", extra={"callid": callid})
                return None
            if row.ended_at is not None:
                log.warning("outbound AGI for an ended call (%s)", row.status, extra={"callid": callid})
                return None
            answered_at = row.answered_at or now
            action: Action
            if row.recording_url:
                action = Playback(row.recording_url, line=0)
                described = f"playback {row.recording_url}"
            else:
                action = Say(row.tts_lang or "en", row.tts_message or "", line=0)
                described = f"say {action.lang}"
            res = await s.execute(
                update(Call)
                .where(Call.id == row.id, Call.ended_at.is_(None))
                .values(
                    status="IN_PROGRESS",
                    answered_at=answered_at,
                    channel=row.channel or (env.get("channel", "")[:128] or None),
                    asterisk_uniqueid=row.asterisk_uniqueid or (env.get("uniqueid", "")[:64] or None),
                    # Marks the playback as started, for the Hangup handler on any node.
                    actions=json.dumps([described], ensure_ascii=False),
                )
            )
            if not res.rowcount:  # type: ignore[attr-defined]
                return None
        uniqueid = env.get("uniqueid", "")
        if uniqueid:
            self._remember(uniqueid, callid)
        return action, answered_at

    async def _played(self, callid: str, outcome: CallOutcome, answered_at: datetime) -> None:
        try:
            await self._end(
                callid,
                "FAILED" if outcome.error else "COMPLETED",
                error=outcome.error,
                result=outcome.result,
                actions=outcome.actions_run,
                answered_at=answered_at,
            )
        except Exception:
            log.exception("writing the record of the outbound call failed", extra={"callid": callid})

    # -- AMI events -------------------------------------------------------------------------

    def _on_event(self, msg: AmiMessage) -> None:
        event = (msg.event or "").lower()
        if event == "originateresponse":
            aid = msg.action_id or ""
            callid = aid[len(ACTION_PREFIX) :] if aid.startswith(ACTION_PREFIX) else ""
            if CALLID.fullmatch(callid):
                self._spawn(self._originate_response(callid, msg))
        elif event == "hangup":
            callid = self._uniqueids.pop(msg.get("Uniqueid") or "", "") or _chanvar_callid(msg)
            if callid:
                self._heard_cause(callid, msg)
                self._news.of(callid).hung_up.set()
                self._spawn(self._hangup(callid, msg))
        elif event == "hanguprequest":
            callid = _chanvar_callid(msg)
            if callid:
                self._heard_cause(callid, msg)
        elif event == "dialend":
            callid = _chanvar_callid(msg, "DestChanVariable")
            status = (msg.get("DialStatus") or "").strip()
            if callid and _DIAL_STATUS.fullmatch(status):
                self._news.of(callid).dial_status = status

    def _heard_cause(self, callid: str, msg: AmiMessage) -> None:
        cause = (msg.get("Cause") or "").strip()
        if _CAUSE.fullmatch(cause):
            news = self._news.of(callid)
            news.cause = cause
            news.cause_text = sanitised_text(msg.get("Cause-txt") or "", 80).strip() or news.cause_text

    async def _originate_response(self, callid: str, msg: AmiMessage) -> None:
        if msg.success:
            uniqueid = msg.get("Uniqueid") or ""
            channel = msg.get("Channel") or ""
            if uniqueid and uniqueid != "<null>":
                self._remember(uniqueid, callid)
            async with self._sessions.begin() as s:
                row = await s.scalar(select(Call).where(Call.uid == callid, Call.direction == "outbound"))
                if row is None or row.status != "QUEUED" or row.ended_at is not None:
                    return  # play() got there first, or the call is over
                await s.execute(
                    update(Call)
                    .where(Call.id == row.id, Call.status == "QUEUED", Call.ended_at.is_(None))
                    .values(
                        status="IN_PROGRESS",
                        answered_at=row.answered_at or datetime.now(UTC),
                        channel=row.channel or (channel[:128] or None),
                        asterisk_uniqueid=row.asterisk_uniqueid
                        or (uniqueid[:64] if uniqueid and uniqueid != "<null>" else None),
                    )
                )
            return
        reason = sanitised_text((msg.get("Reason") or "").strip(), 8)
        news = self._news.of(callid)
        if reason not in TOLD_REASONS and not news.cause:
            # Reason 0 is also what a busy or refusing callee gives (dial_outcome.py); its
            # channel's Hangup, just behind this response, tells which.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.hung_up.wait(), self._hangup_grace)
        outcome = unanswered_outcome(news, reason)
        await self._end(
            callid, outcome.status, error=outcome.error, result=outcome.status.lower(), unanswered_only=True
        )

    async def _hangup(self, callid: str, msg: AmiMessage) -> None:
        hung_up_at = datetime.now(UTC)
        await asyncio.sleep(self._hangup_grace)  # let play() or the OriginateResponse finish
        if callid in self._playing:
            return
        cause = (msg.get("Cause") or "").strip()
        cause = cause if _CAUSE.fullmatch(cause) else ""
        async with self._sessions() as s:
            row = await s.scalar(select(Call).where(Call.uid == callid, Call.direction == "outbound"))
        if row is None or row.ended_at is not None:
            self._forget(callid)
            return
        if _played_somewhere(row):
            # A play() (maybe on another node) started it and writes the record itself, within
            # moments of the hangup, unless its node died.
            await self._end_orphan(callid, hung_up_at, cause)
            return
        news = self._news.of(callid)
        if not news.cause:  # the bounded board dropped it meanwhile
            self._heard_cause(callid, msg)
        if row.answered_at is None and news.dial_status != "ANSWER":
            # No OriginateResponse settled it (missed during an AMI reconnect): the channel's
            # own events do, matched by ChanVariable GATEWAY_CALLID.
            outcome = unanswered_outcome(news, None)
            await self._end(
                callid,
                outcome.status,
                error=outcome.error,
                result=outcome.status.lower(),
                unanswered_only=True,
            )
        else:
            await self._end(
                callid,
                "FAILED",
                error=f"the call was answered but the playback never ran (hangup cause {cause or '?'})",
                result="hangup",
                answered_at=row.answered_at,
            )

    async def _end_orphan(self, callid: str, hung_up_at: datetime, cause: str) -> None:
        await asyncio.sleep(self._orphan_grace)
        if callid in self._playing:
            return
        await self._end(
            callid,
            "FAILED",
            error=(
                "the gateway node playing this call stopped before recording its outcome; "
                f"ended at Asterisk's hangup (cause {cause or '?'})"
            ),
            result="hangup",
            ended_at=hung_up_at,
        )

    # -- ending a call ----------------------------------------------------------------------

    async def _end(
        self,
        callid: str,
        status: str,
        *,
        error: str | None,
        result: str | None,
        actions: Sequence[str] | None = None,
        answered_at: datetime | None = None,
        unanswered_only: bool = False,
        queued_only: bool = False,
        in_progress_only: bool = False,
        ended_at: datetime | None = None,
    ) -> bool:
        """End the call if nothing ended it yet; writes the status callback in the same
        transaction. True when this call ended it."""
        ended = ended_at or datetime.now(UTC)
        async with self._sessions.begin() as s:
            row = await s.scalar(select(Call).where(Call.uid == callid, Call.direction == "outbound"))
            if row is None or row.ended_at is not None:
                return False
            if unanswered_only and row.answered_at is not None:
                return False
            answered = answered_at or row.answered_at
            duration = max(0, math.ceil((ended - answered).total_seconds())) if answered else 0
            cost = self._prices.price_per_part(row.recipient) * math.ceil(duration / 60)
            stmt = update(Call).where(Call.id == row.id, Call.ended_at.is_(None))
            if unanswered_only:
                stmt = stmt.where(Call.answered_at.is_(None))
            if queued_only:
                stmt = stmt.where(Call.status == "QUEUED")
            if in_progress_only:
                stmt = stmt.where(Call.status == "IN_PROGRESS")
            values: dict[str, Any] = {
                "status": status,
                "ended_at": ended,
                "duration": duration,
                "cost": cost,
                "result": result,
                "error": error,
            }
            if answered is not None:
                values["answered_at"] = answered
            if actions is not None:
                values["actions"] = json.dumps(list(actions), ensure_ascii=False)
            res = await s.execute(stmt.values(**values))
            if not res.rowcount:  # type: ignore[attr-defined]
                return False
            if row.callbackurl and row.account_id is not None:
                outbox.enqueue(
                    s,
                    account_id=row.account_id,
                    kind="voice.status",
                    ref=callid,
                    url=row.callbackurl,
                    payload=call_json(row),
                )
            wake = outbox.written(s) > 0
        self._forget(callid)
        if wake and self._wake is not None:
            self._wake()
        log.info("outbound call %s", status, extra={"callid": callid, "status": status})
        return True

    async def sweep(self, now: datetime | None = None, limit: int = 100) -> int:
        """Fail QUEUED calls nobody reported on well past their ring timeout, and IN_PROGRESS
        calls answered longer ago than any call lasts; returns how many."""
        now = now or datetime.now(UTC)
        return await self._sweep_queued(now, limit) + await self._sweep_abandoned(now, limit)

    async def _sweep_abandoned(self, now: datetime, limit: int) -> int:
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(Call.uid, Call.answered_at)
                    .where(
                        Call.direction == "outbound",
                        Call.status == "IN_PROGRESS",
                        Call.ended_at.is_(None),
                        Call.answered_at < now - self._max_call,
                    )
                    .limit(limit)
                )
            ).all()
        ended = 0
        for callid, answered_at in rows:
            if callid in self._playing:
                continue
            if await self._end(
                callid,
                "FAILED",
                error="no outcome: the gateway node playing this call stopped and its hangup was "
                "not seen; duration unknown",
                result="failed",
                in_progress_only=True,
                ended_at=answered_at,  # duration 0 (and no charge) rather than a guess
            ):
                ended += 1
        return ended

    async def _sweep_queued(self, now: datetime, limit: int) -> int:
        cutoff = now - timedelta(seconds=self._ring_timeout + self._stale_seconds)
        async with self._sessions() as s:
            stale = list(
                (
                    await s.execute(
                        select(Call.uid)
                        .where(
                            Call.direction == "outbound",
                            Call.status == "QUEUED",
                            Call.ended_at.is_(None),
                            Call.started_at < cutoff,
                        )
                        .limit(limit)
                    )
                ).scalars()
            )
        ended = 0
        for callid in stale:
            if await self._end(
                callid,
                "FAILED",
                error="Asterisk reported no outcome for this call",
                result="failed",
                unanswered_only=True,
                queued_only=True,
            ):
                ended += 1
        return ended

    async def sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("outbound call sweep failed")

    # -- bookkeeping ------------------------------------------------------------------------

    def _remember(self, uniqueid: str, callid: str) -> None:
        if len(self._uniqueids) >= 10_000:  # Hangups lost while AMI was down: drop the oldest
            self._uniqueids.pop(next(iter(self._uniqueids)))
        self._uniqueids[uniqueid] = callid

    def _forget(self, callid: str) -> None:
        self._news.forget(callid)
        for uniqueid in [u for u, c in self._uniqueids.items() if c == callid]:
            del self._uniqueids[uniqueid]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._logged(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _logged(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handling an AMI event for an outbound call failed")

    async def close(self) -> None:
        """Stop handling events (the AMI client is closed by its owner)."""
        self._remove_listener()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


OUTBOUND = web.AppKey("outbound", OutboundCalls)  # set by outbound_cleanup_ctx


def _played_somewhere(row: Call) -> bool:
    return bool(row.actions) and row.actions != "[]"


def sanitised_text(value: str, limit: int = 200) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in value)[:limit]


def _chanvar_callid(msg: AmiMessage, header: str = "ChanVariable") -> str:
    """GATEWAY_CALLID from `ChanVariable: GATEWAY_CALLID=<callid>` (manager.conf channelvars;
    `DestChanVariable` on the Dial events)."""
    for value in msg.get_all(header):
        name, _, callid = value.partition("=")
        if name.strip() == "GATEWAY_CALLID" and CALLID.fullmatch(callid.strip()):
            return callid.strip()
    return ""


async def _hang_up(channel: AgiChannel) -> bool:
    """Hang up; False when the channel says the other side already did."""
    try:
        await channel.command("HANGUP")
    except Hangup:
        return False
    except AgiError:
        pass
    return True


def is_outbound(env: Mapping[str, str]) -> bool:
    """A FastAGI connection from the gateway-outbound dialplan (`agi://<gw>/outbound,<callid>`)."""
    return env.get("network_script", "").strip("/") == OUTBOUND_SCRIPT


def agi_router(inbound: AgiHandler, outbound: Callable[[], OutboundCalls | None]) -> AgiHandler:
    """One FastAGI handler for both directions: `outbound` scripts go to OutboundCalls.play
    with agi_arg_1 as the call id, everything else to the inbound call flow. `outbound` is
    looked up per call, so the FastAGI server can start before outbound calls are set up."""

    async def handle(channel: AgiChannel) -> None:
        if not is_outbound(channel.env):
            await inbound(channel)
            return
        calls = outbound()
        if calls is None:
            log.warning("outbound AGI call, but outbound calls are not enabled; hanging up")
            await _hang_up(channel)
            return
        await calls.play(channel, channel.env.get("arg_1", ""))

    return handle


def outbound_cleanup_ctx(
    settings: OutboundSettings,
    runner: Callable[[web.Application], ActionRunner],
    *,
    wake_webhooks: Callable[[web.Application], Callable[[], None]] | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that sets app[OUTBOUND]: AMI client (connecting in the background),
    OutboundCalls, the stale sweep. Append it after the database and voice contexts; `runner`
    gets the Executor from the app (e.g. `lambda app: app[CALLS].executor`)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        ami = AmiClient(
            settings.ami_host,
            settings.ami_port,
            settings.ami_username,
            settings.ami_secret,
            action_timeout=settings.originate_timeout,
            backoff_max=settings.reconnect_max_seconds,
        )
        calls = OutboundCalls(
            app[SESSIONS],
            ami,
            runner(app),
            trunk=settings.trunk,
            context=settings.context,
            ring_timeout=settings.ring_timeout,
            prices=PriceList(settings.prices),
            policy=DialPolicy.parse(settings.allow_prefixes, settings.deny_number_types),
            max_concurrent=settings.max_concurrent,
            max_per_minute=settings.max_per_minute,
            originate_timeout=settings.originate_timeout,
            hangup_grace=settings.hangup_grace,
            stale_seconds=settings.stale_seconds,
            orphan_grace=settings.orphan_grace,
            max_call_seconds=settings.max_call_seconds,
            wake_webhooks=wake_webhooks(app) if wake_webhooks else None,
        )
        await ami.start()
        sweeper = asyncio.create_task(calls.sweep_forever(settings.sweep_interval), name="outbound sweep")
        app[OUTBOUND] = calls
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await calls.close()
            await ami.close()

    return ctx
