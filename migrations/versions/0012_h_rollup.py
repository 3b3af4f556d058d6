"""metric_rollups: per-bucket rollups of every metric series (count; lowest, highest, first and last point), so charts
of long series read buckets instead of every point; built here from the points already stored

Revision ID: 0012_h_rollup
Revises: 0011_h_replicas
Create Date: 2026-11-30 15:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0012_h_rollup'
down_revision = '0011_h_replicas'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('metric_rollups',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('bucket', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('min_value', sa.Float(), nullable=False),
    sa.Column('min_step', sa.Integer(), nullable=False),
    sa.Column('min_time', sa.Float(), nullable=False),
    sa.Column('max_value', sa.Float(), nullable=False),
    sa.Column('max_step', sa.Integer(), nullable=False),
    sa.Column('max_time', sa.Float(), nullable=False),
    sa.Column('first_value', sa.Float(), nullable=False),
    sa.Column('first_step', sa.Integer(), nullable=False),
    sa.Column('first_time', sa.Float(), nullable=False),
    sa.Column('last_value', sa.Float(), nullable=False),
    sa.Column('last_step', sa.Integer(), nullable=False),
    sa.Column('last_time', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_metric_rollups_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'name', 'level', 'bucket', name=op.f('pk_metric_rollups')),
    sqlite_with_rowid=False
    )
    from app.metrics import rollups
    rollups.backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table('metric_rollups')
