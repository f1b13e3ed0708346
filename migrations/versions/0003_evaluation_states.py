"""evaluation states: rows of an evaluation job become current only when the job completes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:00:00.000000

``state``: "pending" while the job that writes it runs, "scored" once the job completed (and
for rows imported or written before jobs), "failed" when the frame could not be scored or the
job failed (``error`` says why). ``job_id`` names the evaluation job.
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=16), server_default='scored', nullable=False))
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('job_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_evaluations_job_id_jobs'), 'jobs', ['job_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_index(batch_op.f('ix_evaluations_job_id'), ['job_id'], unique=False)


def downgrade():
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_job_id'))
        batch_op.drop_constraint(batch_op.f('fk_evaluations_job_id_jobs'), type_='foreignkey')
        batch_op.drop_column('job_id')
        batch_op.drop_column('error')
        batch_op.drop_column('state')
