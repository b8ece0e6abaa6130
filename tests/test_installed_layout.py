"""The package as `pip install` (and the Dockerfile) lays it out: built into a wheel, installed
into a fresh virtualenv, run from a directory that is not the source tree, on embedded defaults.
(The migrations were looked for next to the source tree, so an installed gateway could not start.)"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, basic, free_port, wait_for

SOURCES = ("pyproject.toml", "README.md", "gateway", "smpp", "actions_dsl")


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180
    )
    assert done.returncode == 0, done.stdout.decode()
    return done.stdout.decode()


def _install(tmp: Path) -> Path:
    """The wheel in a new venv; its dependencies come from this interpreter's site-packages (a
    plain path line, so this checkout's editable install is not seen), which keeps it offline
    and quick. Returns the venv's bin directory."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: building writes build/ and *.egg-info next to the sources
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src, cwd=tmp)
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp)
    Path(site.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((tmp / "dist").glob("*.whl"))
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel, cwd=tmp)
    return venv / "bin"


async def test_installed_wheel_migrates_and_runs_from_any_directory(tmp_path: Path) -> None:
    bin_dir = await asyncio.to_thread(_install, tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PYTHON"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        GATEWAY_HTTP_PORT=str(port),
        GATEWAY_SMPP_PORT=str(free_port()),
        GATEWAY_VOICE_FASTAGI_PORT=str(free_port()),
    )
    where = await asyncio.to_thread(
        _run, bin_dir / "python", "-c", "import gateway; print(gateway.__file__)", cwd=work, env=env
    )
    assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not this checkout

    out = await asyncio.to_thread(_run, bin_dir / "gateway", "migrate", cwd=work, env=env)
    assert "latest schema" in out
    proc = await asyncio.create_subprocess_exec(
        str(bin_dir / "gateway"),
        "run",
        cwd=str(work),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        printed = ""
        while "Demo account token:" not in printed:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            if not line:
                assert proc.stderr is not None
                err = (await proc.stderr.read()).decode(errors="replace")
                pytest.fail(f"gateway run exited early:\n{printed}{err[-3000:]}")
            printed += line
        assert f"Data directory:     {work / 'var'}\n" in printed
        demo = json.loads(await asyncio.to_thread((work / "var" / "demo-account.json").read_text))
        auth = basic(demo["sid"], demo["auth_token"])
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"{base}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=20)
            async with http.post(
                f"{base}/sms/messages/",
                data={"message": "installed", "recipient": "+818012345678", "sender": "DEMO"},
                headers=auth,
            ) as r:
                assert r.status == 201, await r.text()
                msgid = (await r.json())[0]["msgid"]

            async def delivered() -> bool:
                async with http.get(f"{base}/sms/messages/{msgid}/", headers=auth) as r:
                    return bool((await r.json())["status"] == "DELIVERED")

            await wait_for(delivered, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
