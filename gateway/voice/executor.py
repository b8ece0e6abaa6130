"""Runs a parsed action script on one call.

The commands sent, per action (every argument goes through agi_protocol's checks first):

* always first: `ANSWER`
* playback <url>: media.playback_file(url) -> path, then `STREAM FILE <path> ""`
* say <lang> "<text>": speech.say_file(lang, text) -> path, then `STREAM FILE <path> ""`
* transfer <number> [--caller=<caller>]: refused (error recorded, next action) unless the number
  is E.164, starts with an allowed prefix (the account's own list when the operator set one) and
  is of no denied number type (premium rate, ...: gateway/services/dialing.py); then
  `SET CALLERID "<caller>"` when the caller is a DIN the call's account holds or a caller id the
  operator verified for it (any other caller: not set, error recorded, the transfer goes on
  showing the original caller, as any call forwarding does), `EXEC Dial
  PJSIP/<number>@<trunk>,<dial timeout>,U(gateway-transfer)` (the callee's answer time:
  transfer_timing.py), `GET VARIABLE DIALSTATUS` (and when answered `GET VARIABLE
  GATEWAY_BRIDGED_AT`, then `GET FULL VARIABLE ${EPOCH}` if it was set). ANSWER: the script
  ends (result `transferred`); CANCEL, or
  Dial answering -1 without ANSWER: the caller is gone (result `hangup`); BUSY, NOANSWER or any
  other status with the caller still on the line: the script goes on with the next action
  (result `transfer_busy`, `transfer_no_answer` or `transfer_failed` when it was the last one).
  The status and the answered transfer's conversation seconds go into the outcome either way
* voicemail playback|say: the greeting as above, then
  `RECORD FILE <voicemail_dir>/<32 hex> wav "#" <max ms> beep s=<silence s>` (Asterisk adds
  `.wav`); the script ends there (result `voicemail`)

A media, speech or AGI (510/520) failure of one action is recorded in `outcome.error` and the
script goes on with the next action; for media that is the error's generic `public` text, the
detail goes to the log. A hangup at any point (HANGUP line, 511, connection closed, a STREAM FILE
cut short: `-1` with an endpos) ends the run with result `hangup` and the actions started so far:
an action whose first command met the hangup never ran and is not listed.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import wave
from collections.abc import Callable, Mapping, Sequence

from actions_dsl import (
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
from gateway.services.dialing import (
    DEFAULT_DENY_NUMBER_TYPES,
    DialPolicy,
    DialRights,
    normalise_prefix,
    parse_number_types,
)

from .agi_protocol import (
    AgiStreamError,
    Quoted,
    UnsafeArgument,
    format_command,
    is_e164,
    result_endpos,
    result_paren,
    safe_digits,
    safe_int,
    safe_number,
    safe_path,
    safe_token,
)
from .interfaces import (
    AgiChannel,
    AgiError,
    AgiResponse,
    CallHooks,
    CallOutcome,
    Hangup,
    MediaError,
    MediaSource,
    NoHooks,
    Speech,
)
from .transfer_timing import BRIDGED_AT_VARIABLE, NOW_EXPRESSION, bridged_seconds, dial_option

log = logging.getLogger(__name__)

_WAV_BYTES_PER_SECOND = 8000 * 2  # 8 kHz mono 16-bit, what Asterisk's `wav` format writes


class _EndOfScript(Exception):
    """Raised inside an action that ends the script (transfer, voicemail)."""


# The keys a gather listens for: every one a caller can press on a phone's keypad.
KEYS = "0123456789*#"
# Hangup's cause codes, which chan_pjsip answers an unanswered INVITE with: 17 (user busy) is
# 486 Busy Here, 21 (call rejected) 403 Forbidden.
_BUSY_CAUSE, _REJECTED_CAUSE = 17, 21

# DIALSTATUS -> the result of a transfer nobody answered, the caller still on the line.
_UNANSWERED = {"BUSY": "transfer_busy", "NOANSWER": "transfer_no_answer"}


class _Counted:
    """The channel, counting the commands Asterisk answered: an action whose first command met
    the hangup never started."""

    def __init__(self, channel: AgiChannel) -> None:
        self._channel = channel
        self.answered = 0

    @property
    def env(self) -> Mapping[str, str]:
        return self._channel.env

    async def command(self, line: str) -> AgiResponse:
        try:
            response = await self._channel.command(line)
        except AgiStreamError:
            raise
        except AgiError:  # 510/520: answered, the command failed
            self.answered += 1
            raise
        self.answered += 1
        return response


class Executor:
    def __init__(
        self,
        media: MediaSource,
        speech: Speech,
        trunk: str,
        dial_timeout: int,
        transfer_allow_prefixes: tuple[str, ...],
        voicemail_dir: str,
        voicemail_max_seconds: int,
        voicemail_silence_seconds: int,
        *,
        voicemail_local_dir: str | None = None,
        recording_dir: str | None = None,
        recording_local_dir: str | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        deny_number_types: str = DEFAULT_DENY_NUMBER_TYPES,
    ) -> None:
        """`voicemail_dir` is where Asterisk writes recordings; `voicemail_local_dir` is the same
        directory as this process sees it (when Asterisk mounts it elsewhere), default the same.
        `recording_dir`/`recording_local_dir`: the same for `record`, default `recordings`
        beside the voicemail directory."""
        self._media = media
        self._speech = speech
        self._trunk = safe_token(trunk, "trunk")
        if isinstance(dial_timeout, bool) or not isinstance(dial_timeout, int) or dial_timeout <= 0:
            raise ValueError(f"dial_timeout must be a positive number of seconds, got {dial_timeout!r}")
        self._dial_timeout = dial_timeout
        self._policy = DialPolicy(
            tuple(normalise_prefix(p, "transfer prefix") for p in transfer_allow_prefixes),
            parse_number_types(deny_number_types),
        )
        self._voicemail_dir = safe_path(voicemail_dir.rstrip("/") or "/", "voicemail_dir")
        self._voicemail_local_dir = (voicemail_local_dir or voicemail_dir).rstrip("/") or "/"
        if isinstance(voicemail_max_seconds, bool) or voicemail_max_seconds <= 0:
            raise ValueError(f"voicemail_max_seconds must be positive, got {voicemail_max_seconds!r}")
        if isinstance(voicemail_silence_seconds, bool) or voicemail_silence_seconds < 0:
            raise ValueError(f"voicemail_silence_seconds must be >= 0, got {voicemail_silence_seconds!r}")
        self._voicemail_max_seconds = int(voicemail_max_seconds)
        self._voicemail_silence_seconds = int(voicemail_silence_seconds)
        self._new_id = new_id
        recordings = recording_dir or f"{self._voicemail_dir.rsplit('/', 1)[0]}/recordings"
        self._recording_dir = safe_path(recordings.rstrip("/") or "/", "recording_dir")
        self._recording_local_dir = (recording_local_dir or recordings).rstrip("/") or "/"

    @property
    def transfer_allow_prefixes(self) -> tuple[str, ...]:
        return self._policy.allow_prefixes

    def transfer_allowed(self, number: str, rights: DialRights | None = None) -> bool:
        prefixes = rights.allow_prefixes if rights else None
        return is_e164(number) and self._policy.refusal(number, prefixes) is None

    async def run(
        self,
        channel: AgiChannel,
        actions: Sequence[Action],
        rights: DialRights | None = None,
        hooks: CallHooks | None = None,
    ) -> CallOutcome:
        """`rights`: the call's account (the DIN's holder), for transfers; without it a
        transfer may reach the global allow-list and sets no caller id. `hooks`: what a gather,
        a record and the answer ask of the call service (default: none of it)."""
        outcome = CallOutcome()
        hooks = hooks or NoHooks()
        channel = _Counted(channel)
        pending = list(actions)
        try:
            if pending and isinstance(pending[0], Reject):
                # Never answered: the caller is refused from ringing, and is not charged.
                await self._reject(channel, pending[0], outcome)
                return outcome
            try:
                await channel.command("ANSWER")
            except AgiStreamError:
                raise
            except AgiError as exc:
                _add_error(outcome, f"answer: {exc}")
            await hooks.answered()
            while pending:
                action = pending.pop(0)
                outcome.actions_run.append(_describe(action))
                # An unanswered transfer before this action no longer decides the result.
                outcome.result = "completed"
                before = channel.answered
                try:
                    if isinstance(action, Gather):
                        after = await self._gather(channel, action, outcome, hooks)
                        if after is not None:
                            pending = list(after)
                    else:
                        await self._run_action(channel, action, outcome, rights, hooks)
                except _EndOfScript:
                    break
                except (Hangup, AgiStreamError):
                    if channel.answered == before:
                        outcome.actions_run.pop()
                    raise
                except (MediaError, AgiError, UnsafeArgument) as exc:
                    _add_error(outcome, f"{_kind(action)}: {_public(exc, _kind(action))}")
                except Exception:
                    # A bug in a media/speech backend must not drop the call record.
                    log.exception("action %s failed", _kind(action))
                    _add_error(outcome, f"{_kind(action)}: internal error")
        except Hangup:
            if outcome.result not in ("transferred", "voicemail", "rejected"):
                outcome.result = "hangup"
        except AgiStreamError as exc:
            _add_error(outcome, f"AGI stream broken: {exc}")
            if outcome.result not in ("transferred", "voicemail", "rejected"):
                outcome.result = "hangup"
        return outcome

    async def _run_action(
        self,
        channel: AgiChannel,
        action: Action,
        outcome: CallOutcome,
        rights: DialRights | None,
        hooks: CallHooks,
    ) -> None:
        if isinstance(action, Playback):
            await self._stream(channel, await self._media.playback_file(action.url))
        elif isinstance(action, Say):
            await self._stream(channel, await self._speech.say_file(action.lang, action.text))
        elif isinstance(action, Transfer):
            await self._transfer(channel, action, outcome, rights)
        elif isinstance(action, VoicemailPlayback | VoicemailSay):
            await self._voicemail(channel, action, outcome)
        elif isinstance(action, Pause):
            await channel.command(format_command("EXEC", "Wait", safe_int(action.seconds)))
        elif isinstance(action, HangupCall):
            raise _EndOfScript
        elif isinstance(action, Record):
            await self._record(channel, action, hooks)
        elif isinstance(action, Reject):
            # A script fetched after a gather: the call is answered already, so it can only end.
            _add_error(outcome, "reject: the call was already answered; hung up instead")
            raise _EndOfScript
        else:  # pragma: no cover - exhaustive over Action
            raise UnsafeArgument(f"unknown action {action!r}")

    async def _reject(self, channel: AgiChannel, action: Reject, outcome: CallOutcome) -> None:
        outcome.actions_run.append(_describe(action))
        outcome.result = "rejected"
        cause = _BUSY_CAUSE if action.busy else _REJECTED_CAUSE
        try:
            # Hangup() on the ringing channel: Asterisk answers the INVITE with the cause's SIP
            # status and the AGI gets -1 and the HANGUP line.
            await channel.command(format_command("EXEC", "Hangup", safe_int(cause)))
        except AgiStreamError:
            raise
        except AgiError as exc:
            _add_error(outcome, f"reject: {exc}")

    async def _gather(
        self, channel: AgiChannel, gather: Gather, outcome: CallOutcome, hooks: CallHooks
    ) -> Sequence[Action] | None:
        """Collect the keys; the actions to run instead of the rest of the script, or None to
        go on with it."""
        key: str | None = None
        for prompt in gather.prompts:
            try:
                key = await self._prompt(channel, prompt)
            except (MediaError, AgiError, UnsafeArgument) as exc:
                if isinstance(exc, AgiStreamError):
                    raise
                _add_error(outcome, f"gather prompt: {_public(exc, 'gather prompt')}")
            if key is not None:
                break
        digits = ""
        while len(digits) < (gather.digits or _MAX_DIGITS):
            if key is None:
                key = await _wait_key(channel, gather.timeout * 1000)
                if key is None:
                    break  # the timeout: what was typed so far is the input
            if key == gather.finish:
                break
            digits += key
            key = None
        url = gather.action if digits else gather.no_input
        if url is None:
            outcome.steps.append({"digits": "", "url": None, "status": None, "error": None})
            return None
        script = await hooks.next_script(url, digits)
        outcome.steps.append({"digits": digits, "url": url, "status": script.status, "error": script.error})
        if script.error is not None:
            outcome.fallback = True
            _add_error(outcome, f"gather: {script.error}")
        return script.actions

    async def _prompt(self, channel: AgiChannel, prompt: Prompt) -> str | None:
        """Play one prompt; the key that interrupted it, if one did."""
        if isinstance(prompt, Pause):
            return await _wait_key(channel, prompt.seconds * 1000)
        if isinstance(prompt, Playback):
            path = await self._media.playback_file(prompt.url)
        else:
            path = await self._speech.say_file(prompt.lang, prompt.text)
        response = await self._stream(channel, path, escape=KEYS)
        return _key(response.result) if response.result > 0 else None

    async def _record(self, channel: AgiChannel, action: Record, hooks: CallHooks) -> None:
        name = safe_token(self._new_id(), "recording id")
        local = f"{self._recording_local_dir}/{name}.wav"
        args = [safe_path(f"{self._recording_dir}/{name}"), "wav", Quoted(safe_digits("#"))]
        args.append(safe_int(action.max_seconds * 1000))
        if action.beep:
            args.append("beep")
        if action.silence > 0:
            args.append(f"s={safe_int(action.silence)}")
        started = time.monotonic()
        try:
            response = await channel.command(format_command("RECORD FILE", *args))
        except Hangup:
            seconds = _wav_seconds(local)
            if seconds is not None:  # keep what Asterisk wrote before the connection went
                await hooks.recorded(local, seconds, action.action)
            raise
        elapsed = time.monotonic() - started
        how = result_paren(response) or ""
        if response.result < 0 and how != "hangup":
            raise AgiError(f"recording failed ({response.result} {response.data})".rstrip())
        seconds = _wav_seconds(local)
        await hooks.recorded(local, round(elapsed if seconds is None else seconds, 3), action.action)
        if how == "hangup":
            raise Hangup("the caller hung up while recording")

    async def _stream(self, channel: AgiChannel, path: str, escape: str = "") -> AgiResponse:
        """Play `path`; with `escape` keys, one pressed stops it and the answer's result is the
        key's character code."""
        line = format_command("STREAM FILE", safe_path(path), safe_digits(escape))
        response = await channel.command(line)
        # -1 with endpos=0: Asterisk could not open the file. -1 after playing part of it: the
        # caller hung up mid-play (the HANGUP line follows), or the channel failed, which ends the
        # call as surely; waiting for the next command to tell would record the last playback of
        # a script as completed.
        if response.result < 0:
            if result_endpos(response):
                raise Hangup(f"playback of {path} cut short ({response.data})")
            raise AgiError(f"Asterisk could not play {path} ({response.result} {response.data})".rstrip())
        return response

    async def _transfer(
        self, channel: AgiChannel, action: Transfer, outcome: CallOutcome, rights: DialRights | None
    ) -> None:
        number = action.number
        if not is_e164(number):
            raise UnsafeArgument(f"refused: {number!r} is not an E.164 number")
        problem = self._policy.refusal(number, rights.allow_prefixes if rights else None)
        if problem is not None:
            raise UnsafeArgument(f"refused: {number} {problem}")
        if action.caller is not None:
            if not is_e164(action.caller):
                _add_error(outcome, f"transfer: caller id {action.caller!r} ignored, not E.164")
            elif rights is None or action.caller not in rights.callers:
                # Going on shows the original caller's number, as any call forwarding does;
                # refusing would drop the caller for a cosmetic field.
                _add_error(outcome, "transfer: caller id not set: not a number of this account")
            else:
                caller = safe_number(action.caller, "caller")
                try:
                    await channel.command(format_command("SET CALLERID", Quoted(caller)))
                except AgiStreamError:
                    raise
                except AgiError as exc:  # the transfer matters more than the number shown
                    _add_error(outcome, f"transfer: caller id not set: {exc}")
        dial = f"PJSIP/{safe_number(number)}@{self._trunk},{safe_int(self._dial_timeout)},{dial_option()}"
        started = time.monotonic()
        dialled = await channel.command(format_command("EXEC", "Dial", dial))
        dial_seconds = time.monotonic() - started
        # GET VARIABLE still runs on a dead channel: the status is known whoever hung up.
        status = await _variable(channel, "DIALSTATUS")
        outcome.transfer_status = status[:16] if status else None
        if status == "ANSWER":
            outcome.result = "transferred"
            outcome.transfer_seconds = await _conversation_seconds(channel, dial_seconds)
            raise _EndOfScript
        if status == "CANCEL" or dialled.result < 0:
            # Dial gives -1 only when the caller's channel hung up (no `g` option).
            raise Hangup(f"transfer to {number}: the caller hung up (dial status {status})")
        outcome.result = _UNANSWERED.get(status or "", "transfer_failed")
        _add_error(outcome, f"transfer to {number}: dial status {status or 'unknown'}")

    async def _voicemail(
        self, channel: AgiChannel, action: VoicemailPlayback | VoicemailSay, outcome: CallOutcome
    ) -> None:
        try:
            if isinstance(action, VoicemailPlayback):
                await self._stream(channel, await self._media.playback_file(action.url))
            else:
                await self._stream(channel, await self._speech.say_file(action.lang, action.text))
        except (MediaError, AgiError, UnsafeArgument) as exc:
            if isinstance(exc, AgiStreamError):
                raise
            # still take the message
            _add_error(outcome, f"voicemail greeting: {_public(exc, 'voicemail greeting')}")

        name = safe_token(self._new_id(), "voicemail id")
        path = f"{self._voicemail_dir}/{name}"
        local = f"{self._voicemail_local_dir}/{name}"
        max_ms = safe_int(self._voicemail_max_seconds * 1000)
        args = [safe_path(path), "wav", Quoted(safe_digits("#")), max_ms, "beep"]
        if self._voicemail_silence_seconds > 0:
            args.append(f"s={safe_int(self._voicemail_silence_seconds)}")
        started = time.monotonic()
        try:
            response = await channel.command(format_command("RECORD FILE", *args))
        except Hangup:
            # The connection went before the answer; keep whatever Asterisk wrote.
            seconds = _wav_seconds(local + ".wav")
            if seconds is None:
                raise
            _voicemail_done(outcome, local, seconds)
            raise
        elapsed = time.monotonic() - started
        how = result_paren(response) or ""
        if response.result < 0 and how != "hangup":
            raise AgiError(f"recording failed ({response.result} {response.data})".rstrip())
        seconds = _wav_seconds(local + ".wav")
        _voicemail_done(outcome, local, elapsed if seconds is None else seconds)
        raise _EndOfScript


