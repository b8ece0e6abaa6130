"""File descriptors: the process's limit, the share the listeners may use, and one log line per
interval (not one per accept) when the limit is hit anyway.

Every socket is a descriptor: under the common soft limit of 1024, about a thousand idle
connections used to leave none for the database, the SMSC link or the next accept, and asyncio
logged each failed accept. `gateway run` raises the soft limit to the hard one, fits the
listeners' connection caps under it with room left for everything else, and reports accept
failures through a ThrottledLog.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Sequence
from typing import Any

from gateway.net.throttled_log import ThrottledLog

log = logging.getLogger(__name__)

# Descriptors kept for everything but the listeners' connections (database pool, SMSC and AMI
# links, webhook and media clients, log and data files, and a burst of accepts not yet closed):
# a quarter of the limit, and never fewer than this.
MIN_RESERVED = 192


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return int(soft)


def fit_caps(caps: Sequence[int], limit: int) -> list[int]:
    """The caps, scaled down in proportion when together they exceed what `limit` leaves them."""
    budget = max(limit - max(MIN_RESERVED, limit // 4), len(caps))
    total = sum(caps)
    if total <= budget:
        return list(caps)
    return [max(1, cap * budget // total) if cap else 0 for cap in caps]


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, interval: float = 60.0) -> None:
    """Route asyncio's "socket.accept() out of system resource" (EMFILE and kin; asyncio retries
    the accept a second later) through one throttled line; other loop errors are unchanged."""
    report = ThrottledLog(
        log, logging.ERROR, "accept() failed on a listening socket: %s (out of file descriptors?)", interval
    )
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            report.hit(context.get("exception"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
