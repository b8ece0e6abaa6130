#!/usr/bin/env python3
"""Per-call AGI script for DIN calls, for Asterisk boxes that run AGI scripts rather than FastAGI:

    exten => _[+0-9].,1,AGI(/opt/gateway/asterisk/agi/din_agi.py)

Asterisk starts it once per call with the call on stdin/stdout. It reads the `agi_*` header with
pyst2 (`asterisk.agi.AGI`, created in the main thread because it installs a SIGHUP handler),
wraps it in an AgiChannel and hands that to `gateway.voice.script_entry.main(channel)`, so the
same call flow and Executor run as behind the FastAGI server. It needs the gateway's
interpreter: point the shebang at the venv when installing, or let AGI() start the interpreter
with the script as its argument (AGI(/opt/gateway/.venv/bin/python,/opt/gateway/asterisk/agi/din_agi.py)).

If the call flow cannot be imported, the script answers, says nothing and hangs up.

pyst2 writes every argument as given (its `_quote` adds double quotes without escaping quotes or
line breaks), so this script checks every argument itself before quoting it: no control
character, line break, quote or backslash ever reaches Asterisk.

Environment: DIN_AGI_LOG (log level, default WARNING), DIN_AGI_DEBUG=1 (let pyst2 write its
trace to stderr), DIN_AGI_HOOK=module[:function] (another call flow, default
gateway.voice.script_entry:main; the tests use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.voice.interfaces import AgiResponse

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HOOK = "gateway.voice.script_entry:main"
MAX_ANSWER_LINE = 8192

log = logging.getLogger("din_agi")


class _NullWriter:
    """Where pyst2's trace goes unless DIN_AGI_DEBUG=1 (it would log every caller's number)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _add_repo_to_path() -> None:
    # Appended, not prepended: `asterisk` must stay pyst2's package, not this repo's directory.
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.append(root)


class PystAgiChannel:
    """AgiChannel over pyst2's AGI object: one blocking command at a time on stdin/stdout.

    Once the caller is gone (SIGHUP, 511) the commands res_agi still runs on a dead channel
    (GET VARIABLE DIALSTATUS after a Dial, ...) are still sent, as by the FastAGI channel; the
    others raise Hangup unsent. Once the pipe is closed nothing is sent."""

    def __init__(self, agi: Any) -> None:
        self._agi = agi
        env: Mapping[str, str] = agi.env
        self._env = {(k[4:] if k.startswith("agi_") else k): str(v) for k, v in env.items()}
        self._dead = False
        self._closed = False
        self._reason = ""

    @property
    def env(self) -> Mapping[str, str]:
        return self._env

    @property
    def hung_up(self) -> bool:
        return self._dead or bool(self._agi._got_sighup)

    async def command(self, line: str) -> AgiResponse:
        from gateway.voice.agi_protocol import (
            DEAD_CHANNEL_COMMANDS,
            KNOWN_COMMANDS,
            check_arg,
            check_line,
            split_command,
        )
        from gateway.voice.interfaces import AgiError, Hangup

        check_line(line)
        verb, args = split_command(line)
        if verb not in KNOWN_COMMANDS:
            raise AgiError(f"not an AGI command: {verb!r}")
        # Checked here again, whoever built the line: pyst2's _quote escapes nothing.
        quoted = [self._agi._quote(check_arg(arg)) for arg in args]
        if self._agi._got_sighup and not self._dead:
            self._dead, self._reason = True, "SIGHUP"
        if self._closed or (self._dead and verb not in DEAD_CHANNEL_COMMANDS):
            raise Hangup(self._reason or "hung up")
        try:
            self._agi.send_command(verb, *quoted)
            return self._read_answer()
        except Hangup as exc:
            self._dead = True
            self._reason = self._reason or str(exc)
            raise
        except (BrokenPipeError, ConnectionError, OSError) as exc:
            self._dead = self._closed = True
            self._reason = self._reason or f"pipe closed: {exc}"
            raise Hangup(f"pipe closed: {exc}") from None

    def _read_answer(self) -> AgiResponse:
        from gateway.voice.agi_protocol import AgiStreamError, ReplyParser
        from gateway.voice.interfaces import Hangup

        parser = ReplyParser()
        while True:
            raw: str = self._agi.stdin.readline(MAX_ANSWER_LINE)
            if raw == "":
                self._closed = True
                raise Hangup("EOF")
            if not raw.endswith("\n") and len(raw) >= MAX_ANSWER_LINE:
                raise AgiStreamError("answer line too long")
            response = parser.feed(raw)
            if response is not None:
                return response


