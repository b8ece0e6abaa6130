"""Field validators shared by every send path. Each returns the clean value or raises FieldErrors."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import phonenumbers
from yarl import URL

from gateway.egress.policy import SsrfPolicy
from gateway.services.errors import FieldErrors

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_ALNUM_SENDER = re.compile(r"[A-Za-z0-9]{1,10}")
_NUMERIC_SENDER = re.compile(r"\+?[0-9]{1,15}")
_TAG = re.compile(r"[\w.\-:@/ ]{1,64}")
MAX_TAGS = 10
MAX_URL = 2000


def e164(field: str, value: str | None) -> str:
    if value is None or value == "":
        raise FieldErrors.one(field, "This field is required.")
    if value.startswith(" ") and value[1:].isdigit():
        # An unencoded '+' in a form body (curl -d recipient=+81...) arrives as a space.
        value = "+" + value[1:]
    value = value.strip()
    invalid = FieldErrors.one(field, "Enter a valid phone number in E.164 format, e.g. +818012345678.")
    if not _E164.fullmatch(value):
        raise invalid
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise invalid from None
    # phonenumbers forgives a national trunk prefix (+81 0 80...); E.164 does not, so the
    # canonical form must be exactly what was given.
    canonical = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if canonical != value or not phonenumbers.is_valid_number(parsed):
        raise invalid
    return value


def sender(value: str | None) -> str:
    if value is None or value == "":
        raise FieldErrors.one("sender", "This field is required.")
    if _NUMERIC_SENDER.fullmatch(value) or (
        _ALNUM_SENDER.fullmatch(value) and any(c.isalpha() for c in value)
    ):
        return value
    raise FieldErrors.one("sender", "Sender must be 1-10 letters/digits, or a number of at most 15 digits.")


def message_text(field: str, value: str | None) -> str:
    if value is None or value == "":
        raise FieldErrors.one(field, "This field is required.")
    if any(ord(c) < 32 and c not in "\r\n\t" for c in value):
        raise FieldErrors.one(field, "Control characters are not allowed.")
    return value


def http_url(field: str, value: str | None, policy: SsrfPolicy) -> str | None:
    """A customer URL we will fetch or POST to. Refused here: what the outbound policy can never
    reach by its spelling alone (refused IP literals, non-canonical numeric hosts, `localhost`
    names without loopback). Names are not resolved here: the client checks every address it
    connects to (DNS may change between now and then)."""
    if value is None or value == "":
        return None
    bad = FieldErrors.one(field, "Enter a valid http(s) URL.")
    if len(value) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in value):
        raise bad
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number in 0-65535
        host = URL(value).raw_host  # the host as the HTTP client will read it
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not host:
        raise bad
    # Both parsers' readings are judged: the URL is refused if either points somewhere refused.
    for candidate in dict.fromkeys((host, parts.hostname)):
        if policy.check_host(candidate):
            raise FieldErrors.one(field, "This URL points to an address that is not allowed.")
    return value


def tags(value: str | None) -> list[str]:
    if value is None or value.strip() == "":
        return []
    items = [t.strip() for t in value.split(",")]
    if any(t == "" for t in items):
        raise FieldErrors.one("tags", "Empty tag in the comma-separated list.")
    if len(items) > MAX_TAGS:
        raise FieldErrors.one("tags", f"At most {MAX_TAGS} tags.")
    for t in items:
        if not _TAG.fullmatch(t):
            raise FieldErrors.one("tags", f"Invalid tag {t[:64]!r}: 1-64 letters, digits, space or .-:@/_")
    return items


def boolean(field: str, value: str | None) -> bool:
    if value is None or value == "":
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise FieldErrors.one(field, "Expected true or false.")
