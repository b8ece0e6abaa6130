"""The outbound URL policy: which addresses a customer-supplied URL may reach.

One policy covers every URL a tenant hands us (SMS status and link callbacks, the SIN MO
webhook, voicemail and outbound-call callbacks, a DIN's action_url, playback media). It judges
*addresses*, never host strings: the client (client.py) resolves every name and asks
`check_address` about each result, then connects only to addresses that passed.

Always refused, whatever the settings: cloud metadata endpoints, link-local, unspecified
and "this network" (0.0.0.0/8, ::), multicast, broadcast, reserved, documentation and
other special-purpose ranges, and the IPv6 forms that embed one of those IPv4 addresses
(IPv4-mapped ::ffff:a.b.c.d, IPv4-translated, IPv4-compatible, NAT64, 6to4, Teredo), and hosts
the C library would read as a number although they are not a canonical address (`127.1`,
`2130706433`, `0x7f.1`, `0177.0.0.1`). Private ranges (RFC 1918, CGNAT 100.64/10,
benchmarking 198.18/15, unique-local fc00::/7, site-local fec0::/10) only with allow_private;
loopback (127/8, ::1, and the names `localhost` / `*.localhost`) only with allow_loopback.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass
from typing import Final

from gateway.config import OutboundHttpConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

METADATA_ADDRESSES: Final = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, Oracle ...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud (inside CGNAT 100.64/10)
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6 (inside fc00::/7)
    }
)

# Checked in order; the first match decides. Categories: "always", "private", "loopback".
_V4_TABLE: Final[tuple[tuple[_V4, str, str], ...]] = (
    (_V4("0.0.0.0/8"), "always", "an unspecified / 'this network' address"),
    (_V4("127.0.0.0/8"), "loopback", "a loopback address"),
    (_V4("169.254.0.0/16"), "always", "a link-local address"),
    (_V4("10.0.0.0/8"), "private", "a private address"),
    (_V4("172.16.0.0/12"), "private", "a private address"),
    (_V4("192.168.0.0/16"), "private", "a private address"),
    (_V4("100.64.0.0/10"), "private", "a carrier-grade NAT (shared) address"),
    (_V4("198.18.0.0/15"), "private", "a benchmarking (private) address"),
    (_V4("192.0.0.0/24"), "always", "an IETF protocol assignment (reserved) address"),
    (_V4("192.0.2.0/24"), "always", "a documentation (reserved) address"),
    (_V4("198.51.100.0/24"), "always", "a documentation (reserved) address"),
    (_V4("203.0.113.0/24"), "always", "a documentation (reserved) address"),
    (_V4("192.88.99.0/24"), "always", "a 6to4 relay anycast (reserved) address"),
    (_V4("224.0.0.0/4"), "always", "a multicast address"),
    (_V4("255.255.255.255/32"), "always", "a broadcast address"),
    (_V4("240.0.0.0/4"), "always", "a reserved address"),
)

_V6_TABLE: Final[tuple[tuple[_V6, str, str], ...]] = (
    (_V6("::/128"), "always", "an unspecified address"),
    (_V6("::1/128"), "loopback", "a loopback address"),
    (_V6("fe80::/10"), "always", "a link-local address"),
    (_V6("ff00::/8"), "always", "a multicast address"),
    (_V6("fc00::/7"), "private", "a unique-local (private) address"),
    (_V6("fec0::/10"), "private", "a site-local (private) address"),
    (_V6("64:ff9b:1::/48"), "private", "a local-use NAT64 (private) address"),
    (_V6("100::/64"), "always", "a discard-only (reserved) address"),
    (_V6("2001:db8::/32"), "always", "a documentation (reserved) address"),
    (_V6("3fff::/20"), "always", "a documentation (reserved) address"),
    (_V6("2001:10::/28"), "always", "an ORCHID (reserved) address"),
    (_V6("2001:20::/28"), "always", "an ORCHIDv2 (reserved) address"),
)

_MAPPED: Final = _V6("::ffff:0:0/96")  # IPv4-mapped
_TRANSLATED: Final = _V6("::ffff:0:0:0/96")  # IPv4-translated (SIIT)
_COMPATIBLE: Final = _V6("::/96")  # deprecated IPv4-compatible (::a.b.c.d)
_NAT64: Final = _V6("64:ff9b::/96")  # well-known NAT64 prefix
_GLOBAL_UNICAST: Final = _V6("2000::/3")


class AddressRefused(Exception):
    """The policy refused where a URL points; the message is the reason, for the operator log."""


def parse_ip(text: str) -> IPAddress | None:
    """Strict parse (dotted-quad IPv4 or IPv6, brackets allowed); None for anything else.

    `127.1`, `2130706433`, `0x7f.1` and `0177.0.0.1` are *not* addresses here (see
    `legacy_numeric`)."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def legacy_numeric(host: str) -> str | None:
    """The address the C library reads a non-canonical numeric host as (`127.1` -> 127.0.0.1),
    else None. AI_NUMERICHOST: no DNS traffic, so this never blocks."""
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return str(infos[0][4][0]) if infos else None


