"""The sync cycle of one source, as MIQA documents it: export the project's state (the previous export
kept as a backup), list what the source holds, fetch what is new or changed into the data root, make
experiments, scans and frames of it, push the latest decisions back, record the run.

What a source gave is kept (``synced_items``: key, version, scan, frame), so running twice adds nothing;
a changed image becomes a new frame of its scan (its decisions stay); an image a full listing no longer
has, or an incremental listing names as gone, is reported as removed, and its scan and decisions stay.
A source belongs to the project that first synced it (an on-disk one's folder too, by its real path). Items
that fail are listed with their reasons and the rest imported; the source forgets each of them
(``Source.forget``), so the next run tries it again; a fetched image is moved into place only once complete.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.db import Experiment, Frame, Job, Project, Scan, SyncedItem, SyncRun, SyncSource, User, boundary, db, utcnow
from app.services import frames, imaging, projects
from app.services.errors import Conflict, InvalidInput, ServiceError
from app.services.review import latest_decisions
from app.services.sync import ON_DISK, open_source
from app.services.sync.base import Listing, Outgoing, Source, SourceError, SourceItem
from app.services.sync.folder import sync_folder
from app.services.transfer import exporter
from app.services.transfer.files import FileChecker
from app.storage import Roots, StorageError, local_copy, relative_location, resolve
from app.storage import checksum as file_checksum
from app.storage.identity import uploads_folder

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
NAME_MAX = 255  # experiments.name, scans.name, scans.subject_id and session_id
UNCHANGED = object()  # every_minutes not given: the source keeps its schedule
STALE_RUN = timedelta(hours=24)  # a command-line run still "running" after this was killed outright


def fetch_folder(project_id: int, roots: Roots) -> Path:
    """Where images fetched for a project land: its own uploads folder, which only it may name."""
    return roots.data_root / uploads_folder(project_id) / "sync"


def _no_progress(fraction: float, message: str = "") -> None:
    """Progress goes nowhere (the caller reports none)."""


def check_every(value: Any) -> int | None:
    """A schedule: whole minutes (1 or more), or None for syncs only when asked."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.fullmatch(r"[0-9]{1,6}",
                                                                                         str(value).strip()):
        raise InvalidInput("every_minutes must be a whole number of minutes (or empty: only when asked)",
                           field="every_minutes")
    minutes = int(value)
    if not 1 <= minutes <= 525_600:
        raise InvalidInput("every_minutes must be between 1 and 525600 (a year)", field="every_minutes")
    return minutes


def disk_root(kind: str, url: str) -> Path | None:
    """The folder an on-disk source reads, with links resolved (None for a server)."""
    if kind not in ON_DISK:
        return None
    return Path(os.path.realpath(url.removeprefix("bids:") if kind == "bids" else url))


def _overlap(project: Project, source: Source) -> str | None:
    """How the folder of an on-disk source meets one another project syncs (as a folder or a BIDS dataset,
    under any spelling or link): the same folder, inside it, or holding it; None when apart."""
    mine = disk_root(source.kind, source.url)
    if mine is None:
        return None
    others = db.session.execute(select(SyncSource.kind, SyncSource.url).where(
        SyncSource.project_id != project.id, SyncSource.kind.in_(ON_DISK)))
    for kind, url in others:
        theirs = disk_root(kind, url)
        if mine == theirs:
            return "is the folder of a source already synced into another project"
        if mine.is_relative_to(theirs):
            return "lies inside the folder of a source already synced into another project"
        if theirs.is_relative_to(mine):
            return "holds the folder of a source already synced into another project"
    return None


