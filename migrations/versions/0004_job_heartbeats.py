"""job heartbeats: the worker running a job and when it last said it is alive

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:15:00.000000

``worker`` ("host:pid") and ``heartbeat_at`` are written while a job runs; a running job whose
heartbeat is older than the lease lost its worker and is ended with the reason.
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('worker')
