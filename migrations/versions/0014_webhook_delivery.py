"""webhook delivery: fan-out by the dispatcher (domain_events.fanned_out_at), per-endpoint lanes
(an index on the open webhook messages), failing endpoints (webhook_endpoints.failing_since)

Revision ID: 0014_webhook_delivery
Revises: 0013_oauth_browser
Create Date: 2026-12-03 18:30:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0014_webhook_delivery'
down_revision = '0013_oauth_browser'
branch_labels = None
depends_on = None

NOT_FANNED_OUT = sa.text("fanned_out_at IS NULL")
WEBHOOK_OPEN = sa.text("template = 'webhook' AND status IN ('pending', 'enqueued')")


def upgrade():
    with op.batch_alter_table('domain_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fanned_out_at', sa.DateTime(timezone=True), nullable=True))
    # Events written before this revision were fanned out in their own transaction.
    op.execute("UPDATE domain_events SET fanned_out_at = created_at")
    op.create_index(
        'ix_domain_events_not_fanned_out', 'domain_events', ['created_at', 'id'],
        unique=False, postgresql_where=NOT_FANNED_OUT, sqlite_where=NOT_FANNED_OUT,
    )
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        'ix_outbox_messages_webhook_open', 'outbox_messages', ['recipient', 'created_at'],
        unique=False, postgresql_where=WEBHOOK_OPEN, sqlite_where=WEBHOOK_OPEN,
    )


def downgrade():
    op.drop_index('ix_outbox_messages_webhook_open', table_name='outbox_messages')
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.drop_column('failing_since')
    op.drop_index('ix_domain_events_not_fanned_out', table_name='domain_events')
    with op.batch_alter_table('domain_events', schema=None) as batch_op:
        batch_op.drop_column('fanned_out_at')
