"""`gateway` command: migrate, run, and the operator's account, template and number actions."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from gateway import logs, simulate
from gateway.config import Config, ConfigError, effective, load_config
from gateway.db import migrate
from gateway.db.engine import create_engine, is_sqlite, session_factory
from gateway.services.accounts import AccountService
from gateway.services.dialing import RIGHTS_COLUMNS, is_phone_number, parse_prefixes, update_rights
from gateway.services.errors import ApiError
from gateway.services.senders import canonical
from gateway.services.templates import TemplateService
from gateway.version import version

T = TypeVar("T")
log = logging.getLogger("gateway")


def _with_services(config: Config, fn: Callable[[AccountService, TemplateService], Awaitable[T]]) -> T:
    async def go() -> T:
        engine = create_engine(config.database.url)
        sessions = session_factory(engine)
        try:
            return await fn(AccountService(sessions), TemplateService(sessions))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_config(config: Config, args: argparse.Namespace) -> int:
    _print(effective(config))
    return 0


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    migrate.upgrade(config.database.url)
    print("database is at the latest schema")
    return 0


def cmd_accounts(config: Config, args: argparse.Namespace) -> int:
    async def go(accounts: AccountService, _t: TemplateService) -> int:
        if args.action == "create":
            try:
                creds = await accounts.create(
                    args.name, freeform=args.freeform, webhook_secret=args.webhook_secret, senders=args.sender
                )
            except ValueError as exc:
                print(f"error: {exc}; nothing created", file=sys.stderr)
                return 2
            _print(
                {
                    "sid": creds.account.sid,
                    "auth_token": creds.auth_token,
                    "name": creds.account.name,
                    "freeform": creds.account.freeform,
                    "webhook_secret": creds.account.webhook_secret,
                    "senders": sorted({canonical(x) for x in args.sender}),
                }
            )
            return 0
        if args.action == "list":
            _print(
                [
                    {"id": a.id, "sid": a.sid, "name": a.name, "freeform": a.freeform, "disabled": a.disabled}
                    for a in await accounts.list()
                ]
            )
            return 0
        if args.action == "rotate-token":
            token = await accounts.rotate_token(args.sid)
            if token is None:
                print(f"no account {args.sid}", file=sys.stderr)
                return 1
            _print({"sid": args.sid, "auth_token": token})
            return 0
        if args.action == "set":
            try:
                info = await accounts.update_flags(
                    args.sid, freeform=args.freeform, webhook_secret=args.webhook_secret
                )
            except ValueError as exc:
                print(f"error: {exc}; nothing changed", file=sys.stderr)
                return 2
            if info is None:
                print(f"no account {args.sid}", file=sys.stderr)
                return 1
            if args.rate is not None or args.burst is not None:
                rate = info.rate if args.rate is None else (None if args.rate == DEFAULT else args.rate)
                burst = info.burst if args.burst is None else (None if args.burst == DEFAULT else args.burst)
                try:
                    info = await accounts.set_rate_limit(args.sid, rate, burst) or info
                except ValueError as exc:
                    print(f"error: {exc}; the rate limit is unchanged", file=sys.stderr)
                    return 2
            rights = await _update_dialing(config, args)
            _print(
                {
                    "sid": info.sid,
                    "freeform": info.freeform,
                    "webhook_secret": info.webhook_secret,
                    "rate_limit": info.rate,
                    "rate_burst": info.burst,
                    **rights,
                }
            )
            return 0
        if args.action in ("disable", "enable"):
            info = await accounts.set_disabled(args.sid, args.action == "disable")
            if info is None:
                print(f"no account {args.sid}", file=sys.stderr)
                return 1
            _print({"sid": info.sid, "disabled": info.disabled})
            return 0
        raise AssertionError(args.action)

    return _with_services(config, go)


def cmd_senders(config: Config, args: argparse.Namespace) -> int:
    """An account's sender allow-list (gateway/services/senders.py)."""
    from gateway.services.senders import SenderService

    async def go() -> int:
        engine = create_engine(config.database.url)
        senders = SenderService(session_factory(engine))
        try:
            if args.action == "add":
                found = await senders.add(args.sid, args.senders)
            elif args.action == "remove":
                found = await senders.remove(args.sid, args.senders)
            else:
                found = True
            listed = await senders.list(args.sid) if found else None
        except ValueError as exc:
            print(f"error: {exc}; nothing changed", file=sys.stderr)
            return 2
        finally:
            await engine.dispose()
        if listed is None:
            print(f"no account {args.sid}", file=sys.stderr)
            return 1
        allowed, sins = listed
        _print(
            {
                "sid": args.sid,
                "senders": [
                    {
                        "sender": a.sender,
                        "origin": a.origin,
                        "added": a.created_at.isoformat(timespec="seconds"),
                    }
                    for a in allowed
                ],
                "sins": sins,
            }
        )
        return 0

    if args.action in ("add", "remove") and not args.senders:
        print(f"error: {args.action} needs at least one sender", file=sys.stderr)
        return 2
    if args.action == "list" and args.senders:
        print("error: list takes no senders", file=sys.stderr)
        return 2
    return asyncio.run(go())


