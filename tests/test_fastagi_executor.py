"""FastAgiServer + Executor against an Asterisk stand-in (tests/peers/asterisk_agi.py) over real
sockets on 127.0.0.1.

Media and speech here are small classes that write real 8 kHz mono 16-bit WAV files (the real
pipeline, with fetching, decoding and eSpeak NG, is tested on its own); the peer only plays a file
that exists and has that format, as Asterisk's `wav` format does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers
import pytest
import pytest_asyncio

from actions_dsl import Action, Playback, Say, Transfer, VoicemailPlayback, parse
from gateway.services.dialing import DialRights
from gateway.voice.agi_protocol import AgiStreamError, UnsafeArgument
from gateway.voice.executor import Executor
from gateway.voice.fastagi import FastAgiServer
from gateway.voice.interfaces import AgiChannel, AgiError, CallOutcome, Hangup, MediaError
from tests.peers.asterisk_agi import (
    ANSWER_DELAY,
    DEAD,
    INVALID,
    USAGE_BEGIN,
    USAGE_END,
    CallScenario,
    CallTranscript,
    fastagi_call,
    parse_args,
    write_wav,
)

TRUNK = "trunk"
DIAL_TIMEOUT = 30
# The call's account (the DIN's holder) holds +81501234567 (a DIN, or verified by the operator).
HOLDS = DialRights(account_id=1, callers=frozenset({"+81501234567"}))


def _write_tone(path: str, seconds: float = 0.2) -> None:
    if not os.path.exists(path + ".wav"):
        tmp = f"{path}.{os.getpid()}.{id(path)}.tmp"
        write_wav(tmp, seconds)
        os.replace(tmp, path + ".wav")


class WavMedia:
    """MediaSource: one WAV per URL; URLs containing `broken` fail like an unreachable host."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.urls: list[str] = []

    async def playback_file(self, url: str) -> str:
        self.urls.append(url)
        if "broken" in url:
            raise MediaError(f"GET {url}: connection refused")
        path = str(self.root / hashlib.sha256(url.encode()).hexdigest()[:32])
        _write_tone(path)
        return path


class WavSpeech:
    """Speech: one WAV per (lang, text); language `xx` has no voice."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.said: list[tuple[str, str]] = []

    async def say_file(self, lang: str, text: str) -> str:
        self.said.append((lang, text))
        if lang == "xx":
            raise MediaError("no voice for language xx")
        path = str(self.root / hashlib.sha256(f"{lang}\0{text}".encode()).hexdigest()[:32])
        _write_tone(path)
        return path


class HostileMedia:
    """Returns whatever path it was told to: what a compromised cache could hand back."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def playback_file(self, url: str) -> str:
        return self.path


class EchoSpeech:
    """Puts the text itself in the path (a naive TTS cache would)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def say_file(self, lang: str, text: str) -> str:
        return f"{self.root}/{lang}-{text}"


@dataclass
class Bridge:
    """The FastAGI handler of these tests: runs the script registered for the call's
    agi_network_script with the executor, and keeps what happened."""

    executor: Executor
    scripts: dict[str, Sequence[Action]] = field(default_factory=dict)
    rights: dict[str, DialRights | None] = field(default_factory=dict)
    outcomes: dict[str, CallOutcome] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    custom: dict[str, Callable[[AgiChannel], Awaitable[None]]] = field(default_factory=dict)
    _n: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, channel: AgiChannel) -> None:
        uid = channel.env["uniqueid"]
        self.envs[uid] = dict(channel.env)
        script = channel.env.get("network_script", "")
        if script in self.custom:
            await self.custom[script](channel)
            return
        rights = self.rights.get(script)
        actions = self.scripts[script]
        run = self.executor.run
        self.outcomes[uid] = await (run(channel, actions, rights) if rights else run(channel, actions))
        self._changed.set()

    def register(self, actions: str | Sequence[Action], rights: DialRights | None = None) -> str:
        self._n += 1
        name = f"s{self._n}"
        self.scripts[name] = parse(actions) if isinstance(actions, str) else actions
        self.rights[name] = rights
        return name

    async def outcome(self, transcript: CallTranscript, timeout: float = 5.0) -> CallOutcome:
        async with asyncio.timeout(timeout):
            while transcript.uniqueid not in self.outcomes:
                self._changed.clear()
                await self._changed.wait()
        return self.outcomes[transcript.uniqueid]


@dataclass
class Rig:
    server: FastAgiServer
    bridge: Bridge
    media: WavMedia
    speech: WavSpeech
    voicemail_dir: Path

    async def call(
        self, actions: str | Sequence[Action], rights: DialRights | None = None, **scenario: object
    ) -> tuple[CallTranscript, CallOutcome]:
        name = self.bridge.register(actions, rights)
        transcript = await fastagi_call(
            "127.0.0.1",
            self.server.port,
            CallScenario(script=name, **scenario),  # type: ignore[arg-type]
        )
        return transcript, await self.bridge.outcome(transcript)


def make_executor(
    media: object, speech: object, voicemail_dir: Path, prefixes: tuple[str, ...] = ("+81",), **kw: object
) -> Executor:
    return Executor(
        media,  # type: ignore[arg-type]
        speech,  # type: ignore[arg-type]
        TRUNK,
        DIAL_TIMEOUT,
        prefixes,
        str(voicemail_dir),
        120,
        5,
        **kw,  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    media, speech = WavMedia(tmp_path / "media"), WavSpeech(tmp_path / "tts")
    vm = tmp_path / "voicemail"
    vm.mkdir()
    bridge = Bridge(make_executor(media, speech, vm))
    server = FastAgiServer(bridge.handler, "127.0.0.1", 0)
    await server.start()
    try:
        yield Rig(server, bridge, media, speech, vm)
    finally:
        await server.stop()


def _is_file(path: str) -> bool:
    return os.path.isfile(path)


def stream_line(path: str) -> str:
    return f'STREAM FILE {path} ""'


# --- header and the plain actions ----------------------------------------------------------


async def test_header_reaches_the_handler(rig: Rig) -> None:
    t, outcome = await rig.call('say en "Hello"', callerid="+819011112222", dnid="+81355550000")
    env = rig.bridge.envs[t.uniqueid]
    assert env["network"] == "yes"
    assert env["network_script"] == f"s{rig.bridge._n}"
    assert env["request"] == f"agi://127.0.0.1:{rig.server.port}/{env['network_script']}"
    assert env["callerid"] == "+819011112222"
    assert env["dnid"] == env["extension"] == "+81355550000"
    assert env["context"] == "din-inbound"
    assert env["accountcode"] == ""
    assert not any(k.startswith("agi_") for k in env)
    assert outcome.result == "completed"
    assert t.ended_by == "bridge"


async def test_playback_and_say(rig: Rig) -> None:
    t, outcome = await rig.call('playback https://media.example/hold.mp3\nsay ja "こんにちは"')
    media_path = str(rig.media.root / hashlib.sha256(b"https://media.example/hold.mp3").hexdigest()[:32])
    assert len(t.streamed) == 2
    assert t.commands == ["ANSWER", stream_line(media_path), stream_line(t.streamed[1])]
    assert t.streamed[0] == media_path
    assert t.streamed[1].startswith(str(rig.speech.root))
    assert rig.speech.said == [("ja", "こんにちは")]
    assert [e.reply for e in t.exchanges] == [
        "200 result=0\n",
        "200 result=0 endpos=1600\n",
        "200 result=0 endpos=1600\n",
    ]
    assert outcome == CallOutcome(
        actions_run=["playback https://media.example/hold.mp3", "say ja"], result="completed"
    )


async def test_answer_takes_as_long_as_on_asterisk(rig: Rig) -> None:
    """Asterisk 22 answers ANSWER after about 500 ms; the bridge waits for it before playing."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    t, outcome = await rig.call('say en "Hello"', answer_delay=ANSWER_DELAY)
    assert ANSWER_DELAY == 0.5 and loop.time() - started >= ANSWER_DELAY
    assert [e.reply for e in t.exchanges] == ["200 result=0\n", "200 result=0 endpos=1600\n"]
    assert outcome.result == "completed"


