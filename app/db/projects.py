"""The review tree: projects hold experiments, experiments hold scans, scans hold frames."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import UTCDateTime, db, utcnow


class Project(db.Model):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    creator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Project settings: required notes per decision, label rules for training, ...
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Name of this project's model in the MLflow registry.
    model_name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    memberships: Mapped[list["Membership"]] = relationship(  # noqa: F821
        back_populates="project", cascade="all, delete-orphan"
    )
    experiments: Mapped[list[Experiment]] = relationship(back_populates="project", cascade="all, delete-orphan")


class Experiment(db.Model):
    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    note: Mapped[str] = mapped_column(Text, default="")
    lock_owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    lock_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    project: Mapped[Project] = relationship(back_populates="experiments")
    scans: Mapped[list[Scan]] = relationship(back_populates="experiment", cascade="all, delete-orphan")
    lock_owner: Mapped["User | None"] = relationship()  # noqa: F821


class Scan(db.Model):
    __tablename__ = "scans"
    __table_args__ = (UniqueConstraint("experiment_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    scan_type: Mapped[str] = mapped_column(String(64), default="T1")
    subject_id: Mapped[str | None] = mapped_column(String(255), index=True)
    session_id: Mapped[str | None] = mapped_column(String(255))
    link: Mapped[str | None] = mapped_column(String(2000))
    # What the repository says of the image (BIDS sidecar, DICOM series attributes), kept as synced; loaded
    # only when read (it may be large, and lists of scans never need it).
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, deferred=True)
    # Scans that leave an imported tree are archived, never deleted, so decisions survive.
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="scans")
    frames: Mapped[list[Frame]] = relationship(
        back_populates="scan", cascade="all, delete-orphan", order_by="Frame.frame_number"
    )


class Frame(db.Model):
    __tablename__ = "frames"
    __table_args__ = (UniqueConstraint("scan_id", "frame_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    frame_number: Mapped[int] = mapped_column(Integer, default=0)
    # Relative to the data root, absolute under an allowed root, file:// or s3:// (see app.storage).
    file_location: Mapped[str] = mapped_column(String(2000))
    checksum: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    shape: Mapped[list[int] | None] = mapped_column(JSON)
    spacing: Mapped[list[float] | None] = mapped_column(JSON)
    orientation: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    scan: Mapped[Scan] = relationship(back_populates="frames")
