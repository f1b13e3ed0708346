"""Importing a file: read it whole into a plan (checking everything), then write it in one transaction.

Nothing is written until every row has been read and checked against the database; the
writes are bulk inserts and updates inside the caller's transaction, so an error, a
cancelled job or a killed process leaves the database exactly as it was.

Merge adds and updates, never archives; replace also archives the scans and experiments
that left the file's tree (their decisions stay) and restores those that come back.
Decisions and evaluations are appended only when the database lacks them: a decision is
the same when scan, decision code, creator and time match.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

from flask import current_app
from sqlalchemy import bindparam, insert, select, update

from app.db import (
    DECISION_MEANINGS, ROLES, ArtifactEntry, Decision, DecisionArtifact, DecisionOption, Evaluation, Experiment, Frame,
    Membership, ModelVersion, Project, Scan, User, db, utcnow,
)
from app.services import audit, projects, vocabulary
from app.services.errors import InvalidInput
from app.services.transfer import full, limits, miqa_csv, miqa_json, people
from app.services.transfer.artifact_names import ArtifactNames, lookup
from app.services.transfer.csvfile import CsvSource
from app.services.transfer.files import FileChecker
from app.services.transfer.model import WORLD, DecisionIn, Document, ExperimentIn, ProjectIn, ScanIn
from app.storage import Roots

log = logging.getLogger(__name__)

MODES = ("merge", "replace")
BATCH = 2000
Progress = Callable[[float, str], None]
COUNTERS = (
    "projects_added", "vocabulary_added", "experiments_added", "experiments_changed", "experiments_archived",
    "experiments_restored", "scans_added", "scans_changed", "scans_archived", "scans_restored", "frames_added",
    "frames_changed", "decisions_added", "model_versions_added", "evaluations_added", "users_added",
    "memberships_changed",
)
UNCHANGED = ("decisions_already_present", "evaluations_already_present")


def _no_progress(fraction: float, message: str = "") -> None:
    return None


# --- reading -------------------------------------------------------------------------------------

def read_document(path: Path, filename: str | None = None, progress: Progress = _no_progress) -> Document:
    """Parse a MIQA CSV, MIQA JSON, qcloop full CSV or full JSON file; problems are collected."""
    name = (filename or path.name).lower()
    unlisted = current_app.config.get("IMPORT_UNLISTED_ARTIFACTS", "absent")
    if unlisted not in ("absent", "undefined"):
        raise InvalidInput("QCLOOP_IMPORT_UNLISTED_ARTIFACTS must be absent or undefined", field="unlisted")
    with open(path, "rb") as handle:
        first = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    is_json = name.endswith(".json") or (not name.endswith(".csv") and first in (b"{", b"["))
    read_progress = lambda fraction: progress(0.4 * fraction, "reading")  # noqa: E731
    if is_json:
        document = Document("miqa-json")
        with open(path, "rb") as handle:
            miqa_json.read(handle, document, unlisted, read_progress, path.stat().st_size)
        return document
    try:
        source = CsvSource(path)
    except ValueError as err:
        document = Document("miqa-csv")
        document.problems.error("row 1", None, str(err).split(": ", 1)[-1])
        return document
    with source:
        document = Document("csv" if "record" in source.header else "miqa-csv")
        if not source.header:
            document.problems.error("row 1", None, "the file is empty (a header row is required)")
            return document
        try:
            if document.format == "csv":
                full.read(source, document, read_progress)
            else:
                miqa_csv.read(source, document, unlisted, read_progress)
        except ValueError as err:  # the CSV itself is broken at some row: name it, stop reading
            where, _, message = str(err).partition(": ")
            document.problems.error(where, None, message)
    return document


# --- planning ------------------------------------------------------------------------------------

@dataclass(slots=True)
class ResolvedDecision:
    experiment: str
    scan: str
    option_key: str
    creator_id: int | None
    creator_name: str | None
    role: str | None
    note: str
    created: datetime
    location: tuple[float, float, float] | None
    states: dict[str, str]
    source: str
    space: str
    frame_locations: dict[int, tuple[float, float, float] | None] | None
    unmatched: dict[str, str]
    created_unknown: bool


@dataclass
class ProjectPlan:
    name: str
    project: Project | None
    new_options: list[dict[str, Any]] = field(default_factory=list)
    new_entries: list[dict[str, Any]] = field(default_factory=list)
    new_experiments: list[ExperimentIn] = field(default_factory=list)
    experiment_updates: list[dict[str, Any]] = field(default_factory=list)
    new_scans: list[tuple[str, ScanIn]] = field(default_factory=list)
    scan_updates: list[dict[str, Any]] = field(default_factory=list)
    archive_experiments: list[int] = field(default_factory=list)
    restore_experiments: list[int] = field(default_factory=list)
    archive_scans: list[int] = field(default_factory=list)
    restore_scans: list[int] = field(default_factory=list)
    new_frames: list[tuple[str, str, int, str, Any]] = field(default_factory=list)
    frame_updates: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[ResolvedDecision] = field(default_factory=list)
    new_models: list[Any] = field(default_factory=list)
    evaluations: list[tuple[str, str, Any, tuple[str, str]]] = field(default_factory=list)


@dataclass
class Plan:
    format: str
    mode: str
    rows: int
    projects: list[ProjectPlan]
    counts: dict[str, int]
    samples: dict[str, list[str]]
    warnings: list[str]
    warning_count: int
    people: people.PeoplePlan = field(default_factory=people.PeoplePlan)
    unmatched_artifacts: dict[str, int] = field(default_factory=dict)

    def summary(self, dry_run: bool) -> dict[str, Any]:
        return {"format": self.format, "mode": self.mode, "dry_run": dry_run, "rows": self.rows,
                "projects": [p.name for p in self.projects], "counts": dict(self.counts),
                "changes": sum(self.counts[name] for name in COUNTERS), "samples": self.samples,
                "warnings": self.warnings, "warning_count": self.warning_count,
                "unmatched_artifacts": dict(self.unmatched_artifacts)}


class _Planner:
    def __init__(self, document: Document, mode: str, target: Project | None, actor: User | None,
                 add_unknown_artifacts: bool = False) -> None:
        self.document, self.mode, self.target, self.actor = document, mode, target, actor
        self.add_unknown_artifacts = add_unknown_artifacts
        self.unmatched: dict[str, int] = {}
        self.problems = document.problems
        self.counts = {name: 0 for name in COUNTERS + UNCHANGED}
        self.samples: dict[str, list[str]] = {}
        self.files = FileChecker(Roots.from_config(), current_app.config.get("IMPORT_MISSING_FILES", "error"))
        self.now = utcnow()
        self.logins: dict[str, int] = {}
        for uid, username, email in db.session.execute(select(User.id, User.username, User.email)):
            self.logins[username.lower()] = uid
            if email:
                self.logins.setdefault(email.lower(), uid)

    def count(self, name: str, sample: str | None = None, amount: int = 1) -> None:
        self.counts[name] += amount
        if sample is not None:
            bucket = self.samples.setdefault(name, [])
            if len(bucket) < 20:
                bucket.append(sample)

    def plan(self, progress: Progress) -> Plan:
        plans = []
        total = max(1, len(self.document.projects))
        for index, project_in in enumerate(self.document.projects.values()):
            progress(0.4 + 0.2 * index / total, f"checking {project_in.name}")
            plans.append(self._project(project_in))
        members = people.plan(self.document, self.target is None, self.count, self.problems)
        warnings = [str(p) for p in self.problems.warnings]
        return Plan(self.document.format, self.mode, self.document.rows, plans, self.counts, self.samples, warnings,
                    self.problems.warning_count, members, self.unmatched)

    # project and vocabulary

    def _project(self, pin: ProjectIn) -> ProjectPlan:
        limits.check_project(pin, self.problems)
        project = projects.find_project(pin.name)
        if self.target is not None and pin.name != self.target.name:
            self.problems.error(pin.where, "project_name",
                                f"names project {pin.name!r}, but this import is into {self.target.name!r}")
            return ProjectPlan(pin.name, None)
        if project is None:
            self.count("projects_added", pin.name)
        plan = ProjectPlan(pin.name, project)
        pid = project.id if project else None
        if project is None:
            vocabulary.seed_defaults()
        options = {o.key: o for o in db.session.scalars(select(DecisionOption).where(DecisionOption.project_id == pid))}
        entries = {e.key: e for e in db.session.scalars(select(ArtifactEntry).where(ArtifactEntry.project_id == pid))}
        self.option_keys = {key: {"key": key, "label": o.label} for key, o in options.items()}
        self.entry_keys = {key: {"key": key, "label": e.label} for key, e in entries.items()}
        self._vocabulary(pin, plan)
        self._option_lookup = lookup(self.option_keys)
        self.artifacts = ArtifactNames(self.entry_keys, self.add_unknown_artifacts)

        def add_entry(key: str, label: str) -> None:
            plan.new_entries.append({"key": key, "label": label, "position": len(self.entry_keys)})
            self.count("vocabulary_added", f"{pin.name}: {key}")

        self.artifacts.add_unknown_entries(pin, add_entry)
        self.roles = {} if project is None else dict(db.session.execute(
            select(Membership.user_id, Membership.role).where(Membership.project_id == pid)).all())
        if self.actor is not None and project is None and getattr(self.actor, "is_authenticated", False):
            self.roles[self.actor.id] = "admin"  # create_project makes the importer the new project's admin
        self._tree(pin, plan, pid)
        self._models(pin, plan)
        for name, count in sorted(self.artifacts.unmatched.items()):
            self.unmatched[name] = self.unmatched.get(name, 0) + count
            self.problems.warn(pin.where, "artifacts",
                               f"unknown artifact {name!r} on {count} decision(s): kept on them as an unmatched tag "
                               "and exported back (add it to the vocabulary with --add-unknown-artifacts)")
        return plan

    def _vocabulary(self, pin: ProjectIn, plan: ProjectPlan) -> None:
        for rows, known, target, kind in ((pin.options, self.option_keys, plan.new_options, "option"),
                                          (pin.entries, self.entry_keys, plan.new_entries, "entry")):
            for row in rows:
                if row["key"] in known:
                    continue
                fields = {name: row[name] for name in ("key", "label", "position", "shortcut", "retired", "meaning",
                                                       "requires_note") if row.get(name) is not None}
                if kind == "option" and fields.get("meaning") not in DECISION_MEANINGS:
                    self.problems.error(row["where"], "meaning",
                                        f"{fields.get('meaning')!r} is not one of {', '.join(DECISION_MEANINGS)}")
                    continue
                if kind == "entry":
                    fields.pop("meaning", None)
                    fields.pop("requires_note", None)
                fields["label"] = fields.get("label") or row["key"]
                target.append(fields)
                known[row["key"]] = {"key": row["key"], "label": fields["label"]}
                self.count("vocabulary_added", f"{pin.name}: {row['key']}")

    # experiments, scans, frames

    def _tree(self, pin: ProjectIn, plan: ProjectPlan, pid: int | None) -> None:
        experiments = {} if pid is None else {e.name: e for e in db.session.execute(
            select(Experiment.id, Experiment.name, Experiment.note, Experiment.archived_at)
            .where(Experiment.project_id == pid))}
        scans: dict[tuple[str, str], Any] = {}
        frames: dict[int, dict[int, Any]] = {}
        if pid is not None:
            for row in db.session.execute(
                    select(Scan.id, Scan.name, Scan.scan_type, Scan.subject_id, Scan.session_id, Scan.link,
                           Scan.archived_at, Experiment.name.label("experiment"))
                    .join(Experiment, Experiment.id == Scan.experiment_id).where(Experiment.project_id == pid)):
                scans[(row.experiment, row.name)] = row
            for row in db.session.execute(
                    select(Frame.id, Frame.scan_id, Frame.frame_number, Frame.file_location)
                    .join(Scan, Scan.id == Frame.scan_id).join(Experiment, Experiment.id == Scan.experiment_id)
                    .where(Experiment.project_id == pid)):
                frames.setdefault(row.scan_id, {})[row.frame_number] = row
        existing_decisions = self._existing_decisions(pin, scans)
        existing_evaluations = self._existing_evaluations(pin, scans)
        for ein in pin.experiments.values():
            row = experiments.get(ein.name)
            label = f"{pin.name} / {ein.name}"
            if row is None:
                plan.new_experiments.append(ein)
                self.count("experiments_added", label)
                if ein.archived:
                    self.count("experiments_archived", label)
            else:
                if ein.note is not None and ein.note != (row.note or ""):
                    plan.experiment_updates.append({"b_id": row.id, "note": ein.note})
                    self.count("experiments_changed", label)
                wanted = bool(ein.archived)
                if wanted and row.archived_at is None:
                    plan.archive_experiments.append(row.id)
                    self.count("experiments_archived", label)
                elif not wanted and row.archived_at is not None:
                    plan.restore_experiments.append(row.id)
                    self.count("experiments_restored", label)
            for sin in ein.scans.values():
                self._scan(pin, plan, ein, sin, scans.get((ein.name, sin.name)), frames, existing_decisions,
                           existing_evaluations)
        if self.mode == "replace":
            for name, row in experiments.items():
                if name not in pin.experiments and row.archived_at is None:
                    plan.archive_experiments.append(row.id)
                    self.count("experiments_archived", f"{pin.name} / {name}")
            for (experiment, name), row in scans.items():
                ein = pin.experiments.get(experiment)
                if (ein is None or name not in ein.scans) and row.archived_at is None:
                    plan.archive_scans.append(row.id)
                    self.count("scans_archived", f"{pin.name} / {experiment} / {name}")

    def _scan(self, pin, plan, ein, sin: ScanIn, row, frames, existing_decisions, existing_evaluations) -> None:
        label = f"{pin.name} / {ein.name} / {sin.name}"
        if row is None:
            plan.new_scans.append((ein.name, sin))
            self.count("scans_added", label)
            if sin.archived:
                self.count("scans_archived", label)
            scan_frames: dict[int, Any] = {}
        else:
            changes = {name: value for name, value, current in (
                ("scan_type", sin.scan_type, row.scan_type), ("subject_id", sin.subject_id, row.subject_id),
                ("session_id", sin.session_id, row.session_id), ("link", sin.link, row.link))
                if value is not None and value != current}
            if changes:
                plan.scan_updates.append({"b_id": row.id, **changes})
                self.count("scans_changed", label)
            wanted = bool(sin.archived)
            if wanted and row.archived_at is None:
                plan.archive_scans.append(row.id)
                self.count("scans_archived", label)
            elif not wanted and row.archived_at is not None:
                plan.restore_scans.append(row.id)
                self.count("scans_restored", label)
            scan_frames = frames.get(row.id, {})
        for number, fin in sin.frames.items():
            resolved = self.files.resolve(fin.location, plan.project.id if plan.project else None)
            if isinstance(resolved, str):
                self.problems.error(fin.where, "file_location", resolved)
                continue
            checked = self.files.check(resolved)
            if checked.problem:
                if self.files.mode == "error":
                    self.problems.error(fin.where, "file_location", checked.problem)
                    continue
                self.problems.warn(fin.where, "file_location", checked.problem)
            current = scan_frames.get(number)
            if current is None:
                plan.new_frames.append((ein.name, sin.name, number, fin.location, checked.info))
                self.count("frames_added")
            elif current.file_location != fin.location:
                info = checked.info
                plan.frame_updates.append({
                    "b_id": current.id, "file_location": fin.location, "checksum": None, "size_bytes": None,
                    "shape": info.shape if info else None, "spacing": info.spacing if info else None,
                    "orientation": info.orientation if info else None})
                self.count("frames_changed", f"{label} #{number}")
        known_frames = set(sin.frames) | set(scan_frames)
        present = existing_decisions.get(row.id, []) if row is not None else []
        for decision in sin.decisions:
            resolved = self._decision(ein.name, sin.name, decision)
            if resolved is None:
                continue
            if any(self._same(resolved, decision, other) for other in present):
                self.count("decisions_already_present")
                continue
            plan.decisions.append(resolved)
            self.count("decisions_added")
        done = existing_evaluations.get(row.id, set()) if row is not None else set()
        for evaluation in sin.evaluations:
            if evaluation.frame_number is not None and evaluation.frame_number not in known_frames:
                self.problems.error(evaluation.where, "frame_number",
                                    f"scan {sin.name!r} has no frame {evaluation.frame_number}")
                continue
            created = evaluation.created or self.now
            if (evaluation.model, evaluation.frame_number, created) in done:
                self.count("evaluations_already_present")
                continue
            plan.evaluations.append((ein.name, sin.name, evaluation, evaluation.model))
            self.count("evaluations_added")
        # The plan now holds what the scan's frames and decisions say: free the file's copies.
        sin.frames.clear()
        sin.decisions.clear()

    # decisions

    def _decision(self, experiment: str, scan: str, d: DecisionIn) -> ResolvedDecision | None:
        errors_before = self.problems.error_count
        key = self._option_lookup.get(d.code) or self._option_lookup.get(d.code.lower())
        if key is None:
            self.problems.error(d.where, d.fields["decision"],
                                f"unknown decision {d.code!r} (known: {', '.join(self.option_keys)})")
        states, unmatched = self.artifacts.states(d, self.problems)
        creator_id = self.logins.get(d.creator.lower()) if d.creator else None
        if d.role_given:
            role = d.role
            if role is not None and role not in ROLES:
                self.problems.error(d.where, d.fields["role"], f"{role!r} is not one of {', '.join(ROLES)}")
        else:
            role = self.roles.get(creator_id) if creator_id else None
        if self.problems.error_count > errors_before:
            return None
        return ResolvedDecision(experiment, scan, key, creator_id, None if creator_id else d.creator, role, d.note,
                                d.created or self.now, d.location, states, d.source, d.space, d.frame_locations,
                                unmatched, d.created is None)

    @staticmethod
    def _same(resolved: ResolvedDecision, d: DecisionIn, other: tuple) -> bool:
        option_key, created, names = other
        if option_key != resolved.option_key or (d.created is not None and created != d.created):
            return False
        return (d.creator or "").lower() in names if d.creator else not names

    def _existing_decisions(self, pin: ProjectIn, scans: dict) -> dict[int, list[tuple]]:
        """For scans of the file that exist: (option key, time, creator names) of their decisions."""
        ids = [scans[(e.name, s.name)].id for e in pin.experiments.values() for s in e.scans.values()
               if s.decisions and (e.name, s.name) in scans]
        found: dict[int, list[tuple]] = {}
        for start in range(0, len(ids), 1000):
            for scan_id, key, created, username, email, name in db.session.execute(
                    select(Decision.scan_id, DecisionOption.key, Decision.created_at, User.username, User.email,
                           Decision.creator_name)
                    .join(DecisionOption, DecisionOption.id == Decision.option_id)
                    .outerjoin(User, User.id == Decision.creator_id)
                    .where(Decision.scan_id.in_(ids[start:start + 1000]))):
                names = {n.lower() for n in (username, email, name) if n}
                found.setdefault(scan_id, []).append((key, created, names))
        return found

    def _existing_evaluations(self, pin: ProjectIn, scans: dict) -> dict[int, set]:
        ids = [scans[(e.name, s.name)].id for e in pin.experiments.values() for s in e.scans.values()
               if s.evaluations and (e.name, s.name) in scans]
        found: dict[int, set] = {}
        for start in range(0, len(ids), 1000):
            for scan_id, name, version, number, created in db.session.execute(
                    select(Evaluation.scan_id, ModelVersion.registry_name, ModelVersion.version, Frame.frame_number,
                           Evaluation.created_at)
                    .join(ModelVersion, ModelVersion.id == Evaluation.model_version_id)
                    .outerjoin(Frame, Frame.id == Evaluation.frame_id)
                    .where(Evaluation.scan_id.in_(ids[start:start + 1000]))):
                found.setdefault(scan_id, set()).add(((name, version), number, created))
        return found

    # model versions

    def _models(self, pin: ProjectIn, plan: ProjectPlan) -> None:
        wanted = {ev.model for e in pin.experiments.values() for s in e.scans.values() for ev in s.evaluations}
        declared = {(m.registry_name, m.version): m for m in pin.model_versions}
        for key in sorted(set(declared) | wanted):
            exists = db.session.scalar(select(ModelVersion.id).where(ModelVersion.registry_name == key[0],
                                                                     ModelVersion.version == key[1]))
            if exists is not None:
                continue
            if key not in declared:
                where = next(ev.where for e in pin.experiments.values() for s in e.scans.values()
                             for ev in s.evaluations if ev.model == key)
                self.problems.error(where, "model", f"unknown model version {key[0]}:{key[1]} "
                                                    "(neither in the database nor in the file)")
                continue
            plan.new_models.append(declared[key])
            self.count("model_versions_added", f"{key[0]}:{key[1]}")


def build_plan(document: Document, *, mode: str, target: Project | None, actor: User | None,
               progress: Progress = _no_progress, add_unknown_artifacts: bool = False) -> Plan:
    """Check the document against the database and plan the writes; it consumes the document's frames
    and decisions as it goes, so a big file is not held twice (as read and as planned)."""
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}", field="mode")
    document.problems.raise_if_any()
    plan = _Planner(document, mode, target, actor, add_unknown_artifacts).plan(progress)
    document.problems.raise_if_any()
    return plan


# --- writing -------------------------------------------------------------------------------------

def _batches(rows: Iterable, size: int = BATCH) -> Iterator[list]:
    """Lists of at most ``size`` rows, so no statement carries more than one batch of parameters."""
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _bulk_update(model, rows: list[dict[str, Any]]) -> None:
    """Executemany UPDATE ... WHERE id = :b_id for rows of the same columns."""
    by_columns: dict[tuple, list] = {}
    for row in rows:
        by_columns.setdefault(tuple(sorted(row)), []).append(row)
    table = model.__table__
    for columns, group in by_columns.items():
        values = {name: bindparam(name) for name in columns if name != "b_id"}
        statement = update(table).where(table.c.id == bindparam("b_id")).values(**values)
        for batch in _batches(group):
            db.session.execute(statement, batch)


def _set_archived(model, ids: list[int], when: datetime | None) -> None:
    table = model.__table__
    for batch in _batches(ids, 500):
        db.session.execute(update(table).where(table.c.id.in_(batch)).values(archived_at=when))


def apply(plan: Plan, actor: User | None, progress: Progress = _no_progress) -> None:
    """Write the plan in the caller's transaction (the caller commits or rolls back)."""
    total = max(1, len(plan.projects))
    for index, project_plan in enumerate(plan.projects):
        base, share = 0.6 + 0.4 * index / total, 0.4 / total
        _apply_project(project_plan, actor, lambda f, m: progress(base + share * f, m), plan)
    people.apply(plan.people)


