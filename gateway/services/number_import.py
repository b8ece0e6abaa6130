"""Number inventory CSV: parsed and validated in full before anything touches the database.

Header (any column order): number,country_code,sms,voice,monthly_cost,minute_cost, and
optionally prefix. Every bad row is reported with its line number; a file with any error
imports nothing.

`prefix` is the local area prefix the listings show (Xoxzo's: "3" for +81 3..., "50" for
+81 50..., without the trunk 0). Left out or empty, it is derived from the number
(phonenumbers' national destination code); the older form, the number's leading digits with
the country code ("813"), is read as the local prefix after it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TypeVar

import phonenumbers

from gateway.services import validation as v
from gateway.services.errors import FieldErrors

COLUMNS = ("number", "country_code", "prefix", "sms", "voice", "monthly_cost", "minute_cost")
OPTIONAL = frozenset({"prefix"})
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_PREFIX = re.compile(r"[0-9]{1,16}")
# numbers.monthly_cost / minute_cost are NUMERIC(14, 4).
_MAX_COST = Decimal("9999999999.9999")
_COST_PLACES = 4
T = TypeVar("T")


@dataclass(frozen=True)
class NumberRow:
    line: int  # where the row ends in the file, for error messages
    number: str  # E.164 with +
    country_code: str  # upper-case ISO 3166-1 alpha-2
    prefix: str  # local area prefix, without the trunk 0 ("3" for +81312345678); may be empty
    sms: bool
    voice: bool
    monthly_cost: Decimal
    minute_cost: Decimal


class NumberImportError(Exception):
    """All problems of a file, each `line N: column: reason`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true/false, 1/0 or yes/no")


def _cost(value: str) -> Decimal:
    try:
        cost = Decimal(value)
    except InvalidOperation:
        raise ValueError("expected a decimal number, e.g. 1000 or 0.25") from None
    if not cost.is_finite():
        raise ValueError("expected a decimal number, e.g. 1000 or 0.25")
    if cost < 0:
        raise ValueError("must be >= 0")
    if cost > _MAX_COST:
        raise ValueError(f"must be at most {_MAX_COST}")
    exponent = cost.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if -exponent > _COST_PLACES:
        raise ValueError(f"at most {_COST_PLACES} decimal places")
    return cost


def _number(value: str) -> str:
    try:
        return v.e164("number", value)
    except FieldErrors:
        raise ValueError("not a valid E.164 number (e.g. +81312345678)") from None


def _row(line: int, raw: dict[str, str], errors: list[str], seen: dict[str, int]) -> NumberRow | None:
    cells = {k: (raw.get(k) or "").strip() for k in COLUMNS}
    before = len(errors)

    def check(column: str, fn: Callable[[str], T], fallback: T) -> T:
        if cells[column] == "":
            errors.append(f"line {line}: {column}: required")
            return fallback
        try:
            return fn(cells[column])
        except ValueError as exc:
            errors.append(f"line {line}: {column}: {exc} (got {cells[column][:40]!r})")
            return fallback

    number = check("number", _number, "")
    country = check("country_code", _country, "")
    given: str | None = check("prefix", _prefix, None) if cells["prefix"] else ""
    sms = check("sms", _bool, False)
    voice = check("voice", _bool, False)
    monthly = check("monthly_cost", _cost, Decimal(0))
    minute = check("minute_cost", _cost, Decimal(0))
    prefix = None if not number or given is None else local_prefix(number, given)
    if number and given and prefix is None:
        errors.append(f"line {line}: prefix: {number} does not start with {given}")
    if number in seen:
        errors.append(f"line {line}: number: {number} already on line {seen[number]}")
    elif number:
        seen[number] = line
    if len(errors) > before:
        return None
    assert prefix is not None  # no error: the number and the prefix given are good
    return NumberRow(line, number, country, prefix, sms, voice, monthly, minute)


def local_prefix(number: str, given: str = "") -> str | None:
    """The local area prefix of `number` (E.164): `given` when the national number starts with
    it, `given` without the country code when that is how the number starts (the older form),
    else None; derived when nothing (or only the country code) is given."""
    parsed = phonenumbers.parse(number, None)
    national = phonenumbers.national_significant_number(parsed)
    country = str(parsed.country_code)
    if given and national.startswith(given):
        return given
    if given and not number[1:].startswith(given):
        return None
    given = given[len(country) :] if given.startswith(country) else ""
    return given or national[: phonenumbers.length_of_national_destination_code(parsed)]


def _country(value: str) -> str:
    if not _COUNTRY.fullmatch(value):
        raise ValueError("expected a 2-letter ISO country code, e.g. JP")
    return value.upper()


def _prefix(value: str) -> str:
    if not _PREFIX.fullmatch(value):
        raise ValueError("expected 1-16 digits, e.g. 813")
    return value


def parse_numbers_csv(data: bytes | str) -> list[NumberRow]:
    """Every row or NumberImportError listing every problem (never a partial result)."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise NumberImportError([f"file is not UTF-8 (byte {exc.start})"]) from None
    else:
        text = data.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    errors: list[str] = []
    rows: list[NumberRow] = []
    try:
        header = next(reader, None)
        if header is None:
            raise NumberImportError(["line 1: empty file; expected the header " + ",".join(COLUMNS)])
        names = [h.strip().lower() for h in header]
        missing = [c for c in COLUMNS if c not in names and c not in OPTIONAL]
        unknown = [h for h in names if h not in COLUMNS]
        dupes = sorted({h for h in names if names.count(h) > 1})
        if missing or unknown or dupes:
            problems = []
            if missing:
                problems.append("missing " + ", ".join(missing))
            if unknown:
                problems.append("unknown " + ", ".join(repr(u) for u in unknown))
            if dupes:
                problems.append("repeated " + ", ".join(dupes))
            raise NumberImportError([f"line 1: header: {'; '.join(problems)} (expected {','.join(COLUMNS)})"])
        seen: dict[str, int] = {}
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue  # blank line
            if len(cells) != len(names):
                errors.append(f"line {line}: expected {len(names)} columns, got {len(cells)}")
                continue
            row = _row(line, dict(zip(names, cells, strict=True)), errors, seen)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: malformed CSV: {exc}")
    if errors:
        raise NumberImportError(errors)
    return rows
