"""workers: each training worker's device, total memory, last report and current run

Revision ID: 0009_h_precision
Revises: 0007_h_form
Create Date: 2026-11-30 05:20:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0009_h_precision'
down_revision = '0007_h_form'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('workers',
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('device', sa.JSON(), nullable=False),
    sa.Column('memory_bytes', sa.BigInteger(), nullable=True),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_workers_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_workers'))
    )


def downgrade() -> None:
    op.drop_table('workers')
