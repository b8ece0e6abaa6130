"""accounts: the operator's per-account API rate limit (NULL: the ratelimit settings apply)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rate_limit', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('rate_burst', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('rate_burst')
        batch_op.drop_column('rate_limit')
