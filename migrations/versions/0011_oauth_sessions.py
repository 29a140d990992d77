"""OAuth sessions: sessions.client_pk, scope and amr; oauth_authorization_codes.session_id

A session started by an OAuth client's authorization code belongs to that client (its refresh
tokens work only for it, and deleting the client ends it); the code remembers the session it
started, so that a second presentation of the code can revoke it.

Revision ID: 0011_oauth_sessions
Revises: 0010_webhooks
Create Date: 2026-12-03 18:30:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# revision identifiers, used by Alembic.
revision = '0011_oauth_sessions'
down_revision = '0010_webhooks'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_pk', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('scope', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('amr', JSON_TYPE, nullable=True))
        batch_op.create_index('ix_sessions_client_pk', ['client_pk'], unique=False)
        batch_op.create_foreign_key(
            batch_op.f('fk_sessions_client_pk_oauth_clients'), 'oauth_clients',
            ['client_pk'], ['id'], ondelete='CASCADE',
        )
    with op.batch_alter_table('oauth_authorization_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_id', sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_oauth_authorization_codes_session_id_sessions'), 'sessions',
            ['session_id'], ['id'], ondelete='SET NULL',
        )


def downgrade():
    with op.batch_alter_table('oauth_authorization_codes', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('fk_oauth_authorization_codes_session_id_sessions'), type_='foreignkey'
        )
        batch_op.drop_column('session_id')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_sessions_client_pk_oauth_clients'), type_='foreignkey')
        batch_op.drop_index('ix_sessions_client_pk')
        batch_op.drop_column('amr')
        batch_op.drop_column('scope')
        batch_op.drop_column('client_pk')
