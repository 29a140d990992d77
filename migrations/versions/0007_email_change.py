"""email change: users.email_normalized (look-alike addresses are one account), the pending
address of an email change on one_time_tokens

Revision ID: 0007_email_change
Revises: 0003
Create Date: 2026-12-02 12:50:00

"""
import unicodedata

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0007_email_change'
down_revision = '0006_session_idle'
branch_labels = None
depends_on = None


def _email_key(email):
    # Frozen copy of webapp.users.models.email_key: a migration must not change with the app.
    folded = unicodedata.normalize("NFKC", email.strip()).casefold()
    return unicodedata.normalize("NFKC", folded)


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_normalized', sa.Text(), nullable=True))

    users = sa.table('users', sa.column('id', sa.Uuid()), sa.column('email', sa.String()),
                     sa.column('email_normalized', sa.Text()))
    connection = op.get_bind()
    seen = {}
    for user_id, email in connection.execute(sa.select(users.c.id, users.c.email)).all():
        key = _email_key(email)
        if key in seen:
            # Two accounts that only differ by look-alike characters: an operator must merge or
            # rename one of them; picking one here would silently hand an address to the other.
            raise RuntimeError(
                f"users {seen[key]} and {user_id} have look-alike email addresses; "
                "rename one of them, then run the migration again"
            )
        seen[key] = user_id
        connection.execute(
            users.update().where(users.c.id == user_id).values(email_normalized=key)
        )

    # Outside the batch: SQLite cannot reflect an expression index, so a batch would not find it.
    op.drop_index('uq_users_email_lower', table_name='users')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('email_normalized', existing_type=sa.Text(), nullable=False)
        batch_op.create_index('uq_users_email_normalized', ['email_normalized'], unique=True)

    with op.batch_alter_table('one_time_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('new_email', sa.String(length=320), nullable=True))


def downgrade():
    with op.batch_alter_table('one_time_tokens', schema=None) as batch_op:
        batch_op.drop_column('new_email')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index('uq_users_email_normalized')
        batch_op.drop_column('email_normalized')
    op.create_index('uq_users_email_lower', 'users', [sa.text('lower(email)')], unique=True)
