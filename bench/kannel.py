"""Kannel (bearerbox + smsbox, the Debian package `kannel`) for bench/compare.py: a generated
kannel.conf in a temporary directory, both boxes started as our child processes and stopped
after the run. The Debian service is never used (`apt-get install kannel` does not need it).

One SMPP transceiver bind to the benchmark's SMSC, `store-type = spool` (every message is a
file in the spool until it is acknowledged, so a crashed bearerbox resends it), MT through
smsbox's `sendsms` HTTP interface, DLRs and MO to the benchmark's receiver by HTTP GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.common import free_port

# Kannel's log levels: 0 debug, 1 info, 2 warning, 3 error, 4 panic.
LOG_LEVELS = {"DEBUG": 0, "INFO": 1, "WARNING": 2, "ERROR": 3}

SENDSMS_USER = "bench"
SENDSMS_PASSWORD = "bench"
# A DLR for the SMSC's submit_sm_resp (8: delivered to SMSC, 16: refused by it) and for the final
# receipt (1: delivered, 2: undelivered): two callbacks per message, as our gateway sends one for
# DELIVERING and one for DELIVERED.
DLR_MASK = 1 | 2 | 8 | 16
FINAL_DLR_TYPES = {"1", "2"}


def binaries() -> tuple[str, str]:
    bearerbox, smsbox = shutil.which("bearerbox"), shutil.which("smsbox")
    if bearerbox is None or smsbox is None:
        # Debian installs them in /usr/sbin, which a non-root PATH may lack.
        bearerbox = bearerbox or ("/usr/sbin/bearerbox" if Path("/usr/sbin/bearerbox").exists() else None)
        smsbox = smsbox or ("/usr/sbin/smsbox" if Path("/usr/sbin/smsbox").exists() else None)
    if bearerbox is None or smsbox is None:
        raise RuntimeError(
            "Kannel's bearerbox/smsbox not found: install the Debian package (`apt-get install -y "
            "kannel`; the benchmark starts the boxes itself, the kannel service can stay disabled)"
        )
    return bearerbox, smsbox


@dataclass(frozen=True)
class KannelPorts:
    admin: int
    smsbox: int
    sendsms: int


def kannel_conf(
    *, work: Path, ports: KannelPorts, smsc_port: int, window: int, mo_url: str, log_level: int
) -> str:
    # Kannel only writes log-level to its log-file; the boxes' stderr level is their -v option.
    return f"""\
group = core
admin-port = {ports.admin}
admin-password = bench
admin-deny-ip = "*.*.*.*"
admin-allow-ip = "127.0.0.1"
smsbox-port = {ports.smsbox}
box-deny-ip = "*.*.*.*"
box-allow-ip = "127.0.0.1"
store-type = spool
store-location = "{work}/spool"
dlr-storage = internal
log-level = {log_level}

group = smsc
smsc = smpp
smsc-id = bench
host = 127.0.0.1
port = {smsc_port}
transceiver-mode = true
smsc-username = gateway
smsc-password = secret
system-type = ""
max-pending-submits = {window}
enquire-link-interval = 30
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {ports.smsbox}
sendsms-port = {ports.sendsms}
sendsms-interface = 127.0.0.1
log-level = {log_level}

group = sendsms-user
username = {SENDSMS_USER}
password = {SENDSMS_PASSWORD}
user-deny-ip = "*.*.*.*"
user-allow-ip = "127.0.0.1"

group = sms-service
keyword = default
catch-all = true
get-url = "{mo_url}?from=%p&to=%P&text=%a"
# Lets the reply carry X-Kannel headers; without it smsbox logs a warning for every MO it
# answers ("Tried to set Coding field"), even with max-messages = 0.
accept-x-kannel-headers = true
max-messages = 0
"""


class Kannel:
    """bearerbox and smsbox for one benchmark run, in `work` (config, spool, logs)."""

    def __init__(self, work: Path, smsc_port: int, window: int, mo_url: str, log_level: str) -> None:
        self.work = work
        self.ports = KannelPorts(free_port(), free_port(), free_port())
        self._level = LOG_LEVELS.get(log_level.upper(), 2)
        (work / "spool").mkdir(parents=True, exist_ok=True)
        self.conf = work / "kannel.conf"
        self.conf.write_text(
            kannel_conf(
                work=work,
                ports=self.ports,
                smsc_port=smsc_port,
                window=window,
                mo_url=mo_url,
                log_level=self._level,
            )
        )
        self.procs: list[asyncio.subprocess.Process] = []

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.sendsms}/cgi-bin/sendsms"

    async def start(self) -> None:
        bearerbox, smsbox = binaries()
        await self._spawn("bearerbox", bearerbox)
        await _wait_port(self.ports.smsbox, self.procs[0], "bearerbox")
        await self._spawn("smsbox", smsbox)
        await _wait_port(self.ports.sendsms, self.procs[1], "smsbox")

    async def _spawn(self, name: str, binary: str) -> None:
        log = (self.work / f"{name}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            binary, "-v", str(self._level), str(self.conf), cwd=str(self.work), stdout=log, stderr=log
        )
        log.close()  # the child holds its own copy
        self.procs.append(proc)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.returncode is None]

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("bearerbox", "smsbox"):
            path = self.work / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(out)

    async def stop(self) -> None:
        # smsbox first, so bearerbox does not queue for a box that is going away.
        for proc in reversed(self.procs):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()


async def _wait_port(port: int, proc: asyncio.subprocess.Process, name: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"{name} did not listen on {port} within {timeout} s")