_MAX_DIGITS = 32  # what a gather without --digits collects at most (the parser's maximum)


def _key(result: int) -> str | None:
    """The keypad key whose character code Asterisk answered, None for anything else."""
    key = chr(result) if 0 < result < 128 else ""
    return key if key and key in KEYS else None


async def _wait_key(channel: AgiChannel, timeout_ms: int) -> str | None:
    """The next key pressed within `timeout_ms`, None when none was; an answer that is no keypad
    key counts as none, so a confused peer ends the input rather than feeding it."""
    response = await channel.command(format_command("WAIT FOR DIGIT", safe_int(timeout_ms)))
    if response.result < 0:
        # res_agi: -1 when the channel went away while waiting; its HANGUP line follows.
        raise Hangup("the caller hung up while keys were awaited")
    return _key(response.result) if response.result else None


async def _variable(channel: AgiChannel, name: str) -> str | None:
    """A channel variable's value; None when unset, unreadable, or not a short plain token."""
    try:
        value = result_paren(await channel.command(format_command("GET VARIABLE", name)))
    except AgiError as exc:
        if isinstance(exc, AgiStreamError):
            raise
        return None
    if not value or len(value) > 64 or not value.isascii() or not value.replace("_", "").isalnum():
        return None
    return value


async def _conversation_seconds(channel: AgiChannel, dial_seconds: float) -> float | None:
    """The answered transfer's talk time, both ends on Asterisk's clock; None when the dialplan
    did not record the answer (an old extensions.conf) or Asterisk's answers make no sense."""
    bridged_at = await _variable(channel, BRIDGED_AT_VARIABLE)
    if bridged_at is None:
        return None
    try:
        now = result_paren(await channel.command(format_command("GET FULL VARIABLE", NOW_EXPRESSION)))
    except AgiError as exc:
        if isinstance(exc, AgiStreamError):
            raise
        return None
    return bridged_seconds(bridged_at, now, dial_seconds)


