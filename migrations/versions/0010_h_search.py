"""search experiments: search_studies, search_trials, and Optuna's own tables (its RDB storage)

Optuna's tables are made here from Optuna's own table definitions (optuna is pinned in pyproject.toml), so
the schema changes only through migrations: the server opens Optuna's storage with table creation and its
version check off. Upgrading optuna to a release with another storage schema needs a migration here.

Revision ID: 0010_h_search
Revises: 0009_h_precision
Create Date: 2026-11-30 07:30:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0010_h_search'
down_revision = '0009_h_precision'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('search_studies',
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('study_name', sa.String(length=120), nullable=False),
    sa.Column('lease_holder', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_search_studies_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('experiment_id', name=op.f('pk_search_studies')),
    sa.UniqueConstraint('study_name', name=op.f('uq_search_studies_study_name'))
    )
    with op.batch_alter_table('search_studies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_search_studies_finished_at'), ['finished_at'], unique=False)

    op.create_table('search_trials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('optuna_trial_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('reported_step', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_search_trials_experiment_id_experiments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_search_trials_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_trials'))
    )
    with op.batch_alter_table('search_trials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_search_trials_experiment_id'), ['experiment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_search_trials_run_id'), ['run_id'], unique=False)

    from app.experiments import optuna_tables
    optuna_tables.create(op.get_bind())


def downgrade() -> None:
    from app.experiments import optuna_tables
    optuna_tables.drop(op.get_bind())
    op.drop_table('search_trials')
    op.drop_table('search_studies')
