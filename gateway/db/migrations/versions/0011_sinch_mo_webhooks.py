"""SIN subscriptions choose their MO webhook format; batch messages indexed by recipient

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('number_subscriptions', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('webhook_format', sa.String(length=8), server_default='xoxzo', nullable=False)
        )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(
            'ix_messages_batch_recipient',
            ['recipient', 'created_at'],
            unique=False,
            postgresql_where=sa.text('batch_id IS NOT NULL'),
            sqlite_where=sa.text('batch_id IS NOT NULL'),
        )


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_batch_recipient')
    with op.batch_alter_table('number_subscriptions', schema=None) as batch_op:
        batch_op.drop_column('webhook_format')
