"""scripts/run-gateway sets the environment up only when it is not current.

The script runs for real (bash) in a copy of the repository's layout; scripts/setup-env and
.venv/bin/gateway are stand-ins that log their calls, since what is tested is when run-gateway
calls pip's set-up, not pip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT

SETUP_ENV = """#!/usr/bin/env bash
set -eu
cd "$(dirname "$0")/.."
echo setup >> calls.log
[ -e setup-fails ] && exit 1
mkdir -p .venv/bin
cp gateway-stub .venv/bin/gateway
"""
GATEWAY = """#!/usr/bin/env bash
echo "gateway $* loopback=$GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK" >> calls.log
"""


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "run-gateway", repo / "scripts" / "run-gateway")
    for path, text in (("scripts/setup-env", SETUP_ENV), ("gateway-stub", GATEWAY)):
        (repo / path).write_text(text)
        (repo / path).chmod(0o755)
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return repo


def _run(repo: Path) -> tuple[int, list[str]]:
    """Run the script from another directory; its exit code and the calls it made."""
    log = repo / "calls.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.run(
        [str(repo / "scripts" / "run-gateway"), "--log-level", "INFO"],
        cwd=repo.parent,
        env=env,
        capture_output=True,
        timeout=30,
    )
    return proc.returncode, log.read_text().splitlines() if log.exists() else []


def _newer_than_the_last_setup(repo: Path, path: str) -> None:
    # The last setup moved back in time: a file written within the same clock tick as the
    # stamp would not count as newer.
    stamp = repo / ".venv" / ".run-gateway-stamp"
    then = stamp.stat().st_mtime - 10
    os.utime(stamp, (then, then))
    (repo / path).touch()


def test_setup_runs_only_when_the_environment_is_not_current(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    started = "gateway run --log-level INFO loopback=true"
    assert _run(repo) == (0, ["setup", started])  # fresh clone: no .venv
    assert _run(repo) == (0, [started])  # nothing changed: no pip (was 11 of 14.5 s)
    assert _run(repo) == (0, [started])

    for changed in ("pyproject.toml", "requirements.lock", "scripts/setup-env"):
        _newer_than_the_last_setup(repo, changed)
        assert _run(repo) == (0, ["setup", started]), changed
        assert _run(repo) == (0, [started]), changed

    (repo / ".venv" / "bin" / "gateway").unlink()  # a broken or half-made venv
    assert _run(repo) == (0, ["setup", started])
    assert _run(repo) == (0, [started])


def test_a_failed_setup_is_tried_again_and_nothing_starts(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert _run(repo)[0] == 0
    _newer_than_the_last_setup(repo, "pyproject.toml")
    (repo / "setup-fails").touch()
    code, calls = _run(repo)
    assert code != 0 and calls == ["setup"]  # the old gateway does not start on a stale venv
    (repo / "setup-fails").unlink()
    assert _run(repo) == (0, ["setup", "gateway run --log-level INFO loopback=true"])
