"""An Asterisk Manager Interface stand-in, playing Asterisk's side of outbound calls.

Written from Asterisk's manager protocol (main/manager.c, main/pbx.c), not from the gateway's
client, so the client is tested against the protocol:

* on connect: the greeting line `Asterisk Call Manager/9.0.0`;
* messages are `Key: Value` lines ended by CR LF (a bare LF is accepted too, as manager.c
  does), a message ends with an empty line; header names are matched case-insensitively;
* `Login` (Username/Secret; an `Events` mask, `off` meaning none): `Response: Success` /
  `Message: Authentication accepted` then `Event: FullyBooted`; wrong credentials:
  `Response: Error` / `Message: Authentication failed`, and the connection is closed; any other
  action before a login: `Response: Error` / `Message: Permission denied`;
* `Ping` -> `Response: Success` / `Ping: Pong`; `Logoff` -> `Response: Goodbye` / `Message:
  Thanks for all the fish.` and the connection is closed; unknown actions -> `Message:
  Invalid/unknown command`;
* `Originate` checks its arguments as manager.c does (`Channel not specified`, `Invalid
  channel`, `Invalid timeout`, `Invalid priority`), answers `Response: Success` / `Message:
  Originate successfully queued`, and then, as the dial thread would:
  - answered: `Event: OriginateResponse` with `Response: Success`, `Reason: 4`, the channel's
    name and Uniqueid; the dialplan of the originate's Context runs, which in gateway-outbound
    is `AGI(agi://<gateway>/outbound,${GATEWAY_CALLID})`: so the stand-in places that FastAGI
    call to the gateway (tests.peers.asterisk_agi plays the channel) and, when it ends,
    `Event: Hangup` (Cause 16, Normal Clearing);
  - not answered: `Event: Hangup` of the dialled channel (Cause 17 busy, 19 no answer, 34
    congestion, 21 rejected, 1 unallocated) then `Event: OriginateResponse` with `Response:
    Failure`, the Reason pbx_dial_reason gives (5, 3, 8, 8, 0) and `Uniqueid: <null>`.
  Events go to every logged-in session whose mask is not `off`, like manager_event.

What the test wants to happen is queued with `plan(...)`; every action received is recorded
(`actions`), and so is every byte (`received`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.peers.asterisk_agi import CallScenario, CallTranscript, fastagi_call

GREETING = "Asterisk Call Manager/9.0.0"

Outcome = Literal[
    "answer",  # answered; the dialplan's FastAGI call runs; Hangup when it ends
    "answer_no_agi",  # answered, but the FastAGI call never happens (gateway unreachable)
    "busy",
    "noanswer",
    "congestion",
    "rejected",
    "unallocated",
    "silent",  # queued, then nothing at all (events lost)
    "refuse",  # Response: Error to the Originate
    "drop",  # the connection closes before the Originate is answered
]

# outcome -> (Hangup Cause, Cause-txt, OriginateResponse Reason)
_FAILURES: dict[str, tuple[int, str, int]] = {
    "busy": (17, "User busy", 5),
    "noanswer": (19, "User alerting, no answer", 3),
    "congestion": (34, "Circuit/channel congestion", 8),
    "rejected": (21, "Call Rejected", 8),
    "unallocated": (1, "Unallocated (unassigned) number", 0),
}


@dataclass(frozen=True)
class ReceivedAction:
    headers: tuple[tuple[str, str], ...]
    raw: bytes

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def name(self) -> str:
        return self.get("Action") or ""


@dataclass
class Plan:
    outcome: Outcome = "answer"
    ring_seconds: float = 0.0  # before the outcome
    agi_first: bool = False  # the dialplan reaches the gateway before the OriginateResponse
    hold_seconds: float = 0.0  # answer_no_agi: how long the answered call stays up
    scenario: dict[str, Any] = field(default_factory=dict)  # CallScenario overrides


@dataclass
class PlacedCall:
    """One Originate that went on to dial."""

    action: ReceivedAction
    callid: str
    uniqueid: str
    channel: str
    plan: Plan
    transcript: CallTranscript | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Session:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.authenticated = False
        self.events = True

    async def send(self, headers: list[tuple[str, Any]]) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(("".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode())
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()


class AmiServer:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "gateway",
        secret: str = "s3cret",
        agi_host: str = "127.0.0.1",
        agi_port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.agi_host = agi_host
        self.agi_port = agi_port
        self.actions: list[ReceivedAction] = []
        self.received = bytearray()
        self.logins = 0
        self.failed_logins = 0
        self.calls: list[PlacedCall] = []
        self.plans: list[Plan] = []
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    # -- control ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Asterisk goes away: stop listening and close every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.drop_connections()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def drop_connections(self) -> None:
        for session in list(self._sessions):
            session.writer.close()
        self._sessions.clear()

    async def close(self) -> None:
        await self.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def plan(self, *plans: Plan) -> None:
        """What the next Originates do, in order; afterwards they are answered."""
        self.plans.extend(plans)

    def named(self, name: str) -> list[ReceivedAction]:
        return [a for a in self.actions if a.name.lower() == name.lower()]

    async def finished_calls(self, n: int, timeout: float = 30.0) -> list[PlacedCall]:
        """Wait until `n` calls have been dialled and played out."""
        deadline = time.monotonic() + timeout
        while len(self.calls) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.calls)} of {n} calls were originated")
            await asyncio.sleep(0.02)
        for call in self.calls[:n]:
            await asyncio.wait_for(call.done.wait(), max(deadline - time.monotonic(), 0.1))
        return self.calls[:n]

    # -- protocol ---------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self._sessions.add(session)
        try:
            writer.write(f"{GREETING}\r\n".encode())
            await writer.drain()
            while True:
                message = await self._read_message(reader)
                if message is None:
                    return
                if not await self._handle(session, message):
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self._sessions.discard(session)
            writer.close()

    async def _read_message(self, reader: asyncio.StreamReader) -> ReceivedAction | None:
        headers: list[tuple[str, str]] = []
        raw = bytearray()
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return None
            self.received += line
            raw += line
            text = line.decode("utf-8", errors="replace").rstrip("\n").rstrip("\r")
            if not text:
                if headers:
                    return ReceivedAction(tuple(headers), bytes(raw))
                continue
            key, _, value = text.partition(":")
            headers.append((key.strip(), value.strip()))

    async def _handle(self, session: _Session, action: ReceivedAction) -> bool:
        """Answer one action; False when the connection is to be closed."""
        self.actions.append(action)
        name = action.name.lower()
        head: list[tuple[str, Any]] = []
        if action.get("ActionID") is not None:
            head.append(("ActionID", action.get("ActionID")))
        if name == "login":
            if action.get("Username") == self.username and action.get("Secret") == self.secret:
                session.authenticated = True
                session.events = (action.get("Events") or "on").lower() != "off"
                self.logins += 1
                await session.send([("Response", "Success"), *head, ("Message", "Authentication accepted")])
                await session.send(
                    [
                        ("Event", "FullyBooted"),
                        ("Privilege", "system,all"),
                        ("Uptime", 42),
                        ("LastReload", 42),
                        ("Status", "Fully Booted"),
                    ]
                )
                return True
            self.failed_logins += 1
            await session.send([("Response", "Error"), *head, ("Message", "Authentication failed")])
            await asyncio.sleep(0.05)
            return False
        if name == "logoff":
            await session.send([("Response", "Goodbye"), *head, ("Message", "Thanks for all the fish.")])
            return False
        if not session.authenticated:
            await session.send([("Response", "Error"), *head, ("Message", "Permission denied")])
            return True
        if name == "ping":
            await session.send(
                [("Response", "Success"), *head, ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")]
            )
            return True
        if name == "originate":
            return await self._originate(session, action, head)
        await session.send([("Response", "Error"), *head, ("Message", "Invalid/unknown command")])
        return True

    async def _originate(
        self, session: _Session, action: ReceivedAction, head: list[tuple[str, Any]]
    ) -> bool:
        channel = action.get("Channel")
        problem = None
        if not channel:
            problem = "Channel not specified"
        elif "/" not in channel:
            problem = "Invalid channel"
        elif not (action.get("Timeout") or "0").strip().lstrip("-").isdigit():
            problem = "Invalid timeout"
        elif action.get("Exten") and not (action.get("Priority") or "").strip().isdigit():
            problem = "Invalid priority"
        if problem:
            await session.send([("Response", "Error"), *head, ("Message", problem)])
            return True
        plan = self.plans.pop(0) if self.plans else Plan()
        if plan.outcome == "drop":
            return False
        if plan.outcome == "refuse":
            await session.send([("Response", "Error"), *head, ("Message", "Originate failed")])
            return True
        await session.send([("Response", "Success"), *head, ("Message", "Originate successfully queued")])
        n = next(self._ids)
        call = PlacedCall(
            action=action,
            callid=_variables(action).get("GATEWAY_CALLID", ""),
            uniqueid=f"1763898000.{n}",
            channel=f"PJSIP/trunk-{n:08x}",
            plan=plan,
        )
        self.calls.append(call)
        task = asyncio.create_task(self._dial(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _dial(self, call: PlacedCall) -> None:
        try:
            await self._dial_inner(call)
        finally:
            call.done.set()

    async def _dial_inner(self, call: PlacedCall) -> None:
        action, plan = call.action, call.plan
        caller = _callerid_number(action.get("CallerID") or "")
        await self._event(
            "Newchannel",
            ("Channel", call.channel),
            ("ChannelState", 0),
            ("ChannelStateDesc", "Down"),
            ("CallerIDNum", caller or "<unknown>"),
            ("Uniqueid", call.uniqueid),
        )
        if plan.ring_seconds:
            await asyncio.sleep(plan.ring_seconds)
        if plan.outcome == "silent":
            return
        if plan.outcome in _FAILURES:
            cause, cause_txt, reason = _FAILURES[plan.outcome]
            await self._hangup(call, cause, cause_txt)
            await self._originate_response(call, "Failure", reason, channel=action.get("Channel") or "")
            return
        if plan.outcome == "answer_no_agi":
            await self._originate_response(call, "Success", 4)
            await asyncio.sleep(plan.hold_seconds)
            await self._hangup(call, 16, "Normal Clearing")
            return
        scenario = CallScenario(
            script="outbound",
            args=[call.callid],
            callerid=caller,
            dnid="unknown",
            extension="s",
            context=action.get("Context") or "gateway-outbound",
            **plan.scenario,
        )
        agi = asyncio.create_task(fastagi_call(self.agi_host, self.agi_port, scenario, timeout=30))
        if plan.agi_first:
            await asyncio.sleep(0.05)  # the dialplan is running before the response goes out
        await self._originate_response(call, "Success", 4)
        call.transcript = await agi
        await self._hangup(call, 16, "Normal Clearing")

    async def _originate_response(
        self, call: PlacedCall, response: str, reason: int, channel: str | None = None
    ) -> None:
        action = call.action
        caller = _callerid_number(action.get("CallerID") or "")
        await self._event(
            "OriginateResponse",
            ("Privilege", "call,all"),
            *([("ActionID", action.get("ActionID"))] if action.get("ActionID") is not None else []),
            ("Response", response),
            ("Channel", channel if channel is not None else call.channel),
            ("Context", action.get("Context") or ""),
            ("Exten", action.get("Exten") or ""),
            ("Application", ""),
            ("Data", ""),
            ("Reason", reason),
            ("Uniqueid", call.uniqueid if response == "Success" else "<null>"),
            ("CallerIDNum", caller or "<unknown>"),
            ("CallerIDName", "<unknown>"),
        )

    async def _hangup(self, call: PlacedCall, cause: int, cause_txt: str) -> None:
        await self._event(
            "Hangup",
            ("Privilege", "call,all"),
            ("Channel", call.channel),
            ("ChannelState", 6 if cause == 16 else 0),
            ("Uniqueid", call.uniqueid),
            ("Linkedid", call.uniqueid),
            ("Cause", cause),
            ("Cause-txt", cause_txt),
        )

    async def _event(self, name: str, *headers: tuple[str, Any]) -> None:
        for session in list(self._sessions):
            if session.authenticated and session.events:
                await session.send([("Event", name), *headers])


def _variables(action: ReceivedAction) -> dict[str, str]:
    """Originate's `Variable` headers: several headers, or `a=1,b=2` in one (manager.c splits
    on commas)."""
    out: dict[str, str] = {}
    for header in action.get_all("Variable"):
        for item in header.split(","):
            name, sep, value = item.partition("=")
            if sep:
                out[name.strip()] = value
    return out


def _callerid_number(value: str) -> str:
    """ast_callerid_parse in short: `"Name" <number>` or a bare number."""
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")].strip()
    return value.strip()
