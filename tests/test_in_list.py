"""in_list(): the same rows as an IN on both engines, and on PostgreSQL one statement text (so one
prepared statement per connection) whatever the list's length."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event, insert, select, update

from gateway.db.engine import create_engine
from gateway.db.in_list import in_list, not_in_list
from gateway.db.models import Number
from tests.conftest import ENGINES
from tests.procs import fresh_database

NUMBERS = [f"+8131234{i:04d}" for i in range(7)] + [
    "+8131234567890123456"
]  # the last: 20, the column's length
BY_NUMBER = select(Number.number).where(in_list(Number.number, "numbers")).order_by(Number.number)
OTHERS = select(Number.number).where(not_in_list(Number.number, "numbers")).order_by(Number.number)


@pytest.mark.parametrize("engine_name", ENGINES)
async def test_in_list_selects_and_updates_like_in_with_one_statement_on_postgresql(
    engine_name: str, tmp_path: Path
) -> None:
    async with fresh_database(engine_name, tmp_path) as url:
        engine = create_engine(url)
        sent: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    insert(Number),
                    [
                        {
                            "uid": f"u{i}",
                            "number": n,
                            "country_code": "JP",
                            "prefix": "81",
                            "monthly_cost": 0,
                            "minute_cost": 0,
                        }
                        for i, n in enumerate(NUMBERS)
                    ],
                )
                sent.clear()
                # A value longer than the column matches nothing (a cast to VARCHAR(20) would cut
                # it to the 20-character number it starts with).
                longer = NUMBERS[7] + "7"
                for wanted in (
                    NUMBERS[:1],
                    NUMBERS[2:5],
                    NUMBERS[::2],
                    [],
                    ["+810000", NUMBERS[6]],
                    [longer],
                ):
                    got = (await conn.execute(BY_NUMBER, {"numbers": wanted})).scalars().all()
                    assert got == sorted(n for n in wanted if n in NUMBERS)
                    others = (await conn.execute(OTHERS, {"numbers": wanted})).scalars().all()
                    assert others == [n for n in NUMBERS if n not in wanted]  # all of them for []
                changed = await conn.execute(
                    update(Number).where(in_list(Number.number, "numbers")).values(sms=True),
                    {"numbers": NUMBERS[:3]},
                )
                assert changed.rowcount == 3
                sms = select(Number.number).where(Number.sms).order_by(Number.number)
                assert (await conn.execute(sms)).scalars().all() == NUMBERS[:3]
        finally:
            await engine.dispose()
    selects = {s for s in sent if s.startswith("SELECT numbers.number") and "numbers.sms" not in s}
    if engine_name == "postgresql":  # six lists, one text for each construct
        assert sorted(x.split("WHERE ")[1].split(" ORDER")[0] for x in selects) == [
            "numbers.number <> ALL($1::VARCHAR[])",
            "numbers.number = ANY($1::VARCHAR[])",
        ]
    else:  # an expanding IN / NOT IN per length (the empty one included)
        assert len(selects) == 10, selects  # five lengths among the six lists, for each construct
        assert all(" = 1" not in s for s in selects), selects
