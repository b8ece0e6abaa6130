"""`gateway simulate ...`: play the telco's side against a running gateway, for demos and
for developing webhooks and action_url scripts without an SMSC or an Asterisk.

`simulate mo` asks the built-in SMSC simulator (through its loopback control port,
smpp/simulator_control.py) to deliver a mobile-originated SMS to the gateway bound to it, and
prints the replies the gateway sends back to that handset. `simulate call` plays Asterisk's
side of one call over FastAGI (gateway/simulate_call.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway.config import Config
from smpp.simulator_control import HOST as CONTROL_HOST

_DATA_CODINGS = {0: "GSM 7-bit", 8: "UCS-2"}
QUIET = 1.0  # seconds without a further reply after which `simulate mo` stops waiting


class SimulateError(Exception):
    """Ends the command with one line on stderr (exit 1)."""


async def _control(port: int, request: dict[str, Any]) -> dict[str, Any]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(CONTROL_HOST, port), 5)
    except (OSError, TimeoutError) as exc:
        raise SimulateError(
            f"no SMSC simulator control port on {CONTROL_HOST}:{port} ({exc}): is `gateway run` "
            "running here with simulator.enabled and simulator.control_port set?"
        ) from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        line = await asyncio.wait_for(reader.readline(), 10)
    except (OSError, TimeoutError) as exc:
        raise SimulateError(f"the simulator control port did not answer: {exc}") from None
    finally:
        writer.close()
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise SimulateError(f"{CONTROL_HOST}:{port} does not speak the simulator control protocol")
    if not answer.get("ok"):
        raise SimulateError(f"refused: {answer.get('error')}")
    return answer


async def _mo(port: int, args: argparse.Namespace) -> None:
    answer = await _control(
        port, {"op": "mo", "source": args.source, "destination": args.destination, "text": args.text}
    )
    parts = answer["parts"]
    coding = _DATA_CODINGS.get(answer["data_coding"], f"data_coding {answer['data_coding']}")
    print(
        f"injected MO {args.source} -> {args.destination}: {len(parts)} part(s), {coding}, "
        f"{sum(p['octets'] for p in parts)} octets"
        + ("" if answer["receiver_bound"] else " (held until the gateway binds)"),
        flush=True,
    )
    # Replies are whatever the SMSC accepts for the handset from now on: wait up to --wait
    # seconds for the first, then until QUIET seconds pass without another.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.wait
    shown = 0
    while True:
        replies = await _control(
            port, {"op": "replies", "destination": args.source, "since": answer["injected_at"]}
        )
        for reply in replies["messages"][shown:]:
            print(f"reply from +{reply['source'].lstrip('+')}: {reply['text']}", flush=True)
            deadline = min(deadline, loop.time() + QUIET)
        shown = max(shown, len(replies["messages"]))
        if loop.time() >= deadline:
            break
        await asyncio.sleep(min(0.2, max(deadline - loop.time(), 0)))
    if args.wait > 0 and shown == 0:
        print(f"no reply within {args.wait:g} s", flush=True)


def cmd_simulate(config: Config, args: argparse.Namespace) -> int:
    from gateway.simulate_call import CallError, simulate_call

    try:
        if args.action == "mo":
            port = args.control_port if args.control_port is not None else config.simulator.control_port
            if not port:
                raise SimulateError("simulator.control_port is 0: the control port is off")
            asyncio.run(_mo(port, args))
        else:
            print("\n".join(asyncio.run(simulate_call(config, args))))
        return 0
    except (SimulateError, CallError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def add_parser(sub: Any) -> None:
    """Register `simulate` on the top-level subparsers of gateway/cli.py."""
    sim = sub.add_parser("simulate", help="play the telco's side (SMS from a handset, a call)")
    actions = sim.add_subparsers(dest="action", required=True)
    mo = actions.add_parser(
        "mo",
        help="deliver an SMS from a handset to the running gateway through the built-in simulator",
    )
    mo.add_argument("--from", dest="source", required=True, help="the handset, e.g. +819011112222")
    mo.add_argument("--to", dest="destination", required=True, help="the gateway's number (a SIN)")
    mo.add_argument("text")
    mo.add_argument(
        "--wait",
        type=float,
        default=3.0,
        help="seconds to wait for a reply to the handset (default 3); replies print as they come",
    )
    mo.add_argument(
        "--control-port", type=int, default=None, help="default: simulator.control_port from the config"
    )
    mo.set_defaults(fn=cmd_simulate)
    call = actions.add_parser(
        "call",
        help="call a DIN over FastAGI as Asterisk would, and print what the caller hears",
    )
    call.add_argument("--din", required=True, help="the number called, e.g. +81312345678")
    call.add_argument("--caller", required=True, help="the calling number, e.g. +819011112222")
    call.add_argument(
        "--digits",
        default="",
        help="DTMF keys the caller presses, a group per menu as each listens: 1,2# answers 1 to the "
        "first gather and 2# to the next; # also ends a recording",
    )
    call.add_argument("--voicemail-wav", help="a WAV file: what the caller says if voicemail records")
    call.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each command")
    call.set_defaults(fn=cmd_simulate)