def claim(project: Project, source: Source, *, every_minutes: Any = UNCHANGED,
          patterns: Iterable[str] | None = None) -> SyncSource:
    """The source's row for this project (created on its first sync). A source another project syncs is
    refused (409), and so is a folder or dataset that is, lies inside or holds another project's (compared by
    their real paths, whatever the kind): an image belongs to one project. The other project is not named
    (the caller may not be its member)."""
    row = db.session.scalar(select(SyncSource).where(SyncSource.url == source.url))
    if row is not None and row.project_id != project.id:
        raise Conflict(f"source {source.url} is already synced into another project; a source belongs to one "
                       "project", field="source")
    overlap = _overlap(project, source) if row is None else None
    if overlap is not None:
        raise Conflict(f"source {source.url} {overlap}; a folder belongs to one project", field="source")
    if row is None:
        row = SyncSource(project_id=project.id, url=source.url, kind=source.kind, cursor={})
        db.session.add(row)
    if every_minutes is not UNCHANGED:
        row.every_minutes = check_every(every_minutes)
    if patterns:
        row.patterns = list(patterns)
    db.session.flush()
    return row


def prepare(project: Project, text: str, *, from_data_root: bool = False, patterns: Iterable[str] | None = None,
            every_minutes: Any = UNCHANGED, reach: bool = False) -> tuple[Source, SyncSource]:
    """The source a SOURCE string names, checked and claimed for the project (its stored patterns apply
    when none are given). With ``reach`` the source is asked once (``Source.check``) before anything is
    claimed: a server that refuses the credentials or cannot be reached is a 400 naming it."""
    patterns = [pattern for pattern in (patterns or []) if pattern]
    source = open_source(text, project.id, from_data_root=from_data_root, patterns=patterns)
    if reach:
        source.check()
    row = claim(project, source, every_minutes=every_minutes, patterns=patterns)
    if not patterns and row.patterns:
        source = open_source(source.url, project.id, patterns=row.patterns)
    return source, row


@dataclass
class _Tally:
    added: list[str] = field(default_factory=list)
    changed: int = 0
    unchanged: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    new_folders: list[Path] = field(default_factory=list)

    def fail(self, key: str, reason: str) -> None:
        self.failed.append({"item": key, "reason": reason})