async def test_answer_comes_first_even_for_an_empty_script(rig: Rig) -> None:
    t, outcome = await rig.call([])
    assert t.commands == ["ANSWER"]
    assert outcome == CallOutcome()


# --- transfer --------------------------------------------------------------------------------


async def test_transfer_with_caller_id_ends_the_script(rig: Rig) -> None:
    t, outcome = await rig.call(
        "transfer +81312345678 --caller=+81501234567\nplayback https://media.example/never.mp3", HOLDS
    )
    assert t.commands == [
        "ANSWER",
        'SET CALLERID "+81501234567"',
        "EXEC Dial PJSIP/+81312345678@trunk,30",
        "GET VARIABLE DIALSTATUS",
        "GET VARIABLE ANSWEREDTIME_MS",
    ]
    assert t.callerids == ["+81501234567"]
    assert t.dialed == ["PJSIP/+81312345678@trunk,30"]
    # As on Asterisk 22: a bridged call that ended hangs the caller up (-1, then HANGUP).
    assert t.exchanges[2].reply == "200 result=-1\n"
    assert t.exchanges[3].reply == "200 result=1 (ANSWER)\n"
    assert outcome.result == "transferred" and outcome.transfer_status == "ANSWER"
    assert outcome.actions_run == ["transfer +81312345678 --caller=+81501234567"]
    assert outcome.error is None
    assert rig.media.urls == []


async def test_transfer_without_caller_sets_no_caller_id(rig: Rig) -> None:
    t, outcome = await rig.call("transfer +81312345678")
    assert t.commands == [
        "ANSWER",
        "EXEC Dial PJSIP/+81312345678@trunk,30",
        "GET VARIABLE DIALSTATUS",
        "GET VARIABLE ANSWEREDTIME_MS",
    ]
    assert t.callerids == []
    assert outcome.result == "transferred"


