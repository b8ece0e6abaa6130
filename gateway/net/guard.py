"""A guard in front of a listener's protocol factory: peer allow-list, connection cap, and a
deadline for the first request head.

`ListenerGuard.wrap(factory)` is passed to `loop.create_server` instead of `factory`. Each
accepted connection is first checked against the allow-list and the cap; a refused one is
aborted in `connection_made`, before the real protocol exists or a byte of it is read, so a
flood of refused connections costs an accept and a close each, nothing more. An admitted one
gets the real protocol, and (with `head_timeout`) is aborted unless its first request head (up
to the first empty line: an HTTP request head, an AGI header block) is complete in time:
slow-header clients cannot hold the connections the cap counts. Every refusal is logged
through a ThrottledLog, never once per connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from typing import cast

from gateway.net.throttled_log import ThrottledLog

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
REPORT_INTERVAL = 60.0  # seconds between two log lines about the same condition


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """ "127.0.0.1/8, ::1" -> networks (a bare address is a /32 or /128); ValueError names the bad item."""
    out: list[IPNetwork] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(out)


def address_in(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
    return any(ip in net for net in networks)


class ListenerGuard:
    def __init__(
        self,
        name: str,
        *,
        max_connections: int,
        head_timeout: float = 0.0,
        allowed_peers: Sequence[IPNetwork] | None = None,
        report_interval: float = REPORT_INTERVAL,
    ) -> None:
        """`name` and the config keys in the log lines; `allowed_peers` None admits any address."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.name = name
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.allowed_peers = None if allowed_peers is None else tuple(allowed_peers)
        self.active = 0  # admitted connections still open
        self._not_allowed = ThrottledLog(
            log, logging.WARNING, "%s: refused a connection from %s (not an allowed peer)", report_interval
        )
        self._full = ThrottledLog(
            log,
            logging.WARNING,
            "%s: %d connections open, the cap; closed a new one from %s at once",
            report_interval,
        )
        self._slow = ThrottledLog(
            log,
            logging.WARNING,
            "%s: closed a connection from %s that sent no complete request head within %g s",
            report_interval,
        )

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, factory)

    def _admit(self, transport: asyncio.Transport) -> bool:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if self.allowed_peers is not None and not address_in(address, self.allowed_peers):
            self._not_allowed.hit(self.name, address or "?")
            return False
        if self.active >= self.max_connections:
            self._full.hit(self.name, self.active, address or "?")
            return False
        return True

    def _head_late(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        self._slow.hit(self.name, peer[0] if isinstance(peer, tuple) and peer else "?", self.head_timeout)
        transport.abort()


class _Guarded(asyncio.Protocol):
    """Stands in front of the real protocol for the connection's whole life."""

    def __init__(self, guard: ListenerGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes seen, so a head end split across reads is found

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)
        if not self._guard._admit(tr):
            tr.abort()
            return
        self._guard.active += 1
        if self._guard.head_timeout > 0:
            self._head_timer = asyncio.get_running_loop().call_later(
                self._guard.head_timeout, self._guard._head_late, tr
            )
        self._inner = self._factory()
        self._inner.connection_made(tr)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._head_timer is not None:
            seen = self._tail + data
            if b"\n\n" in seen or b"\n\r\n" in seen:
                self._head_timer.cancel()
                self._head_timer = None
            else:
                self._tail = seen[-2:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self._inner = self._inner, None
        if inner is None:
            return  # refused: never counted, no protocol behind it
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._guard.active -= 1
        inner.connection_lost(exc)
