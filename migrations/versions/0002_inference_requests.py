"""inference requests (the "Try it" predictions handed to the predict worker)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('inference_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('inputs', sa.JSON(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('outputs', sa.JSON(), nullable=True),
    sa.Column('base_outputs', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_inference_requests_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inference_requests'))
    )
    with op.batch_alter_table('inference_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inference_requests_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inference_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inference_requests_run_id'))

    op.drop_table('inference_requests')