@pytest.mark.parametrize("rights", [HOLDS, None], ids=["other-numbers-held", "no-account"])
async def test_transfer_with_a_caller_the_account_does_not_hold_sets_no_caller_id(
    rig: Rig, rights: DialRights | None
) -> None:
    """A toll-free number the tenant does not hold: not shown; the transfer itself goes on."""
    t, outcome = await rig.call("transfer +81312345678 --caller=+81120444444", rights)
    assert t.verbs == ["ANSWER", "EXEC", "GET VARIABLE", "GET VARIABLE"]
    assert t.callerids == [] and "+81120444444" not in t.received.decode()
    assert t.dialed == ["PJSIP/+81312345678@trunk,30"] and outcome.result == "transferred"
    assert outcome.error == "transfer: caller id not set: not a number of this account"


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("+81990123456", phonenumbers.PhoneNumberType.PREMIUM_RATE),  # 0990: dial-Q2 premium rate
        ("+81570123456", phonenumbers.PhoneNumberType.UAN),  # 0570: Navi Dial, caller pays more
    ],
)
async def test_transfer_to_japanese_premium_and_shared_cost_ranges_is_refused(
    rig: Rig, number: str, kind: int
) -> None:
    """Both are valid numbers under the default +81 allow-list; their type refuses them."""
    parsed = phonenumbers.parse(number)
    assert phonenumbers.is_valid_number(parsed) and phonenumbers.number_type(parsed) == kind
    t, outcome = await rig.call(f'transfer {number}\nsay en "Sorry"')
    assert t.verbs == ["ANSWER", "STREAM FILE"] and t.dialed == []
    assert outcome.result == "completed"
    assert outcome.error is not None and f"refused: {number} is a" in outcome.error


async def test_the_accounts_own_prefixes_replace_the_global_list(rig: Rig) -> None:
    us_only = DialRights(account_id=1, callers=frozenset(), allow_prefixes=("+1",))
    t, outcome = await rig.call("transfer +81312345678", us_only)
    assert t.dialed == [] and "not under an allowed prefix" in (outcome.error or "")
    t, outcome = await rig.call("transfer +14155550100", us_only)
    assert t.dialed == ["PJSIP/+14155550100@trunk,30"]
    t, outcome = await rig.call("transfer +19002345678", us_only)  # US premium rate (900)
    assert t.dialed == [] and "premium-rate" in (outcome.error or "")


async def test_transfer_outside_the_allow_list_is_refused(rig: Rig) -> None:
    t, outcome = await rig.call('transfer +14155550100 --caller=+81501234567\nsay en "Sorry"')
    assert t.verbs == ["ANSWER", "STREAM FILE"]  # nothing dialled, no caller id, the script goes on
    assert t.dialed == [] and t.callerids == []
    assert outcome.result == "completed"
    assert outcome.error is not None and "refused" in outcome.error and "+14155550100" in outcome.error
    assert outcome.actions_run == ["transfer +14155550100 --caller=+81501234567", "say en"]


async def test_transfer_refused_when_no_prefix_is_allowed(tmp_path: Path) -> None:
    media, speech = WavMedia(tmp_path / "m"), WavSpeech(tmp_path / "t")
    bridge = Bridge(make_executor(media, speech, tmp_path, prefixes=()))
    async with FastAgiServer(bridge.handler, "127.0.0.1", 0) as server:
        name = bridge.register("transfer +81312345678")
        t = await fastagi_call("127.0.0.1", server.port, CallScenario(script=name))
        outcome = await bridge.outcome(t)
    assert t.commands == ["ANSWER"]
    assert outcome.result == "completed" and outcome.error and "refused" in outcome.error


@pytest.mark.parametrize(
    "number", ["81312345678", "+81 312345678", "+8131234567890123", "+0312345678", "+81-3-1234"]
)
async def test_transfer_to_a_number_that_is_not_e164_is_refused(rig: Rig, number: str) -> None:
    t, outcome = await rig.call([Transfer(number, line=1)])
    assert t.commands == ["ANSWER"]
    assert outcome.result == "completed"
    assert outcome.error is not None and "E.164" in outcome.error


async def test_transfer_with_an_invalid_caller_dials_without_caller_id(rig: Rig) -> None:
    t, outcome = await rig.call([Transfer("+81312345678", caller="+81 50", line=1)])
    assert t.verbs == ["ANSWER", "EXEC", "GET VARIABLE", "GET VARIABLE"]
    assert t.callerids == []
    assert outcome.result == "transferred"
    assert outcome.error is not None and "caller id" in outcome.error


async def test_answered_transfer_records_its_status_and_seconds(rig: Rig) -> None:
    t, outcome = await rig.call('transfer +81312345678\nsay en "never"', dial_seconds=0.3)
    assert outcome.result == "transferred" and outcome.transfer_status == "ANSWER"
    answered_ms = int(t.exchanges[-1].reply.split("(")[1].rstrip(")\n"))
    assert answered_ms >= 300  # the caller's up time: the Dial and what came before it
    assert outcome.transfer_seconds is not None and 0.3 <= outcome.transfer_seconds <= answered_ms / 1000
    assert outcome.actions_run == ["transfer +81312345678"] and rig.speech.said == []


@pytest.mark.parametrize(
    ("status", "result"),
    [
        ("BUSY", "transfer_busy"),
        ("NOANSWER", "transfer_no_answer"),
        ("CHANUNAVAIL", "transfer_failed"),
        ("CONGESTION", "transfer_failed"),
    ],
)
async def test_unanswered_transfer_lets_the_script_go_on(rig: Rig, status: str, result: str) -> None:
    """Nobody answered and the caller is still there (Dial 0): the next action runs, the
    record keeps the dial status; as the last action, the transfer's outcome is the result."""
    t, outcome = await rig.call(
        'transfer +81312345678\nvoicemail say en "Leave a message"', dial_status=status
    )
    assert t.exchanges[1].reply == "200 result=0\n"
    assert t.verbs == ["ANSWER", "EXEC", "GET VARIABLE", "STREAM FILE", "RECORD FILE"]
    assert outcome.result == "voicemail" and outcome.transfer_status == status
    assert outcome.transfer_seconds is None
    assert outcome.actions_run == ["transfer +81312345678", "voicemail say en"]
    assert outcome.error == f"transfer to +81312345678: dial status {status}"

    _, last = await rig.call("transfer +81312345678", dial_status=status)
    assert last.result == result and last.transfer_status == status


