"""Per-account rate limiting: a token bucket per authenticated account, answering 429.

Every authenticated API request takes one token from its account's bucket. The bucket holds at
most `burst` tokens and refills at `rate` tokens per second; an empty bucket answers

    429 {"detail": "Rate limit exceeded; retry after N s."}   with   Retry-After: N

where N (whole seconds, at least 1) is when the next token will be there. A refused request
reaches no handler, so nothing is written.

Scope: only requests that authenticated (the middleware runs inside `auth_middleware` and looks
for the account it stored on the request). Public routes (link redirects, health check, docs,
metrics) and failed authentication (401) are never counted or limited.

The buckets live in this process: with N gateway nodes behind a load balancer an account can
reach up to N x the configured rate. Buckets are not persisted; a restart starts them full.

The same buckets, keyed by client address (`client_key`), throttle failed authentication
(AUTH_FAILURES, used by gateway/http/auth.py: each refused credential takes a token, and an
address whose bucket is empty gets the same 429 before its credentials are looked up) and
unknown tracked-link codes (LINK_MISSES, gateway/http/routes_public.py: a lookup takes a token
first, so concurrent guesses cannot overdraw it, and a code that exists gives it back).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from aiohttp import web

from gateway.http.errors import Handler, json_response
from gateway.keys import ACCOUNT


@dataclass(frozen=True)
class RateLimitSettings:
    # Sustained requests per second per account; 0 (or less) turns limiting off.
    rate: float = 0.0
    # Requests an idle account may send at once before the sustained rate applies.
    burst: int = 50


@dataclass
class _Bucket:
    tokens: float
    at: float  # clock reading when `tokens` was computed
    full_after: float  # seconds an untouched bucket takes to refill completely


class RateLimiter:
    """Token buckets keyed by account id (or client address). Single event loop: no locking.

    `max_keys` bounds memory when keys come from outside (addresses): past it, the bucket
    untouched the longest is forgotten.
    """

    PRUNE_EVERY = 60.0  # seconds between sweeps of buckets that have refilled completely

    def __init__(
        self,
        settings: RateLimitSettings,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int | None = None,
    ) -> None:
        if settings.rate > 0 and settings.burst < 1:
            raise ValueError("burst must be at least 1")
        if max_keys is not None and max_keys < 1:
            raise ValueError("the number of tracked keys must be at least 1")
        self.settings = settings
        self._clock = clock
        self._max_keys = max_keys
        # In order of last use (a used bucket is moved to the end), so the first is the oldest.
        self._buckets: dict[Hashable, _Bucket] = {}
        self._pruned_at = clock()

    @property
    def enabled(self) -> bool:
        return self.settings.rate > 0

    def take(self, key: Hashable, rate: float | None = None, burst: int | None = None) -> float:
        """Take one token for this key: 0.0 if granted, else seconds until one is available.
        `rate` and `burst` override the settings for this key (an account's own limit); a rate
        of 0 is no limit."""
        rate = self.settings.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        capacity = float(self.settings.burst if burst is None else max(1, burst))
        now = self._clock()
        self._maybe_prune(now)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(capacity, now, capacity / rate)
            if self._max_keys is not None and len(self._buckets) >= self._max_keys:
                del self._buckets[next(iter(self._buckets))]
        else:
            bucket.tokens = min(capacity, bucket.tokens + max(0.0, now - bucket.at) * rate)
            bucket.at, bucket.full_after = now, capacity / rate
        self._buckets[key] = bucket
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def give_back(self, key: Hashable) -> None:
        """Return a token taken for something that turned out not to count (a link that exists)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(float(self.settings.burst), bucket.tokens + 1.0)

    def wait(self, key: Hashable) -> float:
        """Seconds until this key could take a token (0.0: it can now); takes nothing."""
        bucket = self._buckets.get(key)
        if not self.enabled or bucket is None:
            return 0.0
        tokens = bucket.tokens + max(0.0, self._clock() - bucket.at) * self.settings.rate
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.settings.rate

    def _maybe_prune(self, now: float) -> None:
        """A bucket that has refilled to `burst` is the same as no bucket: forget it, so memory
        follows the accounts active in the last `burst / rate` seconds, not every account ever seen."""
        if now - self._pruned_at < self.PRUNE_EVERY:
            return
        self._pruned_at = now
        stale = [k for k, b in self._buckets.items() if now - b.at >= b.full_after]
        for k in stale:
            del self._buckets[k]

    @property
    def tracked(self) -> int:
        """Accounts with a bucket in memory."""
        return len(self._buckets)


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
# Failed authentication per client address (gateway/http/auth.py).
AUTH_FAILURES = web.AppKey("auth_failures", RateLimiter)
MAX_TRACKED_ADDRESSES = 10_000
# Unknown tracked-link codes per client address (gateway/http/routes_public.py).
LINK_MISSES = web.AppKey("link_misses", RateLimiter)


def client_key(remote: str | None) -> str:
    """The address a per-client limit applies to: IPv4 as is, IPv6 by its /64 (the block one
    subscriber usually holds), IPv4-mapped IPv6 as the IPv4 address."""
    try:
        ip = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def retry_after_seconds(wait: float) -> int:
    """Retry-After carries whole seconds; round up so a client that waits that long succeeds."""
    return max(1, math.ceil(wait - 1e-9))


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Place after `auth_middleware` (inner to it): it needs the authenticated account."""
    limiter = request.app.get(RATE_LIMITER)
    account = request.get(ACCOUNT)
    if limiter is None or account is None:
        return await handler(request)
    wait = limiter.take(account.id, account.rate, account.burst)
    if wait > 0:
        return too_many_requests(wait)
    return await handler(request)


def too_many_requests(wait: float, reason: str = "Rate limit exceeded") -> web.Response:
    seconds = retry_after_seconds(wait)
    response = json_response({"detail": f"{reason}; retry after {seconds} s."}, status=429)
    response.headers["Retry-After"] = str(seconds)
    return response
