"""webhook_deliveries: indexes the sender's claim can stop early on

The claim asks for the oldest due rows with no earlier PENDING delivery of the same ref and URL.
With (status, next_attempt_at) alone PostgreSQL sorted every due row by id and checked the
earlier-delivery condition for each (a BitmapAnd over all PENDING rows per row): 1.7 s per claim
at 9,000 pending. (status, next_attempt_at, id) gives the rows in claim order, so the LIMIT
stops the scan; a partial index of PENDING rows by (ref, id) answers the check in one probe.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'PENDING'")


def upgrade() -> None:
    op.drop_index('ix_webhook_deliveries_status_next', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_ref', table_name='webhook_deliveries')
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['status', 'next_attempt_at', 'id'])
    op.create_index(
        'ix_webhook_deliveries_pending_ref',
        'webhook_deliveries',
        ['ref', 'id'],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index('ix_webhook_deliveries_pending_ref', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries')
    op.create_index('ix_webhook_deliveries_ref', 'webhook_deliveries', ['ref'])
    op.create_index('ix_webhook_deliveries_status_next', 'webhook_deliveries', ['status', 'next_attempt_at'])
