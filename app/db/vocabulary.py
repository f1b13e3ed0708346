"""Decision options and artifact entries as rows with stable ids.

Rows with no project are the global default set; each project gets its own copy when it
is created, so it can rename, reorder, retire and extend its vocabulary without touching
other projects, and decisions keep pointing at the same ids.
"""
from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import db

DECISION_MEANINGS = ("usable", "usable_extra", "questionable", "unusable")


class DecisionOption(db.Model):
    __tablename__ = "decision_options"
    __table_args__ = (UniqueConstraint("project_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(100))
    # What the decision means for training and for the tier rule (one of DECISION_MEANINGS).
    meaning: Mapped[str] = mapped_column(String(20))
    position: Mapped[int] = mapped_column(Integer, default=0)
    shortcut: Mapped[str | None] = mapped_column(String(1))
    requires_note: Mapped[bool] = mapped_column(Boolean, default=False)
    retired: Mapped[bool] = mapped_column(Boolean, default=False)


class ArtifactEntry(db.Model):
    __tablename__ = "artifact_entries"
    __table_args__ = (UniqueConstraint("project_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, default=0)
    shortcut: Mapped[str | None] = mapped_column(String(1))
    retired: Mapped[bool] = mapped_column(Boolean, default=False)
