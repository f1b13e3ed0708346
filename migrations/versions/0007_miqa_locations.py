"""miqa locations: a decision's point of interest as a file gives it (floats, in voxel or MIQA's world
space), per-frame locations, artifact names no entry matched, and whether the file gave a time

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:50:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        for axis in ('i', 'j', 'k'):
            batch_op.alter_column(f'location_{axis}', existing_type=sa.Integer(), type_=sa.Float(),
                                  existing_nullable=True)
        batch_op.add_column(sa.Column('location_space', sa.String(length=5), nullable=True))
        batch_op.add_column(sa.Column('frame_locations', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('unmatched_artifacts', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('created_unknown', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_column('created_unknown')
        batch_op.drop_column('unmatched_artifacts')
        batch_op.drop_column('frame_locations')
        batch_op.drop_column('location_space')
        for axis in ('i', 'j', 'k'):
            batch_op.alter_column(f'location_{axis}', existing_type=sa.Float(), type_=sa.Integer(),
                                  existing_nullable=True, postgresql_using=f'round(location_{axis})::integer')
