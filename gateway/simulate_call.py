"""`gateway simulate call`: one inbound call to a DIN, played from Asterisk's side over FastAGI
against the running gateway (gateway/voice/asterisk_side.py speaks res_agi's protocol), and
printed as the caller would hear it.

AGI commands carry only file paths, never the words spoken or the media URL, and the gateway
keeps no copy of the spoken text. To show them, the command fetches the DIN's action_url once
more after the call (same caller and recipient, through the same outbound URL policy as the
gateway) and matches each played file against the script's `say` and `playback` lines by the
cache keys the gateway names those files with. A script that answers differently the second
time is shown as "not in the script fetched again".
"""

from __future__ import annotations

import argparse
import os
import secrets
import wave
from urllib.parse import urlencode

from actions_dsl import (
    Action,
    ActionSyntaxError,
    Gather,
    ParseErrors,
    Playback,
    Say,
    VoicemailPlayback,
    VoicemailSay,
    parse,
)
from gateway.config import Config
from gateway.db.engine import create_engine, session_factory
from gateway.egress.client import policy_session
from gateway.egress.policy import SsrfPolicy
from gateway.services.numbers import NumberService
from gateway.voice.asterisk_side import CallScenario, CallTranscript, fastagi_call, parse_args, wav_seconds
from gateway.voice.fetcher import PolicyFetcher
from gateway.voice.interfaces import FetchFailed, FetchRefused
from gateway.voice.media import MediaCache
from gateway.voice.tts import EspeakSpeech


class CallError(Exception):
    """Ends the command with one line on stderr (exit 1)."""


async def _action_url(config: Config, din: str) -> str | None:
    engine = create_engine(config.database.url)
    try:
        target = await NumberService(session_factory(engine)).subscription_for_number(din, "din")
    finally:
        await engine.dispose()
    return target.action_url if target is not None else None


async def _script_files(config: Config, action_url: str, caller: str, din: str) -> dict[str, str]:
    """File key -> what it plays, from the script the action_url answers now ({} if it fails)."""
    v = config.voice
    url = action_url + ("&" if "?" in action_url else "?") + urlencode({"caller": caller, "recipient": din})
    async with policy_session(SsrfPolicy.from_config(config.outbound_http)) as session:
        try:
            res = await PolicyFetcher(session).get(
                url, max_bytes=v.action_url_max_bytes, timeout=v.action_url_timeout
            )
        except (FetchFailed, FetchRefused):
            return {}
    try:
        actions = parse(res.body.decode("utf-8")) if res.status == 200 else []
    except (UnicodeDecodeError, ActionSyntaxError, ParseErrors):
        return {}
    files: dict[str, str] = {}
    played: list[Action] = []
    for action in actions:  # a gather's prompts play too
        played.extend([action, *action.prompts] if isinstance(action, Gather) else [action])
    for action in played:
        if isinstance(action, Say | VoicemailSay):
            files[EspeakSpeech.key(action.lang, action.text)] = f'say ({action.lang}): "{action.text}"'
        elif isinstance(action, Playback | VoicemailPlayback):
            files[MediaCache.key(action.url)] = f"playback {action.url}"
    return files


def _local(config: Config, path: str) -> str:
    """An Asterisk-side path as this host sees it (voice.asterisk_data_dir -> voice.data_dir)."""
    theirs = config.voice.asterisk_data_dir.rstrip("/")
    if theirs and path.startswith(theirs + "/"):
        return os.path.abspath(config.voice.data_dir) + path[len(theirs) :]
    return path


