"""audit events record the API key that caused them

Revision ID: 0004_audit_api_key
Revises: 0003
Create Date: 2026-12-02 12:50:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0004_audit_api_key'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('api_key_id', sa.Uuid(), nullable=True))
        batch_op.create_index(
            'ix_audit_events_api_key_id_created_at', ['api_key_id', 'created_at'], unique=False
        )


def downgrade():
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_api_key_id_created_at')
        batch_op.drop_column('api_key_id')
