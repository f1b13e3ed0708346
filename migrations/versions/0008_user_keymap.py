"""user keymap: each reviewer chooses the review page's keys (qcloop's own or MIQA's u/i/o/p)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:45:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keymap', sa.String(length=20), server_default='qcloop', nullable=False))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('keymap')
