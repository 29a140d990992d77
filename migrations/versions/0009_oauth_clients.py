"""oauth clients: oauth_clients (RFC 7591 metadata, hashed secrets with a rotation overlap),
oauth_authorization_codes (hashed, single use, bound to client, redirect URI and PKCE challenge)

Revision ID: 0009_oauth_clients
Revises: 0008_backup_runs
Create Date: 2026-12-03 13:45:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# revision identifiers, used by Alembic.
revision = '0009_oauth_clients'
down_revision = '0008_backup_runs'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('oauth_clients',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('client_name', sa.String(length=100), nullable=False),
    sa.Column('redirect_uris', JSON_TYPE, nullable=False),
    sa.Column('post_logout_redirect_uris', JSON_TYPE, nullable=False),
    sa.Column('grant_types', JSON_TYPE, nullable=False),
    sa.Column('response_types', JSON_TYPE, nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('token_endpoint_auth_method', sa.String(length=32), nullable=False),
    sa.Column('first_party', sa.Boolean(), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=True),
    sa.Column('previous_secret_hash', sa.String(length=64), nullable=True),
    sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('secret_rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_clients'))
    )
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.create_index('uq_oauth_clients_client_id', ['client_id'], unique=True)

    op.create_table('oauth_authorization_codes',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_pk', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('code_challenge', sa.String(length=128), nullable=False),
    sa.Column('code_challenge_method', sa.String(length=8), nullable=False),
    sa.Column('nonce', sa.Text(), nullable=True),
    sa.Column('auth_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('amr', JSON_TYPE, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_pk'], ['oauth_clients.id'], name=op.f('fk_oauth_authorization_codes_client_pk_oauth_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_oauth_authorization_codes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_authorization_codes'))
    )
    with op.batch_alter_table('oauth_authorization_codes', schema=None) as batch_op:
        batch_op.create_index('ix_oauth_authorization_codes_expires_at', ['expires_at'], unique=False)
        batch_op.create_index('uq_oauth_authorization_codes_code_hash', ['code_hash'], unique=True)


def downgrade():
    with op.batch_alter_table('oauth_authorization_codes', schema=None) as batch_op:
        batch_op.drop_index('uq_oauth_authorization_codes_code_hash')
        batch_op.drop_index('ix_oauth_authorization_codes_expires_at')

    op.drop_table('oauth_authorization_codes')
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.drop_index('uq_oauth_clients_client_id')

    op.drop_table('oauth_clients')
