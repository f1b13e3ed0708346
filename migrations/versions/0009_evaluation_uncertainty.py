"""evaluation uncertainty: Monte-Carlo dropout entropy per output, beside the deterministic scores

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 08:05:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('uncertainty', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_column('uncertainty')
