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
from typing import Any, TypeVar
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from yarl import URL

from actions_dsl import Action, ActionSyntaxError, FetchMethod, Gather, ParseErrors, Say, Transfer, parse
from gateway.db.models import Account, Call, Number, NumberSubscription, Recording, Voicemail
from gateway.logs import log_context
from gateway.services import outbox
from gateway.services.dialing import DialRights, load_rights
from gateway.services.numbers import NumberService
from gateway.services.views import call_json, fmt_time, recording_json
from gateway.voice.call_starts import CallStarts
from gateway.voice.executor import Executor
from gateway.voice.interfaces import (
    AgiChannel,
    AgiError,
    CallOutcome,
    Fetcher,
    Hangup,
    MediaError,
    NextScript,
)
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
    max_fetches: int = 20  # scripts per call, the action_url's included


@dataclass(frozen=True)
class Fetched:
    """One script fetch: the actions, or None and why not (in the tenant's terms)."""

    actions: list[Action] | None
    status: int | None = None
    error: str | None = None
    # The script's syntax errors, each with its line and column (the console shows them all).
    errors: tuple[ActionSyntaxError, ...] = ()


def with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


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
            script = asyncio.ensure_future(
                self.check_script(target.action_url if target else None, caller, din)
            )
            try:
                await self._starts.insert(call)
            except BaseException:
                script.cancel()
                await asyncio.gather(script, return_exceptions=True)
                raise
            status_url = target.status_url if target else None
            await self.call_event(call, status_url, "ringing")
            log.info("call answered", extra={"caller": call.caller})
            self.in_progress += 1
            self._active.add(call.uid)
            self._observer.call_started()
            outcome = CallOutcome()
            script_error: str | None = None
            first: dict[str, Any] | None = None
            try:
                fetched = await script
                script_error = fetched.error
                if target is not None and target.action_url:
                    first = {"digits": None, "url": target.action_url, "status": fetched.status}
                    first["error"] = script_error
                actions = fetched.actions
                if actions is None:
                    log.info("fallback: %s", script_error)  # the detail was logged by _script
                    actions = [self._fallback]
                if actions:
                    self._prepare(actions[0])  # while ANSWER is under way
                rights = await self._rights(target.account_id if target else None, actions)
                hooks = _CallHooks(self, call, caller, din, status_url)
                outcome = await self._executor.run(channel, actions, rights, hooks)
                if outcome.result not in ("hangup", "transferred", "rejected"):
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
                if first is not None:
                    outcome.steps.insert(0, first)
                await asyncio.shield(self._finish(call, outcome, script_error, status_url))

    async def _rights(self, account_id: int | None, actions: list[Action]) -> DialRights | None:
        """The DIN holder's dialing rights, read only for a script that transfers (or gathers:
        the script it fetches may transfer)."""
        if account_id is None or not any(isinstance(a, Transfer | Gather) for a in actions):
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

    async def check_script(self, action_url: str | None, caller: str, din: str) -> Fetched:
        """Fetch and parse a DIN's action_url as a call to `din` from `caller` does: through the
        same URL policy, limits and query. Also what the console's "test this action_url" shows."""
        if not action_url:
            return Fetched(None, error="no DIN subscription with an action_url for this number")
        return await self.fetch_script(with_query(action_url, {"caller": caller, "recipient": din}))

    async def fetch_script(
        self, url: str, headers: dict[str, str] | None = None, form: bytes | None = None
    ) -> Fetched:
        """The script at `url` (POSTed `form` when given, else a GET), or None and why not. The
        reason is what the call record (the tenant) sees: generic, never what the URL answered
        nor which way the connection failed (a port scanner with read-back otherwise); the
        detail goes to the log."""
        max_bytes, timeout = self._limits.max_bytes, self._limits.timeout
        try:
            if form is None:
                res = await self._fetcher.get(url, max_bytes=max_bytes, timeout=timeout, headers=headers)
            else:
                res = await self._fetcher.post_form(
                    url, form, max_bytes=max_bytes, timeout=timeout, headers=headers
                )
        except MediaError as exc:
            log.warning("action_url fetch failed: %s", exc)
            return Fetched(None, error="action_url fetch failed")
        if res.status != 200:
            log.warning("action_url answered HTTP %d", res.status)
            return Fetched(None, res.status, f"action_url fetch failed: HTTP {res.status}")
        try:
            text = res.body.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("action_url script is not UTF-8")
            return Fetched(None, res.status, "invalid script: not UTF-8")
        try:
            return Fetched(parse(text), res.status)
        except ParseErrors as exc:
            log.warning("invalid script from action_url: %s", "; ".join(map(str, exc.errors)))
            return Fetched(
                None, res.status, f"invalid script at line {exc.line}, column {exc.column}", tuple(exc.errors)
            )

    @property
    def fallback(self) -> Say:
        return self._fallback

    @property
    def max_fetches(self) -> int:
        return self._limits.max_fetches

    async def webhook_secret(self, account_id: int) -> str | None:
        async with self._sessions() as s:
            secret: str | None = await s.scalar(
                select(Account.webhook_secret).where(Account.id == account_id)
            )
            return secret

    async def store_recording(self, call: Call, path: str, seconds: float, action_url: str | None) -> None:
        """A `record` command's file: a recordings row, and its POST to `action_url` (signed and
        retried as every webhook) in the same transaction."""
        if call.account_id is None:
            return
        size = await asyncio.to_thread(_size, path)
        async with self._sessions.begin() as s:
            rec = _audio_row(Recording, call, path, seconds, size, datetime.now(UTC))
            s.add(rec)
            if action_url:
                outbox.enqueue(
                    s,
                    account_id=call.account_id,
                    kind="voice.recording",
                    ref=rec.uid,
                    url=action_url,
                    payload=recording_json(rec, call.uid, self._base_url),
                )
        self._observer.left_audio("recording")
        if action_url:
            self._wake_webhooks()

    async def _finish(
        self, call: Call, outcome: CallOutcome, script_error: str | None, status_url: str | None = None
    ) -> None:
        ended = datetime.now(UTC)
        duration = max(0, math.ceil((ended - call.started_at).total_seconds()))
        errors = "; ".join(e for e in (script_error, outcome.error) if e) or None
        answered = outcome.result != "rejected"
        recording = outcome.voicemail_path + ".wav" if outcome.voicemail_path else None
        size = await asyncio.to_thread(_size, recording) if recording else 0
        try:
            async with self._sessions.begin() as s:
                minute_cost: Decimal | None = None
                if call.number_id is not None:
                    minute_cost = await s.scalar(
                        select(Number.minute_cost).where(Number.id == call.number_id)
                    )
                values: dict[str, Any] = {
                    # The customer's flow did not run (the fallback did): FAILED, with the reason.
                    "status": _status(script_error, outcome),
                    "answered_at": call.started_at if answered else None,
                    "ended_at": ended,
                    # A call refused unanswered lasted nothing the caller pays for.
                    "duration": duration if answered else 0,
                    "cost": (minute_cost or Decimal(0)) * math.ceil(duration / 60)
                    if answered
                    else Decimal(0),
                    "actions": json.dumps(outcome.actions_run, ensure_ascii=False),
                    "steps": json.dumps(outcome.steps, ensure_ascii=False) if outcome.steps else None,
                    "result": outcome.result,
                    "transfer_status": outcome.transfer_status,
                    "transfer_seconds": _decimal(outcome.transfer_seconds),
                    "error": errors,
                }
                await s.execute(update(Call).where(Call.id == call.id).values(**values))
                if status_url and call.account_id is not None:
                    for name, value in values.items():
                        setattr(call, name, value)
                    # In the transaction that ends the call: a completed call always gets its event.
                    self._enqueue_event(s, call, status_url, "completed", call_json(call))
                if recording and call.account_id is not None:
                    vm = _audio_row(Voicemail, call, recording, outcome.voicemail_seconds, size, ended)
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
        if recording and call.account_id is not None:
            self._observer.left_audio("voicemail")
        if recording or status_url:
            self._wake_webhooks()

    def _enqueue_event(
        self, s: AsyncSession, call: Call, url: str, event: str, fields: dict[str, Any] | None = None
    ) -> None:
        assert call.account_id is not None
        payload = {
            "event": event,
            "callid": call.uid,
            "caller": call.caller,
            "recipient": call.recipient,
            "timestamp": fmt_time(datetime.now(UTC)),
            **(fields or {}),
        }
        outbox.enqueue(
            s, account_id=call.account_id, kind="voice.event", ref=call.uid, url=url, payload=payload
        )

    async def call_event(self, call: Call, status_url: str | None, event: str) -> None:
        """POST `event` to the DIN's status_url (through the outbox: durable, signed, retried in
        order per call). A failure to write it is logged: the call goes on."""
        if not status_url or call.account_id is None:
            return
        try:
            async with self._sessions.begin() as s:
                self._enqueue_event(s, call, status_url, event)
        except Exception:
            log.exception("writing the %s event failed", event)
            return
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


