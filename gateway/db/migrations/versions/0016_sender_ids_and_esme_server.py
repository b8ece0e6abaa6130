"""Per-account sender allow-lists (grandfathering the senders each account already used), the
connector an MO came from, and the SMPP server's credentials and deliveries to ESMEs

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-12 09:00:00.000000
"""

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op


revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NUMERIC = re.compile(r"\+?[0-9]{1,15}")


def _grandfather() -> None:
    """Every sender an account has used (messages and batches) goes on its list with origin
    'migration', so no deployment breaks at upgrade; numbers of the operator's inventory are
    left out: holding the SIN allows them, and an account that gave one up must not keep it."""
    bind = op.get_bind()
    used = bind.execute(
        sa.text("SELECT DISTINCT account_id, sender FROM messages UNION SELECT account_id, sender FROM batches")
    ).all()
    inventory = {n for (n,) in bind.execute(sa.text("SELECT number FROM numbers"))}
    rows = {}
    for account_id, sender in used:
        if _NUMERIC.fullmatch(sender):
            sender = "+" + sender.removeprefix("+")
            if sender in inventory:
                continue
        rows[(account_id, sender)] = {
            "account_id": account_id,
            "sender": sender,
            "origin": "migration",
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
    if rows:
        table = sa.table(
            'sender_ids',
            sa.column('account_id', sa.BigInteger()),
            sa.column('sender', sa.String()),
            sa.column('origin', sa.String()),
            sa.column('created_at', sa.DateTime()),
        )
        op.bulk_insert(table, list(rows.values()))


def upgrade() -> None:
    op.create_table(
        'sender_ids',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('sender', sa.String(length=20), nullable=False),
        sa.Column('origin', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['account_id'], ['accounts.id'], name=op.f('fk_sender_ids_account_id_accounts')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sender_ids')),
        sa.UniqueConstraint('account_id', 'sender', name=op.f('uq_sender_ids_account_id_sender')),
    )
    with op.batch_alter_table('sender_ids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sender_ids_account_id'), ['account_id'], unique=False)
    _grandfather()
    for table in ('inbound_messages', 'mo_parts'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('smsc', sa.String(length=32), nullable=True))
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('esme_receipt', sa.Integer(), server_default='0', nullable=False)
        )
        batch_op.add_column(sa.Column('data_coding', sa.Integer(), nullable=True))
    with op.batch_alter_table('number_subscriptions', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('mo_delivery', sa.String(length=8), server_default='webhook', nullable=False)
        )
    op.create_table(
        'smpp_credentials',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('system_id', sa.String(length=16), nullable=False),
        sa.Column('password_hash', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['account_id'], ['accounts.id'], name=op.f('fk_smpp_credentials_account_id_accounts')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_smpp_credentials')),
        sa.UniqueConstraint('account_id', name=op.f('uq_smpp_credentials_account_id')),
        sa.UniqueConstraint('system_id', name=op.f('uq_smpp_credentials_system_id')),
    )
    op.create_table(
        'esme_deliveries',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('destination', sa.String(length=32), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('receipted_id', sa.String(length=32), nullable=True),
        sa.Column('message_state', sa.Integer(), nullable=True),
        sa.Column('stat', sa.String(length=8), nullable=False),
        sa.Column('submitted_at', sa.DateTime(), nullable=True),
        sa.Column('done_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
        sa.Column('claimed_until', sa.DateTime(), nullable=True),
        sa.Column('claimed_by', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ['account_id'], ['accounts.id'], name=op.f('fk_esme_deliveries_account_id_accounts')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_esme_deliveries')),
    )
    with op.batch_alter_table('esme_deliveries', schema=None) as batch_op:
        batch_op.create_index(
            'ix_esme_deliveries_account_next', ['account_id', 'next_attempt_at'], unique=False
        )
    op.create_table(
        'esme_parts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column('destination', sa.String(length=32), nullable=False),
        sa.Column('ref', sa.Integer(), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('msgid', sa.String(length=32), nullable=False),
        sa.Column('esme_receipt', sa.Integer(), nullable=False),
        sa.Column('data_coding', sa.Integer(), nullable=True),
        sa.Column('received_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['account_id'], ['accounts.id'], name=op.f('fk_esme_parts_account_id_accounts')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_esme_parts')),
        sa.UniqueConstraint(
            'account_id', 'source', 'destination', 'ref', 'total', 'seq',
            name=op.f('uq_esme_parts_account_id_source_destination_ref_total_seq'),
        ),
    )


def downgrade() -> None:
    op.drop_table('esme_parts')
    with op.batch_alter_table('esme_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_esme_deliveries_account_next')
    op.drop_table('esme_deliveries')
    op.drop_table('smpp_credentials')
    with op.batch_alter_table('number_subscriptions', schema=None) as batch_op:
        batch_op.drop_column('mo_delivery')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('data_coding')
        batch_op.drop_column('esme_receipt')
    for table in ('mo_parts', 'inbound_messages'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('smsc')
    with op.batch_alter_table('sender_ids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sender_ids_account_id'))
    op.drop_table('sender_ids')
