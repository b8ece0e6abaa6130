"""calls: the transfer's dial status and duration

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 04:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('transfer_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('transfer_seconds', sa.Numeric(precision=10, scale=3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('transfer_seconds')
        batch_op.drop_column('transfer_status')
