"""What a service raises when a request cannot be done: the status and the JSON body the caller
gets. Services raise these; the HTTP layer (gateway/http/errors.py) turns them into responses,
and the command line prints them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = dict(body)


class FieldErrors(ApiError):
    """400 with `{"field": ["reason", ...]}`; collects several fields before raising."""

    def __init__(self, errors: Mapping[str, list[str]] | None = None) -> None:
        super().__init__(400, errors or {})

    @classmethod
    def one(cls, field: str, reason: str) -> FieldErrors:
        return cls({field: [reason]})


def not_found(what: str = "Not found.") -> ApiError:
    return ApiError(404, {"detail": what})


def forbidden(what: str) -> ApiError:
    return ApiError(403, {"detail": what})
