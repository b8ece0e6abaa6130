"""Structured logs: every line says which message, call, webhook or request it is about.

Ids reach a record two ways: `log_context(...)` binds them for everything logged inside it (a
call's whole AGI session, an HTTP request, the delivery of one webhook), including records from
libraries and from tasks started inside (asyncio copies the context into a new task); and
`extra={"msgid": ...}` on one call, for loops that handle many messages at once. Both end up as
fields of the line: `key=value` pairs after the text format's message, or keys of the JSON
object (one per line, for log shippers) in the json format.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime as dt
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, TextIO

FORMATS = ("text", "json")

# A context variable, not state: each task sees the fields bound on its own path.
_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "gateway_log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "context",
    "taskName",
}


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Bind fields (None values skipped) to every record logged inside, in this task and its children."""
    added = {k: str(v) for k, v in fields.items() if v is not None}
    token = _CONTEXT.set({**_CONTEXT.get(), **added})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's fields: the bound context, then its own `extra=` keys (which win)."""
    fields: dict[str, Any] = dict(getattr(record, "context", None) or {})
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    return fields


class ContextFilter(logging.Filter):
    """Snapshots the bound context onto the record where it is logged (before any other thread or
    task could format it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            record.context = _CONTEXT.get()
        return True


def _escape_controls(text: str) -> str:
    """Every non-printable character as a JSON escape: C0/C1 controls, DEL, and everything
    str.splitlines() or a log viewer ends a line on (U+0085, U+2028, U+2029 included), format
    characters (bidi overrides) and lone surrogates. Valid inside a JSON string too, and there it
    decodes back to the same character."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    # ensure_ascii=False escapes only C0, so the rest of the non-printables are escaped after.
    return _escape_controls(json.dumps(text, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, for people reading a terminal or journald."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Text from callers (an MO's sender, a header) must not start a line of its own.
        record.message = _escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record_fields(record)
        if not fields:
            return line
        pairs = " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())
        head, sep, rest = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {pairs}{sep}{rest}"

    def formatException(self, ei: Any) -> str:
        # A traceback keeps its lines, indented: a newline in an exception's message (caller text,
        # maybe) cannot start a line that reads as a record, and no other separator gets through.
        return "\n".join("  " + _escape_controls(line) for line in super().formatException(ei).split("\n"))


def _json_value(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, the fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            out.setdefault(key, _json_value(value))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii=False keeps text readable but leaves U+2028/U+2029/U+0085, DEL and C1
        # raw, and log shippers and str.splitlines() split lines on them.
        return _escape_controls(json.dumps(out, ensure_ascii=False))


def make_handler(fmt: str, stream: TextIO | None = None) -> logging.StreamHandler[TextIO]:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    return handler


QUEUE_RECORDS = 10_000  # records waiting for the writer thread; past it they are counted and dropped


class _Enqueue(logging.handlers.QueueHandler):
    """Hands records to a writer thread, so whoever logs (the event loop) never waits on the
    output (a full pipe, a stalled journald or docker log driver) nor spends its time formatting.
    When the writer falls QUEUE_RECORDS behind, records are dropped and counted, and the writer
    says how many before the next line it writes: a stalled log must not stall calls and SMS.

    The writer wakes for a record, waits _LINGER for more, and writes all that queued up with one
    write and one flush: a thread wake-up and a system call per line cost more than formatting
    it, at three lines per message and thousands of messages a second."""

    def __init__(self, target: logging.StreamHandler[TextIO]) -> None:
        self._pending: queue.Queue[logging.LogRecord | None] = queue.Queue(QUEUE_RECORDS)
        super().__init__(self._pending)
        self.dropped = 0
        self._reported = 0
        self._closed = False
        self._target = target
        self._writer = threading.Thread(target=self._write_loop, name="log-writer", daemon=True)
        self._writer.start()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # What could change once the caller goes on: the bound context and the message's args.
        if not hasattr(record, "context"):
            record.context = _CONTEXT.get()
        record.msg, record.args = record.getMessage(), None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _write_loop(self) -> None:
        pending = self._pending
        while True:
            batch = [pending.get()]
            # The lines of the next moments join this one: each wake-up of this thread takes the
            # GIL from the event loop, and one per line cost the loop more than the lines did.
            if batch[0] is not None:
                time.sleep(_LINGER)
            with contextlib.suppress(queue.Empty):
                while len(batch) < _BATCH:
                    batch.append(pending.get_nowait())
            stop = None in batch
            self._write([r for r in batch if r is not None])
            for _ in batch:
                pending.task_done()
            if stop:
                return

    def _write(self, records: list[logging.LogRecord]) -> None:
        target = self._target
        lines = []
        if self.dropped > self._reported:
            note = logging.LogRecord(
                "gateway.logs",
                logging.WARNING,
                __file__,
                0,
                "%d log records dropped: the log output did not keep up",
                (self.dropped - self._reported,),
                None,
            )
            self._reported = self.dropped
            records.insert(0, note)
        for record in records:
            if record.levelno >= target.level and target.filter(record):
                try:
                    lines.append(target.format(record) + target.terminator)
                except Exception:
                    target.handleError(record)
        if not lines:
            return
        try:
            target.stream.write("".join(lines))
            target.flush()
        except Exception:
            target.handleError(records[-1])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending.put(None)  # writes what is queued before it, then the thread ends
            self._writer.join()
        super().close()


_BATCH = 2048  # records written together at most
_LINGER = 0.1  # seconds the writer waits after a record for more to write with it


def configure(fmt: str, level: str, stream: TextIO | None = None, *, threaded: bool = True) -> None:
    """Route every logger to one handler on stderr in the chosen format (replacing earlier ones).
    `threaded`: written from a thread of its own (_Enqueue; what is queued is written at exit),
    for the server; a one-shot command writes in line with what it prints."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be one of DEBUG, INFO, WARNING, ERROR, not {level!r}")
    direct = make_handler(fmt, stream)
    handler: logging.Handler = _Enqueue(direct) if threaded else direct
    # Where each call was made from (a walk up the stack) and the thread's and process's names:
    # no format here prints them, and each record computed them in the caller (the logging
    # HOWTO's "Optimization" lists these switches).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, _Enqueue):
            old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    if isinstance(handler, _Enqueue):
        atexit.register(handler.close)


def flush(timeout: float = 5.0) -> None:
    """Wait (up to `timeout`) until the queued records are written: before a command prints its
    last word to stderr, so that no earlier log line lands after it."""
    deadline = time.monotonic() + timeout
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Enqueue):
            while handler.queue.unfinished_tasks and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.005)
