"""SMSC connectors: the connector of each message and part, receipts matched per connector,
and the shared per-second submit counters of the connectors' rate caps

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('smsc', sa.String(length=32), nullable=True))
    # Everything sent so far went out on the one [smpp] connector, whose id is `default`; its
    # parts' receipts keep matching as long as a connector of that id exists.
    with op.batch_alter_table('message_parts', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('connector', sa.String(length=32), server_default='default', nullable=False)
        )
    with op.batch_alter_table('orphan_receipts', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('connector', sa.String(length=32), server_default='default', nullable=False)
        )
    op.execute(
        "UPDATE messages SET smsc = 'default' "
        "WHERE sent_time IS NOT NULL OR id IN (SELECT message_id FROM message_parts)"
    )
    op.create_table(
        'smpp_rate_windows',
        sa.Column('connector', sa.String(length=32), nullable=False),
        sa.Column('epoch_second', sa.BigInteger(), nullable=False),
        sa.Column('taken', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('connector', name=op.f('pk_smpp_rate_windows')),
    )


def downgrade() -> None:
    op.drop_table('smpp_rate_windows')
    with op.batch_alter_table('orphan_receipts', schema=None) as batch_op:
        batch_op.drop_column('connector')
    with op.batch_alter_table('message_parts', schema=None) as batch_op:
        batch_op.drop_column('connector')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('smsc')
