"""Where a reviewer lands: the scan an experiment opens on, and the viewer caches warmed for the scan page."""
from __future__ import annotations

from sqlalchemy import select

from app.db import Experiment, Scan
from app.services import review, volumes
from app.services.loaders import load


def first_to_review(experiment: Experiment) -> Scan | None:
    """The experiment's first unreviewed scan by name, else its first scan; None when it has no live scan."""
    ordered = sorted((scan for scan in experiment.scans if scan.archived_at is None), key=lambda scan: scan.name)
    if not ordered:
        return None
    states = review.scan_states(select(Scan.id).where(Scan.experiment_id == experiment.id, Scan.archived_at.is_(None)))
    return next((scan for scan in ordered if states[scan.id] == "unreviewed"), ordered[0])


def warm_viewer(scan: Scan, next_scan_id: int | None) -> None:
    """Start building the viewer caches of this scan's frames and of the first frame of the scan "next" leads to."""
    frames = list(scan.frames)
    if next_scan_id is not None:
        frames += load(Scan, next_scan_id).frames[:1]
    volumes.prepare(frames)