def _load_hook(spec: str) -> Callable[[Any], Any] | None:
    """`module[:function]` (function defaults to `main`), imported now, or None."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        log.warning("%s not available (%s): answering and hanging up", module_name, exc)
        return None
    except Exception:
        log.exception("%s failed to import: answering and hanging up", module_name)
        return None
    hook = getattr(module, attr or "main", None)
    if not callable(hook):
        log.warning("%s has no %s(channel): answering and hanging up", module_name, attr or "main")
        return None
    return hook  # type: ignore[no-any-return]


async def _answer_and_hang_up(channel: PystAgiChannel) -> None:
    from gateway.voice.interfaces import AgiError, Hangup

    for line in ("ANSWER", "HANGUP"):
        try:
            await channel.command(line)
        except Hangup:
            return
        except AgiError as exc:
            log.warning("%s failed: %s", line, exc)


async def run(channel: PystAgiChannel) -> int:
    from gateway.voice.interfaces import Hangup

    hook = _load_hook(os.environ.get("DIN_AGI_HOOK") or DEFAULT_HOOK)
    if hook is None:
        await _answer_and_hang_up(channel)
        return 0
    try:
        result = hook(channel)
        if inspect.isawaitable(result):
            await result
    except Hangup:
        return 0
    except Exception:
        log.exception("call flow failed (uniqueid %s)", channel.env.get("uniqueid"))
        with contextlib.suppress(Exception):
            await channel.command("HANGUP")
        return 1
    return 0


def _bare_fallback(agi: Any) -> None:
    """The gateway package cannot be imported at all: answer and hang up with pyst2 alone
    (no arguments, so nothing to sanitise)."""
    pyst = importlib.import_module("asterisk.agi")
    for step in (agi.answer, agi.hangup):
        try:
            step()
        except (pyst.AGIException, OSError, ValueError):
            return


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("DIN_AGI_LOG", "WARNING").upper(),
        stream=sys.stderr,
        format="din_agi[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    _add_repo_to_path()
    # pyst2's `asterisk` package (imported by name: this repo's asterisk/ directory is no package).
    pyst = importlib.import_module("asterisk.agi")

    # Our own text layers over fds 0 and 1: UTF-8 whatever the locale, LF only, unbuffered output.
    stdin = open(0, encoding="utf-8", errors="replace", newline="\n", closefd=False)
    stdout = open(1, "w", encoding="utf-8", newline="\n", buffering=1, closefd=False)
    debug = os.environ.get("DIN_AGI_DEBUG") == "1"
    agi = pyst.AGI(stdin=stdin, stdout=stdout, stderr=sys.stderr if debug else _NullWriter())
    try:
        importlib.import_module("gateway.voice.agi_protocol")
    except Exception:
        log.exception("the gateway package cannot be imported from %s", REPO_ROOT)
        _bare_fallback(agi)
        return 1
    channel = PystAgiChannel(agi)
    try:
        return asyncio.run(run(channel))
    finally:
        with contextlib.suppress(OSError, ValueError):
            stdout.flush()
        # The call is over; Asterisk may still send the SIGHUP for the hangup we asked for.
        # Python puts its own handlers back to the default (terminate) while shutting down, so
        # a late SIGHUP would kill the script with a signal instead of its exit status; an
        # ignored signal stays ignored.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
