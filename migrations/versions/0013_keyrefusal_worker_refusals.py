"""workers.refused_messages, workers.last_refused_at: task messages a worker refused as not signed with its
PEFTLAB_SECRET_KEY (a host with another key), so the server can say why runs stay queued

Revision ID: 0013_keyrefusal_worker_refusals
Revises: 0012_h_rollup
Create Date: 2026-12-02 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0013_keyrefusal_worker_refusals'
down_revision = '0012_h_rollup'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workers') as batch:
        batch.add_column(sa.Column('refused_messages', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('last_refused_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workers') as batch:
        batch.drop_column('last_refused_at')
        batch.drop_column('refused_messages')
