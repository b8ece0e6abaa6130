"""Approved-template SMS: accounts without the freeform flag send only operator-approved texts."""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import re2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.db.models import Template
from gateway.services.errors import ApiError, FieldErrors, not_found
from gateway.services.views import template_json

STATUSES = ("PENDING", "APPROVED", "REJECTED")
DELETED = "DELETED"  # kept for the messages that reference it, invisible to the API
_IDENT = set(string.ascii_letters + string.digits + "_")
MAX_NAME = 200
MAX_CONTENT = 2000
# A template may repeat a placeholder hundreds of times: the text is sized before it is built, so a
# long variable cannot make a message of tens of megabytes (memory, then seconds of part planning).
MAX_RENDERED = 64 * 1024


def placeholders(content: str) -> list[str]:
    """Names in `{name}` placeholders; `{{`/`}}` are literal braces. Raises FieldErrors on bad syntax."""
    names: list[str] = []
    try:
        parsed = _parse(content)
    except ValueError as exc:
        raise FieldErrors.one("content", f"Invalid placeholder syntax: {exc}.") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or not set(name) <= _IDENT or name[0].isdigit() or spec or conversion:
            raise FieldErrors.one(
                "content", f"Invalid placeholder {{{name}}}: use {{name}} with letters, digits, _."
            )
        if name not in names:
            names.append(name)
    return names


def render(content: str, variables: Mapping[str, Any]) -> str:
    wanted = placeholders(content)
    if not isinstance(variables, Mapping):
        raise FieldErrors.one("variables", "Expected an object of name: value.")
    errors: dict[str, list[str]] = {}
    for name in wanted:
        if name not in variables or variables[name] is None:
            errors[name] = ["This field is required."]
    for name, value in variables.items():
        if name not in wanted:
            errors[str(name)] = ["Unexpected variable: not in the template."]
        elif isinstance(value, dict | list | bool):
            errors[name] = ["Expected a string."]
    if errors:
        raise ApiError(422, {"variables": errors})
    values = {k: str(v) for k, v in variables.items()}
    size = sum(len(literal) + len(values[name] if name else "") for literal, name, _, _ in _parse(content))
    if size > MAX_RENDERED:
        raise FieldErrors.one("variables", f"The message would be {size} characters, at most {MAX_RENDERED}.")
    return content.format_map(values)


def _parse(content: str) -> list[tuple[str, str | None, str | None, str | None]]:
    return list(string.Formatter().parse(content))


def text_pattern(content: str) -> str:
    """An RE2 pattern for the texts render() can make of `content`: its literal parts as they
    are, each placeholder any run of characters (a variable may be empty, as in the API).
    RE2 matches in time linear in the text whatever the pattern, so no template a customer
    writes can make matching backtrack; the text itself is bounded by the message length."""
    parsed = _parse(content)
    return "".join(re2.escape(text) + ("" if name is None else "(?s:.*)") for text, name, _, _ in parsed)


