"""What a release carries: the version `gateway --version` prints, and the pinned dependency set
(requirements.lock, requirements-test.lock) that scripts/setup-env and the Dockerfile install."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = ("requirements.lock", "requirements-test.lock")


def pins(lock: str) -> dict[str, str]:
    """canonical name -> version of a lock file's `name==version` lines."""
    out = {}
    for line in (ROOT / lock).read_text().splitlines():
        if line and not line.startswith(("#", "-r ")):
            name, sep, version = line.partition("==")
            assert sep and version and " " not in line, line
            assert canonicalize_name(name) not in out, line
            out[canonicalize_name(name)] = version
    return out


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = env or {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_gateway_version_prints_the_pyproject_version(tmp_path: Path) -> None:
    expected = f"gateway {PROJECT['version']}\n"
    done = run(sys.executable, "-m", "gateway", "--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, expected), done.stderr
    script = Path(sys.executable).with_name("gateway")  # the console script pip installed
    if script.exists():
        done = run(str(script), "--version", cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, expected), done.stderr


def test_changelog_has_the_version_and_the_license_is_there() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "\n## [Unreleased]\n" in changelog
    entry = rf"^## \[{re.escape(PROJECT['version'])}\] - \d{{4}}-\d{{2}}-\d{{2}}$"  # Keep a Changelog
    assert re.search(entry, changelog, re.MULTILINE)
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_version_of_an_uninstalled_checkout(tmp_path: Path) -> None:
    """Not installed (python -S: no site-packages, so no metadata): the checkout's pyproject."""
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "__init__.py").write_text("")
    shutil.copy(ROOT / "gateway" / "version.py", tmp_path / "gateway")
    code = "from gateway.version import version; print(version())"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)}
    for pyproject, expected in (
        ('[project]\nname = "voice-sms-gateway"\nversion = "9.8.7"\n', "9.8.7"),
        ('[project]\nname = "someone-else"\nversion = "1.0"\n', "unknown"),
        ("", "unknown"),
    ):
        (tmp_path / "pyproject.toml").write_text(pyproject)
        done = run(sys.executable, "-S", "-c", code, cwd=tmp_path, env=env)
        assert (done.returncode, done.stdout) == (0, f"{expected}\n"), done.stderr


def test_locks_pin_every_dependency_within_its_range() -> None:
    runtime, test = pins(LOCKS[0]), pins(LOCKS[1])
    assert f"\n-r {LOCKS[0]}\n" in (ROOT / LOCKS[1]).read_text()  # the test set includes the runtime one
    assert not set(runtime) & set(test)  # one pin per package
    wanted = (PROJECT["dependencies"], runtime), (PROJECT["optional-dependencies"]["test"], runtime | test)
    for requirements, allowed in wanted:
        for line in requirements:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate():
                name = canonicalize_name(req.name)
                assert name in allowed, f"{req} is not pinned"
                assert allowed[name] in req.specifier, f"{req.name}=={allowed[name]} outside {req.specifier}"


def lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_locks_are_the_closure_the_suite_runs_on() -> None:
    """scripts/lock.py, run now, would write these very pins: everything the dependencies need is
    pinned, nothing else, at the versions installed here. So the suite runs on the locked set."""
    lock = lock_module()
    runtime = lock.closure([Requirement(r) for r in PROJECT["dependencies"]])
    test = lock.closure([Requirement(r) for r in PROJECT["optional-dependencies"]["test"]])
    assert {n: p.partition("==")[2] for n, p in runtime.items()} == pins(LOCKS[0])
    only_test = {n: p.partition("==")[2] for n, p in test.items() if n not in runtime}
    assert only_test == pins(LOCKS[1])


STUB_PYTHON = """#!/bin/sh
# Stands in for .venv/bin/python: logs each pip call; `pip install -e .` installs the console script.
echo "$*" >>"$PIP_LOG"
gateway="$(dirname "$0")/gateway"
case "$*" in *"install --no-deps -e ."*) : >"$gateway"; chmod +x "$gateway" ;; esac
exit "${PIP_RC:-0}"
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files scripts/setup-env reads, and a .venv whose python is a logging stand-in for pip
    (a real install of the locked set takes minutes and a package index)."""
    (tmp_path / "scripts").mkdir()
    for name in ("scripts/setup-env", "pyproject.toml", *LOCKS):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text(STUB_PYTHON)
    (tmp_path / ".venv" / "bin" / "python").chmod(0o755)
    return tmp_path


def setup_env(checkout: Path, *args: str, pip_rc: int = 0) -> list[str]:
    """Runs scripts/setup-env; returns the pip commands it ran."""
    log = checkout / "pip.log"
    log.write_text("")
    env = {"PATH": os.environ["PATH"], "PIP_LOG": str(log), "PIP_RC": str(pip_rc)}
    done = subprocess.run(
        [str(checkout / "scripts" / "setup-env"), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == (0 if not pip_rc else pip_rc), done.stderr
    return [line.split("--disable-pip-version-check ", 1)[1] for line in log.read_text().splitlines()]


def test_setup_env_runs_pip_only_when_the_venv_is_not_current(checkout: Path) -> None:
    installs_runtime = ["install -r requirements.lock", "install --no-deps -e .", "check"]
    installs_test = ["install -r requirements-test.lock", "install --no-deps -e .", "check"]
    assert setup_env(checkout) == installs_runtime
    assert setup_env(checkout) == []  # current: no pip at all
    assert setup_env(checkout, "--test") == installs_test
    assert setup_env(checkout, "--test") == []
    assert setup_env(checkout) == []  # the test set includes the runtime one

    with (checkout / "requirements.lock").open("a") as f:
        f.write("newdep==1.0\n")
    assert setup_env(checkout) == installs_runtime
    assert setup_env(checkout, "--test") == installs_test  # its set changed with the runtime lock

    (checkout / "pyproject.toml").write_text((checkout / "pyproject.toml").read_text() + "\n")
    assert setup_env(checkout, "--test", pip_rc=1)  # pip failed: nothing recorded as installed
    assert setup_env(checkout, "--test") == installs_test
    assert setup_env(checkout, "--test") == []

    (checkout / ".venv" / "bin" / "gateway").unlink()  # the package itself is gone
    assert setup_env(checkout) == installs_runtime
