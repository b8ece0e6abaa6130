"""Configuration: TOML file, GATEWAY_* overrides, and clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GATEWAY_SMPP_PASWORD": "x"},
            "unknown environment variable GATEWAY_SMPP_PASWORD; did you mean GATEWAY_SMPP_PASSWORD?",
        ),
        (
            {"GATEWAY_OUTBOUND_HTTP_ALOW_LOOPBACK": "true"},
            "unknown environment variable GATEWAY_OUTBOUND_HTTP_ALOW_LOOPBACK; "
            "did you mean GATEWAY_OUTBOUND_HTTP_ALLOW_LOOPBACK?",
        ),
        ({"GATEWAY_TEST_PG": "postgresql://x"}, "unknown environment variable GATEWAY_TEST_PG"),
        (
            {"GATEWAY_SMPP": '{"port": 1}'},
            "unknown environment variable GATEWAY_SMPP; did you mean GATEWAY_SMPP_TLS?",
        ),
    ],
)
def test_an_unknown_gateway_variable_names_the_closest_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    assert str(caught.value) == message


def test_the_config_path_and_the_test_knobs_are_no_settings_and_no_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[smpp]\nport = 2999\n")
    env = {
        "GATEWAY_CONFIG": str(path),
        "GWTEST_PG": "postgresql://postgres@127.0.0.1:5432/test",
        "GWTEST_ENGINES": "sqlite",
        "GWTEST_WORKERS": "0",
        "GWTEST_SCHEMATHESIS_EXAMPLES": "100",
        "GWLIVE_ASTERISK": "/usr/sbin/asterisk",
        "GWLIVE_BURST": "1",
        "gateway_smpp_port": "1",  # not ours: the settings are upper case, as before
    }
    assert load_config(env=env).smpp.port == 2999


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("", {"GATEWAY_SMPP_WINDOW": "ten"}, "GATEWAY_SMPP_WINDOW: expected an integer, got 'ten'"),
        ("", {"GATEWAY_RATELIMIT_RATE": "fast"}, "GATEWAY_RATELIMIT_RATE: expected a number, got 'fast'"),
        ("", {"GATEWAY_LOG_ACCESS": "perhaps"}, "GATEWAY_LOG_ACCESS: expected a boolean, got 'perhaps'"),
        ("", {"GATEWAY_SMS_PRICES": "81"}, "GATEWAY_SMS_PRICES: expected prefix=price pairs, got '81'"),
        ("", {"GATEWAY_SMS_PRICES": "81=x"}, "GATEWAY_SMS_PRICES.81: expected a number, got 'x'"),
        # The environment wins, so a bad value there is named by its variable, not by the file's key.
        ("[smpp]\nport = 1\n", {"GATEWAY_SMPP_PORT": "x"}, "GATEWAY_SMPP_PORT: expected an integer, got 'x'"),
        ("[smpp]\nport = true\n", {}, "smpp.port: expected an integer, got True"),
        ("[simulator]\nenabled = 1\n", {}, "simulator.enabled: expected a boolean, got 1"),
        ("[http]\nhost = 8080\n", {}, "http.host: expected a string, got 8080"),
        ("[sms.prices]\n'81' = 'cheap'\n", {}, "sms.prices.81: expected a number, got 'cheap'"),
        ("smpp = 1\n", {}, "[smpp] must be a table"),
    ],
)
def test_a_bad_value_names_its_key_and_what_it_should_be(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert str(caught.value) == message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[smpp]\nport = 'x'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"GATEWAY_SMPP_WINDOW": "ten", "GATEWAY_NOPE": "1"})
    assert sorted(str(caught.value).splitlines()) == [
        "GATEWAY_SMPP_WINDOW: expected an integer, got 'ten'",
        "smpp.port: expected an integer, got 'x'",
        "unknown environment variable GATEWAY_NOPE",
    ]


@pytest.mark.parametrize("command", [["run"], ["config", "show"]])
def test_the_command_stops_on_an_unknown_variable_with_one_clear_line(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"PYTHONPATH": str(ROOT), "GATEWAY_VOICE_AMI_SECRT": "s3cret"}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "config error: unknown environment variable GATEWAY_VOICE_AMI_SECRT; "
        "did you mean GATEWAY_VOICE_AMI_SECRET?\n"
    )
    assert "s3cret" not in proc.stdout + proc.stderr


def test_defaults_do_not_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config() is the embedded defaults (the README table, the tests' starting point); only
    load_config reads the environment."""
    from gateway.config import Config

    monkeypatch.setenv("GATEWAY_SMPP_PORT", "2999")
    assert Config().smpp.port == 2775 and load_config(env=os.environ).smpp.port == 2999


