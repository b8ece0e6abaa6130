"""Many callers at once through a real Asterisk: every call answered, and how long Asterisk waited
from writing the FastAGI header to reading the bridge's ANSWER (its own log's clock, `agi set
debug on`), as the recordings in README's benchmarks were measured.

Opt-in on top of the live suite (it loads the box for ~20 s): GWLIVE_BURST=1.

    GWLIVE_ASTERISK=/usr/sbin/asterisk GWLIVE_BURST=1 \\
        .venv/bin/python -m pytest tests/live/test_live_burst.py -p no:cacheprovider -s
"""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime

import pytest

from tests.live.asterisk import DIE_WITH_PARENT
from tests.live.conftest import Live
from tests.live.sipp import SCENARIOS, _udp_port

pytestmark = pytest.mark.skipif(
    not os.environ.get("GWLIVE_BURST"), reason="live burst: set GWLIVE_BURST=1"
)

_AGI_LINE = re.compile(
    r"\[([^\]]+)\] VERBOSE\[\d+\]\[(C-[0-9a-f]+)\] res_agi\.c: (?:<[^>]+>)?AGI "
    r"(Tx >> agi_network: yes|Rx << ANSWER)"
)


def header_to_answer_ms(log: str) -> tuple[list[float], float]:
    """Per call (Asterisk's C-id), ms from the header's first line to ANSWER read, sorted; and the
    spread of the headers (ms from the first to the last)."""
    header: dict[str, float] = {}
    answer: dict[str, float] = {}
    for line in log.splitlines():
        if m := _AGI_LINE.match(line):
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            (header if m.group(3).startswith("Tx") else answer).setdefault(m.group(2), at)
    waits = sorted((answer[c] - header[c]) * 1000 for c in answer if c in header)
    spread = (max(header.values()) - min(header.values())) * 1000 if header else 0.0
    return waits, spread


@pytest.mark.parametrize(("calls", "window_ms"), [(200, 10), (200, 1000)], ids=["at-once", "over-1s"])
def test_simultaneous_callers_are_all_answered(live: Live, calls: int, window_ms: int) -> None:
    din = live.din('say en "Hello"')
    live.asterisk.rx("agi set debug on")
    mark = live.asterisk.log_size()
    done = subprocess.run(
        [
            *DIE_WITH_PARENT,
            "sipp",
            f"127.0.0.1:{live.sipp.asterisk_port}",
            "-sf",
            str(SCENARIOS / "uac.xml"),
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-mp",
            str(_udp_port()),
            "-p",
            str(_udp_port()),
            "-s",
            din,
            # `calls` calls per `window_ms`: all within ~10 ms, or spread over a second.
            "-m",
            str(calls),
            "-l",
            str(calls),
            "-r",
            str(calls),
            "-rp",
            str(window_ms),
            "-recv_timeout",
            "3000",
            "-timeout",
            "120s",
            "-nostdin",
        ],
        cwd=live.sipp.workdir,
        capture_output=True,
        timeout=180,
    )
    waits, spread = header_to_answer_ms(live.asterisk.log_since(mark))
    if waits:

        def pick(p: float) -> float:
            return waits[min(len(waits) - 1, round(p / 100 * (len(waits) - 1)))]

        print(
            f"\n{calls} calls, headers within {spread:.0f} ms: header -> ANSWER n={len(waits)} "
            f"p50={pick(50):.0f} p90={pick(90):.0f} p99={pick(99):.0f} max={waits[-1]:.0f} ms"
        )
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-2000:]
    assert len(waits) == calls
