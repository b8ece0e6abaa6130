"""Inbound call flow on a live channel: find the DIN's subscription, fetch its action_url,
parse the script, run it, and write the call record whatever happens (hangup included)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actions_dsl import Action, ActionSyntaxError, ParseErrors, Say, Transfer, parse
from gateway.db.models import Call, Number, NumberSubscription, Voicemail
from gateway.logs import log_context
from gateway.services import outbox
from gateway.services.dialing import DialRights, load_rights
from gateway.services.numbers import NumberService
from gateway.services.views import fmt_time
from gateway.voice.call_starts import CallStarts
from gateway.voice.executor import Executor
from gateway.voice.interfaces import AgiChannel, AgiError, CallOutcome, Fetcher, Hangup, MediaError
from gateway.workers.observer import NullObserver, Observer

log = logging.getLogger(__name__)


def e164_from_agi(value: str | None) -> str:
    """Asterisk gives numbers as the trunk delivered them: digits, +digits, or 'unknown'."""
    if not value:
        return ""
    value = value.strip()
    digits = value.lstrip("+")
    if digits.isascii() and digits.isdigit() and 5 <= len(digits) <= 15:
        return "+" + digits
    return ""


@dataclass(frozen=True)
class ScriptLimits:
    timeout: float
    max_bytes: int


@dataclass(frozen=True)
class ScriptCheck:
    """An action_url fetched and parsed: the actions, or the reason a call would not run them
    (and the script's syntax errors, each with its line and column, when it is the script)."""

    actions: list[Action] | None
    reason: str | None
    errors: tuple[ActionSyntaxError, ...] = ()


class CallService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        numbers: NumberService,
        fetcher: Fetcher,
        executor: Executor,
        limits: ScriptLimits,
        fallback: Say,
        base_url: str = "",
        wake_webhooks: Callable[[], None] = lambda: None,
        observer: Observer | None = None,
        prepare: Callable[[Action], None] = lambda action: None,
    ) -> None:
        """`prepare` starts making an action's audio without waiting for it (AudioPrep.start)."""
        self._observer = observer or NullObserver()
        self._prepare = prepare
        self._base_url = base_url
        self._wake_webhooks = wake_webhooks
        self._sessions = sessions
        self._starts = CallStarts(sessions, numbers)
        self._fetcher = fetcher
        self._executor = executor
        self._limits = limits
        self._fallback = fallback
        self.in_progress = 0
        self._active: set[str] = set()  # uids of the calls this process is handling

    @property
    def executor(self) -> Executor:
        """Also runs outbound calls' playback (gateway/voice/outbound.py)."""
        return self._executor

    async def handle(self, channel: AgiChannel) -> None:
        env = channel.env
        raw_caller = env.get("callerid", "")
        caller = e164_from_agi(raw_caller)
        dnid = env.get("dnid", "")
        din = e164_from_agi(dnid if dnid and dnid != "unknown" else env.get("extension", ""))
        call = Call(
            uid=uuid.uuid4().hex,
            direction="inbound",
            caller=caller or raw_caller[:32],
            recipient=din or dnid[:32],
            status="IN_PROGRESS",
            channel=env.get("channel", "")[:128] or None,
            asterisk_uniqueid=env.get("uniqueid", "")[:64] or None,
            started_at=datetime.now(UTC),
        )
        with log_context(callid=call.uid, din=din or None, asterisk_uniqueid=call.asterisk_uniqueid):
            target = await self._starts.target(din)
            call.account_id = target.account_id if target else None
            call.number_id = target.number_id if target else None
            # The action_url is fetched while the call's IN_PROGRESS row is written; the row is
            # in before ANSWER, so a node that dies once the call runs leaves it to the sweep.
            script = asyncio.ensure_future(self._script(target.action_url if target else None, caller, din))
            try:
                await self._starts.insert(call)
            except BaseException:
                script.cancel()
                await asyncio.gather(script, return_exceptions=True)
                raise
            log.info("call answered", extra={"caller": call.caller})
            self.in_progress += 1
            self._active.add(call.uid)
            self._observer.call_started()
            outcome = CallOutcome()
            script_error: str | None = None
            try:
                actions, script_error = await script
                if actions is None:
                    log.info("fallback: %s", script_error)  # the detail was logged by _script
                    actions = [self._fallback]
                if actions:
                    self._prepare(actions[0])  # while ANSWER is under way
                rights = await self._rights(target.account_id if target else None, actions)
                outcome = await self._executor.run(channel, actions, rights)
                if outcome.result not in ("hangup", "transferred"):
                    await _hang_up(channel)
            except asyncio.CancelledError:
                outcome.result = "hangup"
                raise
            except Exception:  # the call record must still be written
                log.exception("call failed")
                outcome.error = "internal error"
            finally:
                self.in_progress -= 1
                self._active.discard(call.uid)
                self._observer.call_ended()
                await asyncio.shield(self._finish(call, outcome, script_error))

    async def _rights(self, account_id: int | None, actions: list[Action]) -> DialRights | None:
        """The DIN holder's dialing rights, read only for a script that transfers."""
        if account_id is None or not any(isinstance(a, Transfer) for a in actions):
            return None
        async with self._sessions() as s:
            return await load_rights(s, account_id)

    async def sweep_abandoned(self, max_call_seconds: float, now: datetime | None = None) -> int:
        """End inbound calls still IN_PROGRESS long after they started and not handled here: the
        node handling them stopped (crash, kill) before writing their record. Duration unknown,
        so 0 and no charge. Should such a call still be running on a live node after all, that
        node's own record overwrites this one when the call ends. Returns how many were ended."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=max_call_seconds)
        async with self._sessions.begin() as s:
            rows = (
                await s.execute(
                    select(Call.id, Call.uid, Call.started_at)
                    .where(
                        Call.direction == "inbound",
                        Call.status == "IN_PROGRESS",
                        Call.ended_at.is_(None),
                        Call.started_at < cutoff,
                    )
                    .limit(500)
                )
            ).all()
            ended = 0
            for call_id, uid, started in rows:
                if uid in self._active:
                    continue
                res = await s.execute(
                    update(Call)
                    .where(Call.id == call_id, Call.status == "IN_PROGRESS", Call.ended_at.is_(None))
                    .values(
                        status="FAILED",
                        ended_at=started,
                        duration=0,
                        cost=Decimal(0),
                        result="unknown",
                        error="no outcome: the gateway node handling this call stopped before "
                        "recording it; duration unknown",
                    )
                )
                if res.rowcount:  # type: ignore[attr-defined]
                    ended += 1
                    log.warning("abandoned call ended by the sweep", extra={"callid": uid})
        return ended

    async def _script(
        self, action_url: str | None, caller: str, din: str
    ) -> tuple[list[Action] | None, str | None]:
        """The script's actions, or None and why not. The reason is what the call record (the
        tenant) sees: generic, never what the URL answered nor which way the connection failed
        (a port scanner with read-back otherwise); the detail goes to the log."""
        check = await self.check_script(action_url, caller, din)
        return check.actions, check.reason

    async def check_script(self, action_url: str | None, caller: str, din: str) -> ScriptCheck:
        """Fetch and parse an action_url as a call to `din` from `caller` would: through the
        same URL policy, limits and query. Also what the console's "test this action_url" shows,
        with the parse errors (the script is the customer's own text)."""
        if not action_url:
            return ScriptCheck(None, "no DIN subscription with an action_url for this number")
        url = (
            action_url + ("&" if "?" in action_url else "?") + urlencode({"caller": caller, "recipient": din})
        )
        try:
            res = await self._fetcher.get(url, max_bytes=self._limits.max_bytes, timeout=self._limits.timeout)
        except MediaError as exc:
            log.warning("action_url fetch failed: %s", exc)
            return ScriptCheck(None, "action_url fetch failed")
        if res.status != 200:
            log.warning("action_url answered HTTP %d", res.status)
            return ScriptCheck(None, f"action_url fetch failed: HTTP {res.status}")
        try:
            text = res.body.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("action_url script is not UTF-8")
            return ScriptCheck(None, "invalid script: not UTF-8")
        try:
            return ScriptCheck(parse(text), None)
        except ParseErrors as exc:
            log.warning("invalid script from action_url: %s", "; ".join(map(str, exc.errors)))
            return ScriptCheck(None, f"invalid script at line {exc.line}, column {exc.column}", exc.errors)

    async def _finish(self, call: Call, outcome: CallOutcome, script_error: str | None) -> None:
        ended = datetime.now(UTC)
        duration = max(0, math.ceil((ended - call.started_at).total_seconds()))
        errors = "; ".join(e for e in (script_error, outcome.error) if e) or None
        recording = outcome.voicemail_path + ".wav" if outcome.voicemail_path else None
        size = await asyncio.to_thread(_size, recording) if recording else 0
        try:
            async with self._sessions.begin() as s:
                minute_cost: Decimal | None = None
                if call.number_id is not None:
                    minute_cost = await s.scalar(
                        select(Number.minute_cost).where(Number.id == call.number_id)
                    )
                await s.execute(
                    update(Call)
                    .where(Call.id == call.id)
                    .values(
                        # The customer's flow did not run (the fallback did): FAILED, with the reason.
                        status="FAILED" if script_error else "COMPLETED",
                        answered_at=call.started_at,
                        ended_at=ended,
                        duration=duration,
                        cost=(minute_cost or Decimal(0)) * math.ceil(duration / 60),
                        actions=json.dumps(outcome.actions_run, ensure_ascii=False),
                        result=outcome.result,
                        transfer_status=outcome.transfer_status,
                        transfer_seconds=_decimal(outcome.transfer_seconds),
                        error=errors,
                    )
                )
                if recording and call.account_id is not None:
                    vm = Voicemail(
                        uid=uuid.uuid4().hex,
                        call_id=call.id,
                        account_id=call.account_id,
                        caller=call.caller,
                        recipient=call.recipient,
                        duration=Decimal(str(round(outcome.voicemail_seconds, 2))),
                        path=recording,
                        size=size,
                        created_at=ended,
                    )
                    s.add(vm)
                    await self._notify_voicemail(s, call, vm)
        except Exception:
            log.exception("writing the record of the call failed")
            return
        log.info(
            "call ended: %s",
            outcome.result,
            extra={"duration": duration, "error": errors, "voicemail": recording is not None},
        )
        if recording:
            self._wake_webhooks()

    async def _notify_voicemail(self, s: AsyncSession, call: Call, vm: Voicemail) -> None:
        """POST the new voicemail to the DIN subscription's voicemail_url, if it has one. The
        subscription must still be the call's account's: the DIN may have changed hands
        during the call."""
        url = await s.scalar(
            select(NumberSubscription.voicemail_url).where(
                NumberSubscription.number_id == call.number_id,
                NumberSubscription.kind == "din",
                NumberSubscription.account_id == call.account_id,
            )
        )
        if not url or call.account_id is None:
            return
        outbox.enqueue(
            s,
            account_id=call.account_id,
            kind="voice.voicemail",
            ref=vm.uid,
            url=url,
            payload={
                "voicemail_id": vm.uid,
                "callid": call.uid,
                "caller": vm.caller,
                "recipient": vm.recipient,
                "duration": float(vm.duration),
                "created_at": fmt_time(vm.created_at),
                "audio_url": f"{self._base_url}/voice/voicemails/{vm.uid}/audio",
            },
        )


async def _hang_up(channel: AgiChannel) -> None:
    try:
        await channel.command("HANGUP")
    except (Hangup, AgiError):
        pass


def _decimal(seconds: float | None) -> Decimal | None:
    return None if seconds is None else Decimal(str(round(seconds, 3)))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
