"""The routing rules in force, read from `smpp.routes_file` and again whenever its content
changes (checked every `smpp.routes_check_seconds`), so an operator edits the file and the
next messages follow it, without a restart. A version that does not parse, or names an
unknown connector, is refused with one error line naming the rule, and the rules in force
stay: a typo never sends traffic to the wrong SMSC or to none."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from gateway.routing.rules import RouteTable, RulesError, default_table, parse_rules

log = logging.getLogger(__name__)


class RouteFile:
    def __init__(self, path: str, connectors: Sequence[str]) -> None:
        self.path = Path(path) if path else None
        self._connectors = list(connectors)
        self._seen: bytes | None = None  # the content last read, good or bad
        self._unreadable = False  # reported already
        self.table = default_table(self._connectors)

    def load(self) -> RouteTable:
        """At start: the file must be readable and valid (RulesError otherwise)."""
        if self.path is None:
            return self.table
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            raise RulesError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        self.table = self._parse(content)
        self._seen = content
        return self.table

    async def check(self) -> None:
        """Take a changed file's rules, or say once why not and keep the old ones."""
        if self.path is None:
            return
        try:
            content = await asyncio.to_thread(self.path.read_bytes)
        except OSError as exc:
            if not self._unreadable:
                log.error("routing rules %s unreadable (%s); the rules in force stay", self.path, exc)
                self._unreadable = True
            return
        self._unreadable = False
        if content == self._seen:
            return
        self._seen = content
        try:
            table = self._parse(content)
        except RulesError as exc:
            log.error("routing rules %s refused, the rules in force stay: %s", self.path, exc)
            return
        self.table = table
        log.info("routing rules reloaded from %s: %d rule(s)", self.path, len(table.routes))

    def _parse(self, content: bytes) -> RouteTable:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise RulesError("not UTF-8 text") from None
        return parse_rules(text, self._connectors)
