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
  Originate successfully queued`, and then emits what Asterisk 22 with chan_pjsip does
  (main/pbx.c pbx_outgoing_attempt, main/dial.c, main/manager.c fast_originate; the busy case
  is recorded in ../shared/asterisk-22/ami_busy_originate.txt):
  - answered: `Newchannel`, `DialBegin`, `DialEnd DialStatus: ANSWER`, `OriginateResponse`
    `Response: Success`, `Reason: 4` with the channel's name and Uniqueid; the dialplan of the
    originate's Context runs, which in gateway-outbound is
    `AGI(agi://<gateway>/outbound,${GATEWAY_CALLID})`: so the stand-in places that FastAGI call
    to the gateway (tests.peers.asterisk_agi plays the channel) and, when it ends, `Hangup`
    (Cause 16, Normal Clearing);
  - the callee answers the INVITE with a failure (486 busy, 480, 603, 404, 503): chan_pjsip
    queues a hangup with the cause ast_sip_hangup_sip2cause gives (`HangupRequest` with Cause
    and TechCause), dial.c reads it as a hangup and reports `DialEnd` with the DialStatus
    ast_hangup_cause_to_dial_status makes of the cause (BUSY for 17, CONGESTION for 34,
    NOANSWER for everything else, a 404 included); the dial's own cause stays unset, so
    pbx_dial_reason gives `OriginateResponse Response: Failure, Reason: 0, Uniqueid: <unknown>`
    (no channel is handed back), and last, through stasis, `Hangup` with the cause;
  - ring timeout: `DialState DialStatus: RINGING` (the 180), then dial.c hangs the channel up
    itself with cause 19 (handle_timeout_trip): no `HangupRequest`, no `DialEnd`,
    `OriginateResponse Failure` with `Reason: 3` (it was ringing), then `Hangup` Cause 19;
  - the channel cannot be created at all (`chanunavail`: no route, unregistered endpoint):
    only `OriginateResponse Failure, Reason: 0`.
  Channel events carry `ChanVariable: GATEWAY_CALLID=<id>` (`DestChanVariable:` on the Dial
  events, main/manager_channels.c) only when the stand-in is given `channelvars`, as
  manager.conf's `channelvars=` does; the Newchannel snapshot is taken before Originate's
  variables are set, so its value is empty there. Events go to every logged-in session whose
  mask is not `off`, like manager_event.

What the test wants to happen is queued with `plan(...)`; every action received is recorded
(`actions`), and so is every byte (`received`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.peers.asterisk_agi import CallScenario, CallTranscript, fastagi_call

GREETING = "Asterisk Call Manager/9.0.0"

Outcome = Literal[
    "answer",  # answered; the dialplan's FastAGI call runs; Hangup when it ends
    "answer_no_agi",  # answered, but the FastAGI call never happens (gateway unreachable)
    "busy",  # 486
    "unavailable",  # 480 Temporarily Unavailable
    "rejected",  # 603 Decline
    "unallocated",  # 404
    "congestion",  # 503
    "noanswer",  # rang until the Originate's Timeout
    "chanunavail",  # no channel could be created
    "silent",  # queued, then nothing at all (events lost)
    "refuse",  # Response: Error to the Originate
    "drop",  # the connection closes before the Originate is answered
]


@dataclass(frozen=True)
class Rejection:
    """A final SIP response to the INVITE, as chan_pjsip and main/dial.c report it."""

    sip: int  # TechCause
    cause: int  # ast_sip_hangup_sip2cause
    cause_txt: str  # ast_cause2str
    dial_status: str  # ast_hangup_cause_to_dial_status


REJECTIONS: dict[str, Rejection] = {
    "busy": Rejection(486, 17, "User busy", "BUSY"),
    "unavailable": Rejection(480, 19, "User alerting, no answer", "NOANSWER"),
    "rejected": Rejection(603, 21, "Call Rejected", "NOANSWER"),
    "unallocated": Rejection(404, 1, "Unallocated (unassigned) number", "NOANSWER"),
    "congestion": Rejection(503, 34, "Circuit/channel congestion", "CONGESTION"),
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
    # False: the OriginateResponse never reaches the gateway (it was reconnecting to AMI).
    originate_response: bool = True
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
        channelvars: Sequence[str] = ("GATEWAY_CALLID",),  # manager.conf channelvars=
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.agi_host = agi_host
        self.agi_port = agi_port
        self.channelvars = tuple(channelvars)
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
        if plan.outcome == "chanunavail":
            await asyncio.sleep(plan.ring_seconds)
            await self._originate_response(call, "Failure", 0)
            return
        # The snapshot behind Newchannel predates the Originate's variables and caller id.
        await self._event("Newchannel", *self._state(call, caller="", variables=False))
        await self._event("DialBegin", *self._state(call, prefix="Dest"), ("DialString", _dialstring(action)))
        if plan.ring_seconds:
            await asyncio.sleep(plan.ring_seconds)
        if plan.outcome == "silent":
            return
        if plan.outcome in REJECTIONS:
            rejection = REJECTIONS[plan.outcome]
            await self._event(
                "HangupRequest",
                *self._state(call),
                ("Cause", rejection.cause),
                ("TechCause", rejection.sip),
            )
            await self._event(
                "DialEnd", *self._state(call, prefix="Dest"), ("DialStatus", rejection.dial_status)
            )
            await self._originate_response(call, "Failure", 0)
            await self._hangup(call, rejection.cause, rejection.cause_txt, tech_cause=rejection.sip)
            return
        if plan.outcome == "noanswer":
            await self._event("DialState", *self._state(call, prefix="Dest"), ("DialStatus", "RINGING"))
            await self._originate_response(call, "Failure", 3)
            await self._hangup(call, 19, "User alerting, no answer")
            return
        await self._event("DialEnd", *self._state(call, prefix="Dest", up=True), ("DialStatus", "ANSWER"))
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

    def _state(
        self,
        call: PlacedCall,
        *,
        prefix: str = "",
        caller: str | None = None,
        variables: bool = True,
        up: bool = False,
    ) -> list[tuple[str, Any]]:
        """ast_manager_build_channel_state_string_prefix for the dialled channel."""
        number = _callerid_number(call.action.get("CallerID") or "") if caller is None else caller
        number = number or "<unknown>"
        headers: list[tuple[str, Any]] = [
            ("Channel", call.channel),
            ("ChannelState", 6 if up else 0),
            ("ChannelStateDesc", "Up" if up else "Down"),
            ("CallerIDNum", number),
            ("CallerIDName", "<unknown>"),
            ("ConnectedLineNum", number),
            ("ConnectedLineName", "<unknown>"),
            ("Language", "en"),
            ("AccountCode", ""),
            ("Context", "din-inbound"),  # the trunk endpoint's context, until the dialplan runs
            ("Exten", "s"),
            ("Priority", 1),
            ("Uniqueid", call.uniqueid),
            ("Linkedid", call.uniqueid),
        ]
        values = _variables(call.action)
        for name in self.channelvars:
            headers.append(("ChanVariable", f"{name}={values.get(name, '') if variables else ''}"))
        return [(prefix + key, value) for key, value in headers]

    async def _originate_response(self, call: PlacedCall, response: str, reason: int) -> None:
        """manager.c fast_originate: on failure no channel is handed back, so Channel is the
        requested one and Uniqueid `<unknown>` (no ChannelId was given)."""
        if not call.plan.originate_response:
            return
        action = call.action
        caller = _callerid_number(action.get("CallerID") or "")
        ok = response == "Success"
        await self._event(
            "OriginateResponse",
            *([("ActionID", action.get("ActionID"))] if action.get("ActionID") is not None else []),
            ("Response", response),
            ("Channel", call.channel if ok else action.get("Channel") or ""),
            ("Context", action.get("Context") or ""),
            ("Exten", action.get("Exten") or ""),
            ("Reason", reason),
            ("Uniqueid", call.uniqueid if ok else "<unknown>"),
            ("CallerIDNum", caller or "<unknown>"),
            ("CallerIDName", "<unknown>"),
        )

    async def _hangup(self, call: PlacedCall, cause: int, cause_txt: str, tech_cause: int = 0) -> None:
        await self._event(
            "Hangup",
            *self._state(call, up=cause == 16),
            ("Cause", cause),
            ("Cause-txt", cause_txt),
            *([("TechCause", tech_cause)] if tech_cause else []),
        )

    async def _event(self, name: str, *headers: tuple[str, Any]) -> None:
        """manager_event: Privilege, and Timestamp as manager.conf's timestampevents=yes adds."""
        head = [("Event", name), ("Privilege", "call,all"), ("Timestamp", f"{time.time():.6f}")]
        for session in list(self._sessions):
            if session.authenticated and session.events:
                await session.send([*head, *headers])


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


def _dialstring(action: ReceivedAction) -> str:
    """What follows the technology in Originate's Channel: `PJSIP/<number>@trunk`."""
    return (action.get("Channel") or "").partition("/")[2]


def _callerid_number(value: str) -> str:
    """ast_callerid_parse in short: `"Name" <number>` or a bare number."""
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")].strip()
    return value.strip()
