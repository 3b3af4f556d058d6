"""job_leases: which server replica runs each periodic job (reaper, webhook notifier, search driver)

Revision ID: 0011_h_replicas
Revises: 0010_h_search
Create Date: 2026-12-01 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0011_h_replicas'
down_revision = '0010_h_search'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_job_leases'))
    )


def downgrade() -> None:
    op.drop_table('job_leases')
