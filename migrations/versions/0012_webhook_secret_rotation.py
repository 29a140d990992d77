"""webhook secret rotation: the previous secret (encrypted like the current one) and until when it
still signs

Revision ID: 0012_webhook_secret_rotation
Revises: 0011_oauth_sessions
Create Date: 2026-12-03 18:30:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0012_webhook_secret_rotation'
down_revision = '0011_oauth_sessions'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('previous_secret_encrypted', sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column('secret_rotated_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.drop_column('secret_rotated_at')
        batch_op.drop_column('previous_secret_expires_at')
        batch_op.drop_column('previous_secret_encrypted')
