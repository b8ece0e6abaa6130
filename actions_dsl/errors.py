"""Syntax errors with a 1-based line and column, meant to be shown to the customer."""

from __future__ import annotations

from collections.abc import Iterable

_SHOW_MAX = 40


def show(fragment: str) -> str:
    """Quote a piece of the script for an error message.

    repr() escapes every non-printable character, so echoing hostile input back in a message can
    never smuggle a newline into the call record; long fragments are cut to keep messages short.
    """
    if len(fragment) > _SHOW_MAX:
        return repr(fragment[:_SHOW_MAX]) + "…"
    return repr(fragment)


class ActionSyntaxError(Exception):
    """One problem in a script; `column` points at the offending character or token."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message, line, column)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class ParseErrors(ActionSyntaxError):
    """Every problem found in a script, in source order.

    It is itself an ActionSyntaxError carrying the first problem's position and message, so a
    caller that only cares about one error can catch the base class.
    """

    def __init__(self, errors: Iterable[ActionSyntaxError]) -> None:
        collected = tuple(errors)
        if not collected:
            raise ValueError("ParseErrors needs at least one error")
        first = collected[0]
        # Bypass ActionSyntaxError.__init__ so args stays (errors,) and pickling round-trips.
        Exception.__init__(self, collected)
        self.errors = collected
        self.message = first.message
        self.line = first.line
        self.column = first.column

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