def _apply_project(plan: ProjectPlan, actor: User | None, progress: Progress, whole: Plan) -> None:
    now = utcnow()
    project = plan.project or projects.create_project(plan.name, actor if getattr(actor, "is_authenticated", False)
                                                      else None)
    pid = project.id
    for fields in plan.new_options:
        db.session.add(DecisionOption(project_id=pid, **{"position": 0, **fields}))
    for fields in plan.new_entries:
        db.session.add(ArtifactEntry(project_id=pid, **{"position": 0, **fields}))
    db.session.flush()
    progress(0.02, "experiments")
    if plan.new_experiments:
        db.session.execute(insert(Experiment.__table__), [
            {"project_id": pid, "name": e.name, "note": e.note or "", "archived_at": now if e.archived else None,
             "created_at": now} for e in plan.new_experiments])
    _bulk_update(Experiment, plan.experiment_updates)
    _set_archived(Experiment, plan.archive_experiments, now)
    _set_archived(Experiment, plan.restore_experiments, None)
    experiment_ids = dict(db.session.execute(select(Experiment.name, Experiment.id)
                                             .where(Experiment.project_id == pid)).all())
    # Scans of an archived experiment that leave the tree are archived too.
    if plan.archive_experiments:
        for batch in _batches(plan.archive_experiments, 500):
            db.session.execute(update(Scan.__table__).where(Scan.experiment_id.in_(batch), Scan.archived_at.is_(None))
                               .values(archived_at=now))
    progress(0.05, "scans")
    for batch in _batches(plan.new_scans):
        db.session.execute(insert(Scan.__table__), [
            {"experiment_id": experiment_ids[experiment], "name": s.name, "scan_type": s.scan_type or "T1",
             "subject_id": s.subject_id, "session_id": s.session_id, "link": s.link,
             "archived_at": now if s.archived else None, "created_at": now} for experiment, s in batch])
    _bulk_update(Scan, plan.scan_updates)
    _set_archived(Scan, plan.archive_scans, now)
    _set_archived(Scan, plan.restore_scans, None)
    scan_ids = {(experiment, name): sid for sid, experiment, name in db.session.execute(
        select(Scan.id, Experiment.name, Scan.name).join(Experiment, Experiment.id == Scan.experiment_id)
        .where(Experiment.project_id == pid))}
    progress(0.15, "frames")
    for batch in _batches(plan.new_frames):
        db.session.execute(insert(Frame.__table__), [
            {"scan_id": scan_ids[(experiment, scan)], "frame_number": number, "file_location": location,
             "shape": info.shape if info else None, "spacing": info.spacing if info else None,
             "orientation": info.orientation if info else None, "created_at": now}
            for experiment, scan, number, location, info in batch])
    _bulk_update(Frame, plan.frame_updates)
    _insert_decisions(plan, pid, scan_ids, progress)
    _insert_evaluations(plan, pid, scan_ids)
    counts = {name: value for name, value in whole.counts.items() if value}
    audit.record("import", actor=actor, project_id=pid, target=("project", pid), format=whole.format,
                 mode=whole.mode, counts=counts)
    progress(1.0, "written")


