"""Planning an import: check a read Document against the database and list the writes it needs.

The second of an import's three steps (read, plan, apply): reads the database, writes nothing.
Merge adds and updates, never archives; replace also archives the scans and experiments that
left the file's tree (their decisions stay) and restores those that come back. Decisions and
evaluations are planned only when the database lacks them: a decision is the same when scan,
decision code, creator and time match.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select

from app.db import (
    DECISION_MEANINGS, ROLES, ArtifactEntry, Decision, DecisionOption, Evaluation, Experiment, Frame, Membership,
    ModelVersion, Project, Scan, User, db, utcnow,
)
from app.services import projects, vocabulary
from app.services.errors import InvalidInput
from app.services.transfer import limits, people
from app.services.transfer.artifact_names import ArtifactNames, lookup
from app.services.transfer.files import FileChecker
from app.services.transfer.import_read import Progress, no_progress
from app.services.transfer.model import DecisionIn, Document, ExperimentIn, ProjectIn, ScanIn
from app.storage import Roots

MODES = ("merge", "replace")
COUNTERS = (
    "projects_added", "vocabulary_added", "experiments_added", "experiments_changed", "experiments_archived",
    "experiments_restored", "scans_added", "scans_changed", "scans_archived", "scans_restored", "frames_added",
    "frames_changed", "decisions_added", "model_versions_added", "evaluations_added", "users_added",
    "memberships_changed",
)
UNCHANGED = ("decisions_already_present", "evaluations_already_present")


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


@dataclass(frozen=True)
class ImportSummary:
    """What an import added, changed and archived (or would, for a dry run): ``counts`` per counter,
    ``changes`` their sum, ``samples`` a few names per counter. ``token`` names a dry run's stashed file
    (to apply it without uploading again); both last fields are set by :mod:`.tasks`."""

    format: str
    mode: str
    dry_run: bool
    rows: int
    projects: list[str]
    counts: dict[str, int]
    changes: int
    samples: dict[str, list[str]]
    warnings: list[str]
    warning_count: int
    unmatched_artifacts: dict[str, int]
    token: str | None = None
    add_unknown_artifacts: bool = False


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

    def summary(self, dry_run: bool) -> ImportSummary:
        return ImportSummary(
            format=self.format, mode=self.mode, dry_run=dry_run, rows=self.rows,
            projects=[p.name for p in self.projects], counts=dict(self.counts),
            changes=sum(self.counts[name] for name in COUNTERS), samples=self.samples, warnings=self.warnings,
            warning_count=self.warning_count, unmatched_artifacts=dict(self.unmatched_artifacts))


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

    def archive_state(self, row: Any, archived: bool | None, archive: list[int], restore: list[int], kind: str,
                      label: str) -> None:
        """An existing experiment or scan archived or restored as the file says (an absent flag: not archived)."""
        if archived and row.archived_at is None:
            archive.append(row.id)
            self.count(f"{kind}_archived", label)
        elif not archived and row.archived_at is not None:
            restore.append(row.id)
            self.count(f"{kind}_restored", label)

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
                self.archive_state(row, ein.archived, plan.archive_experiments, plan.restore_experiments,
                                   "experiments", label)
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
            self.archive_state(row, sin.archived, plan.archive_scans, plan.restore_scans, "scans", label)
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
               progress: Progress = no_progress, add_unknown_artifacts: bool = False) -> Plan:
    """Check the document against the database and plan the writes; it consumes the document's frames
    and decisions as it goes, so a big file is not held twice (as read and as planned)."""
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}", field="mode")
    document.problems.raise_if_any()
    plan = _Planner(document, mode, target, actor, add_unknown_artifacts).plan(progress)
    document.problems.raise_if_any()
    return plan

