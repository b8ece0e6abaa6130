"""The operator's commands and the one-command start on embedded defaults, as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.services.accounts import AccountService
from tests.cli_runner import run_gateway_command
from tests.conftest import ROOT, Gateway, basic, free_port, serve_app, wait_for
from tests.procs import subscribe_sin

SIN = "+81312345678"
CUSTOMER = "+819011112222"


async def run_cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """`python -m gateway *args` as its own process (forked from a process that has the CLI
    imported: tests/cli_runner.py)."""
    return await asyncio.wait_for(asyncio.to_thread(run_gateway_command, env, list(args), cwd), 60)


async def test_account_and_template_commands(clean_db: str) -> None:
    env = {"GATEWAY_DATABASE_URL": clean_db}
    secret = "s3cret-shared-with-the-receiver"
    code, out, err = await run_cli(env, "accounts", "create", "--name", "acme", "--webhook-secret", secret)
    assert code == 0, err
    acct = json.loads(out)
    assert acct["freeform"] is False and acct["webhook_secret"] == secret and len(acct["auth_token"]) > 30
    stored = await _sql(clean_db, "SELECT token_hash FROM accounts")
    assert acct["auth_token"] not in str(stored)  # only the hash is stored

    code, out, _ = await run_cli(env, "accounts", "set", acct["sid"], "--freeform")
    assert code == 0 and json.loads(out)["freeform"] is True
    code, out, _ = await run_cli(env, "accounts", "rotate-token", acct["sid"])
    assert code == 0 and json.loads(out)["auth_token"] != acct["auth_token"]
    code, out, _ = await run_cli(env, "accounts", "list")
    assert [(a["sid"], a["disabled"]) for a in json.loads(out)] == [(acct["sid"], False)]
    code, _, err = await run_cli(env, "accounts", "rotate-token", "nope")
    assert code == 1 and "no account" in err
    code, _, err = await run_cli(env, "templates", "approve", "nope")
    assert code == 1 and "no template" in err
    code, _, err = await run_cli({"GATEWAY_SMPP_PORT": "not-a-number"}, "accounts", "list")
    assert code == 2 and "GATEWAY_SMPP_PORT" in err


async def test_accounts_set_manages_the_toll_fraud_overrides(clean_db: str) -> None:
    env = {"GATEWAY_DATABASE_URL": clean_db}
    code, out, err = await run_cli(env, "accounts", "create", "--name", "acme")
    assert code == 0, err
    sid = json.loads(out)["sid"]
    code, out, err = await run_cli(
        env,
        "accounts",
        "set",
        sid,
        "--outbound-allow-prefixes",
        "81, +1415",
        "--outbound-max-concurrent",
        "2",
        "--outbound-max-per-minute",
        "0",
        "--add-verified-caller",
        "+815012345678",
        "--add-verified-caller",
        "+81312345678",
        "--rate",
        "2.5",
        "--burst",
        "10",
    )
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["rate_limit"], shown["rate_burst"]) == (2.5, 10)
    assert shown["outbound_allow_prefixes"] == "+81,+1415"
    assert (shown["outbound_max_concurrent"], shown["outbound_max_per_minute"]) == (2, 0)
    assert shown["verified_callers"] == ["+81312345678", "+815012345678"]
    code, out, err = await run_cli(
        env,
        "accounts",
        "set",
        sid,
        "--outbound-allow-prefixes",
        "default",
        "--outbound-max-concurrent",
        "default",
        "--remove-verified-caller",
        "+81312345678",
        "--rate",
        "default",
    )
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["rate_limit"], shown["rate_burst"]) == (None, 10)  # --burst not given: kept
    assert shown["outbound_allow_prefixes"] is None and shown["outbound_max_concurrent"] is None
    assert shown["outbound_max_per_minute"] == 0 and shown["verified_callers"] == ["+815012345678"]
    assert await _sql(
        clean_db,
        "SELECT outbound_allow_prefixes, outbound_max_concurrent, outbound_max_per_minute, "
        "verified_callers FROM accounts",
    ) == [(None, None, 0, "+815012345678")]
    for bad in (
        ["--add-verified-caller", "+8150"],
        ["--add-verified-caller", "+81312345678\r\nx"],
        ["--outbound-allow-prefixes", "+81,81x"],
        ["--outbound-max-concurrent", "-1"],
    ):
        code, _, err = await run_cli(env, "accounts", "set", sid, *bad)
        assert code == 2 and bad[0] in err, (bad, err)
    code, _, err = await run_cli(env, "accounts", "set", "nope", "--outbound-max-concurrent", "1")
    assert code == 1 and "no account" in err


async def test_the_data_directory_does_not_depend_on_the_working_directory(tmp_path: Path) -> None:
    """`templates approve` from another directory made an empty var/gateway.sqlite3 there and
    died with a `no such table` traceback; each directory got its own database."""
    data = tmp_path / "data"
    dirs = [tmp_path / name for name in ("a", "b", "c")]
    for d in dirs:
        d.mkdir()
    env = {"GATEWAY_DATA_DIR": str(data)}
    code, out, err = await run_cli(env, "templates", "approve", "nope", cwd=dirs[0])
    assert code == 1 and out == ""
    db = data / "gateway.sqlite3"
    assert err == f"database at sqlite+aiosqlite:///{db} is not migrated: run `gateway migrate`\n"
    assert not db.exists() and not (dirs[0] / "var").exists()  # nothing created

    code, _, err = await run_cli(env, "migrate", cwd=dirs[1])
    assert code == 0, err
    code, out, err = await run_cli(env, "accounts", "create", "--name", "acme", cwd=dirs[2])
    assert code == 0, err
    code, out, err = await run_cli(env, "accounts", "list", cwd=dirs[0])
    assert code == 0 and [a["name"] for a in json.loads(out)] == ["acme"], err
    assert [p.name for d in dirs for p in d.iterdir()] == []
    assert db.exists()

    # The default is ./var where the command starts, made absolute.
    del env["GATEWAY_DATA_DIR"]
    code, _, err = await run_cli(env, "accounts", "list", cwd=dirs[0])
    assert code == 1 and err.startswith(f"database at sqlite+aiosqlite:///{dirs[0]}/var/gateway.sqlite3 ")


async def test_run_refuses_ami_without_a_price_table(tmp_path: Path) -> None:
    env = {
        "GATEWAY_VOICE_AMI_ENABLED": "true",
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/gw.sqlite3",
        "GATEWAY_HTTP_PORT": str(free_port()),
        "GATEWAY_SMPP_PORT": str(free_port()),
        "GATEWAY_VOICE_FASTAGI_PORT": str(free_port()),
    }
    code, _, err = await run_cli(env, "run", cwd=tmp_path)
    assert code == 2 and "voice.outbound_prices is empty" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "gw.sqlite3").exists()  # refused before touching anything


async def test_a_webhook_secret_must_be_a_usable_hmac_key(clean_db: str) -> None:
    """An empty secret was stored as is: every receiver then accepted anyone's signature."""
    env = {"GATEWAY_DATABASE_URL": clean_db}
    for bad, reason in (
        ("", "at least 16 non-blank characters"),
        (" " * 20, "at least 16 non-blank characters"),
        ("short-secret", "at least 16 non-blank characters"),
        ("x" * 129, "at most 128 characters"),
        ("sixteen-chars-ok\x1b[2J", "control characters"),
    ):
        code, out, err = await run_cli(env, "accounts", "create", "--name", "n", "--webhook-secret", bad)
        assert (code, out) == (2, "") and reason in err and "nothing created" in err, (bad, err)
    assert await _sql(clean_db, "SELECT id FROM accounts") == []

    code, out, _ = await run_cli(env, "accounts", "create", "--name", "n")
    acct = json.loads(out)
    for bad in ("", "   \t  ", "fifteen-chars!!"):
        code, out, err = await run_cli(
            env, "accounts", "set", acct["sid"], "--webhook-secret", bad, "--freeform"
        )
        assert (code, out) == (2, "") and "nothing changed" in err, (bad, err)
    assert await _sql(clean_db, "SELECT webhook_secret, freeform FROM accounts") == [
        (acct["webhook_secret"], False)
    ]
    code, out, _ = await run_cli(env, "accounts", "set", acct["sid"], "--webhook-secret", "x" * 16)
    assert code == 0 and json.loads(out)["webhook_secret"] == "x" * 16