def _insert_decisions(plan: ProjectPlan, pid: int, scan_ids: dict, progress: Progress) -> None:
    options = dict(db.session.execute(select(DecisionOption.key, DecisionOption.id)
                                      .where(DecisionOption.project_id == pid)).all())
    entries = dict(db.session.execute(select(ArtifactEntry.key, ArtifactEntry.id)
                                      .where(ArtifactEntry.project_id == pid)).all())
    table = Decision.__table__
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    total = max(1, len(plan.decisions))
    for done, batch in enumerate(_batches(plan.decisions)):
        rows = [{"scan_id": scan_ids[(d.experiment, d.scan)], "option_id": options[d.option_key],
                 "creator_id": d.creator_id, "creator_name": d.creator_name, "creator_role": d.role, "note": d.note,
                 "location_i": d.location[0] if d.location else None,
                 "location_j": d.location[1] if d.location else None,
                 "location_k": d.location[2] if d.location else None,
                 "location_space": WORLD if d.space == WORLD and (d.location or d.frame_locations) else None,
                 "frame_locations": {str(n): None if p is None else list(p)
                                     for n, p in (d.frame_locations or {}).items()} or None, "unmatched_artifacts": d.unmatched or None, "created_unknown": d.created_unknown,
                 "source": d.source, "created_at": d.created} for d in batch]
        ids = db.session.execute(statement, rows).scalars().all()
        # A decision carries every entry's state: insert those a batch at a time too.
        for states in _batches({"decision_id": decision_id, "entry_id": entries[key], "state": state}
                               for decision_id, d in zip(ids, batch) for key, state in d.states.items()):
            db.session.execute(insert(DecisionArtifact.__table__), states)
        progress(0.2 + 0.75 * min(1.0, (done + 1) * BATCH / total), f"decisions {min(total, (done + 1) * BATCH)}/{total}")


