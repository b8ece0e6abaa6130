"""An Asterisk stand-in for the AGI bridge: what res_agi.c does on its side of the wire.

The test suite plays calls with it (tests/peers/asterisk_agi.py) and `gateway simulate call`
lets a customer try an action_url script against a running gateway without an Asterisk.

It is written from Asterisk's source (res/res_agi.c: setup_env, parse_args, find_command,
agi_handle_command, run_agi and the handle_* functions), not from the gateway's code, so the
bridge is tested against the protocol rather than against itself:

* the header block, in Asterisk's order: `agi_network: yes` and `agi_network_script` (FastAGI
  only), then agi_request, agi_channel, agi_language, agi_type, agi_uniqueid, agi_version,
  agi_callerid, agi_calleridname, agi_callingpres, agi_callingani2, agi_callington,
  agi_callingtns, agi_dnid, agi_rdnis, agi_context, agi_extension, agi_priority, agi_enhanced,
  agi_accountcode, agi_threadid, any agi_arg_N, then a blank line;
* commands are read as lines of at most 2047 bytes (a longer line is cut and the rest read as the
  next command, as fgets into AGI_BUF_LEN does), only the LF is stripped, arguments are split
  with Asterisk's quote/backslash rules and the command is matched case-insensitively;
* answers, as recorded from a real Asterisk 22 (/work/shared/asterisk-22 in the project's
  notes; each point below was seen there): `200 result=0` (ANSWER, after about 500 ms: Asterisk
  waits for media once the line is up), `200 result=0 endpos=<samples>` (STREAM FILE; the file
  must exist as <path>.wav, 8 kHz mono 16-bit, else `200 result=-1 endpos=0`), `200 result=1`
  (SET CALLERID, SET VARIABLE, VERBOSE, HANGUP), `200 result=<app result>` (EXEC; unknown
  application -> -2; Dial -> -1 once a bridged call ends, since without its `g` option Dial
  hangs the caller up then, 0 for BUSY, NOANSWER and the other unanswered statuses, -1 followed
  by the `HANGUP` line when the caller hangs up while it rings, DIALSTATUS CANCEL),
  `200 result=1 (<value>)` / `200 result=0` (GET VARIABLE; Dial empties ANSWEREDTIME_MS and its
  siblings, which then answer `200 result=1 ()`; an answered Dial with `U(<context>)` runs that
  context's Set() steps, by default the shipped dialplan's
  `MASTER_CHANNEL(GATEWAY_BRIDGED_AT)=${EPOCH}` at the callee's answer), `200 result=1 (<text>)`
  (GET FULL VARIABLE: `${NAME}` substituted, `${EPOCH}` the clock's whole seconds), RECORD FILE
  writes a WAV at <path>.wav and answers `200 result=<ms of the maximum left> (timeout)
  endpos=<samples>` when silence ends it
  (`result=0` when it runs to the maximum), `510 Invalid or unknown command`, the 520 usage block
  for a known command with bad arguments (the usage is the command's documentation as Asterisk's
  xmldoc renders it: one line per paragraph, with the markup tags left in),
  `511 Command Not Permitted on a dead channel or intercept routine` once the caller is gone
  (except for the commands Asterisk allows on a dead channel: EXEC, GET VARIABLE, NOOP,
  SET VARIABLE, VERBOSE, DATABASE ..., ...);
* a scripted hangup after N answered commands: the bare `HANGUP` line then 511s (FastAGI with
  AGISIGHUP unset), 511s only (AGISIGHUP=no), the socket closed, or SIGHUP for an AGI script. A
  hangup while a command runs: STREAM FILE answers `200 result=-1 endpos=<where it stopped>`, and
  the `HANGUP` line follows the answer at once. With AGISIGHUP, FastAGI also writes `HANGUP` once
  more when AGI() ends (run_agi's last step), so a bridge that hung up sees it twice.

The caller's keypad (not in the recordings, so from res_agi.c's handlers and their
documentation): the call has a clock that starts at ANSWER and that the commands move on as
they would take time (STREAM FILE its file's length, WAIT FOR DIGIT up to its timeout, EXEC Wait
its seconds, RECORD FILE the recording), with no real waiting. Keys pressed at given seconds
(`keys`), or typed in groups as each menu starts listening (`key_groups`), reach the command
running then: STREAM FILE with escape digits stops at an escape key and answers `200
result=<the key's character code> endpos=<samples played>` (handle_streamfile:
ast_waitstream_full's result, `%d endpos=%ld`); other keys during it are dropped, as
ast_waitstream_full drops them. WAIT FOR DIGIT <ms> answers `200 result=<character code>` for
the first key within the timeout, `200 result=0` when none came, and `200 result=-1` then the
HANGUP line when the caller hangs up while it waits (handle_waitfordigit: ast_waitfordigit_full's
result, `200 result=%d`). Keys pressed while nothing reads them are lost. EXEC Hangup on the
ringing channel (a refused call) answers `200 result=-1`, then the HANGUP line.

Use `fastagi_call(host, port, scenario)` against a FastAGI server and `run_agi_script(argv,
scenario)` for a script Asterisk would start with AGI(); both return a CallTranscript.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import re
import signal
import struct
import time
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

ASTERISK_VERSION = "20.5.2"
ANSWER_DELAY = 0.5  # seconds ANSWER took on Asterisk 22 (ast_answer waits for media)
AGI_BUF_LEN = 2048  # res_agi.c: one command line is read into this buffer (LF and NUL included)

INVALID = "510 Invalid or unknown command"
DEAD = "511 Command Not Permitted on a dead channel or intercept routine"
USAGE_BEGIN = "520-Invalid command syntax.  Proper usage follows:"
USAGE_END = "520 End of proper usage."

HangupMode = Literal["line", "511", "eof", "sighup"]

# asterisk/extensions.conf's [gateway-transfer]: what it Set()s before Return()
# (tests/test_asterisk_dialplan.py checks the two agree).
SHIPPED_SUBROUTINES: dict[str, tuple[tuple[str, str], ...]] = {
    "gateway-transfer": (("MASTER_CHANNEL(GATEWAY_BRIDGED_AT)", "${EPOCH}"),),
}

# (words, allowed on a dead channel), in res_agi.c's table order.
_COMMANDS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("answer",), False),
    (("asyncagi", "break"), True),
    (("channel", "status"), False),
    (("database", "del"), True),
    (("database", "deltree"), True),
    (("database", "get"), True),
    (("database", "put"), True),
    (("exec",), True),
    (("get", "data"), False),
    (("get", "full", "variable"), True),
    (("get", "option"), False),
    (("get", "variable"), True),
    (("hangup",), False),
    (("noop",), True),
    (("receive", "char"), False),
    (("receive", "text"), False),
    (("record", "file"), False),
    (("say", "alpha"), False),
    (("say", "digits"), False),
    (("say", "number"), False),
    (("say", "phonetic"), False),
    (("say", "date"), False),
    (("say", "time"), False),
    (("say", "datetime"), False),
    (("send", "image"), False),
    (("send", "text"), False),
    (("set", "autohangup"), False),
    (("set", "callerid"), False),
    (("set", "context"), False),
    (("set", "extension"), False),
    (("set", "music"), False),
    (("set", "priority"), False),
    (("set", "variable"), True),
    (("stream", "file"), False),
    (("control", "stream", "file"), False),
    (("tdd", "mode"), False),
    (("verbose",), True),
    (("wait", "for", "digit"), False),
    (("speech", "create"), False),
    (("speech", "set"), False),
    (("speech", "destroy"), True),
    (("speech", "load", "grammar"), False),
    (("speech", "unload", "grammar"), True),
    (("speech", "activate", "grammar"), False),
    (("speech", "deactivate", "grammar"), False),
    (("speech", "recognize"), False),
    (("gosub",), False),
)

# Usage texts for the 520 block: the commands' <description> as xmldoc.c renders it for
# res_agi (xmldoc_get_formatted, not raw): each <para> on one line with its inner tags kept
# (`<literal>-1</literal>`), a variable list as `<variable>NAME</variable>: ` and its values.
_USAGE = {
    "stream file": (
        "Send the given file, allowing playback to be interrupted by the given digits, if any. "
        "Returns <literal>0</literal> if playback completes without a digit being pressed, or the "
        "ASCII numerical value of the digit if one was pressed, or <literal>-1</literal> on error or "
        "if the channel was disconnected. If musiconhold is playing before calling stream file it "
        "will be automatically stopped and will not be restarted after completion.\n"
        "It sets the following channel variables upon completion:\n"
        "<variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text string.\n"
        "    <value>SUCCESS</value>\n"
        "    <value>FAILED</value>"
    ),
    "record file": (
        "Record to a file until a given dtmf digit in the sequence is received. Returns "
        "<literal>-1</literal> on hangup or error.  The format will specify what kind of file will "
        "be recorded. The <replaceable>timeout</replaceable> is the maximum record time in "
        "milliseconds, or <literal>-1</literal> for no <replaceable>timeout</replaceable>. "
        "<replaceable>offset samples</replaceable> is optional, and, if provided, will seek to the "
        "offset without exceeding the end of the file. <replaceable>beep</replaceable> can take any "
        "value, and causes Asterisk to play a beep to the channel that is about to be recorded. "
        "<replaceable>silence</replaceable> is the number of seconds of silence allowed before the "
        "function returns despite the lack of dtmf digits or reaching "
        "<replaceable>timeout</replaceable>. <replaceable>silence</replaceable> value must be "
        "preceded by <literal>s=</literal> and is also optional."
    ),
    "exec": (
        "Executes <replaceable>application</replaceable> with given <replaceable>options</replaceable>.\n"
        "Returns whatever the <replaceable>application</replaceable> returns, or <literal>-2</literal> "
        "on failure to find <replaceable>application</replaceable>.\n"
        "<note>NOTE:</note> exec does not evaluate dialplan functions and variables unless it is "
        "explicitly enabled by setting the <variable>AGIEXECFULL</variable> variable to "
        "<literal>yes</literal>."
    ),
    "get variable": (
        "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. Returns "
        "<literal>1</literal> if <replaceable>variablename</replaceable> is set and returns the "
        "variable in parentheses.\n"
        "Example return code: 200 result=1 (testvariable)"
    ),
    "hangup": ("Hangs up the specified channel. If no channel name is given, hangs up the current channel"),
    "verbose": (
        "Sends <replaceable>message</replaceable> to the console via verbose message system. "
        "<replaceable>level</replaceable> is the verbose level (1-4). Always returns <literal>1</literal>"
    ),
}

_uniqueids = itertools.count(1)
_WAV_EXTENSIONS = (".wav", ".WAV")


@dataclass
class CallScenario:
    """What the caller and Asterisk do on one call."""

    script: str = "din"
    callerid: str = "+819012345678"
    calleridname: str = "unknown"
    dnid: str = "+81312345678"
    extension: str | None = None  # default: dnid
    context: str = "din-inbound"
    language: str = "en"
    args: Sequence[str] = ()
    hangup_after: int | None = None  # the caller hangs up after this many answered commands
    # "line": FastAGI gets the HANGUP line, a script SIGHUP ("sighup" is the same); "511": only
    # 511 answers from then on (AGISIGHUP=no); "eof": the connection or pipe is closed.
    hangup_mode: HangupMode = "line"
    # The hangup happens during the hangup_after-th command instead of after it: STREAM FILE
    # then answers `200 result=-1 endpos=<where it stopped>`, RECORD FILE `-1 (hangup)`, Dial -1.
    hangup_during: bool = False
    require_files: bool = True  # STREAM FILE fails (-1) unless <path>.wav is a playable WAV
    # How long ANSWER takes to answer: Asterisk 22 waits for media once the line is up.
    answer_delay: float = ANSWER_DELAY
    # DIALSTATUS after Dial. ANSWER: a bridged call that ended, so the caller is gone (Dial -1,
    # then the HANGUP line); CANCEL: the caller hung up while the callee rang (the same); any
    # other: nobody answered, the caller is still there (Dial 0).
    dial_status: str = "ANSWER"
    dial_result: int | None = None  # what EXEC Dial returns instead of what dial_status implies
    dial_seconds: float = 0.0  # how long Dial lasts (ringing and, when answered, the conversation)
    dial_ring_seconds: float = 0.0  # of dial_seconds, the ringing before the callee answered
    # The dialplan's subroutine contexts, for Dial's U(<context>) option: each context's `s`
    # extension as (variable, value) Set() steps, run on the callee's channel when it answers.
    # The default is the shipped asterisk/extensions.conf; {} plays an older dialplan.
    subroutines: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: {k: list(v) for k, v in SHIPPED_SUBROUTINES.items()}
    )
    record_seconds: float = 1.5  # length of what RECORD FILE records
    # "silence": ended by the s= silence (the maximum when no s= is given), "timeout": ran to the
    # maximum (no RTP from the caller at all), "dtmf": ended with #, "hangup": the caller hung up.
    record_end: Literal["silence", "timeout", "dtmf", "hangup"] = "silence"
    record_from: str | None = None  # RECORD FILE writes this WAV's audio (not a tone), if given
    # Keys the caller presses: (seconds after ANSWER on the call's clock, keys typed 0.1 s apart).
    keys: Sequence[tuple[float, str]] = ()
    # Keys typed as menus listen: each group starts 0.3 s into the next prompt played with escape
    # digits (or the next WAIT FOR DIGIT after other commands) once the keys before it are used.
    key_groups: Sequence[str] = ()
    uniqueid: str | None = None  # agi_uniqueid; default: a new one per call in this process
    variables: dict[str, str] = field(default_factory=dict)
    # Canned answers for command names (`"SET CALLERID"`): the lines sent instead, e.g.
    # [INVALID] to play an Asterisk without that command.
    replies: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Exchange:
    command: str  # the command line as read (without its LF)
    reply: str  # everything written back for it (LFs included); "" if nothing


@dataclass(frozen=True)
class Recording:
    path: str  # as given (without extension)
    format: str
    escape_digits: str
    timeout_ms: int
    beep: bool
    silence_seconds: int
    file: str | None  # the file written, with extension


@dataclass
class CallTranscript:
    header: str = ""
    uniqueid: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    received: bytes = b""  # every byte the bridge sent, as sent
    streamed: list[str] = field(default_factory=list)  # STREAM FILE paths that played
    missing: list[str] = field(default_factory=list)  # STREAM FILE paths that did not exist
    callerids: list[str] = field(default_factory=list)  # SET CALLERID arguments
    dialed: list[str] = field(default_factory=list)  # EXEC Dial arguments
    recordings: list[Recording] = field(default_factory=list)
    keys_heard: list[str] = field(default_factory=list)  # keys a command returned, in order
    hangup_causes: list[str] = field(default_factory=list)  # EXEC Hangup arguments
    hangup_sent: bool = False  # the HANGUP line went out (or SIGHUP for a script)
    hangup_lines: int = 0  # how many bare HANGUP lines were written (FastAGI)
    ended_by: str = ""  # "bridge" (it closed), "reset" (it reset), "peer" (we closed), "timeout"
    returncode: int | None = None  # AGI script exit status
    stderr: bytes = b""

    @property
    def commands(self) -> list[str]:
        return [e.command for e in self.exchanges]

    @property
    def verbs(self) -> list[str]:
        """The matched command names, upper case (`STREAM FILE`), or `?` for unknown lines."""
        out = []
        for e in self.exchanges:
            found = _find_command(parse_args(e.command))
            out.append(" ".join(found[0]).upper() if found else "?")
        return out


def parse_args(line: str) -> list[str]:
    """res_agi.c parse_args: blanks split, `"` toggles quoting, `\\` escapes the next char."""
    argv: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                cur = []
                argv.append("")
                whitespace = False
            escaped = False
            continue
        if ch in " \t" and not quoted and not escaped:
            if cur is not None:
                argv[-1] = "".join(cur)
                cur = None
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            cur = []
            argv.append("")
            whitespace = False
        if cur is None:  # text right after a closing quote continues the same word
            cur = list(argv[-1])
        cur.append(ch)
        escaped = False
    if cur is not None:
        argv[-1] = "".join(cur)
    return argv


def _find_command(argv: Sequence[str]) -> tuple[tuple[str, ...], bool] | None:
    """res_agi.c find_command(argv, 0): the first entry all of whose words lead argv."""
    for words, dead_ok in _COMMANDS:
        if len(argv) < len(words):
            continue
        if all(a.lower() == w for a, w in zip(argv, words, strict=False)):
            return words, dead_ok
    return None


def _dial_options(data: str) -> dict[str, str]:
    """Dial's third argument as app_dial parses it (AST_STANDARD_APP_ARGS, then
    ast_app_parse_options64): option letter -> its argument in parentheses ("" without one)."""
    fields: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(data):
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch == "," and not depth:
            fields.append(data[start:i])
            start = i + 1
    fields.append(data[start:])
    options: dict[str, str] = {}
    text = fields[2] if len(fields) > 2 else ""
    i = 0
    while i < len(text):
        letter, i = text[i], i + 1
        arg = ""
        if i < len(text) and text[i] == "(":
            end = text.find(")", i)
            end = len(text) if end < 0 else end
            arg, i = text[i + 1 : end], end + 1
        options[letter] = arg
    return options


def _sscanf_int(text: str) -> int | None:
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else None


def write_wav(path: str, seconds: float, rate: int = 8000, freq: float = 440.0) -> int:
    """A mono 16-bit WAV with a tone; returns the number of samples."""
    frames = max(int(seconds * rate), 0)
    data = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate))) for i in range(frames)
    )
    with open(path, "wb") as f, wave.open(f, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(data)
    return frames


def copy_wav(source: str, target: str) -> int:
    """Copy a WAV file (checked to be one) to `target`; returns its number of samples."""
    with wave.open(source, "rb") as wav:
        params, frames = wav.getparams(), wav.readframes(wav.getnframes())
    with open(target, "wb") as f, wave.open(f, "wb") as out:
        out.setparams(params)
        out.writeframes(frames)
    return params.nframes


def wav_seconds(path: str) -> float | None:
    """The length of <path>.wav in seconds, if it is a readable WAV."""
    try:
        with wave.open(path + ".wav", "rb") as wav:
            return wav.getnframes() / wav.getframerate()
    except (OSError, wave.Error, EOFError, ZeroDivisionError):
        return None


def _playable_samples(path: str) -> int | None:
    """Samples in <path>.wav if Asterisk's wav format could play it (8 kHz mono 16-bit PCM)."""
    if not os.path.isabs(path):
        return None
    for ext in _WAV_EXTENSIONS:
        name = path + ext
        if not os.path.isfile(name):
            continue
        try:
            with wave.open(name, "rb") as wav:
                if wav.getframerate() == 8000 and wav.getnchannels() == 1 and wav.getsampwidth() == 2:
                    return wav.getnframes()
        except (wave.Error, EOFError, OSError):
            return None
    return None