class TemplateMatcher:
    """Which APPROVED template of an account a text is, for texts that come without one (SMPP
    submits from accounts without the freeform flag). Compiled patterns are kept by content:
    approvals are read from the database on every match, so a rejected template stops
    matching at once."""

    CACHE = 512

    def __init__(self) -> None:
        self._compiled: dict[str, Any] = {}

    def _regex(self, content: str) -> Any:
        regex = self._compiled.get(content)
        if regex is None:
            options = re2.Options()
            options.never_capture = True
            options.log_errors = False  # it would write the customer's text to stderr
            try:
                regex = re2.compile(text_pattern(content), options)
            except (re2.error, ValueError):
                regex = False  # over RE2's memory cap, or placeholder syntax: matches nothing
            if len(self._compiled) >= self.CACHE:  # the oldest goes (threads may race: pop)
                self._compiled.pop(next(iter(self._compiled), ""), None)
            self._compiled[content] = regex
        return regex

    async def template_for(self, s: AsyncSession, account_id: int, text: str) -> int | None:
        """The id of the account's APPROVED template that `text` is with its variables filled
        in; of several, the one with the most fixed text (then the oldest); None for none."""
        rows = await s.execute(
            select(Template.id, Template.content)
            .where(Template.account_id == account_id, Template.status == "APPROVED")
            .order_by(Template.id)
        )
        # Linear, but a long template against a long text is milliseconds: off the event loop
        # (RE2 releases the GIL).
        return await asyncio.to_thread(self._best, [(i, c) for i, c in rows], text)

    def _best(self, templates: list[tuple[int, str]], text: str) -> int | None:
        best: tuple[int, int] | None = None  # (fixed characters, template id)
        for template_id, content in templates:
            regex = self._regex(content)
            try:
                if not regex or regex.fullmatch(text) is None:
                    continue
            except UnicodeEncodeError:  # a lone surrogate: no template makes one
                return None
            fixed = sum(len(literal) for literal, _, _, _ in _parse(content))
            if best is None or fixed > best[0]:
                best = (fixed, template_id)
        return None if best is None else best[1]


class TemplateService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, account_id: int, name: str, content: str) -> dict[str, Any]:
        """`name` and `content` as the API checked them (gateway/http/routes_templates.py)."""
        row = Template(uid=secrets.token_hex(16), account_id=account_id, name=name, content=content)
        async with self._sessions.begin() as s:
            s.add(row)
        return template_json(row)

    async def _own(self, s: AsyncSession, account_id: int | None, uid: str) -> Template:
        q = select(Template).where(Template.uid == uid, Template.status != DELETED)
        if account_id is not None:
            q = q.where(Template.account_id == account_id)
        row = (await s.execute(q)).scalar_one_or_none()
        if row is None:
            raise not_found("No such template.")
        return row

    async def get_row(self, account_id: int, uid: str) -> Template:
        async with self._sessions() as s:
            return await self._own(s, account_id, uid)

    async def approved_text(
        self, account_id: int, uid: str, variables: Mapping[str, Any]
    ) -> tuple[Template, str]:
        """The account's template and its text with `variables` filled in, for sending: 400
        `template` unless it is APPROVED, 422 for missing or extra variables."""
        template = await self.get_row(account_id, uid)
        if template.status != "APPROVED":
            raise FieldErrors.one(
                "template", f"Template is {template.status}; only APPROVED templates can be sent."
            )
        return template, render(template.content, variables)

    async def get(self, account_id: int, uid: str) -> dict[str, Any]:
        return template_json(await self.get_row(account_id, uid))

    async def list(self, account_id: int) -> list[dict[str, Any]]:
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(Template)
                    .where(Template.account_id == account_id, Template.status != DELETED)
                    .order_by(Template.created_at.desc(), Template.id.desc())
                )
            ).scalars()
            return [template_json(r) for r in rows]

    async def update(
        self, account_id: int, uid: str, name: str | None, content: str | None
    ) -> dict[str, Any]:
        """None leaves the field as it is."""
        async with self._sessions.begin() as s:
            row = await self._own(s, account_id, uid)
            if content is not None and content != row.content:
                row.status = "PENDING"  # a changed text needs the operator's approval again
                row.content = content
            row.name, row.updated_at = name or row.name, datetime.now(UTC)
        return template_json(row)

    async def delete(self, account_id: int, uid: str) -> None:
        async with self._sessions.begin() as s:
            row = await self._own(s, account_id, uid)
            row.status = DELETED
            row.updated_at = datetime.now(UTC)

    async def set_status(self, uid: str, status: str) -> dict[str, Any]:
        """Operator action (CLI, operator console): not reachable through the account API."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        async with self._sessions.begin() as s:
            row = await self._own(s, None, uid)
            row.status = status
            row.updated_at = datetime.now(UTC)
        return template_json(row)
