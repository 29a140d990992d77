"""session idle timeout: sessions.remember_me picks the idle and absolute lifetimes that apply

Revision ID: 0006_session_idle
Revises: 0003
Create Date: 2026-12-02 13:00:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0006_session_idle'
down_revision = '0005_session_auth_time'
branch_labels = None
depends_on = None


def upgrade():
    # Sessions opened before this revision get the short idle timeout: nobody asked to be
    # remembered when they signed in.
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('remember_me', sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade():
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('remember_me')
