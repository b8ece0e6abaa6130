"""docker-compose.yml and the Dockerfile agree with the configs they wire together.

No Docker engine runs where the suite runs, so the stack itself is not started here; these
checks catch the mistakes that would only show once it is: a config from asterisk/ not mounted,
the dialplan pointing at a FastAGI address the gateway does not listen on, AMI secrets that
differ, the voice volume mounted where one side does not look, different uids on it, a floating
image tag, a service nobody restarts or health-checks, a secret written into the repository.
The shell scripts that carry the secrets (scripts/compose-env, docker/asterisk/write-secrets.sh)
run for real.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tomllib
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.config import load_config
from gateway.net.guard import address_in, parse_networks
from tests.conftest import ROOT

SECRETS = ("GATEWAY_VOICE_AMI_SECRET", "GATEWAY_VOICE_FASTAGI_SECRET", "GATEWAY_METRICS_TOKEN")
ENV_FILE = "gateway.env"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as docker compose reads an env_file (no quoting used here)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """gateway.env as the operator gets it: written by scripts/compose-env from the example."""
    path = tmp_path_factory.mktemp("compose") / ENV_FILE
    subprocess.run([str(ROOT / "scripts" / "compose-env"), str(path)], check=True, capture_output=True)
    return read_env_file(path)


def write_secrets(env: dict[str, str], etc: Path) -> subprocess.CompletedProcess[str]:
    """docker/asterisk/write-secrets.sh as the asterisk service runs it, into `etc`."""
    return subprocess.run(
        ["sh", str(ROOT / "docker" / "asterisk" / "write-secrets.sh"), "echo", "asterisk started"],
        env={"PATH": os.environ["PATH"], "ASTERISK_ETC_DIR": str(etc), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def asterisk_conf(compose: dict[str, Any], env: dict[str, str], etc: Path, name: str) -> str:
    """/etc/asterisk/<name> as the asterisk service would load it: the mounted file with its
    #include / #tryinclude lines replaced by the mounted or generated files they name."""
    assert write_secrets(env, etc).returncode == 0
    mounted = {
        t.removeprefix("/etc/asterisk/"): s for t, s in mounts(compose["services"]["asterisk"]).items()
    }

    def load(name: str) -> str | None:
        source = Path(mounted[name]) if name in mounted else etc / name
        return source.read_text() if source.is_file() else None

    def expand(text: str) -> str:
        out = []
        for line in text.splitlines():
            if m := re.fullmatch(r"#(try)?include\s+(\S+)\s*", line.strip()):
                included = load(m.group(2))
                assert included is not None or m.group(1), f"#include {m.group(2)}: no such file"
                out.append(expand(included or ""))
            else:
                out.append(line)
        return "\n".join(out)

    text = load(name)
    assert text is not None, name
    return expand(text)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (a host path resolved from the repo, or a volume name)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *_ = spec.split(":")
        out[target] = str((ROOT / source).resolve()) if source.startswith(".") else source
    return out


