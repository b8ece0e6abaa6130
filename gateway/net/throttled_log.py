"""A log line for a condition a hostile peer can trigger thousands of times a second.

The first occurrence is logged at once; later ones are only counted until `interval` seconds
have passed, and the next occurrence after that logs one line with the count. The log stays
readable (and the disk full of nothing else) however hard the condition is hit.
"""

from __future__ import annotations

import logging
import time


class ThrottledLog:
    def __init__(self, logger: logging.Logger, level: int, message: str, interval: float = 60.0) -> None:
        self._logger = logger
        self._level = level
        self._message = message
        self._interval = interval
        self._count = 0
        self._since = 0.0
        self._next = 0.0  # monotonic time before which occurrences are only counted

    def hit(self, *args: object) -> None:
        """One occurrence; `args` fill the message's placeholders (the latest occurrence's wins)."""
        self._count += 1
        now = time.monotonic()
        if now < self._next:
            return
        if self._count == 1:
            self._logger.log(self._level, self._message, *args)
        else:
            self._logger.log(
                self._level,
                self._message + " (%d times in the last %.0f s)",
                *args,
                self._count,
                now - self._since,
            )
        self._count = 0
        self._since = now
        self._next = now + self._interval
