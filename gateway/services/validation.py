"""The domain's rules for a phone number and a customer URL, shared by the API's field types
(gateway/http/fields.py) and the services. Each returns the clean value or raises FieldErrors."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import phonenumbers
from yarl import URL

from gateway.egress.policy import SsrfPolicy
from gateway.services.errors import FieldErrors

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
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
