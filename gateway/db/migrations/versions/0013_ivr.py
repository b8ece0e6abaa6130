"""IVR: recordings, DIN status_url, the gather steps of a call

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-12 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('number_subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_url', sa.Text(), nullable=True))
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('steps', sa.Text(), nullable=True))
    op.create_table('recordings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('uid', sa.String(length=32), nullable=False),
    sa.Column('call_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('caller', sa.String(length=32), nullable=False),
    sa.Column('recipient', sa.String(length=32), nullable=False),
    sa.Column('duration', sa.Numeric(precision=10, scale=2), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_recordings_account_id_accounts')),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_recordings_call_id_calls')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recordings')),
    sa.UniqueConstraint('uid', name=op.f('uq_recordings_uid'))
    )
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recordings_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_recordings_call_id'), ['call_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('recordings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recordings_call_id'))
        batch_op.drop_index(batch_op.f('ix_recordings_account_id'))
    op.drop_table('recordings')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('steps')
    with op.batch_alter_table('number_subscriptions', schema=None) as batch_op:
        batch_op.drop_column('status_url')
