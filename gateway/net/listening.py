"""A listening socket that cannot be opened is a setting to change, not a crash: the error names
the listener, the address and the setting (and its GATEWAY_* variable) that moves it, so that
`gateway run` can say so in one line."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator

from gateway.config import env_name


class ListenError(Exception):
    def __init__(self, what: str, host: str, port: int, host_key: str, port_key: str, exc: OSError) -> None:
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is already in use"
            fix = f"set {port_key} ({env_name(port_key)}) to a free port, or stop the program using it"
        else:
            if isinstance(exc, socket.gaierror):  # the host does not resolve
                reason = str(exc.strerror)
            else:  # asyncio's strerror repeats the address; the bare reason reads better after it
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
            fix = f"check {host_key} ({env_name(host_key)}) and {port_key} ({env_name(port_key)})"
        super().__init__(f"cannot listen on {host}:{port} ({what}): {reason.lower()}; {fix}")


@contextlib.contextmanager
def listening(what: str, host: str, port: int, host_key: str, port_key: str) -> Iterator[None]:
    """Around a listener's start: an OSError from binding becomes a ListenError."""
    try:
        yield
    except OSError as exc:
        raise ListenError(what, host, port, host_key, port_key, exc) from exc
