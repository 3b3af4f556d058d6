"""datasets.column_names: names the user gave the file's columns (a headerless CSV's column_1, …)

Revision ID: 0007_h_form
Revises: 0007_h_firsthour
Create Date: 2026-11-30 05:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0007_h_form'
down_revision = '0007_h_firsthour'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('column_names', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('column_names')
