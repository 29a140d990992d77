"""sessions.auth_time: when the session last proved a password or a second factor

Revision ID: 0005_session_auth_time
Revises: 0003
Create Date: 2026-12-02 12:45:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0005_session_auth_time'
down_revision = "0004_audit_api_key"
branch_labels = None
depends_on = None


def upgrade():
    # Existing sessions count as authenticated when they began: that is the last check they made.
    op.add_column('sessions', sa.Column('auth_time', sa.DateTime(timezone=True), nullable=True))
    op.execute('UPDATE sessions SET auth_time = created_at')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.alter_column('auth_time', existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade():
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('auth_time')