async def test_caller_hanging_up_while_the_transfer_rings(rig: Rig) -> None:
    """Asterisk 22 writes the HANGUP line before the answer to GET VARIABLE DIALSTATUS, which
    still follows: the bridge reads on and learns CANCEL."""
    t, outcome = await rig.call('transfer +81312345678\nsay en "never"', dial_status="CANCEL")
    assert [e.reply for e in t.exchanges[1:3]] == ["200 result=-1\n", "200 result=1 (CANCEL)\n"]
    assert t.received.decode().count("\n") == 3  # ANSWER, Dial, GET VARIABLE: nothing more
    assert t.hangup_lines == 2
    assert outcome.result == "hangup" and outcome.transfer_status == "CANCEL"
    assert outcome.transfer_seconds is None
    assert outcome.actions_run == ["transfer +81312345678"] and rig.speech.said == []


async def test_caller_hanging_up_during_the_bridged_call_still_counts_as_transferred(rig: Rig) -> None:
    # Dial returns -1 when the caller hangs up; the HANGUP line follows the answer.
    t, outcome = await rig.call("transfer +81312345678", hangup_after=2, hangup_during=True)
    assert t.verbs[:2] == ["ANSWER", "EXEC"]
    assert t.exchanges[1].reply == "200 result=-1\n"
    assert t.hangup_sent
    assert outcome.result == "transferred"


# --- voicemail -------------------------------------------------------------------------------

RECORD = re.compile(r'RECORD FILE (?P<path>\S+) wav "#" 120000 beep s=5')


async def test_voicemail_playback_records_after_the_greeting(rig: Rig) -> None:
    t, outcome = await rig.call(
        'voicemail playback https://media.example/greeting.wav\nsay en "never"', record_seconds=2.5
    )
    assert t.verbs == ["ANSWER", "STREAM FILE", "RECORD FILE"]
    m = RECORD.fullmatch(t.commands[2])
    assert m, t.commands[2]
    path = m.group("path")
    assert os.path.dirname(path) == str(rig.voicemail_dir)
    assert re.fullmatch(r"[0-9a-f]{32}", os.path.basename(path))
    [rec] = t.recordings
    assert (rec.format, rec.escape_digits, rec.timeout_ms, rec.beep, rec.silence_seconds) == (
        "wav",
        "#",
        120000,
        True,
        5,
    )
    assert rec.file == path + ".wav" and _is_file(rec.file)
    # Ended by the 5 s of silence: Asterisk answers the time left of the 120 s maximum.
    assert t.exchanges[2].reply == "200 result=112500 (timeout) endpos=20000\n"
    assert outcome.result == "voicemail"
    assert outcome.voicemail_path == path
    assert outcome.voicemail_seconds == pytest.approx(2.5)
    assert outcome.actions_run == ["voicemail playback https://media.example/greeting.wav"]
    assert rig.speech.said == []


async def test_voicemail_say_and_caller_hangs_up_while_recording(rig: Rig) -> None:
    t, outcome = await rig.call('voicemail say en "Leave a message"', record_end="hangup", record_seconds=1.0)
    assert t.verbs == ["ANSWER", "STREAM FILE", "RECORD FILE"]
    assert t.exchanges[2].reply.startswith("200 result=-1 (hangup) endpos=8000")
    assert t.hangup_sent
    assert outcome.result == "voicemail"
    assert outcome.voicemail_seconds == pytest.approx(1.0)
    with wave.open(outcome.voicemail_path + ".wav", "rb") as wav:  # type: ignore[operator]
        assert wav.getframerate() == 8000


async def test_voicemail_ended_with_hash(rig: Rig) -> None:
    t, outcome = await rig.call('voicemail say en "Hi"', record_end="dtmf")
    assert t.exchanges[2].reply.startswith("200 result=35 (dtmf)")
    assert outcome.result == "voicemail"


async def test_voicemail_duration_from_recording_time_without_a_local_file(tmp_path: Path) -> None:
    media, speech = WavMedia(tmp_path / "m"), WavSpeech(tmp_path / "t")
    asterisk_side, local_side = tmp_path / "asterisk-vm", tmp_path / "gateway-vm"
    asterisk_side.mkdir()
    local_side.mkdir()
    executor = make_executor(media, speech, asterisk_side, voicemail_local_dir=str(local_side))
    bridge = Bridge(executor)
    async with FastAgiServer(bridge.handler, "127.0.0.1", 0) as server:
        name = bridge.register('voicemail say en "Hi"')
        t = await fastagi_call("127.0.0.1", server.port, CallScenario(script=name, record_seconds=3))
        outcome = await bridge.outcome(t)
    assert t.recordings[0].file is not None and t.recordings[0].file.startswith(str(asterisk_side))
    assert outcome.result == "voicemail"
    assert outcome.voicemail_path is not None and outcome.voicemail_path.startswith(str(local_side))
    assert 0 <= outcome.voicemail_seconds < 3  # the peer answers at once: wall time, not 3 s


async def test_voicemail_greeting_failure_still_takes_the_message(rig: Rig) -> None:
    t, outcome = await rig.call("voicemail playback https://broken.example/greeting.mp3")
    assert t.verbs == ["ANSWER", "RECORD FILE"]
    assert outcome.result == "voicemail"
    assert outcome.error is not None and "voicemail greeting" in outcome.error


