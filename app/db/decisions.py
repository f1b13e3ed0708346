"""Reviewer decisions: append-only rows, each with the state of every artifact entry."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String, event, false
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from app.db.base import UTCDateTime, db, utcnow

ARTIFACT_STATES = ("present", "absent", "undefined")
NOTE_MAX_LENGTH = 3000


# Where a point of interest is: a voxel of the original grid (qcloop's reviews; stored as location_space
# NULL) or MIQA's viewer position (world millimetres, LPS; stored as "world").
VOXEL, WORLD = "voxel", "world"


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
    # The point of interest as given: a voxel of the original grid (qcloop's reviews; space NULL) or, with
    # space "world", MIQA's viewer position in millimetres (LPS, as ITK reads the file; floats, negative too).
    location_i: Mapped[float | None] = mapped_column(Float)
    location_j: Mapped[float | None] = mapped_column(Float)
    location_k: Mapped[float | None] = mapped_column(Float)
    location_space: Mapped[str | None] = mapped_column(String(5))
    # An imported file's rows may point elsewhere on other frames: {"frame number": [i, j, k]}, same space.
    frame_locations: Mapped[dict[str, list[float]] | None] = mapped_column(JSON)
    # Artifact names an imported file gave that no entry of the vocabulary matched: {name: state}.
    unmatched_artifacts: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # The file gave no time: created_at is then the import's time (for order only) and exports leave it empty.
    created_unknown: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
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
