"""smsc_binds: each node's SMPP binds and their state, for the operator's console

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'smsc_binds',
        sa.Column('node', sa.String(length=128), nullable=False),
        sa.Column('bind', sa.String(length=64), nullable=False),
        sa.Column('connector', sa.String(length=32), nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('peer', sa.String(length=300), nullable=False),
        sa.Column('tls', sa.Boolean(), nullable=False),
        sa.Column('bound', sa.Boolean(), nullable=False),
        sa.Column('since', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.Column('stale_after', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('node', 'bind', name=op.f('pk_smsc_binds')),
    )


def downgrade() -> None:
    op.drop_table('smsc_binds')