class AsteriskAgi:
    """res_agi's command side for one call, without I/O: feed command lines, get answers."""

    def __init__(self, scenario: CallScenario, transcript: CallTranscript, *, fast: bool) -> None:
        self.scenario = scenario
        self.transcript = transcript
        self.fast = fast
        self.dead = False
        self.answered = 0  # commands answered so far
        self.variables = dict(scenario.variables)
        n = next(_uniqueids)
        self.uniqueid = scenario.uniqueid or f"1763897000.{n}"
        self.channel = f"PJSIP/trunk-{n:08x}"
        self.hangup_pending = scenario.hangup_after == 0
        self.delay = 0.0  # seconds the answer being written waits (the command takes that long)
        self.answered_at: float | None = None  # when ANSWER put the line up (monotonic)
        self.clock = 0.0  # seconds since ANSWER as the caller lives them (no real waiting)
        self.presses = sorted(
            (at + 0.1 * i, key) for at, typed in scenario.keys for i, key in enumerate(typed)
        )
        self.groups = list(scenario.key_groups)
        self.reading = False  # the last command listened for keys

    def header(self, request: str) -> str:
        s = self.scenario
        lines = []
        if self.fast:
            lines.append("agi_network: yes")
            if s.script:
                lines.append(f"agi_network_script: {s.script}")
        lines += [
            f"agi_request: {request}",
            f"agi_channel: {self.channel}",
            f"agi_language: {s.language}",
            "agi_type: PJSIP",
            f"agi_uniqueid: {self.uniqueid}",
            f"agi_version: {ASTERISK_VERSION}",
            f"agi_callerid: {s.callerid or 'unknown'}",
            f"agi_calleridname: {s.calleridname or 'unknown'}",
            "agi_callingpres: 0",
            "agi_callingani2: 0",
            "agi_callington: 0",
            "agi_callingtns: 0",
            f"agi_dnid: {s.dnid or 'unknown'}",
            "agi_rdnis: unknown",
            f"agi_context: {s.context}",
            f"agi_extension: {s.extension if s.extension is not None else s.dnid}",
            "agi_priority: 2",
            "agi_enhanced: 0.0",
            "agi_accountcode: ",
            "agi_threadid: 140204383668928",
        ]
        lines += [f"agi_arg_{i}: {a}" for i, a in enumerate(s.args, start=1)]
        return "".join(line + "\n" for line in lines) + "\n"

    def handle(self, line: str) -> str:
        """The answer to one command line (LFs included)."""
        argv = parse_args(line)
        found = _find_command(argv)
        if found is None:
            return INVALID + "\n"
        words, dead_ok = found
        name = " ".join(words).upper()
        if name in self.scenario.replies:
            return "".join(r + "\n" for r in self.scenario.replies[name])
        if self.dead and not dead_ok:
            return DEAD + "\n"
        handler = getattr(self, "_" + "_".join(words), None)
        if handler is None:
            return "200 result=0\n"
        reading = self.reading
        self.reading = False
        reply: str | None = handler(argv) if name != "WAIT FOR DIGIT" else self._wait_for_digit(argv, reading)
        if reply is not None and self._hangs_up_now():
            reply = self._interrupted(name, reply)
        if reply is None:
            usage = _USAGE.get(" ".join(words))
            if not usage:
                return "520 Invalid command syntax.  Proper usage not available.\n"
            return f"{USAGE_BEGIN}\n{usage}\n{USAGE_END}\n"
        return reply

    def _hangs_up_now(self) -> bool:
        s = self.scenario
        return s.hangup_during and s.hangup_after is not None and self.answered + 1 == s.hangup_after

    def _interrupted(self, name: str, reply: str) -> str:
        """What the command answers when the caller hangs up while it runs."""
        m = re.search(r"endpos=(\d+)", reply)
        endpos = int(m.group(1)) if m else 0
        if name == "STREAM FILE" and reply.startswith("200 result=0"):
            return f"200 result=-1 endpos={endpos // 2}\n"
        if name == "RECORD FILE" and "(writefile)" not in reply:
            return f"200 result=-1 (hangup) endpos={endpos}\n"
        if name == "EXEC" and reply.startswith("200 result=0"):
            return "200 result=-1\n"
        if name == "WAIT FOR DIGIT":
            self.hangup_pending = True  # ast_waitfordigit_full gives -1 when the channel hangs up
            return "200 result=-1\n"
        return reply

    # --- the caller's keypad --------------------------------------------------------------

    def _listen(self, may_start_group: bool) -> None:
        """Drop the keys nobody read; type the next group when a menu starts listening."""
        self.presses = [(at, key) for at, key in self.presses if at >= self.clock]
        if may_start_group and not self.presses and self.groups:
            typed = self.groups.pop(0)
            self.presses = [(self.clock + 0.3 + 0.1 * i, key) for i, key in enumerate(typed)]

    def _press_within(self, seconds: float, keys: str) -> tuple[float, str] | None:
        """The first key in `keys` pressed before `seconds` from now, taken; others then are lost."""
        end = self.clock + seconds
        while self.presses and self.presses[0][0] < end:
            at, key = self.presses.pop(0)
            if key in keys:
                self.transcript.keys_heard.append(key)
                return at, key
        return None

    def _wait_for_digit(self, argv: list[str], reading: bool) -> str | None:
        if len(argv) != 4:
            return None
        timeout_ms = _sscanf_int(argv[3])
        if timeout_ms is None:
            return None
        self.reading = True
        self._listen(not reading)
        seconds = timeout_ms / 1000 if timeout_ms >= 0 else math.inf
        press = self._press_within(seconds, "0123456789*#ABCD")
        if press is None:
            # A silent caller: the whole timeout (one that never ends stops at the last key).
            self.clock += seconds if seconds != math.inf else 0
            return "200 result=0\n"
        self.clock = press[0]
        return f"200 result={ord(press[1])}\n"

    def after_answer(self) -> None:
        self.answered += 1
        after = self.scenario.hangup_after
        if after is not None and self.answered == after and not self.dead:
            self.hangup_pending = True

    # --- handlers: None means RESULT_SHOWUSAGE -------------------------------------------

    def _answer(self, argv: list[str]) -> str:
        if self.answered_at is None:
            self.answered_at = time.monotonic()
            self.delay = self.scenario.answer_delay
        return "200 result=0\n"

    def _noop(self, argv: list[str]) -> str:
        return "200 result=0\n"

    def _verbose(self, argv: list[str]) -> str | None:
        return None if len(argv) < 2 else "200 result=1\n"

    def _set_callerid(self, argv: list[str]) -> str:
        if len(argv) > 2:
            self.transcript.callerids.append(argv[2])
        return "200 result=1\n"

    def _set_variable(self, argv: list[str]) -> str:
        if len(argv) > 3:
            self.variables[argv[2]] = argv[3]
        return "200 result=1\n"

    def _get_variable(self, argv: list[str]) -> str | None:
        if len(argv) != 3:
            return None
        value = self.variables.get(argv[2])
        return "200 result=0\n" if value is None else f"200 result=1 ({value})\n"

    def _get_full_variable(self, argv: list[str]) -> str | None:
        if len(argv) not in (4, 5):
            return None
        if len(argv) == 5 and argv[4] not in (self.channel, self.uniqueid):
            return "200 result=0\n"  # no such channel
        return f"200 result=1 ({self._substitute(argv[3])})\n"

    def _substitute(self, text: str) -> str:
        """pbx_variables.c: `${NAME}` -> the variable, EPOCH is the clock's whole seconds,
        unset names are empty (no functions or expressions here)."""

        def value(m: re.Match[str]) -> str:
            name = m.group(1)
            if name == "EPOCH" and name not in self.variables:
                return str(int(time.time()))
            return self.variables.get(name, "")

        return re.sub(r"\$\{([A-Za-z0-9_]+)\}", value, text)

    def _hangup(self, argv: list[str]) -> str | None:
        if len(argv) == 1 or (len(argv) == 2 and argv[1] == self.channel):
            self.hangup_pending = True
            return "200 result=1\n"
        if len(argv) == 2:
            return "200 result=-1\n"
        return None

    def _exec(self, argv: list[str]) -> str | None:
        if len(argv) < 2:
            return None
        app, data = argv[1], (argv[2] if len(argv) > 2 else "")
        if app.lower() == "dial":
            return self._dial(data)
        if app.lower() == "wait":
            waited = re.match(r"\s*(\d+(?:\.\d+)?)", data)
            self.clock += float(waited.group(1)) if waited else 0.0
            return "200 result=0\n"
        if app.lower() == "hangup":
            # pbx_builtin_hangup: the cause goes on the channel, which hangs up (-1 to the AGI).
            self.transcript.hangup_causes.append(data)
            self.hangup_pending = True
            return "200 result=-1\n"
        if app.lower() in ("noop", "wait", "set", "playback", "answer", "ringing", "progress"):
            return "200 result=0\n"
        return "200 result=-2\n"

    def _dial(self, data: str) -> str:
        s = self.scenario
        self.transcript.dialed.append(data)
        if self.dead:
            return "200 result=-1\n"
        # app_dial.c empties these at the start of every Dial; only a bridge sets them again.
        for name in ("ANSWEREDTIME", "DIALEDTIME", "RINGTIME", "PROGRESSTIME"):
            self.variables[name] = self.variables[name + "_MS"] = ""
        self.variables["DIALSTATUS"] = s.dial_status
        self.delay = s.dial_seconds
        gone = s.dial_status in ("ANSWER", "CANCEL")
        if s.dial_status == "ANSWER" and self.answered_at is not None:
            # end_bridge_callback: the caller channel's up time (since its ANSWER), not the
            # bridged time alone.
            up_ms = int((time.monotonic() + s.dial_seconds - self.answered_at) * 1000)
            self.variables["ANSWEREDTIME_MS"] = str(up_ms)
            self.variables["ANSWEREDTIME"] = str(up_ms // 1000)
        if s.dial_status == "ANSWER":
            self._callee_gosub(
                _dial_options(data).get("U"), time.time() + min(s.dial_ring_seconds, s.dial_seconds)
            )
        if gone:
            self.hangup_pending = True
        result = s.dial_result if s.dial_result is not None else (-1 if gone else 0)
        return f"200 result={result}\n"

    def _callee_gosub(self, option: str | None, answered_at: float) -> None:
        """app_dial.c with U(<context>^<args>): the subroutine runs at `s` of that context on the
        callee's channel once it answers; a missing context only logs an error and the call is
        bridged all the same. MASTER_CHANNEL() there reaches the caller (the callee's linkedid)."""
        if not option:
            return
        steps = self.scenario.subroutines.get(option.split("^")[0])
        if steps is None:
            return
        for target, value in steps:
            text = re.sub(r"\$\{EPOCH\}", str(int(answered_at)), value)
            m = re.fullmatch(r"MASTER_CHANNEL\(([A-Za-z0-9_]+)\)", target)
            if m:  # a plain variable would land on the callee's channel, out of the AGI's sight
                self.variables[m.group(1)] = self._substitute(text)

    def _stream_file(self, argv: list[str]) -> str | None:
        if len(argv) < 4 or len(argv) > 5:
            return None
        offset = 0
        if len(argv) > 4:
            parsed = _sscanf_int(argv[4])
            if parsed is None:
                return None
            offset = parsed
        samples = _playable_samples(argv[2])
        if samples is None and (self.scenario.require_files or not os.path.isabs(argv[2])):
            self.transcript.missing.append(argv[2])
            return f"200 result=-1 endpos={offset}\n"
        self.transcript.streamed.append(argv[2])
        played = max((samples or 0) - offset, 0)
        escape = argv[3]
        if escape:
            self.reading = True
            self._listen(True)
            press = self._press_within(played / 8000, escape)
            if press is not None:
                endpos = offset + int((press[0] - self.clock) * 8000)
                self.clock = press[0]
                return f"200 result={ord(press[1])} endpos={endpos}\n"
        self.clock += played / 8000
        return f"200 result=0 endpos={samples if samples is not None else 0}\n"

    def _record_file(self, argv: list[str]) -> str | None:
        if len(argv) < 6:
            return None
        timeout_ms = _sscanf_int(argv[5])
        if timeout_ms is None:
            return None
        silence = 0
        for arg in argv[6:9]:
            pos = arg.find("s")
            if pos >= 0:
                text = arg[pos:]
                if len(text) > 2 and text.startswith("s="):
                    silence = _sscanf_int(text[2:]) or 0
                break
        beep = (len(argv) > 6 and _sscanf_int(argv[6]) is None and "=" not in argv[6]) or (
            len(argv) > 7 and "=" not in argv[7]
        )
        path, fmt = argv[2], argv[3]
        written: str | None = None
        samples = 0
        if fmt.lower() in ("wav", "wav16"):
            target = f"{path}.{fmt.lower()}"
            try:
                if self.scenario.record_from is not None:
                    samples = copy_wav(self.scenario.record_from, target)
                else:
                    samples = write_wav(
                        target, self.scenario.record_seconds, rate=16000 if fmt.lower() == "wav16" else 8000
                    )
                written = target
            except (OSError, wave.Error, EOFError):
                written = None
        self.transcript.recordings.append(
            Recording(path, fmt, argv[4], timeout_ms, bool(beep), silence, written)
        )
        self.clock += self.scenario.record_seconds
        if written is None:
            return "200 result=-1 (writefile)\n"
        end = self.scenario.record_end
        if end == "dtmf":
            return f"200 result={ord('#')} (dtmf) endpos={samples}\n"
        if end == "hangup":
            self.hangup_pending = True
            return f"200 result=-1 (hangup) endpos={samples}\n"
        if end == "silence" and silence > 0 and timeout_ms > 0:
            # handle_recordfile: the answer is the time left of the maximum (`ms`), which the
            # recorded audio and the trailing silence used up.
            used = int((self.scenario.record_seconds + silence) * 1000)
            return f"200 result={max(timeout_ms - used, 0)} (timeout) endpos={samples}\n"
        return f"200 result=0 (timeout) endpos={samples}\n"


class _CommandReader:
    """Reads commands as res_agi does: through the LF, or AGI_BUF_LEN - 1 bytes at most (fgets
    into a fixed buffer; the rest of a longer line becomes the next command)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buf = bytearray()
        self._eof = False

    async def read(self) -> bytes | None:
        limit = AGI_BUF_LEN - 1
        while True:
            nl = self._buf.find(b"\n", 0, limit)
            if nl >= 0:
                return self._take(nl + 1)
            if len(self._buf) >= limit:
                return self._take(limit)
            if self._eof:
                return self._take(len(self._buf)) if self._buf else None
            chunk = await self._reader.read(65536)
            if not chunk:
                self._eof = True
            self._buf += chunk

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


Write = Callable[[bytes], Awaitable[None]]
HangUp = Callable[[], Awaitable[bool]]


async def _serve(
    reader: asyncio.StreamReader,
    write: Write,
    agi: AsteriskAgi,
    transcript: CallTranscript,
    hang_up: HangUp,
    timeout: float,
    at_end: Callable[[], Awaitable[None]],
) -> None:
    """Answer commands until the bridge closes; `at_end` runs then (run_agi's last step)."""
    commands = _CommandReader(reader)
    if agi.hangup_pending:
        agi.hangup_pending = False
        if await hang_up():
            return
    while True:
        try:
            raw = await asyncio.wait_for(commands.read(), timeout)
        except TimeoutError:
            transcript.ended_by = "timeout"
            return
        except ConnectionError:  # res_agi: the read fails, AGI() ends with AGISTATUS=FAILURE
            transcript.ended_by = "reset"
            return
        if raw is None:
            transcript.ended_by = transcript.ended_by or "bridge"
            await at_end()
            return
        transcript.received += raw
        text = raw.decode("utf-8", errors="replace")
        if text.endswith("\n"):
            text = text[:-1]  # only the LF: a CR stays part of the last argument
        reply = agi.handle(text)
        transcript.exchanges.append(Exchange(text, reply))
        if agi.delay > 0:
            await asyncio.sleep(agi.delay)
        agi.delay = 0.0
        await write(reply.encode())
        agi.after_answer()
        if agi.hangup_pending:
            agi.hangup_pending = False
            if await hang_up():
                return


def _sender(stream: asyncio.StreamWriter) -> Callable[[bytes], Awaitable[None]]:
    """Writes to the bridge; a bridge that has gone away is not an error on Asterisk's side."""

    async def write(data: bytes) -> None:
        if data and not stream.is_closing():
            stream.write(data)
            try:
                await stream.drain()
            except (ConnectionError, OSError):
                pass

    return write


async def _nothing() -> None:
    """A script's AGI() has nothing to send at the end: its SIGHUP went with the hangup."""


async def fastagi_call(
    host: str,
    port: int,
    scenario: CallScenario | None = None,
    *,
    timeout: float = 30.0,
    local_host: str | None = None,
) -> CallTranscript:
    """Place one call: connect like `AGI(agi://host:port/<script>)` and play Asterisk's side
    until the bridge closes the connection (or the scenario closes it). `local_host`: the
    address the call comes from (an Asterisk on another box), e.g. 127.0.0.2."""
    scenario = scenario or CallScenario()
    transcript = CallTranscript()
    agi = AsteriskAgi(scenario, transcript, fast=True)
    local = (local_host, 0) if local_host else None
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20, local_addr=local)
    header = agi.header(f"agi://{host}:{port}/{scenario.script}")
    transcript.header, transcript.uniqueid = header, agi.uniqueid

    write = _sender(writer)

    async def hang_up() -> bool:
        agi.dead = True
        mode = scenario.hangup_mode
        if mode == "eof":
            transcript.ended_by = "peer"
            writer.close()
            return True
        if mode in ("line", "sighup"):
            transcript.hangup_sent = True
            transcript.hangup_lines += 1
            await write(b"HANGUP\n")
        return False

    async def at_end() -> None:
        # run_agi ends with one more HANGUP when AGISIGHUP is on, whether or not the caller is
        # gone; the bridge has closed its side by then, so nobody reads it.
        if scenario.hangup_mode in ("line", "sighup"):
            transcript.hangup_lines += 1
            await write(b"HANGUP\n")

    try:
        await write(header.encode())
        await _serve(reader, write, agi, transcript, hang_up, timeout, at_end)
    finally:
        if not writer.is_closing():
            writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return transcript


async def run_agi_script(
    argv: Sequence[str],
    scenario: CallScenario | None = None,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> CallTranscript:
    """Start `argv` as Asterisk's AGI() starts a script (stdin/stdout pipes) and play Asterisk's
    side until the script exits. A hangup sends SIGHUP (hangup_mode "sighup", the default for
    scripts when the scenario says "line") and answers 511 from then on."""
    scenario = scenario or CallScenario()
    transcript = CallTranscript()
    agi = AsteriskAgi(scenario, transcript, fast=False)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout = proc.stdin, proc.stdout
    stderr_task = asyncio.ensure_future(proc.stderr.read())
    header = agi.header(argv[-1])
    transcript.header, transcript.uniqueid = header, agi.uniqueid

    write = _sender(stdin)

    async def hang_up() -> bool:
        agi.dead = True
        mode = scenario.hangup_mode
        if mode == "eof":
            transcript.ended_by = "peer"
            stdin.close()
            return True
        if mode in ("line", "sighup"):
            transcript.hangup_sent = True
            if proc.returncode is None:
                proc.send_signal(signal.SIGHUP)
        return False

    try:
        await write(header.encode())
        await _serve(stdout, write, agi, transcript, hang_up, timeout, _nothing)
        if not stdin.is_closing():
            stdin.close()
        try:
            transcript.returncode = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            transcript.returncode = await proc.wait()
            transcript.ended_by = "timeout"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        transcript.stderr = await stderr_task
    return transcript
