"""Configuration: TOML file, GATEWAY_* overrides, and clear errors."""

from __future__ import annotations

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