class _CallHooks:
    """The executor's view of one inbound call: its gathers' fetches, its recordings."""

    def __init__(
        self, service: CallService, call: Call, caller: str, din: str, status_url: str | None
    ) -> None:
        self._service = service
        self._status_url = status_url
        self._call = call
        self._caller = caller
        self._din = din
        self._fetches = 1  # the action_url's
        self._secret: str | None = None

    async def answered(self) -> None:
        await self._service.call_event(self._call, self._status_url, "answered")

    async def next_script(self, url: str, digits: str, method: FetchMethod = "GET") -> NextScript:
        service, call = self._service, self._call
        fallback = [service.fallback]
        self._fetches += 1
        if self._fetches > service.max_fetches:
            log.warning("script fetch %d refused: over voice.max_fetches_per_call", self._fetches)
            return NextScript(
                fallback, url, error=f"more than {service.max_fetches} scripts fetched on this call"
            )
        params = {"caller": self._caller, "recipient": self._din, "digits": digits, "callid": call.uid}
        if method == "POST":
            full, form = url, urlencode(params).encode()
            signed = form
        else:
            full, form = with_query(url, params), None
            signed = URL(full).raw_query_string.encode()  # a GET has no body: its query is signed
        headers = None
        if call.account_id is not None:
            if self._secret is None:
                self._secret = await service.webhook_secret(call.account_id)
            if self._secret:
                # Signed as webhooks are, over the bytes that carry the keys as sent.
                headers = outbox.signature_headers(self._secret, uuid.uuid4().hex, signed)
        fetched = await service.fetch_script(full, headers, form)
        return NextScript(fetched.actions or fallback, url, fetched.status, fetched.error)

    async def recorded(self, path: str, seconds: float, action_url: str | None) -> None:
        try:
            await self._service.store_recording(self._call, path, seconds, action_url)
        except Exception:  # the call goes on; the file stays on disk for the operator
            log.exception("storing a recording failed", extra={"path": path})


def _status(script_error: str | None, outcome: CallOutcome) -> str:
    if outcome.result == "rejected":
        return "REJECTED"
    return "FAILED" if script_error or outcome.fallback else "COMPLETED"


async def _hang_up(channel: AgiChannel) -> None:
    try:
        await channel.command("HANGUP")
    except (Hangup, AgiError):
        pass


def _decimal(seconds: float | None) -> Decimal | None:
    return None if seconds is None else Decimal(str(round(seconds, 3)))


_Audio = TypeVar("_Audio", Voicemail, Recording)


def _audio_row(model: type[_Audio], call: Call, path: str, seconds: float, size: int, at: datetime) -> _Audio:
    """A voicemail or a recording `call` left (the columns they share: models._CallAudio)."""
    return model(
        uid=uuid.uuid4().hex,
        call_id=call.id,
        account_id=call.account_id,
        caller=call.caller,
        recipient=call.recipient,
        duration=Decimal(str(round(seconds, 2))),
        path=path,
        size=size,
        created_at=at,
    )


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
