"""oauth browser side: oauth_browser_sessions (the provider's sign-in cookie, hashed, tied to an
API session), oauth_consents (scopes a user allowed a client)

Revision ID: 0013_oauth_browser
Revises: 0012_webhook_secret_rotation
Create Date: 2026-12-03 18:30:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# revision identifiers, used by Alembic.
revision = '0013_oauth_browser'
down_revision = '0012_webhook_secret_rotation'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('oauth_browser_sessions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('cookie_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('auth_session_id', sa.Uuid(), nullable=False),
    sa.Column('auth_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('amr', JSON_TYPE, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['auth_session_id'], ['sessions.id'], name=op.f('fk_oauth_browser_sessions_auth_session_id_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_oauth_browser_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_browser_sessions'))
    )
    with op.batch_alter_table('oauth_browser_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_oauth_browser_sessions_expires_at', ['expires_at'], unique=False)
        batch_op.create_index('ix_oauth_browser_sessions_user_id', ['user_id'], unique=False)
        batch_op.create_index('uq_oauth_browser_sessions_cookie_hash', ['cookie_hash'], unique=True)

    op.create_table('oauth_consents',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('client_pk', sa.Uuid(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_pk'], ['oauth_clients.id'], name=op.f('fk_oauth_consents_client_pk_oauth_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_oauth_consents_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_consents'))
    )
    with op.batch_alter_table('oauth_consents', schema=None) as batch_op:
        batch_op.create_index('uq_oauth_consents_user_id_client_pk', ['user_id', 'client_pk'], unique=True)


def downgrade():
    with op.batch_alter_table('oauth_consents', schema=None) as batch_op:
        batch_op.drop_index('uq_oauth_consents_user_id_client_pk')

    op.drop_table('oauth_consents')
    with op.batch_alter_table('oauth_browser_sessions', schema=None) as batch_op:
        batch_op.drop_index('uq_oauth_browser_sessions_cookie_hash')
        batch_op.drop_index('ix_oauth_browser_sessions_user_id')
        batch_op.drop_index('ix_oauth_browser_sessions_expires_at')

    op.drop_table('oauth_browser_sessions')
