"""Importing a file: read it whole into a plan (checking everything), then write it in one transaction.

Nothing is written until every row has been read and checked against the database; the
writes are bulk inserts and updates inside the caller's transaction, so an error, a
cancelled job or a killed process leaves the database exactly as it was. The three steps
live in their own modules: :mod:`import_read` (file to Document), :mod:`import_plan`
(Document checked against the database, to a Plan) and :mod:`import_apply` (Plan to rows).
"""
from __future__ import annotations

import logging
from pathlib import Path

from app.db import Project, User
from app.services.errors import InvalidInput
from app.services.transfer.import_apply import apply
from app.services.transfer.import_plan import (
    COUNTERS, MODES, UNCHANGED, ImportSummary, Plan, ProjectPlan, build_plan,
)
from app.services.transfer.import_read import Progress, no_progress, read_document

__all__ = ["COUNTERS", "MODES", "UNCHANGED", "ImportSummary", "Plan", "Progress", "ProjectPlan", "apply", "build_plan",
           "import_file", "no_progress", "read_document"]

log = logging.getLogger(__name__)
_no_progress = no_progress  # the name the import job and sync callers pass


def import_file(path: Path, *, project: Project | None, mode: str = "merge", dry_run: bool = False,
                actor: User | None = None, filename: str | None = None,
                progress: Progress = no_progress, add_unknown_artifacts: bool = False) -> ImportSummary:
    """Read, check and (unless a dry run) write an import file; returns what was (or would be) done.

    Raises InvalidInput naming the row or JSON path and the field of every problem found; the
    caller commits on success and rolls back otherwise (a dry run writes nothing either way).
    Artifact names no entry matches are kept on their decisions as unmatched tags, or, with
    ``add_unknown_artifacts``, added to the project's vocabulary.
    """
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}", field="mode")
    document = read_document(Path(path), filename, progress)
    plan = build_plan(document, mode=mode, target=project, actor=actor, progress=progress,
                      add_unknown_artifacts=add_unknown_artifacts)
    summary = plan.summary(dry_run)
    if dry_run:
        progress(1.0, "dry run: nothing written")
        return summary
    apply(plan, actor, progress)
    log.info("import of %s (%s, %s): %s", filename or Path(path).name, plan.format, mode, summary.counts)
    return summary