def test_readme_config_reference_has_no_stale_rows() -> None:
    from gateway.config import config_keys

    rows = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", (ROOT / "README.md").read_text(), re.MULTILINE)
    assert rows == [key for key, _, _ in config_keys()]


def test_every_gateway_variable_the_tools_read_is_a_setting() -> None:
    """Test and tool knobs are GWTEST_*/GWLIVE_*: a GATEWAY_ one would stop every gateway the
    suite starts with that environment."""
    from gateway.config import NOT_SETTINGS, config_keys

    settings = {env for _, env, _ in config_keys()} | NOT_SETTINGS
    python = re.compile(r"""environ(?:\.get\(|\[)\s*["'](GATEWAY_\w+)""")
    shell = re.compile(r"\$\{?(GATEWAY_\w+)")
    code = ("gateway", "smpp", "actions_dsl", "asterisk", "tests", "bench", "fuzz")
    files = [*(f for d in code for f in (ROOT / d).glob("**/*.py")), *ROOT.glob("scripts/*")]
    read = set()
    for file in [*files, *ROOT.glob("docker/**/*.sh"), ROOT / ".ci" / "run"]:
        if "node_modules" in file.parts:
            continue
        text = file.read_text(errors="replace")
        read |= {(m, file.name) for m in python.findall(text)}
        if file.suffix != ".py":
            read |= {(m, file.name) for m in shell.findall(text)}
    assert read and {(name, where) for name, where in read if name not in settings} == set()


def test_connectors_take_what_they_leave_out_from_smpp(tmp_path: Path) -> None:
    from gateway.config import effective, smsc_connectors

    path = tmp_path / "c.toml"
    path.write_text(
        "[smpp]\nhost = 'smsc.example.net'\nwindow = 50\n"
        "[[smpp.connectors]]\nid = 'a'\nport = 2800\npassword = 'pw-a'\n"
        "[[smpp.connectors]]\nid = 'b-2'\nhost = 'other.example.net'\nbinds = 3\n"
        "bind_mode = 'transmitter_receiver'\n"
    )
    cfg = load_config(path, env={"GATEWAY_SMPP_PASSWORD": "shared-pw"})
    a, b = smsc_connectors(cfg.smpp)
    assert (a.id, a.host, a.port, a.window, a.password) == ("a", "smsc.example.net", 2800, 50, "pw-a")
    assert (b.id, b.host, b.port, b.window, b.password) == ("b-2", "other.example.net", 2775, 50, "shared-pw")
    assert (b.binds, b.bind_mode) == (3, "transmitter_receiver")
    shown = json.dumps(effective(cfg))
    assert "pw-a" not in shown and "shared-pw" not in shown
    # None listed: [smpp] itself is the one connector, `default`.
    [default] = smsc_connectors(load_config(env={"GATEWAY_SMPP_BINDS": "2"}).smpp)
    assert (default.id, default.binds, default.host) == ("default", 2, "127.0.0.1")


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[[smpp.connectors]]\nhost = 'x'\n", {}, "smpp.connectors[0].id is required"),
        (
            "[[smpp.connectors]]\nid = 'A b'\n",
            {},
            "smpp.connectors[0].id: String should match pattern '^[a-z0-9_-]{1,32}$', got 'A b'",
        ),
        (
            "[[smpp.connectors]]\nid = 'a'\n[[smpp.connectors]]\nid = 'a'\n",
            {},
            "[smpp]: connector id a is given more than once",
        ),
        (
            "[[smpp.connectors]]\nid = 'a'\nprot = 1\n",
            {},
            "unknown config key smpp.connectors[0].prot; did you mean smpp.connectors[0].port?",
        ),
        (
            "[[smpp.connectors]]\nid = 'a'\nport = 'x'\n",
            {},
            "smpp.connectors[0].port: expected an integer, got 'x'",
        ),
        ("[smpp]\nconnectors = [1]\n", {}, "smpp.connectors[0] must be a table"),
        ("[smpp]\nbinds = 0\n", {}, "smpp.binds: Input should be greater than or equal to 1, got 0"),
        (
            "",
            {"GATEWAY_SMPP_DATA_CODING": "2"},
            "GATEWAY_SMPP_DATA_CODING: should be one of 0, 1 or 3, got '2'",
        ),
        (
            "",
            {"GATEWAY_SMPP_CONNECTORS": "[]"},
            "GATEWAY_SMPP_CONNECTORS is no setting: [[smpp.connectors]] are given in the configuration file",
        ),
    ],
)
def test_a_bad_connector_is_named(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert str(caught.value) == message
