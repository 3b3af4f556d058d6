"""run_logs: the worker log lines of each run (the run page's live log tail)

Revision ID: 0006_h_runpage
Revises: 0005
Create Date: 2026-11-30 04:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0006_h_runpage'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_logs',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('time', sa.Float(), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_logs_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'seq', name=op.f('pk_run_logs'))
    )


def downgrade() -> None:
    op.drop_table('run_logs')