class _Cycle:
    """One run over a listing (the engine's state while it walks the items)."""

    def __init__(self, project: Project, source: Source, row: SyncSource) -> None:
        self.project, self.source, self.row = project, source, row
        self.roots = Roots.from_config()
        self.tally = _Tally()
        self.synced = {item.key: item for item in db.session.scalars(
            select(SyncedItem).where(SyncedItem.source_id == row.id))}
        self.located: dict[str, Frame] | None = None
        self.checker = FileChecker(self.roots, "error")

    def frames_at(self, location: str) -> Frame | None:
        """A frame of the project already at this location (imported before this source was synced)."""
        if self.located is None:
            query = (select(Frame).join(Scan, Scan.id == Frame.scan_id)
                     .join(Experiment, Experiment.id == Scan.experiment_id)
                     .where(Experiment.project_id == self.project.id))
            self.located = {frame.file_location: frame for frame in db.session.scalars(query)}
        return self.located.get(location)

    def fetched(self, item: SourceItem) -> Path:
        """The image's frame path: in place for on-disk sources, else fetched into a temporary folder of the
        project's uploads and moved into its own folder there once complete (another project's scope refuses
        it, and no folder source walks it)."""
        fetched = fetch_folder(self.project.id, self.roots)
        partial = fetched / ".partial" / uuid.uuid4().hex
        partial.mkdir(parents=True)
        try:
            path = Path(self.source.fetch(item, partial))
            if not path.is_relative_to(partial):
                shutil.rmtree(partial)
                return path
            final = fetched / str(self.row.id) / uuid.uuid4().hex
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self.tally.new_folders.append(final)
        return final / path.relative_to(partial)

    def frame_fields(self, location: str) -> dict[str, Any]:
        """Checksum, size and geometry of a frame's file (as an upload fills them), read before anything is
        written so an unreadable image adds nothing."""
        resolved = resolve(location, self.roots)
        info = imaging.read_info(local_copy(resolved, Path(current_app.config["CACHE_DIR"]), self.roots))
        digest, size = file_checksum(resolved, self.roots)
        return {"checksum": digest, "size_bytes": size, "shape": info.shape, "spacing": info.spacing,
                "orientation": info.orientation}

    def take(self, item: SourceItem) -> None:
        """Add a new item, or a changed one as a new frame of its scan."""
        for name, value in (("experiment", item.experiment), ("scan", item.scan_name), ("subject", item.subject),
                            ("session", item.session)):
            if value is not None and len(value) > NAME_MAX:
                raise InvalidInput(f"{name} name is longer than {NAME_MAX} characters")
        if not item.experiment or not item.scan_name:
            raise InvalidInput("no experiment or scan name")
        previous = self.synced.get(item.key)
        path = self.fetched(item)
        location = relative_location(path, self.roots)
        refused = self.checker.resolve(location, self.project.id)
        if isinstance(refused, str):  # e.g. a link into another project's uploads
            raise InvalidInput(refused)
        known = self.frames_at(location) if previous is None and item.local_path is not None else None
        if known is not None:  # imported before: this source now names it
            self.remember(item, known.scan_id, known)
            self.tally.unchanged += 1
            return
        fields = self.frame_fields(location)
        if previous is not None:
            scan = db.session.get(Scan, previous.scan_id)
            old = db.session.get(Frame, previous.frame_id) if previous.frame_id else None
            if old is not None and old.file_location == location:  # rewritten in place: the frame is its file
                for name, value in fields.items():
                    setattr(old, name, value)
                frame = old
            else:
                frame = projects.add_frame(scan, self.frame_number(scan, None), location, **fields)
            scan.meta = item.metadata or scan.meta
            self.tally.changed += 1
        else:
            experiment = projects.get_or_create_experiment(self.project, item.experiment)
            scan = projects.get_or_create_scan(experiment, item.scan_name, subject_id=item.subject,
                                               session_id=item.session, meta=item.metadata or None,
                                               **({"scan_type": item.scan_type} if item.scan_type else {}))
            frame = projects.add_frame(scan, self.frame_number(scan, item.frame), location, **fields)
            self.tally.added.append(item.key)
        self.remember(item, scan.id, frame)

    @staticmethod
    def frame_number(scan: Scan, wanted: int | None) -> int:
        """The number the source names for a new image's frame when the scan has no frame of it, else the
        scan's next one."""
        taken = set(db.session.scalars(select(Frame.frame_number).where(Frame.scan_id == scan.id)))
        if wanted is not None and wanted not in taken:
            return wanted
        return max(taken) + 1 if taken else 0

    def remember(self, item: SourceItem, scan_id: int, frame: Frame) -> None:
        row = self.synced.get(item.key)
        if row is None:
            row = self.synced[item.key] = SyncedItem(source_id=self.row.id, key=item.key, scan_id=scan_id)
            db.session.add(row)
        row.version, row.frame_id, row.removed_at, row.updated_at = item.version, frame.id, None, utcnow()
        db.session.flush()

    def removed(self, listing: Listing) -> list[str]:
        """Keys a full listing no longer has, or an incremental one names as gone (each reported once); their
        scans and decisions stay."""
        if listing.incremental:
            absent = set(listing.removed)
        else:
            present = {item.key for item in listing.items} | {key for key, _ in listing.skipped}
            absent = self.synced.keys() - present
        gone = []
        for key, row in sorted(self.synced.items()):
            if key in absent and row.removed_at is None:
                row.removed_at = utcnow()
                gone.append(key)
        return gone

    def outgoing(self) -> list[tuple[SyncedItem, int, Outgoing]]:
        """Each image whose scan's latest decision was not pushed yet."""
        rows = [row for row in self.synced.values() if row.removed_at is None]
        latest = latest_decisions({row.scan_id for row in rows}, with_artifacts=True) if rows else {}
        found = []
        for row in sorted(rows, key=lambda row: row.key):
            decision = latest.get(row.scan_id)
            if decision is None or decision.id == row.pushed_decision_id:
                continue
            scan = db.session.get(Scan, row.scan_id)
            reviewer = decision.creator.username if decision.creator is not None else decision.creator_name
            found.append((row, decision.id, Outgoing(
                key=row.key, scan_id=row.scan_id, decision=decision.option.meaning, label=decision.option.label,
                code=decision.option.key,
                artifacts={artifact.entry.key: artifact.state for artifact in decision.artifacts
                           if artifact.state != "undefined"},
                note=decision.note or "", reviewer=reviewer or "", created=decision.created_at,
                metadata=scan.meta or {})))
        return found


