"""uploads by content: move uploaded frames' files to paths from their SHA-256

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 03:30:00.000000

Uploads used to live under sanitised experiment and scan names, where two scans could share one
file. Each such frame's file is copied to ``uploads/<project id>/<sha[:2]>/<sha><suffix>`` (see
app.storage.identity), its row points there, and old files no frame names any more are removed.
A frame whose bytes no longer match its checksum (overwritten by a colliding upload) is logged and
given the checksum of what it now shows. Downgrade keeps the new paths: they stay valid locations.
"""
import logging
import re

import sqlalchemy as sa
from alembic import context, op
from flask import has_app_context

from app.storage import Roots
from app.storage.identity import UPLOADS, store, suffix_of

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

IDENTITY = re.compile(rf"^{UPLOADS}/\d+/[0-9a-f]{{2}}/[0-9a-f]{{64}}[.a-z]*$")

frames = sa.table("frames", sa.column("id", sa.Integer), sa.column("scan_id", sa.Integer),
                  sa.column("file_location", sa.String), sa.column("checksum", sa.String),
                  sa.column("size_bytes", sa.BigInteger))
scans = sa.table("scans", sa.column("id", sa.Integer), sa.column("experiment_id", sa.Integer))
experiments = sa.table("experiments", sa.column("id", sa.Integer), sa.column("project_id", sa.Integer))


def upgrade():
    if context.is_offline_mode() or not has_app_context():
        log.warning("uploads not moved: the files are moved only online, inside the app")
        return
    roots = Roots.from_config()
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(frames.c.id, frames.c.file_location, frames.c.checksum, experiments.c.project_id)
        .join(scans, scans.c.id == frames.c.scan_id).join(experiments, experiments.c.id == scans.c.experiment_id)
        .where(frames.c.file_location.like(f"{UPLOADS}/%")).order_by(frames.c.id)).all()
    moved = set()
    for frame_id, location, known, project_id in rows:
        if IDENTITY.match(location):
            continue
        old = roots.data_root / location
        if not old.is_file():
            log.warning("frame %s: upload %s is missing; left as it is", frame_id, location)
            continue
        with open(old, "rb") as source:
            stored = store(source, project_id, suffix_of(location), roots)
        if known is not None and known != stored.checksum:
            log.warning("frame %s: %s changed since it was checksummed (a colliding upload replaced it)",
                        frame_id, location)
        connection.execute(sa.update(frames).where(frames.c.id == frame_id)
                           .values(file_location=stored.location, checksum=stored.checksum, size_bytes=stored.size))
        moved.add(location)
    still_named = set(connection.scalars(sa.select(frames.c.file_location)
                                         .where(frames.c.file_location.in_(sorted(moved))))) if moved else set()
    for location in moved - still_named:
        (roots.data_root / location).unlink(missing_ok=True)
    if moved:
        log.info("uploads: %s file(s) moved to their content paths", len(moved))


def downgrade():
    pass
