"""Graceful stop for background loops.

Workers are never cancelled in the middle of a database transaction or between an SMPP
submit and recording its result (that would resend on restart): they are asked to stop,
finish the iteration at hand, and return.
"""

from __future__ import annotations

import asyncio
import contextlib


class Lifecycle:
    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wake(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def idle(self, timeout: float) -> None:
        """Sleep until woken, asked to stop, or `timeout` passes.

        A wake that came while the caller was busy is not lost: the event stays set and this
        returns at once; it is cleared only on the way out, just before the caller looks for
        work again.
        """
        if not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        if not self._stopping.is_set():
            self._wake.clear()