def export_state(project: Project, run: SyncRun) -> None:
    """Export the project's state before the sync to its sync folder's export.csv, the previous one kept as
    export-<time>.csv; the file is written whole before it replaces anything."""
    folder = sync_folder(project)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = run.started_at.strftime("%Y%m%dT%H%M%S%fZ")
    current = folder / "export.csv"
    staged = exporter.export_to_file("csv", [project.id], folder / f".export-{stamp}.partial")
    if current.exists():
        backup = folder / f"export-{stamp}.csv"
        os.replace(current, backup)
        run.backup_file = str(backup)
    os.replace(staged, current)
    run.export_file = str(current)


def _reason(err: BaseException) -> str:
    if isinstance(err, ServiceError):
        return err.message
    return str(err) if isinstance(err, StorageError) else f"{type(err).__name__}: {err}"


def run_sync(project: Project, source_url: str, actor: User | None, *, from_data_root: bool = False,
             patterns: Iterable[str] | None = None, every_minutes: Any = UNCHANGED, job_id: int | None = None,
             progress: Progress = _no_progress) -> SyncRun:
    """Sync the project with a source once and record the run (committed). A source that cannot be listed
    ends the run failed with the reason, and the error is raised; a source another run is syncing is refused
    (409)."""
    source, row = prepare(project, source_url, from_data_root=from_data_root, patterns=patterns,
                          every_minutes=every_minutes)
    return _run(project, source, row, actor, job_id=job_id, progress=progress)


def run_stored(row: SyncSource, actor: User | None, *, job_id: int | None = None,
               progress: Progress = _no_progress) -> SyncRun:
    """Sync a stored source (the worker's run): one that cannot be opened any more (its folder gone, no longer
    a BIDS dataset, a server taken off the allowlist) ends a failed run with the reason, so its schedule waits
    its interval and the history says why."""
    project = db.session.get(Project, row.project_id)
    try:
        source, row = prepare(project, row.url)
    except ServiceError as err:
        db.session.rollback()
        run = _new_run(row, actor, job_id)
        _end(run, row, "failed", error=err.message)
        raise
    return _run(project, source, row, actor, job_id=job_id, progress=progress)


def _new_run(row: SyncSource, actor: User | None, job_id: int | None) -> SyncRun:
    run = SyncRun(source_id=row.id, job_id=job_id, actor_id=actor.id if actor is not None else None,
                  state="running", started_at=utcnow(), added_items=[], skipped_items=[], failed_items=[],
                  removed_items=[])
    db.session.add(run)
    return run


def running(row: SyncSource, *, but_job: int | None = None) -> SyncRun | None:
    """Another run of the source still going: one whose job is queued or running, or a command-line run (no
    job) started within :data:`STALE_RUN` (a command killed outright never ends its run)."""
    for run in db.session.scalars(select(SyncRun).where(SyncRun.source_id == row.id, SyncRun.state == "running")):
        if run.job_id is None:
            if run.started_at + STALE_RUN > utcnow():
                return run
        elif run.job_id != but_job:
            job = db.session.get(Job, run.job_id)
            if job is not None and job.state in ("queued", "running"):
                return run
    return None


