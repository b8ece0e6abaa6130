"""message_parts and orphan_receipts keep the receipt's error code (Sinch reports it)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ('message_parts', 'orphan_receipts'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('err', sa.String(length=16), nullable=True))


def downgrade() -> None:
    for table in ('orphan_receipts', 'message_parts'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('err')
