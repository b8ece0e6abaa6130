"""A real Asterisk for the live suite, in a directory of its own.

Every directory asterisk.conf names points into `root`; the shipped asterisk/extensions.conf,
manager.conf and pjsip.conf are copied unchanged, and only site settings are added through
the include hooks they end with (gateway-site.conf, manager-site.conf, pjsip-site.conf), the
way an operator sets up a host. The sounds a source-built Asterisk lacks (`beep`,
`ss-noservice`) are generated into its sounds directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT
from tests.live.media import tone, write_wav

# What the shipped configs use, nothing more. res_pjsip_outbound_registration stays out: the
# shipped pjsip.conf registers to the carrier, and without the module that section is inert.
MODULES = [
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_astdb.so",
    "res_timing_timerfd.so",
    # res_pjsip links against these two when Asterisk was built without the optional API.
    "res_statsd.so",
    "res_geolocation.so",
    "res_speech.so",  # res_agi requires it
    "res_pjproject.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_pubsub.so",  # chan_pjsip requires it
    "res_pjsip_sdp_rtp.so",
    "res_pjsip_caller_id.so",
    "res_pjsip_rfc3326.so",
    "res_pjsip_endpoint_identifier_ip.so",
    "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_outbound_authenticator_digest.so",
    "res_pjsip_logger.so",
    "res_rtp_asterisk.so",
    "chan_pjsip.so",
    "res_agi.so",
    "app_dial.so",
    "app_stack.so",  # Dial U(): the transfer subroutine that stamps the callee's answer
    "app_playback.so",
    "pbx_config.so",
    "func_channel.so",
    "func_callerid.so",
    "codec_ulaw.so",
    "codec_alaw.so",
    "codec_resample.so",
    "format_wav.so",
    "format_pcm.so",
    "format_sln.so",
    "bridge_simple.so",
    "bridge_native_rtp.so",
]


# Children die with the test run even when it is killed (as tests/procs.py does for gateways).
_SETPRIV = shutil.which("setpriv")
DIE_WITH_PARENT = [_SETPRIV, "--pdeathsig", "KILL"] if _SETPRIV else []


@dataclass
class Ports:
    sip: int  # Asterisk's UDP/TCP transport
    ami: int
    fastagi: int  # the gateway's
    carrier: int  # the SIPp UAS the trunk's calls go to


class Asterisk:
    def __init__(
        self, binary: str, modules_dir: str, root: Path, ports: Ports, ami_secret: str, fastagi_key: str
    ):
        self.binary = binary
        self.modules_dir = modules_dir
        self.root = root
        self.ports = ports
        self.ami_secret = ami_secret
        self.fastagi_key = fastagi_key
        self.etc = root / "etc"
        self.conf = self.etc / "asterisk.conf"
        self.log_dir = root / "log"
        self.sounds = root / "data" / "sounds" / "en"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration --------------------------------------------------------------------

    def write_config(self) -> None:
        dirs = {
            "astetcdir": self.etc,
            "astmoddir": Path(self.modules_dir),
            "astvarlibdir": self.root / "lib",
            "astdbdir": self.root / "lib",
            "astkeydir": self.root / "lib",
            "astdatadir": self.root / "data",
            "astagidir": self.root / "agi-bin",
            "astspooldir": self.root / "spool",
            "astrundir": self.root / "run",
            "astlogdir": self.log_dir,
            "astsbindir": Path(self.binary).parent,
            "astcachedir": self.root / "cache",
        }
        for key, path in dirs.items():
            if key != "astmoddir":
                path.mkdir(parents=True, exist_ok=True)
        lines = ["[directories]"] + [f"{k} => {v}" for k, v in dirs.items()]
        lines += ["", "[options]", "verbose = 3", "debug = 0", "maxload = 0"]
        (self.etc / "asterisk.conf").write_text("\n".join(lines) + "\n")
        (self.etc / "modules.conf").write_text(
            "[modules]\nautoload=no\n" + "".join(f"load => {m}\n" for m in MODULES)
        )
        (self.etc / "logger.conf").write_text(
            "[general]\ndateformat=%F %T.%3q\n[logfiles]\nmessages.log => notice,warning,error,verbose\n"
        )
        # Loopback RTP ports away from anything else on the box.
        (self.etc / "rtp.conf").write_text("[general]\nrtpstart=30000\nrtpend=30999\n")
        for name in ("extensions.conf", "manager.conf", "pjsip.conf"):
            shutil.copyfile(ROOT / "asterisk" / name, self.etc / name)
        key = f"?key={self.fastagi_key}"
        (self.etc / "gateway-site.conf").write_text(
            f"GATEWAY_FASTAGI=agi://127.0.0.1:{self.ports.fastagi}/din{key}\n"
            f"GATEWAY_FASTAGI_OUTBOUND=agi://127.0.0.1:{self.ports.fastagi}/outbound{key}\n"
        )
        (self.etc / "manager-site.conf").write_text(
            f"[general](+)\nport={self.ports.ami}\nbindaddr=127.0.0.1\n\n[gateway](+)\nsecret={self.ami_secret}\n"
        )
        (self.etc / "pjsip-site.conf").write_text(
            f"[transport-udp](+)\nbind=127.0.0.1:{self.ports.sip}\n\n"
            f"[transport-tcp](+)\nbind=127.0.0.1:{self.ports.sip}\n\n"
            # The carrier's AOR keeps its (unresolvable) contact but is never qualified; the
            # endpoint dials the local SIPp UAS through an AOR of our own instead.
            "[trunk](+type=aor)\nqualify_frequency=0\n\n"
            "[trunk](+type=endpoint)\naors=trunk-live\nfrom_domain=127.0.0.1\n\n"
            f"[trunk-live]\ntype=aor\ncontact=sip:127.0.0.1:{self.ports.carrier}\nqualify_frequency=0\n\n"
            # The shipped identify names the carrier's SBC by a name that does not resolve
            # here, so Asterisk drops it whole: the callers on loopback get one of their own.
            "[trunk-identify-live]\ntype=identify\nendpoint=trunk\nmatch=127.0.0.1\n"
        )
        # Asterisk checks its configuration options against the XML documentation it was built
        # with and refuses to start without it: borrow the installed copy.
        docs = self.root / "data" / "documentation"
        if not docs.exists():
            docs.symlink_to(installed_documentation(self.binary, self.modules_dir))
        write_wav(self.sounds / "beep.wav", tone(0.25, 1000.0))
        write_wav(self.sounds / "ss-noservice.wav", tone(1.0, 480.0) + tone(1.0, 620.0))

    # -- process --------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        out = (self.log_dir / "console.log").open("ab")
        # -f: foreground, no console (stdin is not a terminal); output to the log file.
        self.proc = subprocess.Popen(
            [*DIE_WITH_PARENT, self.binary, "-f", "-C", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"asterisk exited with {self.proc.returncode}:\n{self.tail()}")
            rc = subprocess.run(
                [self.binary, "-C", str(self.conf), "-rx", "core waitfullybooted"],
                capture_output=True,
                timeout=timeout,
            ).returncode
            if rc == 0 and _listening(self.ports.ami):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"asterisk not up within {timeout} s:\n{self.tail()}")
            time.sleep(0.2)

    def rx(self, command: str) -> str:
        """One CLI command over the control socket (`asterisk -rx`)."""
        done = subprocess.run(
            [self.binary, "-C", str(self.conf), "-rx", command], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    def version(self) -> str:
        return subprocess.run([self.binary, "-V"], capture_output=True, text=True, timeout=10).stdout.strip()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.rx("core stop now")
            self.proc.wait(10)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    # -- logs -----------------------------------------------------------------------------

    @property
    def messages(self) -> Path:
        return self.log_dir / "messages.log"

    def log_size(self) -> int:
        return self.messages.stat().st_size if self.messages.exists() else 0

    def log_since(self, offset: int) -> str:
        """What Asterisk logged since `log_size()` returned `offset`."""
        with self.messages.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def tail(self, lines: int = 60) -> str:
        path = self.messages if self.messages.exists() else self.log_dir / "console.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def installed_documentation(binary: str, modules_dir: str) -> Path:
    """The documentation directory of the installed Asterisk: under its data directory, which
    sits beside its modules (<prefix>/lib/asterisk/modules -> <prefix>/var/lib/asterisk) or in
    the usual system places."""
    prefix = Path(modules_dir).resolve().parents[2]
    candidates = [
        prefix / "var" / "lib" / "asterisk",
        Path(binary).resolve().parents[1] / "var" / "lib" / "asterisk",
        Path("/var/lib/asterisk"),
        Path("/usr/share/asterisk"),
    ]
    if env := os.environ.get("GWLIVE_ASTERISK_DATA"):
        candidates.insert(0, Path(env))
    for data in candidates:
        if (data / "documentation").is_dir():
            return data / "documentation"
    raise RuntimeError(
        "no Asterisk documentation directory found (set GWLIVE_ASTERISK_DATA to the installed "
        "astdatadir, the one holding documentation/)"
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
