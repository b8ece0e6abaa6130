"""A loopback-only control port for the SMSC simulator: `gateway simulate mo` talks to it.

One JSON object per line in, one JSON object per line out:

    {"op": "mo", "source": "+819011112222", "destination": "+81312345678", "text": "hi"}
    -> {"ok": true, "injected_at": "...", "data_coding": 0, "parts": [{"esm_class": 0, "octets": 2}],
        "receiver_bound": true}
    {"op": "replies", "destination": "+819011112222", "since": "2026-01-01T00:00:00+00:00"}
    -> {"ok": true, "messages": [{"source": "81312345678", "text": "...", "received_at": "..."}]}

It only ever listens on 127.0.0.1 and closes the connection, silently, on the first line that
is not a JSON object: an HTTP request (a browser page, or a webhook URL someone pointed at the
port) never gets past its request line, so nothing but a local client speaking this protocol
can inject messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
from datetime import datetime
from typing import Any

from smpp import encoding
from smpp.simulator import SmscSimulator
from smpp.simulator_model import utc_now

log = logging.getLogger("smpp.simulator.control")

HOST = "127.0.0.1"
MAX_LINE = 16 * 1024
MAX_TEXT = 1600  # characters of one injected MO (about 10 GSM parts)
MAX_ADDRESS = 20


class ControlError(ValueError):
    """A request the control port refuses; the message goes back to the client."""


def _address(request: dict[str, Any], key: str, *, alphanumeric: bool) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ADDRESS:
        raise ControlError(f"{key}: a phone number (+ and digits) is required")
    digits = value.removeprefix("+")
    if digits.isascii() and digits.isdigit():
        return digits
    if alphanumeric and value.isascii() and value.isalnum() and len(value) <= 11:
        return value
    raise ControlError(f"{key}: {value!r} is not a phone number")


def mo_parts(text: str, ref: int) -> tuple[int, list[tuple[int, bytes]]]:
    """(data_coding, [(esm_class, short_message)]) as a handset's SMSC would deliver `text`."""
    message = encoding.plan(text)
    return message.data_coding, encoding.submit_parts(message, ref)


class ControlServer:
    """Serves the control protocol for one running SmscSimulator."""

    def __init__(self, simulator: SmscSimulator, port: int) -> None:
        self._sim = simulator
        self.port = port  # the real one once start() has bound it (port 0 = ephemeral)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.port, limit=MAX_LINE)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("SMSC simulator control port on %s:%d", HOST, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peername")
            if not (isinstance(peer, tuple) and ipaddress.ip_address(peer[0]).is_loopback):
                return
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                except ValueError:
                    return  # not our protocol (e.g. an HTTP request line): no answer at all
                if not isinstance(request, dict):
                    return
                try:
                    answer = {"ok": True, **await self._handle(request)}
                except ControlError as exc:
                    answer = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass  # ValueError: a line over MAX_LINE
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "mo":
            return await self._mo(request)
        if op == "replies":
            return self._replies(request)
        raise ControlError(f"op: unknown operation {op!r} (mo, replies)")

    async def _mo(self, request: dict[str, Any]) -> dict[str, Any]:
        source = _address(request, "source", alphanumeric=True)
        destination = _address(request, "destination", alphanumeric=False)
        text = request.get("text")
        if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT:
            raise ControlError(f"text: 1 to {MAX_TEXT} characters are required")
        data_coding, parts = mo_parts(text, secrets.randbelow(255) + 1)
        injected_at = utc_now()
        for esm_class, short_message in parts:
            await self._sim.inject_mo(source, destination, short_message, data_coding, esm_class)
        log.info("control: injected MO %s -> %s in %d part(s)", source, destination, len(parts))
        return {
            "injected_at": injected_at.isoformat(),
            "data_coding": data_coding,
            "parts": [{"esm_class": esm, "octets": len(body)} for esm, body in parts],
            "receiver_bound": self._sim.has_receiver(),
        }

    def _replies(self, request: dict[str, Any]) -> dict[str, Any]:
        destination = _address(request, "destination", alphanumeric=False)
        try:
            since = datetime.fromisoformat(str(request.get("since")))
        except ValueError:
            raise ControlError("since: an ISO 8601 time with an offset is required") from None
        if since.tzinfo is None:
            raise ControlError("since: an ISO 8601 time with an offset is required")
        messages = []
        pending: dict[tuple[str, int], dict[int, str]] = {}
        for submit in self._sim.submits:
            if submit.destination_addr.lstrip("+") != destination or submit.received_at < since:
                continue
            decoded = encoding.decode_short_message(
                submit.data_coding, submit.esm_class, submit.short_message
            )
            if decoded.concat_ref is not None and decoded.concat_total > 1:
                # Show a multipart reply once, whole, when its last part has arrived.
                parts = pending.setdefault((submit.source_addr, decoded.concat_ref), {})
                parts[decoded.concat_seq] = decoded.text
                if len(parts) < decoded.concat_total:
                    continue
                text = "".join(parts[i] for i in sorted(parts))
                del pending[(submit.source_addr, decoded.concat_ref)]
            else:
                text = decoded.text
            messages.append(
                {"source": submit.source_addr, "text": text, "received_at": submit.received_at.isoformat()}
            )
        return {"messages": messages}
