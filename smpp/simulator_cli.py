"""Command line for the SMSC simulator: `python -m smpp.simulator_cli [options]`.

Runs until SIGINT/SIGTERM. Prints one startup line (with the real port, useful
with --port 0) and logs binds and activity summaries through logging.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from smpp.simulator import SimulatorConfig, SmscSimulator
from smpp.simulator_control import ControlServer
from smpp.simulator_model import DLR_MODES, ID_FORMATS


def build_arg_parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m smpp.simulator_cli", description="SMPP 3.4 SMSC simulator"
    )
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="0 picks a free port")
    parser.add_argument("--system-id", default=defaults.system_id)
    parser.add_argument("--password", default=defaults.password)
    parser.add_argument("--any-credentials", action="store_true", help="accept any system_id/password")
    parser.add_argument("--dlr-delay", type=float, default=defaults.dlr_delay, help="seconds")
    parser.add_argument("--dlr-stat", default=defaults.dlr_stat)
    parser.add_argument("--dlr-mode", choices=DLR_MODES, default=defaults.dlr_mode)
    parser.add_argument("--id-format", choices=ID_FORMATS, default=defaults.id_format)
    parser.add_argument("--dlr-id-format", choices=ID_FORMATS, default=None)
    parser.add_argument(
        "--fail-prefix",
        default=defaults.fail_prefix,
        help="destinations starting with it get UNDELIV ('' = off)",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=0,
        help="loopback control port for `gateway simulate mo --control-port N` (0 = off)",
    )
    parser.add_argument("--summary-interval", type=float, default=defaults.summary_interval)
    parser.add_argument(
        "--bind-rate", type=float, default=0.0, help="submit_sm served per second per bind (0 = no cap)"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        system_id=args.system_id,
        password=None if args.any_credentials else args.password,
        dlr_delay=args.dlr_delay,
        dlr_stat=args.dlr_stat,
        dlr_mode=args.dlr_mode,
        id_format=args.id_format,
        dlr_id_format=args.dlr_id_format,
        fail_prefix=args.fail_prefix or None,
        summary_interval=args.summary_interval,
        bind_rate=args.bind_rate,
    )


async def serve_until_signalled(config: SimulatorConfig, control_port: int = 0) -> None:
    simulator = SmscSimulator(config)
    await simulator.start()
    control = ControlServer(simulator, control_port)
    if control_port:
        await control.start()
    print(
        f"SMSC simulator listening on {config.host}:{simulator.port} (system_id={config.system_id})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await control.stop()
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve_until_signalled(config_from_args(args), args.control_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
