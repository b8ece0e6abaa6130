"""MT routing rules: which connectors a message may go out on, in order of preference.

The rules file is TOML, one `[[route]]` table per rule, first match wins:

    [[route]]
    name = "docomo"                 # optional; names the rule in logs and errors
    prefix = ["+8190", "+8180"]     # destination starts with one of these
    account = "AC0123..."           # the sending account's sid
    sender = "ALERTS"               # the sender, exactly
    tag = "otp"                     # one of the message's tags
    connectors = ["smsc_a", "smsc_b"]

Each criterion takes one value or a list (any of them matches); a rule matches when every
criterion it has matches, so a rule with none matches everything. `connectors` is the order in
which the dispatcher tries them (failover). A message no rule matches goes to the first
connector of the configuration.

Pure: text in, a RouteTable or a RulesError naming the rule and its line out.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CRITERIA = ("prefix", "account", "sender", "tag")
KEYS = ("name", *CRITERIA, "connectors")
_ROUTE_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*route[ \t]*\]\]", re.MULTILINE)


class RulesError(ValueError):
    pass


@dataclass(frozen=True)
class Routed:
    """What routing looks at in a message."""

    recipient: str  # E.164 with +
    account: str  # the account's sid
    sender: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    name: str
    connectors: tuple[str, ...]
    prefixes: tuple[str, ...] = ()  # digits, no +
    accounts: frozenset[str] = frozenset()
    senders: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    def matches(self, m: Routed) -> bool:
        digits = m.recipient.removeprefix("+")
        return (
            (not self.prefixes or digits.startswith(self.prefixes))
            and (not self.accounts or m.account in self.accounts)
            and (not self.senders or m.sender in self.senders)
            and (not self.tags or not self.tags.isdisjoint(m.tags))
        )


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...]
    default: tuple[str, ...]  # the first connector: where a message no rule matches goes

    def connectors_for(self, m: Routed) -> tuple[str, ...]:
        for route in self.routes:
            if route.matches(m):
                return route.connectors
        return self.default


def default_table(connectors: Sequence[str]) -> RouteTable:
    return RouteTable((), tuple(connectors[:1]))


def parse_rules(text: str, connectors: Sequence[str]) -> RouteTable:
    """The rules in `text`, checked against the configured connector ids."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"route"})
    if extra:
        raise RulesError(f"unknown top-level key {extra[0]!r}: rules are [[route]] tables")
    entries = data.get("route", [])
    if not isinstance(entries, list):
        raise RulesError("route must be an array of tables: [[route]]")
    lines = [text.count("\n", 0, m.start()) + 1 for m in _ROUTE_HEADER.finditer(text)]
    routes = []
    for n, entry in enumerate(entries, start=1):
        where = f"route {n}" + (f" (line {lines[n - 1]})" if len(lines) == len(entries) else "")
        routes.append(_route(entry, where, connectors))
    return RouteTable(tuple(routes), tuple(connectors[:1]))


def _route(entry: Any, where: str, known: Sequence[str]) -> Route:
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: must be a table")
    name = entry.get("name", "")
    if not isinstance(name, str):
        raise RulesError(f"{where}: name must be a string")
    if name:
        where = f"{where} {name!r}"
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise RulesError(f"{where}: unknown key {unknown[0]!r} (keys: {', '.join(KEYS)})")
    values = {key: _strings(entry.get(key, []), f"{where}: {key}") for key in (*CRITERIA, "connectors")}
    connectors = values["connectors"]
    if not connectors:
        raise RulesError(f"{where}: connectors is required (the connector ids to try, in order)")
    for cid in connectors:
        if cid not in known:
            raise RulesError(f"{where}: unknown connector {cid!r} (configured: {', '.join(known)})")
    if len(set(connectors)) != len(connectors):
        raise RulesError(f"{where}: a connector is listed twice")
    prefixes = []
    for prefix in values["prefix"]:
        digits = prefix.removeprefix("+")
        if not (digits.isascii() and digits.isdigit()):
            raise RulesError(f"{where}: prefix {prefix!r} is not digits (with an optional +)")
        prefixes.append(digits)
    return Route(
        name=name or where,
        connectors=tuple(connectors),
        prefixes=tuple(prefixes),
        accounts=frozenset(values["account"]),
        senders=frozenset(values["sender"]),
        tags=frozenset(values["tag"]),
    )


def _strings(value: Any, what: str) -> list[str]:
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise RulesError(f"{what} must be a non-empty string or a list of them")
    return list(items)
