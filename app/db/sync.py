"""Sync with image repositories: each source (one project's), the images it gave, and every run."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import UTCDateTime, db, utcnow

SYNC_RUN_STATES = ("running", "succeeded", "failed")


class SyncSource(db.Model):
    """A repository one project syncs with, by its canonical URL (a URL belongs to one project)."""

    __tablename__ = "sync_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    # Where the next listing starts (the source's own bookmark, e.g. the last study date seen).
    cursor: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Folder sources: the patterns that read paths; None: the defaults.
    patterns: Mapped[list[str] | None] = mapped_column(JSON)
    # Run every N minutes in the worker; None: only when asked.
    every_minutes: Mapped[int | None] = mapped_column(Integer)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The latest sync job enqueued for it: no second one while this one is queued or running.
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SyncedItem(db.Model):
    """An image a source gave: its version when fetched, and the scan and frame it became."""

    __tablename__ = "synced_items"
    __table_args__ = (UniqueConstraint("source_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sync_sources.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(1000))
    version: Mapped[str] = mapped_column(String(255))
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    frame_id: Mapped[int | None] = mapped_column(ForeignKey("frames.id", ondelete="SET NULL"))
    # The decision last pushed back for this image's scan (None: none yet).
    pushed_decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id", ondelete="SET NULL"))
    # Set when a full listing no longer has it (reported once); cleared when it comes back.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SyncRun(db.Model):
    """One sync of a source: what it added, changed, pushed back, skipped, failed and found removed."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sync_sources.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    added: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    pushed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    # [{"item": ..., "reason": ...}] each; added: the keys added.
    added_items: Mapped[list[str]] = mapped_column(JSON, default=list)
    skipped_items: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    failed_items: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    removed_items: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The project's state before the run (export.csv of its sync folder) and the export it replaced.
    export_file: Mapped[str | None] = mapped_column(String(2000))
    backup_file: Mapped[str | None] = mapped_column(String(2000))
    push_file: Mapped[str | None] = mapped_column(String(2000))
    error: Mapped[str | None] = mapped_column(Text)

    source: Mapped[SyncSource] = relationship()
