"""numbers: prefix becomes the local area prefix without the trunk 0 ("3" for +81 3...)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 09:00:00.000000
"""

from collections.abc import Callable, Sequence

import phonenumbers
import sqlalchemy as sa
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000
_NUMBERS = sa.table(
    'numbers', sa.column('id', sa.BigInteger()), sa.column('number', sa.String()), sa.column('prefix', sa.String())
)


def _local(number: str) -> str:
    # As gateway.services.number_import.local_prefix derives it at this revision.
    parsed = phonenumbers.parse(number, None)
    national = phonenumbers.national_significant_number(parsed)
    return national[: phonenumbers.length_of_national_destination_code(parsed)]


def _country_and_local(number: str) -> str:
    return str(phonenumbers.parse(number, None).country_code) + _local(number)


def _rewrite(new: Callable[[str], str]) -> None:
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(_NUMBERS.c.id, _NUMBERS.c.number)
            .where(_NUMBERS.c.id > last)
            .order_by(_NUMBERS.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            _NUMBERS.update().where(_NUMBERS.c.id == sa.bindparam('row_id')),
            [{'row_id': i, 'prefix': new(number)} for i, number in rows],
        )
        last = rows[-1][0]


def upgrade() -> None:
    # The old column held the number's leading digits with the country code ("813").
    _rewrite(_local)


def downgrade() -> None:
    _rewrite(_country_and_local)
