"""outbound dialing rights per account (toll-fraud guards)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outbound_allow_prefixes', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('outbound_max_concurrent', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('outbound_max_per_minute', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('verified_callers', sa.Text(), nullable=True))

    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index(
            'ix_calls_open_by_account',
            ['account_id'],
            unique=False,
            postgresql_where=sa.text('ended_at IS NULL'),
            sqlite_where=sa.text('ended_at IS NULL'),
        )


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index(
            'ix_calls_open_by_account',
            postgresql_where=sa.text('ended_at IS NULL'),
            sqlite_where=sa.text('ended_at IS NULL'),
        )

    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('verified_callers')
        batch_op.drop_column('outbound_max_per_minute')
        batch_op.drop_column('outbound_max_concurrent')
        batch_op.drop_column('outbound_allow_prefixes')