def _insert_evaluations(plan: ProjectPlan, pid: int, scan_ids: dict) -> None:
    entries = dict(db.session.execute(select(ArtifactEntry.key, ArtifactEntry.id)
                                      .where(ArtifactEntry.project_id == pid)).all())
    for model in plan.new_models:
        output_map = []
        for item in model.output_map:
            item = dict(item) if isinstance(item, dict) else {"value": item}
            if item.get("key") in entries:
                item["entry_id"] = entries[item["key"]]  # ids differ between databases; keys do not
            output_map.append(item)
        alias = model.alias
        if alias and db.session.scalar(select(ModelVersion.id).where(ModelVersion.registry_name == model.registry_name,
                                                                     ModelVersion.alias == alias)) is not None:
            alias = None
        db.session.add(ModelVersion(project_id=pid, registry_name=model.registry_name, version=model.version,
                                    alias=alias, mlflow_run_id=model.mlflow_run_id, output_map=output_map,
                                    metrics=model.metrics, created_at=model.created or utcnow()))
    db.session.flush()
    if not plan.evaluations:
        return
    models = {(name, version): mid for mid, name, version in db.session.execute(
        select(ModelVersion.id, ModelVersion.registry_name, ModelVersion.version))}
    ids = list({scan_ids[(e, s)] for e, s, _, _ in plan.evaluations})
    frames: dict[tuple[int, int], int] = {}
    for start in range(0, len(ids), 1000):
        for fid, sid, number in db.session.execute(select(Frame.id, Frame.scan_id, Frame.frame_number)
                                                   .where(Frame.scan_id.in_(ids[start:start + 1000]))):
            frames[(sid, number)] = fid
    now = utcnow()
    for batch in _batches(plan.evaluations):
        db.session.execute(insert(Evaluation.__table__), [
            {"model_version_id": models[model], "scan_id": scan_ids[(e, s)],
             "frame_id": None if ev.frame_number is None else frames[(scan_ids[(e, s)], ev.frame_number)],
             "scores": ev.scores, "created_at": ev.created or now} for e, s, ev, model in batch])


# --- the whole import ----------------------------------------------------------------------------

def import_file(path: Path, *, project: Project | None, mode: str = "merge", dry_run: bool = False,
                actor: User | None = None, filename: str | None = None,
                progress: Progress = _no_progress, add_unknown_artifacts: bool = False) -> dict[str, Any]:
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
    log.info("import of %s (%s, %s): %s", filename or Path(path).name, plan.format, mode, summary["counts"])
    return summary
