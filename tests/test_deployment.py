"""docker-compose.yml and the Dockerfile agree with the configs they wire together.

No Docker engine runs where the suite runs, so the stack itself is not started here; these
checks catch the mistakes that would only show once it is: a config from asterisk/ not mounted,
the dialplan pointing at a FastAGI address the gateway does not listen on, AMI secrets that
differ, the voice volume mounted where one side does not look, different uids on it.
"""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.config import load_config
from gateway.net.guard import address_in, parse_networks
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


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


def gateway_config(compose: dict[str, Any]) -> Any:
    env = {k: str(v) for k, v in compose["services"]["gateway"]["environment"].items()}
    return load_config(env=env)


def test_services_and_start_up(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "smsc", "gateway", "asterisk"}
    cfg = gateway_config(compose)  # every GATEWAY_* value is a valid setting
    assert cfg.database.migrate_on_start and cfg.database.url.startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in cfg.database.url
    assert services["gateway"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert not cfg.simulator.enabled and cfg.smpp.host == "smsc"
    smsc_cmd = services["smsc"]["command"]
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


def test_dialplan_reaches_the_gateway_fastagi_server(compose: dict[str, Any]) -> None:
    cfg = gateway_config(compose)
    assert cfg.voice.fastagi_enabled and cfg.voice.fastagi_host == "0.0.0.0"
    text = (ROOT / "asterisk" / "extensions.conf").read_text()
    site = (ROOT / "docker" / "asterisk" / "gateway-site.conf").read_text()
    globals_ = conf_values(text.replace("#tryinclude gateway-site.conf", site))
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


def test_fastagi_admits_the_compose_asterisk_and_nothing_else(compose: dict[str, Any]) -> None:
    cfg = gateway_config(compose)
    allowed = parse_networks(cfg.voice.fastagi_allowed_peers)
    [subnet] = [ip_network(c["subnet"]) for c in compose["networks"]["default"]["ipam"]["config"]]
    asterisk = compose["services"]["asterisk"]["networks"]["default"]["ipv4_address"]
    assert ip_address(asterisk) in subnet and address_in(asterisk, allowed)
    # Only that one address of the compose network: not the SMSC, PostgreSQL or any other container.
    others = [h for h in subnet.hosts() if str(h) != asterisk]
    assert not any(address_in(str(h), allowed) for h in others)


def test_ami_user_secret_and_network(compose: dict[str, Any]) -> None:
    cfg = gateway_config(compose)
    assert cfg.voice.ami_enabled and cfg.voice.ami_host == "asterisk"
    text = (ROOT / "asterisk" / "manager.conf").read_text()
    site = (ROOT / "docker" / "asterisk" / "manager-site.conf").read_text()
    values = conf_values(text.replace("#tryinclude manager-site.conf", site))
    assert last(values, "general", "port") == str(cfg.voice.ami_port)
    assert last(values, "general", "bindaddr") == "0.0.0.0"
    assert last(values, cfg.voice.ami_username, "secret") == cfg.voice.ami_secret
    assert last(values, "general", "enabled") == "yes"
    assert "5038" not in str(compose["services"]["asterisk"].get("ports", []))  # AMI stays inside


def test_the_app_accepts_the_compose_configuration(compose: dict[str, Any]) -> None:
    """create_app's start-up checks (AMI on needs a price table) pass on the shipped settings."""
    cfg = gateway_config(compose)
    assert cfg.voice.outbound_prices == {"81": 3.0}
    create_app(cfg)


def test_voice_volume_is_shared_by_one_uid(compose: dict[str, Any]) -> None:
    cfg = gateway_config(compose)
    gw, ast = mounts(compose["services"]["gateway"]), mounts(compose["services"]["asterisk"])
    assert gw[cfg.voice.data_dir] == ast[cfg.voice.asterisk_data_dir] == "voice"
    assert "voice" in compose["volumes"]
    uid = re.search(r"useradd .*--uid (\d+) --gid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    env = compose["services"]["asterisk"]["environment"]
    assert (env["ASTERISK_UID"], env["ASTERISK_GID"]) == uid.groups()


def test_published_rtp_range_matches_rtp_conf(compose: dict[str, Any]) -> None:
    rtp = conf_values((ROOT / "docker" / "asterisk" / "rtp.conf").read_text())
    start, end = last(rtp, "general", "rtpstart"), last(rtp, "general", "rtpend")
    assert f"{start}-{end}:{start}-{end}/udp" in compose["services"]["asterisk"]["ports"]
