"""Sinch batches: the batches table; messages get their batch, an expiry and a failure code

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'batches',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('uid', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('sender', sa.String(length=20), nullable=False),
        sa.Column('recipients', sa.Text(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('parameters', sa.Text(), nullable=True),
        sa.Column('delivery_report', sa.String(length=24), nullable=False),
        sa.Column('send_at', sa.DateTime(), nullable=True),
        sa.Column('expire_at', sa.DateTime(), nullable=False),
        sa.Column('callback_url', sa.Text(), nullable=True),
        sa.Column('client_reference', sa.String(length=128), nullable=True),
        sa.Column('flash_message', sa.Boolean(), nullable=False),
        sa.Column('feedback_enabled', sa.Boolean(), nullable=False),
        sa.Column('truncate_concat', sa.Boolean(), nullable=False),
        sa.Column('max_parts', sa.Integer(), nullable=True),
        sa.Column('canceled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('modified_at', sa.DateTime(), nullable=False),
        sa.Column('reported_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_batches_account_id_accounts')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_batches')),
        sa.UniqueConstraint('uid', name=op.f('uq_batches_uid')),
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index('ix_batches_account_created', ['account_id', 'created_at'], unique=False)
        batch_op.create_index(
            'ix_batches_unreported',
            ['expire_at'],
            unique=False,
            postgresql_where=sa.text('reported_at IS NULL'),
            sqlite_where=sa.text('reported_at IS NULL'),
        )

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True)
        )
        batch_op.add_column(sa.Column('expire_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('fail_code', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_messages_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(
            'ix_messages_queued_expiry',
            ['expire_at'],
            unique=False,
            postgresql_where=sa.text("status = 'QUEUED' AND expire_at IS NOT NULL"),
            sqlite_where=sa.text("status = 'QUEUED' AND expire_at IS NOT NULL"),
        )
        batch_op.create_foreign_key(
            batch_op.f('fk_messages_batch_id_batches'), 'batches', ['batch_id'], ['id']
        )


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_messages_batch_id_batches'), type_='foreignkey')
        batch_op.drop_index('ix_messages_queued_expiry')
        batch_op.drop_index(batch_op.f('ix_messages_batch_id'))
        batch_op.drop_column('fail_code')
        batch_op.drop_column('expire_at')
        batch_op.drop_column('batch_id')

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index('ix_batches_unreported')
        batch_op.drop_index('ix_batches_account_created')

    op.drop_table('batches')
