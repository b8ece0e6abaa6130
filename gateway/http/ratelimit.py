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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
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


class RateLimiter:
    """Token buckets keyed by account id. Single event loop: no locking needed."""

    PRUNE_EVERY = 60.0  # seconds between sweeps of buckets that have refilled completely

    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        if settings.rate > 0 and settings.burst < 1:
            raise ValueError("ratelimit burst must be at least 1")
        self.settings = settings
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._pruned_at = clock()

    @property
    def enabled(self) -> bool:
        return self.settings.rate > 0

    def take(self, account_id: int) -> float:
        """Take one token for this account: 0.0 if granted, else seconds until one is available."""
        if not self.enabled:
            return 0.0
        rate, burst = self.settings.rate, float(self.settings.burst)
        now = self._clock()
        self._maybe_prune(now)
        bucket = self._buckets.get(account_id)
        if bucket is None:
            bucket = self._buckets[account_id] = _Bucket(burst, now)
        else:
            bucket.tokens = min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def _maybe_prune(self, now: float) -> None:
        """A bucket that has refilled to `burst` is the same as no bucket: forget it, so memory
        follows the accounts active in the last `burst / rate` seconds, not every account ever seen."""
        if now - self._pruned_at < self.PRUNE_EVERY:
            return
        self._pruned_at = now
        full_after = self.settings.burst / self.settings.rate
        stale = [k for k, b in self._buckets.items() if now - b.at >= full_after]
        for k in stale:
            del self._buckets[k]

    @property
    def tracked(self) -> int:
        """Accounts with a bucket in memory."""
        return len(self._buckets)


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


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
    wait = limiter.take(account.id)
    if wait > 0:
        seconds = retry_after_seconds(wait)
        response = json_response({"detail": f"Rate limit exceeded; retry after {seconds} s."}, status=429)
        response.headers["Retry-After"] = str(seconds)
        return response
    return await handler(request)