async def test_disable_and_enable_an_account(
    gateway: Gateway, clean_db: str, sim_smsc: Any, http: aiohttp.ClientSession
) -> None:
    env = {"GATEWAY_DATABASE_URL": clean_db}
    code, out, _ = await run_cli(env, "accounts", "create", "--name", "acme", "--freeform")
    acct = json.loads(out)
    [(account_id,)] = await gateway.sql("SELECT id FROM accounts WHERE sid = :sid", sid=acct["sid"])
    await subscribe_sin(clean_db, account_id, SIN, "")
    basic_auth = basic(acct["sid"], acct["auth_token"])
    bearer = {"Authorization": f"Bearer {acct['auth_token']}"}
    routes = [
        ("GET", "/sms/messages/", basic_auth),
        ("POST", "/sms/messages/", basic_auth),
        ("GET", "/sms/sins/subscriptions/", basic_auth),
        ("GET", "/voice/calls/", basic_auth),
        ("GET", f"/xms/v1/{acct['sid']}/inbounds", bearer),
    ]

    async def statuses() -> list[int]:
        out = []
        for method, path, headers in routes:
            async with http.request(method, gateway.base_url + path, headers=headers) as r:
                out.append(r.status)
        return out

    assert 401 not in await statuses()  # in the auth cache now

    code, out, _ = await run_cli(env, "accounts", "disable", acct["sid"])
    assert code == 0 and json.loads(out) == {"sid": acct["sid"], "disabled": True}

    async def refused() -> bool:
        return await statuses() == [401] * len(routes)

    # The node caches a good login for CACHE_TTL: refused on every route once that runs out.
    await wait_for(refused, timeout=AccountService.CACHE_TTL + 3)
    code, out, _ = await run_cli(env, "accounts", "list")
    assert json.loads(out)[0]["disabled"] is True

    # Its numbers still take MO (stored); the HELP reply it queues waits, unsent.
    await sim_smsc.inject_mo(CUSTOMER.lstrip("+"), SIN.lstrip("+"), b"HELP")

    async def reply_queued() -> list[Any]:
        return await gateway.sql(
            "SELECT status FROM messages WHERE account_id = :a AND recipient = :r", a=account_id, r=CUSTOMER
        )

    assert await wait_for(reply_queued) == [("QUEUED",)]
    await asyncio.sleep(1)  # ten dispatcher polls
    assert await reply_queued() == [("QUEUED",)]
    assert [s for s in await sim_smsc.submits() if s.destination_addr == CUSTOMER[1:]] == []

    code, out, _ = await run_cli(env, "accounts", "enable", acct["sid"])
    assert code == 0 and json.loads(out) == {"sid": acct["sid"], "disabled": False}

    async def sent() -> bool:
        return any(s.destination_addr == CUSTOMER[1:] for s in await sim_smsc.submits())

    await wait_for(sent)
    assert 401 not in await statuses()
    for action in ("disable", "enable"):
        code, _, err = await run_cli(env, "accounts", action, "nope")
        assert code == 1 and "no account" in err


