"""A sending-rate cap for one process: submit_sm spaced at least 1/`rate` s apart.

Waiters go one at a time; each sleeps until the gap since the previous one is over, and the
next gap counts from when it really went. So a stall (a busy event loop, a slow database)
never makes the waiters behind it go at once to catch up: an SMSC that counts submits per
second never sees more than `rate`, whatever happened before.
"""

from __future__ import annotations

import asyncio
import math


class TokenBucket:
    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be above 0")
        self._interval = 1.0 / rate
        self._next = -math.inf  # loop time from which the next take may go
        self._turn = asyncio.Lock()

    async def take(self) -> None:
        async with self._turn:
            loop = asyncio.get_running_loop()
            wait = self._next - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = loop.time() + self._interval