def conf_values(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order from an Asterisk .conf text."""
    section, out = "", []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if m := re.fullmatch(r"\[([^\]]+)\](\(\+\))?", line):
            section = m.group(1)
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.append((section, key.strip().rstrip(">").strip(), value.strip()))
    return out


def last(values: list[tuple[str, str, str]], section: str, key: str) -> str:
    found = [v for s, k, v in values if s == section and k == key]
    assert found, (section, key)
    return found[-1]  # Asterisk: a later assignment wins


def service_env(compose: dict[str, Any], service: str, env_file: dict[str, str]) -> dict[str, str]:
    """A service's environment as compose builds it: its env_file, then `environment:` over it."""
    spec = compose["services"][service]
    env = dict(env_file) if spec.get("env_file") else {}
    return {**env, **{k: str(v) for k, v in spec.get("environment", {}).items()}}


def gateway_config(compose: dict[str, Any], env_file: dict[str, str]) -> Any:
    return load_config(env=service_env(compose, "gateway", env_file))


def test_services_and_start_up(compose: dict[str, Any], env_file: dict[str, str]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "smsc", "gateway", "asterisk"}
    cfg = gateway_config(compose, env_file)  # every GATEWAY_* value is a valid setting
    assert cfg.database.migrate_on_start and cfg.database.url.startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in cfg.database.url
    assert services["gateway"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert not cfg.simulator.enabled and cfg.smpp.host == "smsc"
    smsc_cmd = services["smsc"]["command"]
    assert smsc_cmd[:3] == ["python", "-m", "smpp.simulator_cli"]  # tests/test_simulator.py runs it
    assert smsc_cmd[smsc_cmd.index("--port") + 1] == str(cfg.smpp.port)
    assert smsc_cmd[smsc_cmd.index("--password") + 1] == cfg.smpp.password
    assert smsc_cmd[smsc_cmd.index("--system-id") + 1] == cfg.smpp.system_id
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["gateway", "run"]' in dockerfile  # `run` migrates before serving


def test_asterisk_gets_every_config_from_the_repo(compose: dict[str, Any]) -> None:
    m = mounts(compose["services"]["asterisk"])
    for conf in sorted((ROOT / "asterisk").glob("*.conf")):
        assert m.get(f"/etc/asterisk/{conf.name}") == str(conf.resolve()), conf.name
    for source in m.values():
        if source.startswith("/"):
            assert Path(source).is_file(), source
    # Each site file is pulled in by the repo config that expects it.
    for conf, site in (("extensions.conf", "gateway-site.conf"), ("manager.conf", "manager-site.conf")):
        assert f"#tryinclude {site}" in (ROOT / "asterisk" / conf).read_text()
        assert f"/etc/asterisk/{site}" in m


def test_pjsip_conf_takes_site_settings_last() -> None:
    """Operators (and tests/live/) append to the trunk from pjsip-site.conf; its values only win
    when it is included after every section of pjsip.conf."""
    lines = [
        line.strip()
        for line in (ROOT / "asterisk" / "pjsip.conf").read_text().splitlines()
        if line.strip() and not line.strip().startswith(";")
    ]
    assert lines[-1] == "#tryinclude pjsip-site.conf"


def test_trunk_sends_no_connected_line_updates() -> None:
    """Asterisk re-INVITEs the caller's leg on every transfer to show the new party unless the
    endpoint says otherwise; strict carriers refuse that re-INVITE."""
    kind, trunk = "", {}
    for section, key, value in conf_values((ROOT / "asterisk" / "pjsip.conf").read_text()):
        if section != "trunk":
            continue
        if key == "type":  # each [trunk] section opens with its type
            kind = value
        elif kind == "endpoint":
            trunk[key] = value
    assert trunk.get("send_connected_line") == "no"
    # Menus take keys however the carrier sends them (docs/action-language.md, "Keys").
    assert trunk.get("dtmf_mode") == "auto"


def test_dialplan_reaches_the_gateway_fastagi_server(
    compose: dict[str, Any], env_file: dict[str, str], tmp_path: Path
) -> None:
    cfg = gateway_config(compose, env_file)
    assert cfg.voice.fastagi_enabled and cfg.voice.fastagi_host == "0.0.0.0"
    text = (ROOT / "asterisk" / "extensions.conf").read_text()
    env = service_env(compose, "asterisk", env_file)
    globals_ = conf_values(asterisk_conf(compose, env, tmp_path, "extensions.conf"))
    # Each URL carries the key the gateway wants (voice.fastagi_secret), as its only parameter.
    assert cfg.voice.fastagi_secret
    for key, script in (("GATEWAY_FASTAGI", "din"), ("GATEWAY_FASTAGI_OUTBOUND", "outbound")):
        url = f"agi://gateway:{cfg.voice.fastagi_port}/{script}?key={cfg.voice.fastagi_secret}"
        assert last(globals_, "globals", key) == url
    # The repo's dialplan alone (no site file) targets a gateway on the same box: loopback,
    # which the default allow-list admits.
    for key in ("GATEWAY_FASTAGI", "GATEWAY_FASTAGI_OUTBOUND"):
        host = last(conf_values(text), "globals", key).split("//", 1)[1].split(":", 1)[0]
        assert address_in(host, parse_networks(load_config(env={}).voice.fastagi_allowed_peers))


def test_fastagi_admits_the_compose_asterisk_and_nothing_else(
    compose: dict[str, Any], env_file: dict[str, str]
) -> None:
    cfg = gateway_config(compose, env_file)
    allowed = parse_networks(cfg.voice.fastagi_allowed_peers)
    [subnet] = [ip_network(c["subnet"]) for c in compose["networks"]["default"]["ipam"]["config"]]
    asterisk = compose["services"]["asterisk"]["networks"]["default"]["ipv4_address"]
    assert ip_address(asterisk) in subnet and address_in(asterisk, allowed)
    # Only that one address of the compose network: not the SMSC, PostgreSQL or any other container.
    others = [h for h in subnet.hosts() if str(h) != asterisk]
    assert not any(address_in(str(h), allowed) for h in others)


def test_ami_user_secret_and_network(
    compose: dict[str, Any], env_file: dict[str, str], tmp_path: Path
) -> None:
    cfg = gateway_config(compose, env_file)
    assert cfg.voice.ami_enabled and cfg.voice.ami_host == "asterisk"
    env = service_env(compose, "asterisk", env_file)
    values = conf_values(asterisk_conf(compose, env, tmp_path, "manager.conf"))
    assert last(values, "general", "port") == str(cfg.voice.ami_port)
    assert last(values, "general", "bindaddr") == "0.0.0.0"
    assert cfg.voice.ami_secret and last(values, cfg.voice.ami_username, "secret") == cfg.voice.ami_secret
    assert last(values, "general", "enabled") == "yes"
    assert "5038" not in str(compose["services"]["asterisk"].get("ports", []))  # AMI stays inside


def test_the_app_accepts_the_compose_configuration(compose: dict[str, Any], env_file: dict[str, str]) -> None:
    """create_app's start-up checks (AMI on needs a price table) pass on the shipped settings."""
    cfg = gateway_config(compose, env_file)
    assert cfg.voice.outbound_prices == {"81": 3.0}
    create_app(cfg)


def test_voice_volume_is_shared_by_one_uid(compose: dict[str, Any], env_file: dict[str, str]) -> None:
    cfg = gateway_config(compose, env_file)
    gw, ast = mounts(compose["services"]["gateway"]), mounts(compose["services"]["asterisk"])
    assert gw[cfg.voice.data_dir] == ast[cfg.voice.asterisk_data_dir] == "voice"
    assert "voice" in compose["volumes"]
    uid = re.search(r"useradd .*--uid (\d+) --gid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    # andrius/asterisk's entrypoint maps its asterisk user to PUID/PGID (ASTERISK_UID is not read).
    env = compose["services"]["asterisk"]["environment"]
    assert (env["PUID"], env["PGID"]) == uid.groups()


def test_published_rtp_range_matches_rtp_conf(compose: dict[str, Any]) -> None:
    rtp = conf_values((ROOT / "docker" / "asterisk" / "rtp.conf").read_text())
    start, end = last(rtp, "general", "rtpstart"), last(rtp, "general", "rtpend")
    assert f"{start}-{end}:{start}-{end}/udp" in compose["services"]["asterisk"]["ports"]


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    """No floating tag: `:latest`, no tag at all, or a tag chosen by an unset variable."""
    assert ":latest" not in (ROOT / "docker-compose.yml").read_text()
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert re.fullmatch(r"[a-z0-9./_-]+:[A-Za-z0-9][A-Za-z0-9._-]*", image), (name, image)
        assert not image.endswith(":latest"), name
    [base] = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base), base  # the interpreter the lock is for


def test_one_gateway_image_built_once(compose: dict[str, Any]) -> None:
    services = compose["services"]
    [built] = [name for name, s in services.items() if "build" in s]
    image = services[built]["image"]
    # Every service running our code runs the image built there (the simulator is ours).
    assert [n for n, s in services.items() if s["image"] == image] == ["smsc", "gateway"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image == f"voice-sms-gateway:{version}"


def test_every_service_restarts_and_reports_its_health(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
    gateway_check = " ".join(compose["services"]["gateway"]["healthcheck"]["test"])
    assert "urlopen('http://127.0.0.1:8080/readyz'" in gateway_check  # /readyz: the database answers
    assert compose["services"]["gateway"]["healthcheck"]["test"][:2] == [
        "CMD",
        "python",
    ]  # no curl in the image
    # A service starts once what it needs is healthy, not merely started.
    for name, service in compose["services"].items():
        for dep, spec in service.get("depends_on", {}).items():
            assert spec == {"condition": "service_healthy"}, (name, dep)
    assert set(compose["services"]["gateway"]["depends_on"]) == {"postgres", "smsc"}
    assert set(compose["services"]["asterisk"]["depends_on"]) == {"gateway"}


def test_fastagi_is_not_published(compose: dict[str, Any], env_file: dict[str, str]) -> None:
    """Only Asterisk, on the compose network, reaches FastAGI: no host port maps to it."""
    port = gateway_config(compose, env_file).voice.fastagi_port
    for name, service in compose["services"].items():
        for spec in service.get("ports", []):
            container = str(spec).split("/")[0].split(":")[-1]
            low, _, high = container.partition("-")
            assert not int(low) <= port <= int(high or low), (name, spec)
    assert compose["services"]["gateway"]["ports"] == ["8080:8080"]


def test_secrets_come_from_the_env_file(compose: dict[str, Any]) -> None:
    example = read_env_file(ROOT / f"{ENV_FILE}.example")
    assert set(SECRETS) <= set(example) and not any(example.values())  # no shared default secret
    for name, service in compose["services"].items():
        assert not set(SECRETS) & set(service.get("environment", {})), name
    for name in ("gateway", "asterisk"):
        assert compose["services"][name]["env_file"] == ENV_FILE
    assert f"/{ENV_FILE}" in (ROOT / ".gitignore").read_text().splitlines()
    assert ENV_FILE in (ROOT / ".dockerignore").read_text().splitlines()  # not sent to the engine either
    # Nor written into the Asterisk side: no secret= or ?key= with a value in the site configs.
    for conf in (ROOT / "docker" / "asterisk").glob("*.conf"):
        for _, key, value in conf_values(conf.read_text()):
            assert key != "secret" and "key=" not in value, conf.name


def test_compose_env_writes_fresh_private_secrets(tmp_path: Path) -> None:
    path = tmp_path / ENV_FILE
    script = str(ROOT / "scripts" / "compose-env")
    subprocess.run([script, str(path)], check=True, capture_output=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = read_env_file(path)
    values = [first[k] for k in SECRETS]
    assert len(set(values)) == len(SECRETS) and all(re.fullmatch(r"[0-9a-f]{48}", v) for v in values)
    subprocess.run([script, str(path)], check=True, capture_output=True)
    assert read_env_file(path) == first  # an existing gateway.env is never overwritten
    other = tmp_path / "other.env"
    subprocess.run([script, str(other)], check=True, capture_output=True)
    assert not set(values) & set(read_env_file(other).values())


def test_asterisk_starts_with_the_secrets_of_the_env_file(
    compose: dict[str, Any], env_file: dict[str, str], tmp_path: Path
) -> None:
    """The asterisk service runs write-secrets.sh (mounted from the repo), then Asterisk."""
    service = compose["services"]["asterisk"]
    command = service["command"]
    script = command[command.index("/usr/local/bin/write-secrets.sh") + 1 :]
    assert mounts(service)["/usr/local/bin/write-secrets.sh"] == str(
        ROOT / "docker/asterisk/write-secrets.sh"
    )
    assert script[0] == "/usr/sbin/asterisk" and "-U" in script
    done = write_secrets(service_env(compose, "asterisk", env_file), tmp_path)
    assert done.returncode == 0 and done.stdout == "asterisk started\n"
    for generated in tmp_path.iterdir():
        assert stat.S_IMODE(generated.stat().st_mode) == 0o600  # Asterisk's user only


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_VOICE_AMI_SECRET", None),
        ("GATEWAY_VOICE_AMI_SECRET", ""),
        ("GATEWAY_VOICE_FASTAGI_SECRET", "short-key"),
        ("GATEWAY_VOICE_AMI_SECRET", "0123456789abcdef;permit=0.0.0.0/0"),
        ("GATEWAY_VOICE_FASTAGI_SECRET", "0123456789abcdef&x=1"),
        ("GATEWAY_VOICE_AMI_SECRET", "0123456789abcdef\nread=all"),
    ],
)
def test_asterisk_refuses_an_unusable_secret(
    env_file: dict[str, str], tmp_path: Path, name: str, value: str | None
) -> None:
    env = {k: v for k, v in env_file.items() if k != name}
    if value is not None:
        env[name] = value
    done = write_secrets(env, tmp_path)
    assert done.returncode == 1 and "asterisk started" not in done.stdout
    assert done.stderr.count("\n") == 1 and name in done.stderr
    assert not value or value not in done.stderr  # the log does not repeat the secret
    assert list(tmp_path.iterdir()) == []  # nothing written, Asterisk not started


def dialplan(text: str, context: str) -> list[tuple[str, str, str]]:
    """(extension, label, application with its arguments) of each priority in `context`, in
    file order (`exten =>` and `same =>` lines; `n(label)` priorities carry their label)."""
    out: list[tuple[str, str, str]] = []
    exten = ""
    for section, key, value in conf_values(text):
        if section != context or key not in ("exten", "same"):
            continue
        value = value.removeprefix(">").strip()  # `=>` split at its `=`
        if key == "exten":
            exten, value = value.split(",", 1)
        priority, app = value.split(",", 1)
        label = m.group(1) if (m := re.fullmatch(r"\w+\((\w+)\)", priority.strip())) else ""
        out.append((exten.strip(), label, app.strip()))
    return out


def test_din_inbound_rings_the_caller_before_the_bridge_runs() -> None:
    """The bridge fetches the action_url before it answers (100 ms to seconds): without Ringing()
    first the caller hears silence meanwhile, the INVITE stuck at 100 Trying."""
    steps = dialplan((ROOT / "asterisk" / "extensions.conf").read_text(), "din-inbound")
    apps = [app.split("(", 1)[0] for _, _, app in steps]
    ringing, first_agi = apps.index("Ringing"), apps.index("AGI")
    # Before the branch to the script bridge too: both bridges get a ringing caller.
    branch = next(i for i, (_, _, app) in enumerate(steps) if app.startswith("GotoIf") and "?script" in app)
    assert ringing < branch < first_agi
    # Nothing answers before the bridge: it answers once it has the script.
    assert "Answer" not in apps[:first_agi]
    # Ringing leaves the channel in state Ring, so "never reached" is still "not Up".
    unreachable = next(app for _, _, app in steps if "?unreachable" in app)
    assert '"${CHANNEL(state)}" != "Up"' in unreachable


def test_din_inbound_has_only_extensions_chan_pjsip_can_deliver() -> None:
    """chan_pjsip answers 404 to an INVITE whose user part is not a number before any dialplan
    runs (recorded on Asterisk 22): an `i` or letters extension there would never be reached."""
    steps = dialplan((ROOT / "asterisk" / "extensions.conf").read_text(), "din-inbound")
    assert {exten for exten, _, _ in steps} == {"_[+0-9]."}
