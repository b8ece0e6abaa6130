"""Request bodies: Xoxzo clients send form-encoded bodies, newer ones JSON; both read the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from gateway.http.errors import ApiError, FieldErrors


async def read_params(request: web.Request) -> dict[str, Any]:
    ctype = request.content_type
    if ctype == "application/json":
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise FieldErrors.one("body", "Malformed JSON.") from None
        if not isinstance(data, dict):
            raise FieldErrors.one("body", "Expected a JSON object.")
        _reject_nul(data)
        return data
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data", "", "application/octet-stream"):
        if ctype in ("", "application/octet-stream") and not request.body_exists:
            return {}
        try:
            form = await request.post()
        except ValueError:
            raise FieldErrors.one("body", "Malformed form body.") from None
        out: dict[str, Any] = {}
        for key in form:
            value = form.get(key)
            if not isinstance(value, str):
                raise FieldErrors.one(key, "File uploads are not accepted here.")
            out[key] = value
        _reject_nul(out)
        return out
    raise ApiError(415, {"detail": f"Unsupported content type {ctype!r}; use form or JSON."})


def _reject_nul(data: dict[str, Any], prefix: str = "") -> None:
    """NUL is never valid text here, and PostgreSQL cannot store it: refuse it by name."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if "\x00" in str(key) or (isinstance(value, str) and "\x00" in value):
            raise FieldErrors.one(name.replace("\x00", ""), "NUL characters are not allowed.")
        if isinstance(value, dict):
            _reject_nul(value, f"{name}.")
        elif isinstance(value, list):
            _reject_nul({str(i): v for i, v in enumerate(value)}, f"{name}.")


def optional_str(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FieldErrors.one(name, "Expected a string.")
    return str(value)


T = TypeVar("T")


class FieldCollector:
    """Runs every field check and reports all failures in one 400, not the first one only."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def check(self, fn: Callable[[], T], fallback: T) -> T:
        try:
            return fn()
        except FieldErrors as exc:
            self.errors.update(exc.body)
            return fallback

    def raise_if_any(self) -> None:
        if self.errors:
            raise FieldErrors(self.errors)