def _voicemail_done(outcome: CallOutcome, local_path: str, seconds: float) -> None:
    outcome.result = "voicemail"
    outcome.voicemail_path = local_path
    outcome.voicemail_seconds = round(max(seconds, 0.0), 3)


def _wav_seconds(path: str) -> float | None:
    """Duration of the WAV at `path`, or None when there is none. A header Asterisk did not
    finish (size fields still 0) falls back to the file size."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    try:
        with wave.open(path, "rb") as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
            if rate > 0 and frames > 0:
                return frames / rate
    except (wave.Error, EOFError, OSError):
        pass
    return max(size - 44, 0) / _WAV_BYTES_PER_SECOND


def _public(exc: Exception, what: str) -> str:
    """The tenant-visible text of an action's failure; a media error's detail (what a URL
    answered, which kind of connection failure) goes to the operator log only."""
    if isinstance(exc, MediaError):
        log.warning("%s failed: %s", what, exc)
        return exc.public
    return str(exc)


def _add_error(outcome: CallOutcome, message: str) -> None:
    outcome.error = message if not outcome.error else f"{outcome.error}; {message}"


def _kind(action: Action) -> str:
    if isinstance(action, VoicemailPlayback):
        return "voicemail playback"
    if isinstance(action, VoicemailSay):
        return "voicemail say"
    names: dict[type, str] = {
        Playback: "playback",
        Say: "say",
        Transfer: "transfer",
        Pause: "pause",
        HangupCall: "hangup",
        Reject: "reject",
        Gather: "gather",
        Record: "record",
    }
    return names[type(action)]


def _describe(action: Action) -> str:
    """What the call record shows for an action (never the spoken text itself)."""
    if isinstance(action, Playback | VoicemailPlayback):
        return f"{_kind(action)} {action.url}"
    if isinstance(action, Say | VoicemailSay):
        return f"{_kind(action)} {action.lang}"
    if isinstance(action, Transfer):
        caller = f" --caller={action.caller}" if action.caller else ""
        return f"transfer {action.number}{caller}"
    if isinstance(action, Pause):
        return f"pause {action.seconds}"
    if isinstance(action, Reject):
        return "reject busy" if action.busy else "reject"
    if isinstance(action, Gather):
        return f"gather {action.action}"
    if isinstance(action, Record):
        return f"record {action.action}" if action.action else "record"
    return _kind(action)
