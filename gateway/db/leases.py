"""Lease claims on work tables (outbound messages, webhook deliveries).

A row is due when it has `status == ready_status`, `next_attempt_at <= now` and no unexpired
lease. Claiming takes up to `limit` due rows with SELECT ... FOR UPDATE SKIP LOCKED
(PostgreSQL: several nodes never wait on or take each other's rows) inside one UPDATE that
repeats the lease conditions (SQLite, which has no SKIP LOCKED: two workers that picked the
same rows cannot both win them), stamping them with a token the caller then selects by.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession


async def claim(
    s: AsyncSession,
    model: type[Any],
    *,
    ready_status: str,
    now: datetime,
    lease_until: datetime,
    token: str,
    limit: int,
    order_by: tuple[Any, ...],
    extra: tuple[ColumnElement[bool], ...] = (),
    values: Mapping[str, Any] | None = None,
) -> None:
    """Stamp up to `limit` due rows of `model` with `token`; select them by `claimed_by == token`."""
    unleased = or_(model.claimed_until.is_(None), model.claimed_until < now)
    due = (
        select(model.id)
        .where(model.status == ready_status, model.next_attempt_at <= now, unleased, *extra)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    await s.execute(
        update(model)
        .where(model.id.in_(due.scalar_subquery()), model.status == ready_status, unleased)
        .values(claimed_until=lease_until, claimed_by=token, **(values or {}))
        .execution_options(synchronize_session=False)
    )
