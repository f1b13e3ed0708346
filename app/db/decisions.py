"""Reviewer decisions: append-only rows, each with the state of every artifact entry."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, event
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from app.db.base import UTCDateTime, db, utcnow

ARTIFACT_STATES = ("present", "absent", "undefined")
NOTE_MAX_LENGTH = 3000


class Decision(db.Model):
    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_scan_created", "scan_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    option_id: Mapped[int] = mapped_column(ForeignKey("decision_options.id"), index=True)
    creator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # Who made an imported decision when no qcloop account matches (e.g. an unknown e-mail).
    creator_name: Mapped[str | None] = mapped_column(String(254))
    # The creator's project role when deciding: the tier rule reads it, later role changes don't.
    creator_role: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str] = mapped_column(String(NOTE_MAX_LENGTH), default="")
    location_i: Mapped[int | None] = mapped_column(Integer)
    location_j: Mapped[int | None] = mapped_column(Integer)
    location_k: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(20), default="review")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    option: Mapped["DecisionOption"] = relationship()  # noqa: F821
    creator: Mapped["User | None"] = relationship()  # noqa: F821
    artifacts: Mapped[list[DecisionArtifact]] = relationship(cascade="all", passive_deletes=True)


class DecisionArtifact(db.Model):
    __tablename__ = "decision_artifacts"
    __table_args__ = (CheckConstraint("state IN ('present', 'absent', 'undefined')", name="state"),)

    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("artifact_entries.id"), primary_key=True, index=True)
    state: Mapped[str] = mapped_column(String(10))

    entry: Mapped["ArtifactEntry"] = relationship()  # noqa: F821


class AppendOnlyError(RuntimeError):
    """Raised when code tries to change or remove a stored decision."""


@event.listens_for(Session, "before_flush")
def _decisions_are_append_only(session: Session, flush_context, instances) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, (Decision, DecisionArtifact)) and (
            obj in session.deleted or session.is_modified(obj, include_collections=False)
        ):
            raise AppendOnlyError(f"decisions are append-only; refused to change {obj!r}")