async def test_voicemail_recording_that_cannot_be_written(tmp_path: Path) -> None:
    media, speech = WavMedia(tmp_path / "m"), WavSpeech(tmp_path / "t")
    bridge = Bridge(make_executor(media, speech, tmp_path / "does-not-exist"))
    async with FastAgiServer(bridge.handler, "127.0.0.1", 0) as server:
        name = bridge.register('voicemail say en "Hi"')
        t = await fastagi_call("127.0.0.1", server.port, CallScenario(script=name))
        outcome = await bridge.outcome(t)
    assert t.exchanges[-1].reply == "200 result=-1 (writefile)\n"
    assert outcome.result == "completed"
    assert outcome.voicemail_path is None
    assert outcome.error is not None and "recording failed" in outcome.error


# --- failures of one action ------------------------------------------------------------------


async def test_media_and_speech_failures_are_recorded_and_the_script_goes_on(rig: Rig) -> None:
    t, outcome = await rig.call(
        'playback https://broken.example/a.mp3\nsay xx "nothing"\nsay en "still here"'
    )
    assert t.verbs == ["ANSWER", "STREAM FILE"]
    assert outcome.result == "completed"
    assert outcome.actions_run == ["playback https://broken.example/a.mp3", "say xx", "say en"]
    assert outcome.error == (
        "playback: GET https://broken.example/a.mp3: connection refused; say: no voice for language xx"
    )


async def test_file_asterisk_cannot_play(tmp_path: Path) -> None:
    speech = WavSpeech(tmp_path / "t")
    bridge = Bridge(make_executor(HostileMedia(str(tmp_path / "not-there")), speech, tmp_path))
    async with FastAgiServer(bridge.handler, "127.0.0.1", 0) as server:
        name = bridge.register('playback https://x.example/a.mp3\nsay en "after"')
        t = await fastagi_call("127.0.0.1", server.port, CallScenario(script=name))
        outcome = await bridge.outcome(t)
    assert t.exchanges[1].reply == "200 result=-1 endpos=0\n"
    assert t.missing == [str(tmp_path / "not-there")]
    assert len(t.streamed) == 1
    assert outcome.result == "completed"
    assert outcome.error is not None and "could not play" in outcome.error


async def test_agi_error_answer_is_recorded_and_the_script_goes_on(rig: Rig) -> None:
    t, outcome = await rig.call(
        "transfer +81312345678 --caller=+81501234567", HOLDS, replies={"SET CALLERID": [INVALID]}
    )
    assert t.verbs == [
        "ANSWER",
        "SET CALLERID",
        "EXEC",
        "GET VARIABLE",
        "GET VARIABLE",
    ]  # dialled all the same
    assert outcome.result == "transferred"
    assert outcome.error == "transfer: caller id not set: 510 Invalid or unknown command"


# --- hangups ---------------------------------------------------------------------------------

THREE = 'say en "one"\nsay en "two"\nsay en "three"'


async def test_hangup_line_mid_script(rig: Rig) -> None:
    t, outcome = await rig.call(THREE, hangup_after=2, hangup_mode="line")
    assert t.hangup_sent
    # The bridge may send one more command before it reads HANGUP; Asterisk answers it with 511.
    assert t.verbs == ["ANSWER", "STREAM FILE", "STREAM FILE"]
    assert t.exchanges[2].reply == DEAD + "\n"
    assert t.ended_by == "bridge"
    assert outcome.result == "hangup"
    # The second say met the hangup with its first command: it never ran, so it is not listed.
    assert outcome.actions_run == ["say en"]
    assert len(t.streamed) == 1


async def test_hangup_while_a_file_plays(rig: Rig) -> None:
    t, outcome = await rig.call(THREE, hangup_after=2, hangup_during=True)
    assert t.exchanges[1].reply == "200 result=-1 endpos=800\n"
    # -1 with an endpos is the hangup itself (the HANGUP line follows): nothing more is sent.
    assert t.verbs == ["ANSWER", "STREAM FILE"]
    assert outcome.result == "hangup"
    assert outcome.error is None  # an interrupted playback is no error of the script
    assert outcome.actions_run == ["say en"]  # the first say was cut short; the others never ran


async def test_hangup_during_the_last_playback_is_a_hangup(rig: Rig) -> None:
    """`200 result=-1 endpos=N` then HANGUP on the script's last say: nothing comes after it to
    meet the hangup, yet the caller did not hear the script to its end."""
    t, outcome = await rig.call('say en "one"\nsay en "two"', hangup_after=3, hangup_during=True)
    assert t.exchanges[2].reply == "200 result=-1 endpos=800\n" and t.hangup_sent
    assert outcome.result == "hangup"
    assert outcome.actions_run == ["say en", "say en"]


async def test_hangup_mid_script_lists_only_the_actions_started(rig: Rig) -> None:
    t, outcome = await rig.call(
        'say en "one"\nplayback https://media.example/a.mp3\ntransfer +81312345678\nsay en "two"',
        hangup_after=3,
        hangup_during=True,
    )
    assert t.dialed == [] and t.verbs == ["ANSWER", "STREAM FILE", "STREAM FILE"]
    assert outcome.result == "hangup"
    assert outcome.actions_run == ["say en", "playback https://media.example/a.mp3"]