def cmd_smpp_credentials(config: Config, args: argparse.Namespace) -> int:
    """New SMPP server credentials for an account (gateway/services/smpp_credentials.py), shown once."""
    from gateway.services.smpp_credentials import issue_credentials

    async def go() -> int:
        engine = create_engine(config.database.url)
        try:
            issued = await issue_credentials(session_factory(engine), args.sid)
        finally:
            await engine.dispose()
        if issued is None:
            print(f"no account {args.sid}", file=sys.stderr)
            return 1
        _print({"sid": args.sid, "system_id": issued.system_id, "password": issued.password})
        return 0

    return asyncio.run(go())


DEFAULT = "default"  # `accounts set --outbound-...=default`: back to the global setting


def _prefixes_arg(value: str) -> str:
    if value == DEFAULT:
        return value
    try:
        return ",".join(parse_prefixes(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit_arg(value: str) -> str | int:
    if value == DEFAULT:
        return value
    if not (value.isascii() and value.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or {DEFAULT!r}, got {value!r}")
    return int(value)


def _rate_arg(value: str) -> str | float:
    if value == DEFAULT:
        return value
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1_000_000:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"expected requests per second >= 0 or {DEFAULT!r}, got {value!r}")
    return rate


def _caller_arg(value: str) -> str:
    if not is_phone_number(value):
        raise argparse.ArgumentTypeError(f"expected a valid E.164 number, e.g. +81312345678, got {value!r}")
    return value


async def _update_dialing(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """The account's toll-fraud overrides (gateway/services/dialing.py)."""
    columns = {
        name: None if value == DEFAULT else value
        for name in RIGHTS_COLUMNS
        if (value := getattr(args, name)) is not None
    }
    engine = create_engine(config.database.url)
    try:
        rights = await update_rights(
            session_factory(engine),
            args.sid,
            columns,
            args.add_verified_caller or (),
            args.remove_verified_caller or (),
        )
    finally:
        await engine.dispose()
    return rights or {}


def cmd_templates(config: Config, args: argparse.Namespace) -> int:
    status = {"approve": "APPROVED", "reject": "REJECTED"}[args.action]

    async def go(_a: AccountService, templates: TemplateService) -> int:
        try:
            _print(await templates.set_status(args.template_id, status))
        except ApiError:
            print(f"no template {args.template_id}", file=sys.stderr)
            return 1
        return 0

    return _with_services(config, go)


def cmd_numbers(config: Config, args: argparse.Namespace) -> int:
    """Number inventory: import a CSV (all or nothing), list with optional filters."""
    from gateway.services.number_import import NumberImportError, parse_numbers_csv
    from gateway.services.numbers import NumberService

    rows = []
    if args.action == "import":
        try:
            data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
            rows = parse_numbers_csv(data)
        except OSError as exc:
            print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
        except NumberImportError as exc:
            print("\n".join(exc.errors), file=sys.stderr)
            print(f"{len(exc.errors)} error(s); nothing imported", file=sys.stderr)
            return 1

    async def go() -> int:
        engine = create_engine(config.database.url)
        numbers = NumberService(session_factory(engine))
        try:
            if args.action == "import":
                result = await numbers.import_numbers(rows)
                _print({"created": result.created, "updated": result.updated})
            else:
                _print(await numbers.list_inventory(args.country, args.prefix))
            return 0
        except NumberImportError as exc:
            print("\n".join(exc.errors), file=sys.stderr)
            print(f"{len(exc.errors)} error(s); nothing imported", file=sys.stderr)
            return 1
        except ApiError as exc:  # bad --country / --prefix
            print(json.dumps(exc.body), file=sys.stderr)
            return 1
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _demo_credentials(config: Config) -> dict[str, str]:
    """On embedded defaults, make sure there is a demo account; its SID and token."""
    creds_file = Path(config.data.dir, "demo-account.json")
    known = json.loads(creds_file.read_text()) if creds_file.exists() else None

    async def go(accounts: AccountService, _t: TemplateService) -> dict[str, str] | None:
        if known is not None and await accounts.get(known["sid"]) is not None:
            return None
        creds = await accounts.create("demo", freeform=True, senders=["DEMO"])
        return {
            "sid": creds.account.sid,
            "auth_token": creds.auth_token,
            "webhook_secret": creds.account.webhook_secret,
        }

    created = _with_services(config, go)
    if created is not None:
        # The token is only ever shown here and at creation: the file is 0600 from its first
        # byte (mkstemp), and appears complete under its name.
        creds_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=creds_file.parent, prefix=".demo-account.")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(json.dumps(created, indent=2))
            os.replace(tmp, creds_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    data = created or known
    assert data is not None
    return data


def _announce(config: Config, data: dict[str, str] | None) -> None:
    if data is None:
        return
    base = config.public_base_url
    print(f"Data directory:     {config.data.dir}")
    print(f"Demo account SID:   {data['sid']}")
    print(f"Demo account token: {data['auth_token']}")
    print(f"API:                {base}/  (HTTP Basic SID:token; docs at {base}/docs)")
    # --data-urlencode: with -d, the + of the number arrives as a space and the send is refused.
    print(
        f"Try: curl -u {data['sid']}:{data['auth_token']} -d message=Hello "
        f"--data-urlencode recipient=+818012345678 -d sender=DEMO {base}/sms/messages/"
    )
    sys.stdout.flush()


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from gateway.app import create_app
    from gateway.http.listener import serve
    from gateway.http.request_log import AccessLogger, access_logger
    from gateway.net import fds
    from gateway.net.listening import ListenError

    app = create_app(config)  # first: a configuration it refuses touches nothing
    log.info("data directory %s", config.data.dir)
    if config.database.migrate_on_start:
        migrate.upgrade(config.database.url)
    demo = _demo_credentials(config) if config.simulator.enabled and is_sqlite(config.database.url) else None
    _fit_connection_caps(config, fds.raise_nofile_limit())
    # SQLite work runs on aiosqlite's thread; with the default 5 ms GIL switch interval every
    # statement can wait that long behind a busy event loop (seen as p99 API latency x3).
    sys.setswitchinterval(0.0005)

    async def main() -> None:
        fds.throttle_accept_errors(asyncio.get_running_loop())
        await serve(
            app,
            config.http,
            # Credentials and "Try:" only once every listener is up: after a failed start they
            # would be the last thing on the screen, above nothing that works.
            on_listening=partial(_announce, config, demo),
            access_log=access_logger() if config.log.access else None,
            access_log_class=AccessLogger,
        )

    try:
        asyncio.run(main())
    except ListenError as exc:
        # Exit 2 like any other setting the gateway cannot run with: restarting unchanged
        # does not help (unless the other program goes away).
        logs.flush()
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def _fit_connection_caps(config: Config, open_files: int) -> None:
    """Lower the listeners' connection caps so that, together, they leave descriptors free."""
    from gateway.net.fds import fit_caps

    http, voice = config.http, config.voice
    caps = [http.max_connections, voice.fastagi_max_connections if voice.fastagi_enabled else 0]
    fitted = fit_caps(caps, open_files)
    if fitted != caps:
        log.warning(
            "open-files limit %d: connection caps lowered to http.max_connections=%d, "
            "voice.fastagi_max_connections=%d",
            open_files,
            *fitted,
        )
        http.max_connections = fitted[0]
        if voice.fastagi_enabled:
            voice.fastagi_max_connections = fitted[1]


def cmd_inbound(config: Config, args: argparse.Namespace) -> int:
    """MO to numbers nobody subscribed to are kept; the operator sees them here."""

    async def go() -> int:
        from sqlalchemy import func, select

        from gateway.db.models import InboundMessage

        engine = create_engine(config.database.url)
        try:
            async with session_factory(engine)() as s:
                unrouted = InboundMessage.account_id.is_(None)
                count = await s.scalar(select(func.count()).select_from(InboundMessage).where(unrouted))
                rows = (
                    await s.execute(
                        select(InboundMessage)
                        .where(unrouted)
                        .order_by(InboundMessage.received_at.desc())
                        .limit(args.limit)
                    )
                ).scalars()
                _print(
                    {
                        "unrouted": count,
                        "latest": [
                            {
                                "id": r.uid,
                                "sender": r.sender,
                                "recipient": r.recipient,
                                "recv_time": r.received_at.strftime("%Y-%m-%d %H:%M:%S"),
                            }
                            for r in rows
                        ],
                    }
                )
        finally:
            await engine.dispose()
        return 0

    return asyncio.run(go())


def cmd_console(config: Config, args: argparse.Namespace) -> int:
    """`console hash-password`: the value for console.operator_password_hash. The password is
    read from stdin (one line) or asked for without echo, never taken as an argument (it would
    sit in the shell history and the process list)."""
    import getpass

    from gateway.http.console.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("operator password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(hash_password(password))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    p.add_argument("--config", help="TOML config file (default: $GATEWAY_CONFIG, else embedded defaults)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: log.level, INFO)")
    p.add_argument("--log-format", choices=logs.FORMATS, help="text or json (default: log.format, text)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    sub.add_parser("run", help="run the gateway (migrates first)").set_defaults(fn=cmd_run)
    cfg = sub.add_parser("config", help="the configuration in force").add_subparsers(
        dest="action", required=True
    )
    cfg.add_parser(
        "show", help="print the effective configuration (file, then GATEWAY_* variables), secrets masked"
    ).set_defaults(fn=cmd_config)

    acc = sub.add_parser("accounts", help="manage API accounts").add_subparsers(dest="action", required=True)
    create = acc.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--freeform", action="store_true", help="allow freeform (non-template) SMS")
    create.add_argument(
        "--sender", action="append", default=[], help="a sender id it may use (see `senders`); repeatable"
    )
    create.add_argument(
        "--webhook-secret", help="HMAC secret for webhooks, 16 to 128 characters (default: random)"
    )
    acc.add_parser("list")
    rot = acc.add_parser("rotate-token")
    rot.add_argument("sid")
    st = acc.add_parser("set")
    st.add_argument("sid")
    st.add_argument("--freeform", action=argparse.BooleanOptionalAction, default=None)
    st.add_argument("--webhook-secret", help="16 to 128 characters")
    st.add_argument(
        "--outbound-allow-prefixes",
        dest="outbound_allow_prefixes",
        type=_prefixes_arg,
        metavar="PREFIXES",
        help='E.164 prefixes this account may call or transfer to, e.g. "+81,+1"; "" none; '
        f'"{DEFAULT}" the global voice.outbound_allow_prefixes / transfer_allow_prefixes',
    )
    for limit in ("concurrent", "per_minute"):
        st.add_argument(
            f"--outbound-max-{limit.replace('_', '-')}",
            dest=f"outbound_max_{limit}",
            type=_limit_arg,
            metavar="N",
            help=f'this account\'s limit (0: no outbound calls); "{DEFAULT}" voice.outbound_max_{limit}',
        )
    st.add_argument(
        "--rate",
        type=_rate_arg,
        metavar="PER_SECOND",
        help=f'this account\'s API requests per second (0: no limit); "{DEFAULT}" ratelimit.rate',
    )
    st.add_argument(
        "--burst",
        type=_limit_arg,
        metavar="N",
        help=f'requests it may send at once (1 to 100,000); "{DEFAULT}" ratelimit.burst',
    )
    st.add_argument(
        "--add-verified-caller",
        action="append",
        type=_caller_arg,
        metavar="E164",
        help="a caller id this account may show besides its DINs (checked by you); repeatable",
    )
    st.add_argument("--remove-verified-caller", action="append", metavar="E164", help="repeatable")
    acc.add_parser(
        "disable", help="refuse its API credentials (within seconds) and hold its queued messages"
    ).add_argument("sid")
    acc.add_parser("enable", help="undo disable").add_argument("sid")
    for name in ("create", "list", "rotate-token", "set", "disable", "enable"):
        acc.choices[name].set_defaults(fn=cmd_accounts)
    snd = acc.add_parser(
        "senders",
        help="the sender ids an account may use besides its SINs: alphanumeric (1-11 letters, digits,"
        " single spaces) or numbers you verified it owns",
    )
    snd.add_argument("sid")
    snd.add_argument("action", choices=("list", "add", "remove"))
    snd.add_argument("senders", nargs="*", metavar="SENDER", help='e.g. SHOP "My Shop" +81312345678')
    snd.set_defaults(fn=cmd_senders)
    creds = acc.add_parser(
        "smpp-credentials",
        help="issue a system_id and password for the SMPP server (printed once; replaces any earlier pair)",
    )
    creds.add_argument("sid")
    creds.set_defaults(fn=cmd_smpp_credentials)

    inb = sub.add_parser("inbound", help="inbound SMS housekeeping").add_subparsers(
        dest="action", required=True
    )
    unr = inb.add_parser("unrouted", help="MO received on numbers without a SIN subscription")
    unr.add_argument("--limit", type=int, default=20)
    unr.set_defaults(fn=cmd_inbound)

    tpl = sub.add_parser("templates", help="operator approval of SMS templates")
    tpl_sub = tpl.add_subparsers(dest="action", required=True)
    for action in ("approve", "reject"):
        a = tpl_sub.add_parser(action)
        a.add_argument("template_id")
        a.set_defaults(fn=cmd_templates)

    num = sub.add_parser("numbers", help="number inventory for SIN/DIN subscriptions")
    num_sub = num.add_subparsers(dest="action", required=True)
    imp = num_sub.add_parser(
        "import",
        help="upsert numbers from CSV (header: number,country_code,sms,voice,monthly_cost,minute_cost"
        " and optionally prefix, the local area prefix, derived when empty); any bad row imports nothing",
    )
    imp.add_argument("file", help="CSV file, or - for stdin")
    imp.set_defaults(fn=cmd_numbers)
    nls = num_sub.add_parser("list", help="list the inventory and who holds each number")
    nls.add_argument("--country", help="2-letter country code, e.g. JP")
    nls.add_argument("--prefix", help="leading digits of the number, e.g. 813")
    nls.set_defaults(fn=cmd_numbers)

    con = sub.add_parser("console", help="the web console").add_subparsers(dest="action", required=True)
    con.add_parser(
        "hash-password",
        help="print the hash of an operator password (read from stdin) for console.operator_password_hash",
    ).set_defaults(fn=cmd_console)

    simulate.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        logs.configure(
            args.log_format or config.log.format,
            args.log_level or config.log.level,
            threaded=args.fn is cmd_run,
        )
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    # Everything the gateway writes (the SQLite database and its WAL, var/, the demo credentials,
    # the voice data dir) is private to its user: webhook secrets and caller audio live there.
    # Asterisk reads and writes the voice data dir as the same user (docker-compose runs both
    # as uid 10001).
    os.umask(0o077)
    if args.fn not in (cmd_migrate, cmd_run, cmd_config, cmd_console):  # no database, or brought to head
        problem = migrate.schema_problem(config.database.url)
        if problem is not None:
            logs.flush()
            print(problem, file=sys.stderr)
            return 1
    try:
        result: int = args.fn(config, args)
    except ConfigError as exc:  # e.g. `run` with settings the app refuses (create_app)
        logs.flush()
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
