"""backup runs: scripts/backup.sh records each successful backup (freshness metric and alert)

Revision ID: 0008_backup_runs
Revises: 0007_email_change
Create Date: 2026-12-03 13:30:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0008_backup_runs'
down_revision = '0007_email_change'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'backup_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('archive', sa.Text(), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_runs')),
    )


def downgrade():
    op.drop_table('backup_runs')