async def test_hangup_while_recording(rig: Rig) -> None:
    t, outcome = await rig.call('voicemail say en "Speak"', hangup_after=3, hangup_during=True)
    assert t.exchanges[2].reply.startswith("200 result=-1 (hangup) endpos=")
    assert outcome.result == "voicemail" and outcome.voicemail_path is not None


async def test_511_mid_script(rig: Rig) -> None:
    t, outcome = await rig.call(THREE, hangup_after=3, hangup_mode="511")
    assert not t.hangup_sent
    assert t.verbs == ["ANSWER", "STREAM FILE", "STREAM FILE", "STREAM FILE"]
    assert t.exchanges[3].reply == DEAD + "\n"
    assert t.ended_by == "bridge"
    assert outcome.result == "hangup"
    assert outcome.actions_run == ["say en", "say en"]  # the third was refused: it never ran


async def test_connection_closed_mid_script(rig: Rig) -> None:
    t, outcome = await rig.call(THREE, hangup_after=2, hangup_mode="eof")
    assert t.ended_by == "peer"
    assert t.verbs == ["ANSWER", "STREAM FILE"]
    assert outcome.result == "hangup"
    assert outcome.actions_run == ["say en"]
    # The server is fine: the next call runs.
    t2, outcome2 = await rig.call('say en "next"')
    assert outcome2.result == "completed" and t2.verbs == ["ANSWER", "STREAM FILE"]


async def test_hangup_before_the_first_command(rig: Rig) -> None:
    t, outcome = await rig.call(THREE, hangup_after=0)
    assert t.verbs == ["ANSWER"]
    assert t.exchanges[0].reply == DEAD + "\n"
    assert outcome == CallOutcome(result="hangup")


async def test_hangup_during_voicemail_greeting(rig: Rig) -> None:
    t, outcome = await rig.call('voicemail say en "Leave a message"', hangup_after=2)
    assert outcome.result == "hangup"
    assert outcome.voicemail_path is None
    assert t.recordings == []


# --- the channel: unknown commands, usage, timeouts, injection ------------------------------


async def test_unknown_command_and_usage_answers(rig: Rig) -> None:
    seen: list[object] = []

    async def raw(channel: AgiChannel) -> None:
        for line in ["FOO BAR", "STREAM FILE", "RECORD FILE /tmp/x wav # notanumber", "STREAM", "ANSWER"]:
            try:
                seen.append(await channel.command(line))
            except AgiError as exc:
                seen.append(exc)
        seen.append(await channel.command("GET VARIABLE DIALSTATUS"))

    rig.bridge.custom["raw"] = raw
    t = await fastagi_call("127.0.0.1", rig.server.port, CallScenario(script="raw"))
    assert [e.command for e in t.exchanges] == [
        "FOO BAR",
        "STREAM FILE",
        "RECORD FILE /tmp/x wav # notanumber",
        "STREAM",
        "ANSWER",
        "GET VARIABLE DIALSTATUS",
    ]
    assert isinstance(seen[0], AgiError) and str(seen[0]) == INVALID
    assert isinstance(seen[1], AgiError) and not isinstance(seen[1], AgiStreamError)
    usage = str(seen[1]).splitlines()
    assert usage[0] == USAGE_BEGIN and usage[-1] == USAGE_END and len(usage) > 3
    assert t.exchanges[1].reply.startswith(USAGE_BEGIN + "\n")
    assert isinstance(seen[2], AgiError) and "recorded" in str(seen[2])
    assert isinstance(seen[3], AgiError) and str(seen[3]) == INVALID
    assert seen[4] == seen[5] and getattr(seen[4], "result", None) == 0  # the channel still works


async def test_the_channel_refuses_lines_that_would_inject(rig: Rig) -> None:
    refused: list[str] = []

    async def raw(channel: AgiChannel) -> None:
        for line in [
            "ANSWER\nEXEC System reboot",
            "NOOP\r",
            'STREAM FILE "/a ""',
            "NOOP \\",
            "",
            "NOOP\u2028x",
        ]:
            try:
                await channel.command(line)
            except UnsafeArgument:
                refused.append(line)
        await channel.command("NOOP")

    rig.bridge.custom["inject"] = raw
    t = await fastagi_call("127.0.0.1", rig.server.port, CallScenario(script="inject"))
    assert len(refused) == 6
    assert t.commands == ["NOOP"]
    assert t.received == b"NOOP\n"


async def _run_once(
    executor: Executor, actions: Sequence[Action], scenario: CallScenario | None = None
) -> tuple[CallTranscript, CallOutcome]:
    """One call through a FastAgiServer of its own."""
    box: list[CallOutcome] = []

    async def handler(channel: AgiChannel) -> None:
        box.append(await executor.run(channel, actions))

    async with FastAgiServer(handler, "127.0.0.1", 0) as server:
        t = await fastagi_call("127.0.0.1", server.port, scenario or CallScenario())
    [outcome] = box
    return t, outcome


