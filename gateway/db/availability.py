"""The database being unreachable, told apart from bugs, and reported once per interval.

While PostgreSQL is down every request and every background pass fails the same way; a
traceback each (about 1,200 lines a second) would bury the one line that matters. So an
outage is logged when it starts (a warning with the error), then as a summary at most every
SUMMARY_EVERY seconds while it lasts, and once when a new connection succeeds. The API answers
503 with Retry-After meanwhile (gateway/http/errors.py) and the loops back off: BACKOFF_MIN
seconds at first, growing with the outage's age up to BACKOFF_MAX, so they find the database
again within BACKOFF_MAX of its return.

One DbOutage per process, shared by the API and the loops (an AppKey, no module state).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

# Modules whose raw OSError / TimeoutError means "could not talk to the database": SQLAlchemy
# passes a refused or timed-out asyncpg connect through unwrapped.
_DRIVER_MODULES = ("asyncpg", "aiosqlite", "sqlalchemy")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _raised_in_driver(tb: TracebackType | None) -> bool:
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def _asyncpg_connection_errors() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - SQLite-only install
        return ()
    return (
        asyncpg.PostgresConnectionError,  # SQLSTATE class 08
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.CannotConnectNowError,  # starting up / shutting down
        asyncpg.AdminShutdownError,
        asyncpg.CrashShutdownError,
        asyncpg.TooManyConnectionsError,
    )


_ASYNCPG = _asyncpg_connection_errors()
# SQLITE_BUSY, _LOCKED, _IOERR, _FULL, _CANTOPEN, _PROTOCOL: the file, not the statement.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 10, 13, 14, 15})


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says the database could not be reached (connection refused, lost,
    timed out, pool exhausted, server shutting down); False for everything else, bugs included
    (a syntax error, a constraint violation, a wrong type)."""
    for e in _chain(exc):
        if isinstance(e, sa_exc.DBAPIError):
            sqlite_code = getattr(e.orig, "sqlite_errorcode", None)
            if isinstance(sqlite_code, int):
                # SQLite says OperationalError for a syntax error too: go by its result code.
                return sqlite_code & 0xFF in _SQLITE_UNAVAILABLE
        if isinstance(
            e,
            sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError | sa_exc.TimeoutError,
        ):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sa_exc.SQLAlchemyError):
            return False  # any other SQLAlchemy error is about the statement, not the link
        if _ASYNCPG and isinstance(e, _ASYNCPG):
            return True
        if isinstance(e, OSError | TimeoutError) and _raised_in_driver(e.__traceback__):
            return True
    return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


class DbOutage:
    SUMMARY_EVERY = 30.0  # seconds between "still unreachable" lines
    RETRY_AFTER = 5  # seconds, told to API clients in Retry-After
    BACKOFF_MIN = 0.5
    BACKOFF_MAX = 5.0
    # No failure for this long ends an outage even without a new connection (SQLite has none).
    QUIET_ENDS = 2 * BACKOFF_MAX + 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None  # start of the current outage
        self._last = 0.0  # last failure seen
        self._logged_at = 0.0
        self._failures = 0  # since the last line

    def _active(self, now: float) -> bool:
        return self._since is not None and now - self._last <= self.QUIET_ENDS

    def report(self, exc: BaseException, where: str) -> None:
        """One failure caused by an outage (see is_outage); logs only at the start and once
        per SUMMARY_EVERY."""
        now = self._clock()
        if not self._active(now):
            self._since = self._logged_at = self._last = now
            self._failures = 0
            log.warning(
                "database unreachable (%s, in %s): API answers 503, background work backs off",
                _describe(exc),
                where,
            )
            return
        self._last = now
        self._failures += 1
        if now - self._logged_at >= self.SUMMARY_EVERY:
            assert self._since is not None
            log.warning(
                "database still unreachable after %.0f s: %d failures in the last %.0f s (last: %s)",
                now - self._since,
                self._failures,
                now - self._logged_at,
                _describe(exc),
            )
            self._logged_at = now
            self._failures = 0

    def connected(self) -> None:
        """A new database connection succeeded (the pool's connect event): the outage is over."""
        if self._since is None:
            return
        now = self._clock()
        log.warning("database reachable again after %.0f s", now - self._since)
        self._since = None

    @property
    def down(self) -> bool:
        return self._active(self._clock())

    def backoff(self) -> float:
        """Seconds a background loop should wait before its next database pass."""
        now = self._clock()
        if not self._active(now):
            return self.BACKOFF_MIN
        assert self._since is not None
        return min(self.BACKOFF_MAX, max(self.BACKOFF_MIN, (now - self._since) / 4))

    def failed(self, exc: BaseException, what: str, logger: logging.Logger) -> float:
        """For a background loop's exception path. An outage is reported (one line per
        interval) and the answer is how long to back off; anything else is a bug, logged with
        its traceback on the loop's logger, and the answer is 0 (the loop's own pace)."""
        if is_outage(exc):
            self.report(exc, what)
            return self.backoff()
        logger.error("%s failed", what, exc_info=exc)
        return 0.0
