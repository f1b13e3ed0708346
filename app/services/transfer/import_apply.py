"""Applying an import's plan: bulk inserts and updates inside the caller's transaction.

The last of an import's three steps (read, plan, apply). The caller commits or rolls back, so
an error, a cancelled job or a killed process leaves the database exactly as it was; no
statement carries more than one batch of parameters.
"""
from __future__ import annotations

from datetime import datetime
from itertools import islice
from typing import Any, Iterable, Iterator

from sqlalchemy import bindparam, insert, select, update

from app.db import (
    ArtifactEntry, Decision, DecisionArtifact, DecisionOption, Evaluation, Experiment, Frame, ModelVersion, Scan, User,
    db, utcnow,
)
from app.services import audit, projects
from app.services.transfer import people
from app.services.transfer.import_plan import Plan, ProjectPlan
from app.services.transfer.import_read import Progress, no_progress
from app.services.transfer.model import WORLD

BATCH = 2000


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


def apply(plan: Plan, actor: User | None, progress: Progress = no_progress) -> None:
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
                                     for n, p in (d.frame_locations or {}).items()} or None,
                 "unmatched_artifacts": d.unmatched or None, "created_unknown": d.created_unknown,
                 "source": d.source, "created_at": d.created} for d in batch]
        ids = db.session.execute(statement, rows).scalars().all()
        # A decision carries every entry's state: insert those a batch at a time too.
        for states in _batches({"decision_id": decision_id, "entry_id": entries[key], "state": state}
                               for decision_id, d in zip(ids, batch) for key, state in d.states.items()):
            db.session.execute(insert(DecisionArtifact.__table__), states)
        written = min(total, (done + 1) * BATCH)
        progress(0.2 + 0.75 * min(1.0, (done + 1) * BATCH / total), f"decisions {written}/{total}")


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

