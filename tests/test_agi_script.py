"""asterisk/agi/din_agi.py, the per-call pyst2 AGI script, run as Asterisk's AGI() runs it: a
subprocess with the call on stdin/stdout, the `agi_*` header first, then one answer per command
(tests/peers/asterisk_agi.py plays Asterisk), SIGHUP when the caller hangs up.

The call flow it starts is chosen with DIN_AGI_HOOK; `script_hook` below is the one these tests
give it (the script imports this module in its own process).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from actions_dsl import parse
from gateway.services.dialing import DialRights
from gateway.voice.agi_protocol import UnsafeArgument
from gateway.voice.executor import Executor
from gateway.voice.interfaces import AgiChannel, AgiError, MediaError
from tests.peers.asterisk_agi import DEAD, CallScenario, CallTranscript, parse_args, run_agi_script, write_wav

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "asterisk" / "agi" / "din_agi.py"


# --- the call flow the script runs in these tests (imported by the subprocess) -------------


class _ToneFiles:
    def __init__(self, root: Path, fail: str) -> None:
        self.root, self.fail = root, fail
        root.mkdir(parents=True, exist_ok=True)

    def _file(self, key: str) -> str:
        if self.fail in key:
            raise MediaError(f"cannot fetch {key}")
        path = str(self.root / hashlib.sha256(key.encode()).hexdigest()[:32])
        if not os.path.exists(path + ".wav"):
            write_wav(path + ".wav", 0.25)
        return path

    async def playback_file(self, url: str) -> str:
        return self._file(url)

    async def say_file(self, lang: str, text: str) -> str:
        return self._file(f"{lang}\0{text}")


async def script_hook(channel: AgiChannel) -> None:
    out = Path(os.environ["DIN_AGI_TEST_DIR"])
    mode = os.environ["DIN_AGI_TEST_MODE"]
    report: dict[str, object] = {"env": dict(channel.env)}
    try:
        if mode == "executor":
            files = _ToneFiles(out / "files", fail="broken")
            (out / "vm").mkdir(exist_ok=True)
            executor = Executor(files, files, "trunk", 30, ("+81",), str(out / "vm"), 120, 5)
            # The call's account holds +81501234567 (the scripts' transfer --caller=).
            rights = DialRights(account_id=1, callers=frozenset({"+81501234567"}))
            outcome = await executor.run(channel, parse(os.environ["DIN_AGI_TEST_SCRIPT"]), rights)
            report["outcome"] = dataclasses.asdict(outcome)
        elif mode == "inject":
            refused = []
            for line in [
                'STREAM FILE /tmp/a"b ""',
                "ANSWER\nEXEC System reboot",
                "NOOP\r",
                "NOOP \\x",
                "EVIL THING",
                "STREAM FILE /tmp/\u2028x",
            ]:
                try:
                    await channel.command(line)
                except (UnsafeArgument, AgiError) as exc:
                    refused.append(type(exc).__name__)
            report["refused"] = refused
            await channel.command("ANSWER")
        elif mode == "raise":
            await channel.command("ANSWER")
            raise RuntimeError("bug in the call flow")
    finally:
        (out / "report.json").write_text(json.dumps(report))


# --- running the script ----------------------------------------------------------------------


async def run_script(
    tmp_path: Path, scenario: CallScenario | None = None, **env: str
) -> tuple[CallTranscript, dict[str, object]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIN_AGI_")}
    full_env = {
        **base,
        "PYTHONPATH": str(REPO),
        "DIN_AGI_HOOK": "tests.test_agi_script:script_hook",
        "DIN_AGI_TEST_DIR": str(tmp_path),
        "DIN_AGI_TEST_MODE": "executor",
        **env,
    }
    transcript = await run_agi_script([sys.executable, str(SCRIPT)], scenario, env=full_env, timeout=30)
    report_file = tmp_path / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return transcript, report


def same_for_asterisk(pyst_line: str, fastagi_line: str) -> bool:
    """Both lines give Asterisk the same argv."""
    return parse_args(pyst_line) == parse_args(fastagi_line)


def explain(t: CallTranscript) -> str:
    return f"commands={t.commands!r} rc={t.returncode} ended_by={t.ended_by!r} stderr={t.stderr[-2000:]!r}"


async def test_fallback_answers_and_hangs_up(tmp_path: Path) -> None:
    t, report = await run_script(tmp_path, DIN_AGI_HOOK="tests.no_such_module_for_din_agi")
    assert t.commands == ["ANSWER", "HANGUP"], explain(t)
    assert t.returncode == 0, explain(t)
    assert [e.reply for e in t.exchanges] == ["200 result=0\n", "200 result=1\n"]
    assert t.received == b"ANSWER\nHANGUP\n"  # nothing but commands on stdout
    assert t.returncode == 0
    assert t.ended_by == "bridge"
    assert report == {}
    assert b"answering and hanging up" in t.stderr
    assert b"+819012345678" not in t.stderr  # pyst2's environment dump stays off by default


async def test_fallback_when_the_hook_has_no_main(tmp_path: Path) -> None:
    t, _ = await run_script(tmp_path, DIN_AGI_HOOK="tests.peers.asterisk_agi:no_such_function")
    assert t.commands == ["ANSWER", "HANGUP"]
    assert t.returncode == 0


async def test_executor_through_pyst2(tmp_path: Path) -> None:
    script = (
        'say en "Hello \\"you\\""\n'
        "playback https://media.example/a.mp3\n"
        "transfer +81312345678 --caller=+81501234567\n"
    )
    t, report = await run_script(
        tmp_path, CallScenario(callerid="+819011112222", dnid="+81355550000"), DIN_AGI_TEST_SCRIPT=script
    )
    assert t.returncode == 0
    assert t.verbs == [
        "ANSWER",
        "STREAM FILE",
        "STREAM FILE",
        "SET CALLERID",
        "EXEC",
        "GET VARIABLE",
        "GET VARIABLE",  # ANSWEREDTIME_MS: the transfer was answered
    ]
    # pyst2 quotes every argument; Asterisk reads the same arguments as from the FastAGI bridge.
    assert t.commands[0] == "ANSWER"
    assert t.commands[1] == f'STREAM FILE "{t.streamed[0]}" ""'
    assert same_for_asterisk(t.commands[1], f'STREAM FILE {t.streamed[0]} ""')
    assert t.commands[3] == 'SET CALLERID "+81501234567"'
    assert t.commands[4] == 'EXEC "Dial" "PJSIP/+81312345678@trunk,30"'
    assert same_for_asterisk(t.commands[4], "EXEC Dial PJSIP/+81312345678@trunk,30")
    assert t.commands[5] == 'GET VARIABLE "DIALSTATUS"'
    assert t.dialed == ["PJSIP/+81312345678@trunk,30"] and t.callerids == ["+81501234567"]
    assert len(t.streamed) == 2
    outcome = report["outcome"]
    assert isinstance(outcome, dict)
    assert outcome["result"] == "transferred" and outcome["transfer_status"] == "ANSWER"
    assert outcome["error"] is None
    assert outcome["actions_run"] == [
        "say en",
        "playback https://media.example/a.mp3",
        "transfer +81312345678 --caller=+81501234567",
    ]
    env = report["env"]
    assert isinstance(env, dict)
    assert env["callerid"] == "+819011112222" and env["dnid"] == "+81355550000"
    assert env["request"] == str(SCRIPT)
    assert "network" not in env  # not FastAGI


async def test_voicemail_through_pyst2(tmp_path: Path) -> None:
    t, report = await run_script(
        tmp_path, CallScenario(record_seconds=1.5), DIN_AGI_TEST_SCRIPT='voicemail say en "Leave a message"'
    )
    assert t.verbs == ["ANSWER", "STREAM FILE", "RECORD FILE"]
    [rec] = t.recordings
    assert (rec.format, rec.escape_digits, rec.timeout_ms, rec.beep, rec.silence_seconds) == (
        "wav",
        "#",
        120000,
        True,
        5,
    )
    outcome = report["outcome"]
    assert isinstance(outcome, dict)
    assert outcome["result"] == "voicemail"
    assert outcome["voicemail_path"] == rec.path
    assert outcome["voicemail_seconds"] == pytest.approx(1.5)
    assert t.returncode == 0


@pytest.mark.parametrize("mode", ["sighup", "511"])
async def test_hangup_mid_script(tmp_path: Path, mode: str) -> None:
    script = 'say en "one"\nsay en "two"\nsay en "three"\nsay en "four"'
    t, report = await run_script(
        tmp_path,
        CallScenario(hangup_after=2, hangup_mode=mode),
        DIN_AGI_TEST_SCRIPT=script,  # type: ignore[arg-type]
    )
    assert t.returncode == 0
    assert t.hangup_sent is (mode == "sighup")
    # After the hangup at most one more command reaches Asterisk (sent before the signal
    # landed), and it is answered 511; then the script stops.
    assert t.verbs[:2] == ["ANSWER", "STREAM FILE"]
    assert len(t.commands) in (2, 3)
    if len(t.commands) == 3:
        assert t.exchanges[2].reply == DEAD + "\n"
    if mode == "511":
        assert len(t.commands) == 3
    outcome = report["outcome"]
    assert isinstance(outcome, dict)
    assert outcome["result"] == "hangup"
    assert len(t.streamed) == 1


async def test_pipe_closed_mid_script(tmp_path: Path) -> None:
    script = 'say en "one"\nsay en "two"\nsay en "three"'
    t, report = await run_script(
        tmp_path, CallScenario(hangup_after=2, hangup_mode="eof"), DIN_AGI_TEST_SCRIPT=script
    )
    assert t.returncode == 0
    outcome = report["outcome"]
    assert isinstance(outcome, dict) and outcome["result"] == "hangup"


async def test_the_script_checks_every_argument_itself(tmp_path: Path) -> None:
    t, report = await run_script(tmp_path, DIN_AGI_TEST_MODE="inject")
    assert report["refused"] == ["UnsafeArgument"] * 4 + ["AgiError", "UnsafeArgument"]
    assert t.commands == ["ANSWER"]
    assert t.received == b"ANSWER\n"
    assert t.returncode == 0


async def test_a_failing_call_flow_hangs_up(tmp_path: Path) -> None:
    t, _ = await run_script(tmp_path, DIN_AGI_TEST_MODE="raise")
    assert t.commands == ["ANSWER", "HANGUP"]
    assert t.returncode == 1
    assert b"call flow failed" in t.stderr and b"bug in the call flow" in t.stderr
