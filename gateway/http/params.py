"""Request bodies: Xoxzo clients send form-encoded bodies, newer ones JSON; both read the same."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from gateway.services.errors import ApiError, FieldErrors


async def read_params(request: web.Request) -> dict[str, Any]:
    ctype = request.content_type
    if ctype == "application/json":
        try:
            raw = await request.read()
        except web.RequestPayloadError:
            raise _undecodable(request) from None
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise FieldErrors.one("body", "Malformed JSON.") from None
        except RecursionError:  # [[[[...]]]] deeper than the interpreter's recursion limit
            raise FieldErrors.one("body", "JSON nested too deeply.") from None
        if not isinstance(data, dict):
            raise FieldErrors.one("body", "Expected a JSON object.")
        _reject_nul(data)
        return data
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data", "", "application/octet-stream"):
        if ctype in ("", "application/octet-stream") and not request.body_exists:
            return {}
        try:
            form = await request.post()
        except LookupError:  # Content-Type: application/x-www-form-urlencoded; charset=<unknown>
            raise ApiError(415, {"detail": f"Unsupported charset {request.charset!r}; use UTF-8."}) from None
        except ValueError:
            raise FieldErrors.one("body", "Malformed form body.") from None
        except web.RequestPayloadError:
            raise _undecodable(request) from None
        out: dict[str, Any] = {}
        for key in form:
            value = form.get(key)
            if not isinstance(value, str):
                raise FieldErrors.one(key, "File uploads are not accepted here.")
            out[key] = value
        _reject_nul(out)
        return out
    raise ApiError(415, {"detail": f"Unsupported content type {ctype!r}; use form or JSON."})


def _undecodable(request: web.Request) -> FieldErrors:
    """The body could not be read as sent, e.g. Content-Encoding: gzip over bytes that are not."""
    encoding = request.headers.get("Content-Encoding", "")[:40]
    return FieldErrors.one("body", f"Could not decode the body (Content-Encoding {encoding!r}).")


# A lone UTF-16 surrogate (JSON "\ud800") is not a character: no engine can store it as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _unstorable(text: str) -> str | None:
    if "\x00" in text:
        return "NUL characters are not allowed."
    if _SURROGATE.search(text):
        return "Lone UTF-16 surrogates (\\ud800-\\udfff) are not text."
    return None


def _reject_nul(data: dict[str, Any]) -> None:
    """NUL and lone surrogates are never valid text here, and neither SQLite nor PostgreSQL can
    store them: refuse them by name. Walks with its own stack: the JSON parser accepts nesting
    about as deep as the recursion limit, so a recursive walk could overflow."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        prefix, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            name = f"{prefix}{key}"
            problem = _unstorable(str(key)) or (_unstorable(value) if isinstance(value, str) else None)
            if problem is not None:
                clean = _SURROGATE.sub("\ufffd", name.replace("\x00", ""))
                raise FieldErrors.one(clean, problem)
            if isinstance(value, dict | list):
                stack.append((f"{name}.", value))
