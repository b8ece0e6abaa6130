"""Per-client limit on unknown tracked-link codes: guessing codes costs the guesser, no one else.

`/l/<code>` is public. Each client address has a token bucket of `burst` misses refilled at
`per_minute`; a request takes a token before the code is looked up (so concurrent guesses cannot
overdraw it) and a code that exists gives it back, so following real links never counts. An
empty bucket answers 429 with Retry-After, without looking the code up. IPv6 clients are keyed
by their /64, the block one subscriber usually holds.

Per node and in memory, at most `max_clients` buckets (the least recently used goes first).
Behind a reverse proxy every client has the proxy's address: the limit is then shared by all.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class MissLimitSettings:
    per_minute: float = 10.0  # 0 (or less) turns the limit off
    burst: int = 20
    max_clients: int = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class MissLimiter:
    """Token buckets keyed by client. Single event loop: no locking needed."""

    def __init__(self, settings: MissLimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        if settings.per_minute > 0 and (settings.burst < 1 or settings.max_clients < 1):
            raise ValueError("burst and max_clients must be at least 1")
        self._settings = settings
        self._rate = settings.per_minute / 60
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}  # insertion order = least recently used first

    def take(self, client: str) -> float:
        """One token for a lookup: 0.0 if granted, else seconds until one is there."""
        if self._rate <= 0:
            return 0.0
        now = self._clock()
        burst = float(self._settings.burst)
        bucket = self._buckets.pop(client, None) or _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        self._buckets[client] = bucket
        if len(self._buckets) > self._settings.max_clients:
            del self._buckets[next(iter(self._buckets))]
        if bucket.tokens < 1.0:
            return (1.0 - bucket.tokens) / self._rate
        bucket.tokens -= 1.0
        return 0.0

    def give_back(self, client: str) -> None:
        """The code existed: the lookup was not a miss."""
        bucket = self._buckets.get(client)
        if bucket is not None:
            bucket.tokens = min(float(self._settings.burst), bucket.tokens + 1.0)

    @property
    def tracked(self) -> int:
        return len(self._buckets)


def client_key(remote: str | None) -> str:
    """The address a limit applies to: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


LINK_MISSES = web.AppKey("link_misses", MissLimiter)
