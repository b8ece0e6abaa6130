"""SIPp as the carrier: a caller dialling a DIN (sipp/uac.xml), and the far end of the calls
Asterisk places on the trunk (sipp/uas_*.xml), on the port the trunk's AOR names.

Each run keeps SIPp's message trace and error log under the session's sipp/ directory, named
after the test, so a failure can be read afterwards."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.live.asterisk import DIE_WITH_PARENT

SCENARIOS = Path(__file__).resolve().parent / "sipp"
WAIT_FOREVER_MS = 120_000


def _udp_port() -> int:
    """A free even UDP port whose successor is free too (RTP and RTCP)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port % 2 == 0 and port < 65534:
            with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
                s2.bind(("127.0.0.1", port + 1))
                return port
    raise RuntimeError("no free UDP port pair")


def _bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@dataclass
class SippRun:
    name: str
    returncode: int | None
    trace: Path
    errors: Path
    screen: Path
    received: list[str] = field(default_factory=list)  # first lines of what SIPp received, in order

    @property
    def ok(self) -> bool:
        """SIPp's exit code 0: the scenario ran to its end for every call."""
        return self.returncode == 0

    def report(self) -> str:
        parts = [f"sipp {self.name}: exit {self.returncode}; received {self.received}"]
        for path in (self.errors, self.screen):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name} ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def _received(trace: Path) -> list[str]:
    """The start lines of the messages SIPp received, from its -trace_msg file."""
    try:
        text = trace.read_text(errors="replace")
    except OSError:
        return []
    return [m.group(1).strip() for m in re.finditer(r"message received \[\d+\] bytes :\n\n([^\n]*)", text)]


class Sipp:
    def __init__(self, workdir: Path, asterisk_port: int, carrier_port: int) -> None:
        self.workdir = workdir
        self.asterisk_port = asterisk_port
        self.carrier_port = carrier_port
        workdir.mkdir(parents=True, exist_ok=True)

    def _args(self, name: str, scenario: str, hold: float | None) -> tuple[list[str], SippRun]:
        run = SippRun(
            name,
            None,
            self.workdir / f"{name}.trace",
            self.workdir / f"{name}.errors",
            self.workdir / f"{name}.screen",
        )
        for path in (run.trace, run.errors, run.screen):
            path.unlink(missing_ok=True)
        args = [
            *DIE_WITH_PARENT,
            "sipp",
            "-sf",
            str(SCENARIOS / scenario),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            str(_udp_port()),
            "-m",
            "1",
            "-l",
            "1",
            "-nostdin",
            # After the call is up: how long before this side hangs up itself.
            "-recv_timeout",
            str(WAIT_FOREVER_MS if hold is None else int(hold * 1000)),
            "-timeout",
            "150s",
            "-trace_msg",
            "-message_file",
            str(run.trace),
            "-trace_err",
            "-error_file",
            str(run.errors),
            "-trace_screen",
            "-screen_file",
            str(run.screen),
        ]
        return args, run

    def call(self, name: str, din: str, hold: float | None = None, timeout: float = 150) -> SippRun:
        """Call `din` through Asterisk's trunk; the caller hangs up after `hold` seconds of
        answered call, or (None) waits for Asterisk to hang up. Blocks until SIPp exits."""
        args, run = self._args(name, "uac.xml", hold)
        args.insert(args.index("-sf"), f"127.0.0.1:{self.asterisk_port}")
        args += ["-s", din, "-p", str(_udp_port())]
        done = subprocess.run(
            args, cwd=self.workdir, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
        run.returncode = done.returncode
        run.received = _received(run.trace)
        return run

    @contextlib.contextmanager
    def carrier(self, name: str, behaviour: str, hold: float | None = None) -> Iterator[SippRun]:
        """The far end of the trunk for one call: `answer` (then hangs up after `hold` s, or
        waits for Asterisk's BYE), `busy` (486) or `noanswer` (rings until CANCEL). The run's
        returncode is set once the block ends and SIPp has exited (killed after 30 s)."""
        args, run = self._args(name, f"uas_{behaviour}.xml", hold)
        args += ["-p", str(self.carrier_port)]
        proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not _bound(self.carrier_port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"carrier SIPp did not start (exit {proc.poll()})\n{run.report()}")
                time.sleep(0.05)
            yield run
            try:
                run.returncode = proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            run.received = _received(run.trace)
