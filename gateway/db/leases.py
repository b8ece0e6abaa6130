"""Lease claims on work tables (outbound messages, webhook deliveries).

A row is due when it has `status == ready_status`, `next_attempt_at <= now` and no unexpired
lease. Claiming is two statements in one transaction:

1. SELECT the ids of up to `limit` due rows FOR UPDATE SKIP LOCKED: on PostgreSQL several
   nodes never wait on, or take, each other's rows.
2. UPDATE those ids, repeating the lease conditions, stamping them with a token the caller
   then selects by: on SQLite (no SKIP LOCKED) two workers that read the same ids cannot both
   win a row.

Not one `UPDATE ... WHERE id IN (SELECT ... LIMIT n)`: PostgreSQL may run that subquery as a
semi-join once per outer row, so the LIMIT stops bounding the claim (seen: 386 rows claimed
with limit 200) and the statement turns quadratic.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.in_list import in_list


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
    params: Mapping[str, Any] | None = None,
) -> int:
    """Stamp up to `limit` due rows of `model` with `token`; returns how many. Select them by
    `claimed_by == token` in the same transaction. `params`: values of the lists `extra` binds
    by name (in_list)."""
    rows = await due(
        s,
        model,
        ready_status=ready_status,
        now=now,
        limit=limit,
        order_by=order_by,
        extra=extra,
        params=params,
    )
    return await stamp(
        s,
        model,
        [r[0] for r in rows],
        ready_status=ready_status,
        now=now,
        lease_until=lease_until,
        token=token,
        values=values,
    )


def _unleased(model: type[Any], now: datetime) -> ColumnElement[bool]:
    return or_(model.claimed_until.is_(None), model.claimed_until < now)


async def due(
    s: AsyncSession,
    model: type[Any],
    *,
    ready_status: str,
    now: datetime,
    limit: int,
    order_by: tuple[Any, ...],
    extra: tuple[ColumnElement[bool], ...] = (),
    columns: tuple[Any, ...] = (),
    params: Mapping[str, Any] | None = None,
) -> list[Row[Any]]:
    """Statement 1 of a claim: up to `limit` due rows, (id, *columns), locked FOR UPDATE SKIP
    LOCKED; a caller choosing among them itself then stamps the ids it keeps."""
    result = await s.execute(
        select(model.id, *columns)
        .where(model.status == ready_status, model.next_attempt_at <= now, _unleased(model, now), *extra)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True),
        params,
    )
    return list(result.all())


async def stamp(
    s: AsyncSession,
    model: type[Any],
    ids: list[int],
    *,
    ready_status: str,
    now: datetime,
    lease_until: datetime,
    token: str,
    values: Mapping[str, Any] | None = None,
) -> int:
    """Statement 2 of a claim: lease those of `ids` still due to `token`; returns how many."""
    if not ids:
        return 0
    res = await s.execute(
        update(model)
        .where(in_list(model.id, "lease_ids"), model.status == ready_status, _unleased(model, now))
        .values(claimed_until=lease_until, claimed_by=token, **(values or {}))
        .execution_options(synchronize_session=False),
        {"lease_ids": ids},
    )
    return int(res.rowcount)  # type: ignore[attr-defined]
