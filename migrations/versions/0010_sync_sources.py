"""sync sources: repositories a project syncs with (folder, BIDS, DICOMweb), the images each gave, every
run's counts and reasons, and the metadata a repository gives a scan

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 08:20:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metadata', sa.JSON(), nullable=True))
    op.create_table(
        'sync_sources',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('url', sa.String(length=2000), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('cursor', sa.JSON(), nullable=False),
        sa.Column('patterns', sa.JSON(), nullable=True),
        sa.Column('every_minutes', sa.Integer(), nullable=True),
        sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_sync_sources_job_id_jobs'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_sync_sources_project_id_projects'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_sources')),
        sa.UniqueConstraint('url', name=op.f('uq_sync_sources_url')),
    )
    with op.batch_alter_table('sync_sources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_sources_project_id'), ['project_id'], unique=False)
    op.create_table(
        'synced_items',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('source_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=1000), nullable=False),
        sa.Column('version', sa.String(length=255), nullable=False),
        sa.Column('scan_id', sa.Integer(), nullable=False),
        sa.Column('frame_id', sa.Integer(), nullable=True),
        sa.Column('pushed_decision_id', sa.Integer(), nullable=True),
        sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['frame_id'], ['frames.id'], name=op.f('fk_synced_items_frame_id_frames'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['pushed_decision_id'], ['decisions.id'],
                                name=op.f('fk_synced_items_pushed_decision_id_decisions'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_synced_items_scan_id_scans'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['source_id'], ['sync_sources.id'], name=op.f('fk_synced_items_source_id_sync_sources'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_synced_items')),
        sa.UniqueConstraint('source_id', 'key', name=op.f('uq_synced_items_source_id_key')),
    )
    with op.batch_alter_table('synced_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_synced_items_scan_id'), ['scan_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_synced_items_source_id'), ['source_id'], unique=False)
    op.create_table(
        'sync_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('source_id', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('actor_id', sa.Integer(), nullable=True),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('added', sa.Integer(), nullable=False),
        sa.Column('changed', sa.Integer(), nullable=False),
        sa.Column('unchanged', sa.Integer(), nullable=False),
        sa.Column('pushed', sa.Integer(), nullable=False),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('removed', sa.Integer(), nullable=False),
        sa.Column('added_items', sa.JSON(), nullable=False),
        sa.Column('skipped_items', sa.JSON(), nullable=False),
        sa.Column('failed_items', sa.JSON(), nullable=False),
        sa.Column('removed_items', sa.JSON(), nullable=False),
        sa.Column('export_file', sa.String(length=2000), nullable=True),
        sa.Column('backup_file', sa.String(length=2000), nullable=True),
        sa.Column('push_file', sa.String(length=2000), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_sync_runs_actor_id_users'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_sync_runs_job_id_jobs'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['source_id'], ['sync_sources.id'], name=op.f('fk_sync_runs_source_id_sync_sources'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_runs')),
    )
    with op.batch_alter_table('sync_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_runs_source_id'), ['source_id'], unique=False)


def downgrade():
    op.drop_table('sync_runs')
    op.drop_table('synced_items')
    op.drop_table('sync_sources')
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_column('metadata')