async def test_injection_attempts_never_reach_the_wire(tmp_path: Path) -> None:
    hostile_paths = [
        '/tmp/x" ""\nEXEC System reboot',
        "/tmp/x\rEXEC",
        "/tmp/x\x00",
        "/tmp/x\x85EXEC System reboot",
        "/tmp/x\u2028EXEC",
        "/tmp/\u202ex",
        "/tmp/x\\",
        '/tmp/x"',
        "",
    ]
    executors = [make_executor(HostileMedia(p), EchoSpeech(tmp_path), tmp_path) for p in hostile_paths]
    say_texts = ['hi"\nEXEC System reboot', 'a" "b', "back\\slash", "line\u2028sep"]
    transfers = [
        Transfer("+81312345678\nEXEC System reboot", line=1),
        Transfer('+81312345678"', line=1),
        Transfer("+81312345678", caller='+815012"\nHANGUP', line=1),
    ]
    outcomes: list[CallOutcome] = []
    transcripts: list[CallTranscript] = []
    for i, executor in enumerate(executors):
        actions: list[Action] = [
            Playback("https://x.example/a", line=1),
            VoicemailPlayback("https://x", line=2),
        ]
        if i == 0:
            actions = [*(Say("en", s, line=1) for s in say_texts), *transfers[:2], *actions]
        t, o = await _run_once(executor, actions)
        transcripts.append(t)
        outcomes.append(o)

    for t in transcripts:
        assert t.received.count(b"\n") == len(t.commands)
        assert b"\r" not in t.received and b"\x00" not in t.received
        assert "System" not in t.received.decode()
        for line in t.commands:
            argv = parse_args(line)
            assert argv[0] in ("ANSWER", "RECORD"), line  # nothing hostile was streamed
    for o in outcomes:
        assert o.error is not None and o.result in ("voicemail", "completed")
    # The call with the hostile say texts and transfers: all refused, nothing dialled.
    assert all(set(t.verbs) <= {"ANSWER", "RECORD FILE"} for t in transcripts)
    assert outcomes[0].error is not None and outcomes[0].error.count("transfer:") == 2

    # The caller id with a line break: ignored, the transfer itself is fine.
    executor = make_executor(HostileMedia("/tmp/x"), EchoSpeech(tmp_path), tmp_path)
    t, o = await _run_once(executor, [transfers[2]])
    assert t.commands[:2] == ["ANSWER", "EXEC Dial PJSIP/+81312345678@trunk,30"]
    assert o.result == "transferred" and "caller id" in (o.error or "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trunk": "trunk,9\nEXEC"}, "trunk"),
        ({"trunk": "tr unk"}, "trunk"),
        ({"transfer_allow_prefixes": ("+81", "81x")}, "prefix"),
        ({"transfer_allow_prefixes": ("",)}, "prefix"),
        ({"voicemail_dir": '/var/vm"x'}, "voicemail_dir"),
        ({"dial_timeout": 0}, "dial_timeout"),
        ({"voicemail_max_seconds": 0}, "voicemail_max_seconds"),
    ],
)
def test_executor_refuses_unsafe_configuration(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {
        "media": WavMedia(tmp_path),
        "speech": WavSpeech(tmp_path),
        "trunk": "trunk",
        "dial_timeout": 30,
        "transfer_allow_prefixes": ("+81",),
        "voicemail_dir": str(tmp_path),
        "voicemail_max_seconds": 120,
        "voicemail_silence_seconds": 5,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Executor(**args)  # type: ignore[arg-type]


def test_prefixes_are_normalised(tmp_path: Path) -> None:
    ex = make_executor(WavMedia(tmp_path), WavSpeech(tmp_path), tmp_path, prefixes=("81", " +1415 "))
    assert ex.transfer_allow_prefixes == ("+81", "+1415")
    assert ex.transfer_allowed("+14155550100")
    assert not ex.transfer_allowed("+14165550100")
    assert not ex.transfer_allowed("+81 3")


async def test_command_timeout_breaks_the_channel(tmp_path: Path) -> None:
    """An Asterisk that never answers: the command times out and the run ends."""
    box: list[CallOutcome] = []
    executor = make_executor(WavMedia(tmp_path / "m"), WavSpeech(tmp_path / "t"), tmp_path)

    async def handler(channel: AgiChannel) -> None:
        box.append(await executor.run(channel, parse('say en "a"\nsay en "b"')))

    async with FastAgiServer(
        handler, "127.0.0.1", 0, command_timeout=0.2, long_command_timeout=0.3
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\nagi_uniqueid: 1.1\n\n")
        assert await reader.readline() == b"ANSWER\n"
        writer.write(b"200 result=0\n")
        line = await reader.readline()
        assert line.startswith(b"STREAM FILE ")
        assert await reader.read() == b""  # no further command; the bridge closed the connection
        writer.close()
    [outcome] = box
    assert outcome.result == "hangup"
    assert outcome.error is not None and "AGI stream broken" in outcome.error and "0.3 s" in outcome.error


async def test_after_a_hangup_line_the_answer_is_awaited_only_briefly(tmp_path: Path) -> None:
    """HANGUP in front of a long command's answer, then silence: the command gives up after the
    short timeout (0.2 s here), not the long one meant for a whole conversation (60 s)."""
    box: list[object] = []

    async def handler(channel: AgiChannel) -> None:
        started = asyncio.get_running_loop().time()
        try:
            await channel.command('STREAM FILE /tmp/x ""')
        except Hangup as exc:
            box.append(str(exc))
        box.append(asyncio.get_running_loop().time() - started)

    async with FastAgiServer(handler, "127.0.0.1", 0, command_timeout=0.2, long_command_timeout=60) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\nagi_uniqueid: 1.1\n\n")
        assert (await reader.readline()).startswith(b"STREAM FILE ")
        writer.write(b"HANGUP\n")
        assert await reader.read() == b""
        writer.close()
    reason, elapsed = box
    assert reason == "Asterisk sent HANGUP"
    assert isinstance(elapsed, float) and 0.15 < elapsed < 5


# --- the server ------------------------------------------------------------------------------


async def _raw(port: int, data: bytes, *, close: bool = True) -> bytes:
    """Send `data`, then read until the server closes (a reset counts as closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if close:
            writer.write_eof()
        async with asyncio.timeout(5):
            return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"agi_network: yes\n",  # closes in the middle of the header
        b"this is not a header\n\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4 + b"\n\n",
        b"A" * 100_000,  # one endless line
        b"".join(b"agi_x%d: y\n" % i for i in range(1000)) + b"\n",
        b"\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_garbage_never_reaches_the_handler_nor_crashes_the_server(
    rig: Rig, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.voice.fastagi")
    assert await _raw(rig.server.port, data) == b""
    assert rig.bridge.envs == {}
    t, outcome = await rig.call('say en "still up"')
    assert outcome.result == "completed" and t.verbs == ["ANSWER", "STREAM FILE"]


async def test_header_timeout(tmp_path: Path) -> None:
    async def handler(channel: AgiChannel) -> None:
        raise AssertionError("no handler without a header")

    async with FastAgiServer(handler, "127.0.0.1", 0, header_timeout=0.2) as server:
        assert await _raw(server.port, b"agi_network: yes\n", close=False) == b""


async def test_handler_exception_is_logged_and_the_call_closed(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(channel: AgiChannel) -> None:
        await channel.command("ANSWER")
        raise RuntimeError("bug in the call flow")

    rig.bridge.custom["broken"] = broken
    t = await fastagi_call("127.0.0.1", rig.server.port, CallScenario(script="broken"))
    assert t.commands == ["ANSWER"] and t.ended_by == "bridge"
    assert any("handler failed" in r.message and r.exc_info for r in caplog.records)
    _, outcome = await rig.call('say en "fine"')
    assert outcome.result == "completed"


async def test_stop_cancels_calls_that_do_not_end(tmp_path: Path) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(channel: AgiChannel) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = FastAgiServer(handler, "127.0.0.1", 0)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"agi_network: yes\n\n")
    await asyncio.wait_for(started.wait(), 5)
    assert server.active_calls == 1
    await asyncio.wait_for(server.stop(grace=0.1), 5)
    assert cancelled.is_set() and server.active_calls == 0
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_one_command_at_a_time(rig: Rig) -> None:
    """Commands issued concurrently on one channel go out one by one, each with its own answer."""
    answers: list[object] = []

    async def flow(channel: AgiChannel) -> None:
        answers.extend(await asyncio.gather(*(channel.command(f"GET VARIABLE V{i}") for i in range(10))))

    rig.bridge.custom["concurrent"] = flow
    variables = {f"V{i}": f"value {i}" for i in range(10)}
    t = await fastagi_call(
        "127.0.0.1", rig.server.port, CallScenario(script="concurrent", variables=variables)
    )
    assert sorted(t.commands) == sorted(f"GET VARIABLE V{i}" for i in range(10))
    assert [getattr(a, "data", None) for a in answers] == [f"(value {i})" for i in range(10)]


async def test_a_dead_channel_sends_only_what_asterisk_still_runs(rig: Rig) -> None:
    """After the HANGUP line, NOOP (which res_agi runs on a dead channel) is still sent and
    answered; STREAM FILE, which Asterisk would refuse with 511, raises Hangup unsent."""
    results: list[str] = []

    async def flow(channel: AgiChannel) -> None:
        await channel.command("ANSWER")
        for _ in range(2):
            results.append(repr(await channel.command("NOOP")))
        for _ in range(2):
            try:
                await channel.command('STREAM FILE /tmp/x ""')
            except Hangup as exc:
                results.append(str(exc))

    rig.bridge.custom["dead"] = flow
    t = await fastagi_call("127.0.0.1", rig.server.port, CallScenario(script="dead", hangup_after=1))
    assert t.commands == ["ANSWER", "NOOP", "NOOP"]
    assert results == [
        "AgiResponse(code=200, result=0, data='')",
        "AgiResponse(code=200, result=0, data='')",
        "Asterisk sent HANGUP",
        "Asterisk sent HANGUP",
    ]
    assert t.hangup_lines == 2  # when the caller went, and when AGI() ended


async def test_200_concurrent_calls(rig: Rig) -> None:
    script = rig.bridge.register(
        'say en "Welcome"\nplayback https://media.example/a.mp3\nvoicemail say en "Bye"'
    )
    scenarios = [
        CallScenario(script=script, callerid=f"+8190{i:08d}", record_seconds=0.1) for i in range(200)
    ]
    transcripts = await asyncio.gather(*(fastagi_call("127.0.0.1", rig.server.port, s) for s in scenarios))
    outcomes = [await rig.bridge.outcome(t) for t in transcripts]
    assert len({t.uniqueid for t in transcripts}) == 200
    assert all(
        t.verbs == ["ANSWER", "STREAM FILE", "STREAM FILE", "STREAM FILE", "RECORD FILE"] for t in transcripts
    )
    assert all(o.result == "voicemail" and o.error is None for o in outcomes)
    assert len({o.voicemail_path for o in outcomes}) == 200
    assert {rig.bridge.envs[t.uniqueid]["callerid"] for t in transcripts} == {s.callerid for s in scenarios}
    for _ in range(500):  # the handlers close their connections right after the peers saw EOF
        if not rig.server.active_calls:
            break
        await asyncio.sleep(0.01)
    assert rig.server.active_calls == 0
    assert rig.server.calls_handled >= 200
