"""Configuration: TOML file, GATEWAY_* overrides, and clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_loads_and_env_overrides_it() -> None:
    cfg = load_config(
        ROOT / "config" / "gateway.example.toml",
        env={"GATEWAY_SMPP_PORT": "2776", "GATEWAY_SIMULATOR_ENABLED": "yes", "GATEWAY_SMS_PRICES": "44=3.5"},
    )
    assert cfg.smpp.host == "smsc.example.net" and cfg.smpp.port == 2776
    assert cfg.simulator.enabled is True
    assert cfg.sms.prices == {"44": 3.5}
    assert cfg.public_base_url == "https://sms.example.net"


def test_defaults_are_the_embedded_ones() -> None:
    cfg = load_config(env={})
    assert cfg.database.url.startswith("sqlite+aiosqlite:///")
    assert cfg.simulator.enabled and cfg.http.port == 8080
    assert cfg.public_base_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ("[nope]\nx = 1\n", {}, "unknown config section"),
        ("[smpp]\nbogus = 1\n", {}, "smpp.bogus"),
        ("[smpp]\nport = 'x'\n", {}, "smpp.port"),
        ("", {"GATEWAY_SMPP_WINDOW": "ten"}, "GATEWAY_SMPP_WINDOW"),
        ("", {"GATEWAY_SIMULATOR_ENABLED": "perhaps"}, "GATEWAY_SIMULATOR_ENABLED"),
        ("[smpp\n", {}, "cannot read config"),
    ],
)
def test_bad_config_is_reported(tmp_path: Path, toml: str, env: dict[str, str], needle: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path, env=env)


def test_readme_config_reference_is_complete() -> None:
    """The README's table is the operator's reference: every setting must be in it."""
    from gateway.config import config_keys

    readme = (ROOT / "README.md").read_text()
    for key, env, default in config_keys():
        assert f"| `{key}` | `{env}` | `{default!r}` |" in readme, key


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[smpp]\npasword = 'x'\n", "unknown config key smpp.pasword; did you mean smpp.password?"),
        ("[vocie]\nx = 1\n", "unknown config section [vocie]; did you mean [voice]?"),
        ("[smpp]\nzzzzzz = 1\n", "unknown config key smpp.zzzzzz"),
    ],
)
def test_a_misspelt_key_names_the_closest_valid_one(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == message


def test_config_show_prints_what_is_in_force_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    path = tmp_path / "c.toml"
    path.write_text(
        "[smpp]\nhost = 'smsc.example.net'\npassword = 'from-the-file'\n[voice]\nami_secret = 'ami-s3cret'\n"
    )
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("GATEWAY_SMPP_PORT", "2999")  # the environment wins over the file
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "postgresql+asyncpg://gw:db-pa55@[::1]:5432/gw")
    monkeypatch.setenv("GATEWAY_METRICS_TOKEN", "metrics-t0ken")

    assert main(["--config", str(path), "config", "show"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["smpp"]["host"] == "smsc.example.net" and shown["smpp"]["port"] == 2999
    assert shown["database"]["url"] == "postgresql+asyncpg://gw:********@[::1]:5432/gw"
    assert (
        shown["smpp"]["password"] == shown["voice"]["ami_secret"] == shown["metrics"]["token"] == "********"
    )
    assert shown["voice"]["fastagi_secret"] == ""  # unset stays visibly unset
    for secret in ("from-the-file", "ami-s3cret", "db-pa55", "metrics-t0ken"):
        assert secret not in out
    assert not (tmp_path / "data").exists()  # showing the configuration touches no database
