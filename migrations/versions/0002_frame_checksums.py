"""frame checksums: fill those imports left empty

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 10:00:00.000000

Imports used to store frames without a checksum, and caches and training sets are keyed by it.
This hashes every readable file of a frame without one; a file that cannot be read here (or a
run outside the app, or offline) keeps NULL, and the "frames.checksum" job or a training run
fills it later. No schema change, so downgrade has nothing to undo.
"""
import logging

import sqlalchemy as sa
from alembic import context, op
from flask import has_app_context

from app.storage import Roots, checksum, resolve

# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

frames = sa.table("frames", sa.column("id", sa.Integer), sa.column("file_location", sa.String),
                  sa.column("checksum", sa.String), sa.column("size_bytes", sa.BigInteger))


def upgrade():
    if context.is_offline_mode() or not has_app_context():
        log.warning("frame checksums not filled: the files are read only online, inside the app")
        return
    roots = Roots.from_config()
    connection = op.get_bind()
    rows = connection.execute(sa.select(frames.c.id, frames.c.file_location)
                              .where(frames.c.checksum.is_(None)).order_by(frames.c.id)).all()
    unreadable = 0
    for done, (frame_id, location) in enumerate(rows, start=1):
        try:
            digest, size = checksum(resolve(location, roots), roots)
        except Exception as err:  # noqa: BLE001 - local and S3 reads fail in many ways; the rest still count
            log.warning("frame %s (%s): no checksum: %s", frame_id, location, err)
            unreadable += 1
            continue
        connection.execute(sa.update(frames).where(frames.c.id == frame_id)
                           .values(checksum=digest, size_bytes=size))
        if done % 1000 == 0:
            log.info("frame checksums: %s/%s", done, len(rows))
    if rows:
        log.info("frame checksums: %s filled, %s unreadable", len(rows) - unreadable, unreadable)


def downgrade():
    pass