def _describe(config: Config, transcript: CallTranscript, files: dict[str, str]) -> list[str]:
    lines = []
    recordings = iter(transcript.recordings)
    for exchange in transcript.exchanges:
        lines.append(f"> {exchange.command}")
        argv = parse_args(exchange.command)
        verb = " ".join(argv[:2]).upper()
        if verb == "STREAM FILE" and len(argv) > 2:
            what = files.get(os.path.basename(argv[2]), "(not in the script fetched again)")
            seconds = wav_seconds(_local(config, argv[2]))
            length = f"{seconds:.2f} s" if seconds is not None else "file not readable here"
            lines.append(f"  caller hears {what} [{length}]")
            key = _key_pressed(exchange.reply)
            if key:
                lines.append(f"  caller presses {key}: the prompt stops")
        elif verb == "WAIT FOR":
            key = _key_pressed(exchange.reply)
            lines.append(f"  caller presses {key}" if key else "  caller presses nothing: the wait ends")
        elif verb.startswith("EXEC") and len(argv) > 2 and argv[1].lower() == "dial":
            target = argv[2].split("@", 1)[0].removeprefix("PJSIP/")
            lines.append(f"  caller is transferred to {target}")
        elif verb == "RECORD FILE":
            rec = next(recordings, None)
            if rec is not None and rec.file is not None:
                with wave.open(rec.file, "rb") as wav:
                    seconds = wav.getnframes() / wav.getframerate()
                kind = "recorded" if "/recordings/" in rec.file else "voicemail recorded"
                lines.append(f"  {kind}: {seconds:.2f} s into {rec.file}")
        lines.extend(f"< {reply}" for reply in exchange.reply.splitlines())
    how = {"bridge": "the gateway closed the connection", "peer": "the caller hung up"}
    lines.append(f"call ended: {how.get(transcript.ended_by, transcript.ended_by or 'done')}")
    return lines


def _key_pressed(reply: str) -> str | None:
    """The key a STREAM FILE or WAIT FOR DIGIT answer reports (`200 result=49 ...` -> 1)."""
    parts = reply.split()
    code = parts[1].removeprefix("result=") if len(parts) > 1 else ""
    return chr(int(code)) if code.isdigit() and 0 < int(code) < 128 else None


async def simulate_call(config: Config, args: argparse.Namespace) -> list[str]:
    v = config.voice
    if not v.fastagi_enabled:
        raise CallError("voice.fastagi_enabled is false: the gateway takes no calls")
    if args.digits.replace(",", "").strip("0123456789*#"):
        raise CallError(f"--digits {args.digits!r}: only 0-9, * and # are DTMF keys (, between menus)")
    if args.voicemail_wav is not None:
        try:
            with wave.open(args.voicemail_wav, "rb"):
                pass
        except (OSError, wave.Error, EOFError) as exc:
            raise CallError(
                f"--voicemail-wav {args.voicemail_wav}: not a readable WAV file ({exc})"
            ) from None
    action_url = await _action_url(config, args.din)
    script = f"din?{urlencode({'key': v.fastagi_secret})}" if v.fastagi_secret else "din"
    scenario = CallScenario(
        script=script,
        callerid=args.caller,
        dnid=args.din,
        record_from=args.voicemail_wav,
        # Each group is typed as the next menu (a gather) starts listening: "1,2#" answers 1 to
        # the first menu and 2# to the one its script leads to.
        key_groups=[group for group in args.digits.split(",") if group],
        # A `#` ends a recording (RECORD FILE's escape digit); without it the caller falls
        # silent, which ends the recording after the s= seconds.
        record_end="dtmf" if "#" in args.digits else "silence",
        uniqueid=f"simulate.{secrets.token_hex(6)}",
        # Files the gateway wrote are checked when this host sees them where Asterisk would.
        require_files=not v.asterisk_data_dir,
    )
    try:
        transcript = await fastagi_call(v.fastagi_host, v.fastagi_port, scenario, timeout=args.timeout)
    except OSError as exc:
        raise CallError(
            f"no FastAGI server on {v.fastagi_host}:{v.fastagi_port} ({exc}): is `gateway run` running?"
        ) from None
    files = await _script_files(config, action_url, args.caller, args.din) if action_url else {}
    head = f"call from {args.caller} to {args.din} over FastAGI {v.fastagi_host}:{v.fastagi_port}"
    if args.digits:
        head += f"; caller presses {args.digits} (a group per menu; # also ends a recording)"
    if action_url is None:
        head += " (no DIN subscription with an action_url: the gateway plays its fallback)"
    return [head, *_describe(config, transcript, files)]
