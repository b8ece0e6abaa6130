"""webhook deliveries: receiver host (fair sharing of POST slots) and delivery uid

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02 10:00:00.000000
"""

import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000


def _receiver_host(url: str) -> str:
    # A copy of gateway.services.outbox.receiver_host as of this revision: a migration must
    # not change meaning when the application code does.
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"[:255]


def upgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uid', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('receiver_host', sa.String(length=255), nullable=True))

    # Backfill: rows still pending are claimed by receiver host from now on, and every row
    # gets the delivery id its next POST carries.
    conn = op.get_bind()
    table = sa.table(
        'webhook_deliveries',
        sa.column('id', sa.BigInteger()),
        sa.column('url', sa.Text()),
        sa.column('uid', sa.String()),
        sa.column('receiver_host', sa.String()),
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(table.c.id, table.c.url).where(table.c.id > last).order_by(table.c.id).limit(_BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            table.update().where(table.c.id == sa.bindparam('row_id')),
            [{'row_id': i, 'uid': uuid.uuid4().hex, 'receiver_host': _receiver_host(url)} for i, url in rows],
        )
        last = rows[-1][0]

    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.alter_column('uid', existing_type=sa.String(length=32), nullable=False)
        batch_op.alter_column('receiver_host', existing_type=sa.String(length=255), nullable=False)
        batch_op.create_index('ix_webhook_deliveries_host_status', ['receiver_host', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_host_status')
        batch_op.drop_column('receiver_host')
        batch_op.drop_column('uid')
