"""Group commit: callers await their item's durable write; items arriving together share one
transaction. At hundreds of writes a second, one transaction each would be the bottleneck
(on SQLite every statement is a hop to the single connection's thread)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from gateway.db.availability import is_outage

T = TypeVar("T")
log = logging.getLogger(__name__)


# A write may refuse single items of a batch (by index) while committing the others.
Rejections = Mapping[int, Exception] | None


class GroupCommitter(Generic[T]):
    def __init__(
        self, write: Callable[[Sequence[T]], Awaitable[Rejections]], max_batch: int = 500, linger: float = 0.0
    ) -> None:
        self._write = write
        self._max = max_batch
        self._linger = linger
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Returns once `item` is committed; raises if its batch failed (the caller retries)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        await fut

    async def _drain(self) -> None:
        while True:
            first = await self._queue.get()
            if self._linger:  # fewer, larger writes, for items whose caller can wait
                await asyncio.sleep(self._linger)
            batch = [first]
            while len(batch) < self._max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                rejected = await self._write([item for item, _ in batch]) or {}
            except Exception as exc:
                if not is_outage(exc):  # an outage is reported (once per interval) by the callers
                    log.warning("group write of %d items failed: %s", len(batch), exc)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for i, (_, fut) in enumerate(batch):
                    if fut.done():
                        continue
                    if i in rejected:
                        fut.set_exception(rejected[i])
                    else:
                        fut.set_result(None)
            for _ in batch:
                self._queue.task_done()

    async def close(self, timeout: float = 10.0) -> None:
        """Finish what was submitted (cancelling mid-transaction would strand a DB lock), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