async def _sql(url: str, query: str) -> list[Any]:
    from sqlalchemy import text

    from gateway.db.engine import create_engine

    engine = create_engine(url)
    async with engine.connect() as conn:
        rows = list((await conn.execute(text(query))).all())
    await engine.dispose()
    return rows


def _private_state(var: Path, pid: int) -> tuple[dict[str, int], dict[str, str], str]:
    """Modes of what `gateway run` made in var/, the demo file's content, the process's umask."""
    names = ("voice", "gateway.sqlite3", "gateway.sqlite3-wal", "gateway.sqlite3-shm", "demo-account.json")
    modes = {"var": stat.S_IMODE(var.stat().st_mode)}
    modes.update((name, stat.S_IMODE((var / name).stat().st_mode)) for name in names)
    status = Path(f"/proc/{pid}/status").read_text()
    umask = next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))
    return modes, json.loads((var / "demo-account.json").read_text()), umask


async def test_run_on_embedded_defaults(tmp_path: Path) -> None:
    """`gateway run` with no config: migrates a fresh SQLite file, starts the simulator,
    prints a demo account."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_HTTP_PORT": str(port),
        "GATEWAY_SMPP_PORT": str(free_port()),
        "GATEWAY_VOICE_FASTAGI_PORT": str(free_port()),  # 4573 may be taken by another test run
    }
    env.pop("GATEWAY_CONFIG", None)
    env.pop("GATEWAY_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        env=env,
        cwd=str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines: dict[str, str] = {}
        while "try" not in lines:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "gateway run exited early"
            if line.startswith("Data directory:"):
                lines["data"] = line.split(":", 1)[1].strip()
            if line.startswith("Demo account SID:"):
                lines["sid"] = line.split(":", 1)[1].strip()
            if line.startswith("Demo account token:"):
                lines["token"] = line.split(":", 1)[1].strip()
            if line.startswith("Try: "):
                lines["try"] = line.removeprefix("Try: ").strip()
        assert (tmp_path / "var" / "gateway.sqlite3").exists()
        assert lines["data"] == str(tmp_path / "var")
        base = f"http://127.0.0.1:{port}"
        auth = basic(lines["sid"], lines["token"])
        async with aiohttp.ClientSession() as http:
            # The credentials are printed once the gateway listens: usable the moment they show.
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            # The printed example, run as printed, sends the fields it shows, the + of the number
            # included (unencoded, a form body turns it into a space)...
            assert await _form_sent_by(lines["try"], base) == {
                "message": "Hello",
                "recipient": "+818012345678",
                "sender": "DEMO",
            }
            # ... and sends an SMS to that number.
            code, sent = await _curl(lines["try"])
            assert code == 201, sent
            msgid = json.loads(sent)[0]["msgid"]
            async with http.get(f"{base}/sms/messages/{msgid}/", headers=auth) as r:
                assert (await r.json())["recipient"] == "+818012345678"

            async def delivered() -> bool:
                async with http.get(f"{base}/sms/messages/{msgid}/", headers=auth) as r:
                    return bool((await r.json())["status"] == "DELIVERED")

            await wait_for(delivered, timeout=20)
        # Webhook secrets and the demo token live in var/: nobody but the gateway's user reads them.
        modes, demo, umask = _private_state(tmp_path / "var", proc.pid)
        assert modes == {
            "var": 0o700,
            "voice": 0o700,  # Asterisk shares the gateway's uid (docker-compose)
            "gateway.sqlite3": 0o600,
            "gateway.sqlite3-wal": 0o600,
            "gateway.sqlite3-shm": 0o600,
            "demo-account.json": 0o600,
        }
        assert demo["sid"] == lines["sid"]
        # Whatever the process creates next is private from its first byte, not chmod'ed after.
        assert umask == "0077"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0


async def _curl(command: str) -> tuple[int, str]:
    """Run a printed curl command line as a shell would split it; (HTTP status, body)."""
    argv = shlex.split(command)
    assert argv[0] == "curl", command
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    proc = await asyncio.create_subprocess_exec(
        curl, "-sS", "-w", "\n%{http_code}", *argv[1:], stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    body, _, status = out.decode().rpartition("\n")
    return int(status), body


async def _form_sent_by(command: str, base: str) -> dict[str, str]:
    """The form fields a printed curl command sends to `base`, as a server decodes them (the
    command is pointed at a receiver of our own instead)."""
    received: dict[str, str] = {}

    async def record(request: web.Request) -> web.Response:
        received.update((k, str(v)) for k, v in (await request.post()).items())
        return web.json_response([{"msgid": "x"}], status=201)

    receiver = web.Application()
    receiver.router.add_post("/sms/messages/", record)
    async with serve_app(receiver) as receiver_url:
        code, _ = await _curl(command.replace(base, receiver_url))
    assert code == 201
    return received


def _embedded_env(**ports: int) -> dict[str, str]:
    """`gateway run` on embedded defaults (SQLite in ./var, the simulator, FastAGI), on free ports
    unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    for name in ("GATEWAY_HTTP_PORT", "GATEWAY_SMPP_PORT", "GATEWAY_VOICE_FASTAGI_PORT"):
        env[name] = str(ports.get(name, free_port()))
    return env


@pytest.mark.parametrize(
    ("env_var", "setting", "listener"),
    [
        ("GATEWAY_HTTP_PORT", "http.port", "HTTP API"),
        ("GATEWAY_SMPP_PORT", "smpp.port", "SMSC simulator"),
        ("GATEWAY_VOICE_FASTAGI_PORT", "voice.fastagi_port", "FastAGI"),
    ],
)
async def test_run_with_a_port_taken_says_which_in_one_line(
    tmp_path: Path, env_var: str, setting: str, listener: str
) -> None:
    """A taken port gave a 48-line traceback, printed after the demo token as if all was well."""
    with socket.socket() as held:  # another program listening on the port
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            env=_embedded_env(**{env_var: port}),
            cwd=str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    demo = json.loads((tmp_path / "var" / "demo-account.json").read_text())  # made, but not shown
    assert demo["auth_token"] not in out + err and "Demo account" not in out and "Try:" not in out
    said = [line for line in err.splitlines() if str(port) in line]
    assert len(said) == 1, err
    assert said == [err.splitlines()[-1]]  # the last word, not buried in the log
    assert f"127.0.0.1:{port}" in said[0] and listener in said[0], said
    assert f"{setting} ({env_var})" in said[0] and "already in use" in said[0], said
