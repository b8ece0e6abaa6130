"""Field types of the request models: each one checks one kind of value, answers the message
the API has always answered for it, and describes itself in the OpenAPI document.

Form bodies and query strings carry text only; JSON bodies may carry numbers, booleans,
objects. A text field reads a JSON number as its text and refuses anything else with
"Expected a string.". A required field that is absent, null or empty is "This field is
required."; an optional one that is null or empty is not given.

Validators that need the app (the outbound URL policy) read it from the validation context,
which is the aiohttp request (`gateway/http/api.py` validates with `context=request`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BeforeValidator, Field, ValidationInfo, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from gateway.keys import URL_POLICY
from gateway.services import senders, validation
from gateway.services.errors import FieldErrors

REQUIRED = "This field is required."
T = TypeVar("T")


def request_of(info: ValidationInfo) -> web.Request:
    if not isinstance(info.context, web.Request):
        raise TypeError("validate request models with context=<the aiohttp request>")
    return info.context


def reason(check: Callable[[], T]) -> T:
    """Runs a service's check (which raises FieldErrors naming its own field) as a field rule."""
    try:
        return check()
    except FieldErrors as exc:
        raise ValueError(next(iter(exc.body.values()))[0]) from None


def string(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("Expected a string.")
    return str(value)


def required(value: Any) -> str:
    if value is None or value == "":
        raise ValueError(REQUIRED)
    return string(value)


def optional(value: Any) -> str | None:
    return None if value is None or value == "" else string(value)


def _e164(value: Any) -> str:
    return reason(lambda: validation.e164("", None if value is None else string(value)))


_DIGITS = re.compile(r"[0-9]+")


def e164_or_digits(value: Any) -> str:
    text = None if value is None else string(value)
    if text is not None and _DIGITS.fullmatch(text):  # xoxzo-cloudpy's README sends 8180...
        text = "+" + text
    return _e164(text)


def _sender(value: Any) -> str:
    text = required(value)
    try:
        senders.check_entry(text)
    except ValueError:
        raise ValueError(SENDER_RULE) from None
    return text


SENDER_RULE = (
    "Sender must be 1-11 letters, digits and single spaces with at least one letter, or a number"
    " of at most 15 digits; one the operator allowed for your account, or one of your SINs."
)


def words(value: Any, limit: int) -> str:
    """Required text with more than spaces in it, at most `limit` characters."""
    text = required(value)
    if not text.strip():
        raise ValueError(REQUIRED)
    if len(text) > limit:
        raise ValueError(f"At most {limit} characters.")
    return text


def no_controls(text: str) -> str:
    if any(ord(c) < 32 and c not in "\r\n\t" for c in text):
        raise ValueError("Control characters are not allowed.")
    return text


def _url(value: Any, info: ValidationInfo) -> str | None:
    text = optional(value)
    if text is None:
        return None
    return reason(lambda: validation.http_url("", text, request_of(info).app[URL_POLICY]))


_TAG = re.compile(r"[\w.\-:@/ ]{1,64}")
MAX_TAGS = 10


def _tags(value: Any) -> tuple[str, ...]:
    text = optional(value)
    if text is None or text.strip() == "":
        return ()
    items = tuple(t.strip() for t in text.split(","))
    if any(t == "" for t in items):
        raise ValueError("Empty tag in the comma-separated list.")
    if len(items) > MAX_TAGS:
        raise ValueError(f"At most {MAX_TAGS} tags.")
    for t in items:
        if not _TAG.fullmatch(t):
            raise ValueError(f"Invalid tag {t[:64]!r}: 1-64 letters, digits, space or .-:@/_")
    return items


FLAG_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _flag(value: Any) -> bool:
    if isinstance(value, bool):  # JSON true / false
        return value
    text = optional(value)
    if text is None:
        return False
    flag = FLAG_WORDS.get(text.strip().lower())
    if flag is None:
        raise ValueError("Expected true or false.")
    return flag


def _when(value: Any) -> datetime:
    text = string(value).strip().replace(" ", "T")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("Expected an ISO-8601 date or date-time, e.g. 2026-11-23T10:00:00Z.") from None
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("Out of range: between years 1 and 9999 in UTC.") from None


_INT = re.compile(r"-?[0-9]+")


def whole(lo: int, hi: int, default: int) -> BeforeValidator:
    """A whole number in [lo, hi] written in ASCII digits; empty means `default`."""

    def check(value: Any) -> int:
        text = optional(value)
        if text is None:
            return default
        try:
            if not _INT.fullmatch(text):  # int() would also take "١", " 5" and "1_0"
                raise ValueError(text)
            n = int(text)  # ValueError past 4300 digits
        except ValueError:
            raise ValueError("Expected a whole number.") from None
        if not lo <= n <= hi:
            raise ValueError(f"Must be between {lo} and {hi}.")
        return n

    return BeforeValidator(check)


def documented(**schema: Any) -> Any:
    """Schema keywords for the document, not enforced a second time: a validator does."""
    return Field(json_schema_extra=schema)


E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
MAX_URL = validation.MAX_URL

Text = Annotated[str, BeforeValidator(required)]
OptionalText = Annotated[str | SkipJsonSchema[None], BeforeValidator(optional)]
E164 = Annotated[str, BeforeValidator(_e164), documented(pattern=E164_PATTERN, examples=["+818012345678"])]
# E.164, or its digits without the + (read as +digits), as SMS senders may be written.
E164OrDigits = Annotated[
    str,
    BeforeValidator(e164_or_digits),
    documented(pattern=r"^\+?[1-9][0-9]{6,14}$", examples=["+818012345678", "818012345678"]),
]
Sender = Annotated[
    str,
    BeforeValidator(_sender),
    documented(pattern=r"^(\+?[0-9]{1,15}|[A-Za-z0-9]+( [A-Za-z0-9]+)*)$", maxLength=16, examples=["DEMO"]),
]
MessageText = Annotated[str, BeforeValidator(lambda v: no_controls(required(v))), documented(minLength=1)]
# An http(s) URL the outbound policy could reach (gateway/services/validation.py http_url).
Url = Annotated[
    str | SkipJsonSchema[None], BeforeValidator(_url), documented(format="uri", maxLength=MAX_URL)
]
Tags = Annotated[
    tuple[str, ...],
    BeforeValidator(_tags),
    WithJsonSchema(
        {
            "type": "string",
            "description": "Comma-separated, at most 10 tags of 1-64 letters, digits, space or `.-:@/_`.",
            "examples": ["promo,jp"],
        }
    ),
]
# Xoxzo's words for a boolean, in a form or a query; JSON may also send true / false.
Flag = Annotated[
    bool,
    BeforeValidator(_flag),
    WithJsonSchema({"type": ["boolean", "string"], "enum": [True, False, *FLAG_WORDS]}),
]
When = Annotated[datetime, BeforeValidator(_when)]