def _run(project: Project, source: Source, row: SyncSource, actor: User | None, *, job_id: int | None,
         progress: Progress) -> SyncRun:
    other = running(row, but_job=job_id)
    if other is not None:
        db.session.rollback()
        raise Conflict(f"a sync of {row.url} is already running (run {other.id}"
                       + (f", job {other.job_id})" if other.job_id is not None else ")"), field="source")
    run = _new_run(row, actor, job_id)
    boundary.commit()
    progress(0.01, "exporting the current state")
    try:
        export_state(project, run)
        progress(0.03, f"listing {source.url}")
        listing = source.list(row.cursor or None)
    except Exception as err:  # noqa: BLE001 - the run records why the source could not be listed
        db.session.rollback()
        error = err if isinstance(err, ServiceError) else SourceError(source.url, _reason(err))
        _end(run, row, "failed", error=error.message)
        raise error from err
    cycle = _Cycle(project, source, row)
    try:
        items = sorted(listing.items, key=lambda item: item.key)
        for index, item in enumerate(items):
            previous = cycle.synced.get(item.key)
            if previous is not None and previous.version == item.version:
                previous.removed_at = None
                cycle.tally.unchanged += 1
                continue
            progress(0.05 + 0.8 * index / max(1, len(items)), f"{item.key}")
            fetched_before = len(cycle.tally.new_folders)
            try:
                cycle.take(item)
            except SQLAlchemyError:  # the session is unusable: the run ends, nothing of it kept
                raise
            except Exception as err:  # noqa: BLE001 - one item that cannot be taken fails alone, with the reason
                log.warning("sync %s: %s: %s", source.url, item.key, _reason(err))
                cycle.tally.fail(item.key, _reason(err))
                source.forget(listing.cursor, item.key)  # tried again next run
                for folder in cycle.tally.new_folders[fetched_before:]:  # no file of a failed item stays
                    shutil.rmtree(folder, ignore_errors=True)
                del cycle.tally.new_folders[fetched_before:]
        removed = cycle.removed(listing)
        progress(0.9, "pushing decisions back")
        pushed, push_file = _push(cycle, sync_folder(project) / f"run-{run.id}")
    except BaseException:
        db.session.rollback()
        for folder in cycle.tally.new_folders:
            shutil.rmtree(folder, ignore_errors=True)
        _end(run, row, "failed", error="the sync stopped before it ended; nothing of it was kept")
        raise
    tally = cycle.tally
    row.cursor = listing.cursor
    run.added, run.changed, run.unchanged, run.pushed = len(tally.added), tally.changed, tally.unchanged, pushed
    run.added_items, run.removed_items, run.removed = tally.added, removed, len(removed)
    run.skipped_items = [{"item": key, "reason": reason} for key, reason in listing.skipped]
    run.failed_items = tally.failed
    run.skipped, run.failed = len(run.skipped_items), len(tally.failed)
    run.push_file = str(push_file) if push_file else None
    _end(run, row, "succeeded")
    if tally.added or tally.changed:
        frames.frames_added([project.id], actor)
    progress(1.0, f"added {run.added}, changed {run.changed}, pushed {run.pushed}")
    return run


def _push(cycle: _Cycle, run_folder: Path) -> tuple[int, Path | None]:
    """Push the decisions not pushed yet; those the source refused are listed as failed."""
    pending = cycle.outgoing()
    if not pending:
        return 0, None
    try:
        pushed = cycle.source.push([out for _, _, out in pending], run_folder)
    except Exception as err:  # noqa: BLE001 - a push that fails leaves the decisions for the next run
        for _, _, out in pending:
            cycle.tally.fail(out.key, f"decision not pushed back: {_reason(err)}")
        return 0, None
    refused = dict(pushed.failed)
    for row, decision_id, out in pending:
        if out.key in refused:
            cycle.tally.fail(out.key, f"decision not pushed back: {refused[out.key]}")
        else:
            row.pushed_decision_id = decision_id
    return pushed.pushed, pushed.file


def _end(run: SyncRun, row: SyncSource, state: str, *, error: str | None = None) -> None:
    run.state, run.finished_at, run.error = state, utcnow(), error
    row.last_run_at = run.started_at
    boundary.commit()


def history(project: Project, limit: int = 50) -> list[SyncRun]:
    """The project's newest sync runs, newest first."""
    return list(db.session.scalars(
        select(SyncRun).join(SyncSource, SyncSource.id == SyncRun.source_id)
        .where(SyncSource.project_id == project.id).order_by(SyncRun.id.desc()).limit(limit)))


def sources_of(project: Project) -> list[SyncSource]:
    return list(db.session.scalars(select(SyncSource).where(SyncSource.project_id == project.id)
                                   .order_by(SyncSource.id)))