@dataclass(frozen=True)
class SsrfPolicy:
    allow_private: bool
    allow_loopback: bool

    @classmethod
    def from_config(cls, cfg: OutboundHttpConfig) -> SsrfPolicy:
        return cls(allow_private=cfg.allow_private_addresses, allow_loopback=cfg.allow_loopback)

    def check_host(self, host: str) -> str | None:
        """Judge a URL's host without DNS: the reason it is refused, or None. None for a name
        means only "not refused by its spelling": its addresses are checked when connecting."""
        return _judge_host(self, host)

    def _judge_spelling(self, host: str) -> str | None:
        name = host.rstrip(".").lower()  # `127.0.0.1.`, `localhost.`: the same to a resolver
        ip = parse_ip(name)
        if ip is not None:
            reason = self.check_address(ip)
            return f"address refused: {reason}" if reason else None
        numeric = legacy_numeric(name)
        if numeric is not None:
            return f"host {host!r} is a non-canonical numeric address (the system would read it as {numeric})"
        if not self.allow_loopback and (name == "localhost" or name.endswith(".localhost")):
            # RFC 6761: these names are loopback whatever DNS says.
            return f"host {host!r} is a loopback name (loopback not allowed)"
        return None

    def check_address(self, ip: str | IPAddress) -> str | None:
        """None when a connection to `ip` is allowed, else the reason it is refused."""
        addr = parse_ip(ip) if isinstance(ip, str) else ip
        if addr is None:
            return f"{ip!r} is not an IP address"
        return self._check(addr, addr)

    def _check(self, addr: IPAddress, shown: IPAddress) -> str | None:
        if addr in METADATA_ADDRESSES:
            return self._reason(shown, addr, "a cloud metadata address")
        if isinstance(addr, ipaddress.IPv4Address):
            for net4, category, label in _V4_TABLE:
                if addr in net4:
                    return self._judge(shown, addr, category, label)
            return None
        if addr.scope_id:
            # Judge the bare address (so fe80::1%eth0 is refused as link-local); whatever it
            # is, a zone id has no business in a customer's URL.
            bare = ipaddress.IPv6Address(int(addr))
            return self._check(bare, shown) or self._reason(shown, addr, "a scoped (zone-id) address")
        embedded = _embedded_ipv4(addr)
        if embedded:
            for inner in embedded:
                reason = self._check(inner, shown)
                if reason:
                    return reason
            return None
        for net6, category, label in _V6_TABLE:
            if addr in net6:
                return self._judge(shown, addr, category, label)
        if addr in _COMPATIBLE:
            return self._reason(shown, addr, "an IPv4-compatible (deprecated, reserved) address")
        if addr not in _GLOBAL_UNICAST or addr.is_reserved:
            return self._reason(shown, addr, "a reserved address")
        return None

    def _judge(self, shown: IPAddress, addr: IPAddress, category: str, label: str) -> str | None:
        if category == "private" and self.allow_private:
            return None
        if category == "loopback" and self.allow_loopback:
            return None
        suffix = {"private": " (private addresses not allowed)", "loopback": " (loopback not allowed)"}
        return self._reason(shown, addr, label + suffix.get(category, ""))

    @staticmethod
    def _reason(shown: IPAddress, addr: IPAddress, label: str) -> str:
        if shown == addr:
            return f"{shown} is {label}"
        return f"{shown} embeds {addr}, {label}"


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and that a translator may connect to."""
    if addr.ipv4_mapped is not None:
        return [addr.ipv4_mapped]
    if addr in _TRANSLATED or addr in _NAT64:
        return [ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)]
    if addr.sixtofour is not None:
        return [addr.sixtofour]
    if addr.teredo is not None:
        return list(addr.teredo)
    return []


# check_host runs for every webhook POST and every URL an API request carries, and a tenant's
# hosts repeat: the verdict depends on nothing but the policy and the host's spelling.
@functools.lru_cache(maxsize=4096)
def _judge_host(policy: SsrfPolicy, host: str) -> str | None:
    return policy._judge_spelling(host)
