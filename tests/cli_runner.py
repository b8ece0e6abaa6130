"""`python -m gateway ...` for the tests, each command still its own process, without paying
for the imports every time.

A command spends about a second importing the CLI (SQLAlchemy, alembic, pydantic) and about a
tenth of one doing its work; the suite runs about a hundred of them. A zygote process imports
`gateway.cli` once and forks a child per command: the child takes the command's environment,
working directory and arguments, writes to its own stdout/stderr files and exits through the
interpreter as `python -m gateway` does (atexit handlers, log flushing), so what a test sees is
what a user sees, minus the import time. The zygote never starts an event loop or a thread, so
forking it is safe.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _serve() -> None:
    """The zygote: one JSON request per stdin line, one exit code per stdout line."""
    import gateway.cli  # noqa: F401  (the point: imported once, before any fork)

    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


def _child(req: dict[str, object]) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, req["out"]), (2, req["err"])):
        target = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(str(req["cwd"]))
    os.environ.clear()
    os.environ.update(req["env"])  # type: ignore[arg-type]
    from gateway.cli import main

    sys.exit(main(list(req["args"])))  # type: ignore[call-overload]


class _Zygote:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # one command at a time; the lock works across event loops
        self._proc: subprocess.Popen[str] | None = None
        self._dir = tempfile.mkdtemp(prefix="gw-cli-")

    def run(self, env: dict[str, str], args: list[str], cwd: Path) -> tuple[int, str, str]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", "from tests.cli_runner import _serve; _serve()"],
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                    cwd=str(ROOT),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                atexit.register(self._proc.kill)
            out, err = Path(self._dir, "out"), Path(self._dir, "err")
            assert self._proc.stdin is not None and self._proc.stdout is not None
            request = {"env": env, "args": args, "cwd": str(cwd), "out": str(out), "err": str(err)}
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            code = int(self._proc.stdout.readline())
            return code, out.read_text(), err.read_text()


_zygote = _Zygote()


def run_gateway_command(
    env: dict[str, str], args: list[str], cwd: Path | None = None
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m gateway *args` with os.environ + `env`."""
    return _zygote.run({**os.environ, "PYTHONPATH": str(ROOT), **env}, args, cwd or ROOT)
