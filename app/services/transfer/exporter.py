"""Exports streamed from the database: scans are read in batches (server-side cursor), each
batch's frames, decisions, artifact states and evaluations fetched and written at once, so
exporting a million decisions takes the memory of one batch."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from sqlalchemy import or_, select

from app.db import (
    ArtifactEntry, Decision, DecisionArtifact, DecisionOption, Evaluation, Experiment, Frame, ModelVersion, Project,
    Scan, User, db,
)
from app.services import imaging, volumes
from app.services.errors import InvalidInput, ServiceError
from app.services.transfer import full, miqa_csv, miqa_json, people
from app.services.transfer.export_model import (
    DecisionOut, EvaluationOut, ExperimentOut, ProjectOut, ScanOut, format_time, miqa_states,
)
from app.services.transfer.model import MIQA_INVERTED, VOXEL, WORLD

from app.storage import StorageError, resolve

log = logging.getLogger(__name__)

FORMATS = {"miqa-csv": ".csv", "miqa-json": ".json", "csv": ".csv", "json": ".json"}
MEDIA_TYPES = {".csv": "text/csv; charset=utf-8", ".json": "application/json"}
BATCH = 500


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
    return fmt


def _creators() -> dict[int, str]:
    """User id -> the name written as creator: e-mail (as MIQA writes) else username."""
    return {uid: email or username for uid, email, username in db.session.execute(
        select(User.id, User.email, User.username))}


def _model_versions(project_id: int) -> list[ModelVersion]:
    used = (select(Evaluation.model_version_id).join(Scan, Scan.id == Evaluation.scan_id)
            .join(Experiment, Experiment.id == Scan.experiment_id).where(Experiment.project_id == project_id))
    return list(db.session.scalars(select(ModelVersion).where(
        or_(ModelVersion.project_id == project_id, ModelVersion.id.in_(used)))
        .order_by(ModelVersion.registry_name, ModelVersion.id)))


def _vocab_rows(project_id: int) -> tuple[list[dict], list[dict]]:
    options = [{"key": o.key, "label": o.label, "meaning": o.meaning, "position": o.position,
                "shortcut": o.shortcut, "requires_note": o.requires_note, "retired": o.retired}
               for o in db.session.scalars(select(DecisionOption).where(DecisionOption.project_id == project_id)
                                           .order_by(DecisionOption.position, DecisionOption.id))]
    entries = [{"key": e.key, "label": e.label, "position": e.position, "shortcut": e.shortcut, "retired": e.retired}
               for e in db.session.scalars(select(ArtifactEntry).where(ArtifactEntry.project_id == project_id)
                                           .order_by(ArtifactEntry.position, ArtifactEntry.id))]
    return options, entries


def _miqa_inverted(entries: list[dict]) -> set[str]:
    """Entry keys a MIQA export writes under MIQA's inverse name (the importer reads them back the same way)."""
    names = {e["key"] for e in entries} | {e["label"].lower() for e in entries} | \
        {e["label"].lower().replace(" ", "_") for e in entries}
    return {target for alias, target in MIQA_INVERTED.items()
            if alias not in names and any(e["key"] == target for e in entries)}


def artifact_keys(project_ids: list[int]) -> list[str]:
    keys: list[str] = []
    for key in db.session.scalars(select(ArtifactEntry.key).where(ArtifactEntry.project_id.in_(project_ids))
                                  .order_by(ArtifactEntry.position, ArtifactEntry.id)):
        if key not in keys:
            keys.append(key)
    return keys


def events(project_ids: list[int], *, full_state: bool) -> Iterator[tuple[str, object]]:
    """("project"|"experiment"|"scan"|"end_experiment"|"end_project", item) in name order.

    Without ``full_state`` (MIQA formats) archived scans and experiments are left out and only
    the present artifacts of each decision are loaded.
    """
    creators = _creators()
    for project in db.session.scalars(select(Project).where(Project.id.in_(project_ids)).order_by(Project.name)):
        options, entries = _vocab_rows(project.id)
        option_keys = dict(db.session.execute(select(DecisionOption.id, DecisionOption.key)
                                              .where(DecisionOption.project_id == project.id)).all())
        entry_keys = dict(db.session.execute(select(ArtifactEntry.id, ArtifactEntry.key)
                                             .where(ArtifactEntry.project_id == project.id)
                                             .order_by(ArtifactEntry.position, ArtifactEntry.id)).all())
        inverted = set() if full_state else _miqa_inverted(entries)
        versions = _model_versions(project.id) if full_state else []
        models = {v.id: (v.registry_name, v.version) for v in versions}
        yield "project", ProjectOut(project.name, options, entries, [
            {"registry_name": v.registry_name, "version": v.version, "alias": v.alias,
             "mlflow_run_id": v.mlflow_run_id, "output_map": v.output_map or [], "metrics": v.metrics or {},
             "created": format_time(v.created_at)} for v in versions],
            people.member_rows(project.id) if full_state else [])
        experiment_query = select(Experiment.id, Experiment.name, Experiment.note, Experiment.archived_at).where(
            Experiment.project_id == project.id)
        scan_query = (select(Scan.id, Scan.experiment_id, Scan.name, Scan.scan_type, Scan.subject_id, Scan.session_id,
                             Scan.link, Scan.archived_at)
                      .join(Experiment, Experiment.id == Scan.experiment_id).where(Experiment.project_id == project.id))
        if not full_state:
            experiment_query = experiment_query.where(Experiment.archived_at.is_(None))
            scan_query = scan_query.where(Scan.archived_at.is_(None), Experiment.archived_at.is_(None))
        experiments = [_Id(eid, ExperimentOut(project.name, name, note or "", archived is not None))
                       for eid, name, note, archived in db.session.execute(
                           experiment_query.order_by(Experiment.name, Experiment.id))]
        scan_rows = db.session.execute(scan_query.order_by(Experiment.name, Experiment.id, Scan.name, Scan.id)
                                       .execution_options(yield_per=BATCH))
        position = -1
        current = None
        for batch in scan_rows.partitions():
            for scan in _fill(batch, full_state, option_keys, entry_keys, models, creators, inverted):
                while current is None or current.id != scan.experiment_id:
                    if current is not None:
                        yield "end_experiment", current.out
                    position += 1
                    current = experiments[position]
                    yield "experiment", current.out
                scan.out.experiment = current.out
                yield "scan", scan.out
        if current is not None:
            yield "end_experiment", current.out
        for rest in experiments[position + 1:]:
            yield "experiment", rest.out
            yield "end_experiment", rest.out
        yield "end_project", project.name


class _Id:
    """Pairs an output object with its database id while walking experiments and scans."""

    __slots__ = ("id", "out", "experiment_id")

    def __init__(self, id_: int, out, experiment_id: int | None = None) -> None:
        self.id, self.out, self.experiment_id = id_, out, experiment_id


def _fill(batch, full_state: bool, option_keys, entry_keys, models, creators, inverted: set[str]) -> list[_Id]:
    ids = [row.id for row in batch]
    frames: dict[int, list[tuple[int, str]]] = {}
    for scan_id, number, location in db.session.execute(
            select(Frame.scan_id, Frame.frame_number, Frame.file_location).where(Frame.scan_id.in_(ids))
            .order_by(Frame.scan_id, Frame.frame_number)):
        frames.setdefault(scan_id, []).append((number, location))
    decisions: dict[int, list] = {}
    for row in db.session.execute(
            select(Decision.id, Decision.scan_id, Decision.option_id, Decision.creator_id, Decision.creator_name,
                   Decision.creator_role, Decision.note, Decision.created_at, Decision.location_i,
                   Decision.location_j, Decision.location_k, Decision.location_space, Decision.frame_locations,
                   Decision.unmatched_artifacts, Decision.created_unknown, Decision.source)
            .where(Decision.scan_id.in_(ids)).order_by(Decision.scan_id, Decision.created_at, Decision.id)):
        decisions.setdefault(row.scan_id, []).append(row)
    if not full_state:  # MIQA keeps the last decision only
        decisions = {scan_id: rows[-1:] for scan_id, rows in decisions.items()}
    decision_ids = [row.id for rows in decisions.values() for row in rows]
    states: dict[int, dict[str, str]] = {}
    state_query = select(DecisionArtifact.decision_id, DecisionArtifact.entry_id, DecisionArtifact.state)
    if not full_state:  # MIQA lists present artifacts (and its inverse names for absent ones)
        inverted_ids = [entry_id for entry_id, key in entry_keys.items() if key in inverted]
        state_query = state_query.where(or_(DecisionArtifact.state == "present",
                                            DecisionArtifact.entry_id.in_(inverted_ids)))
    for start in range(0, len(decision_ids), 1000):
        chunk = decision_ids[start:start + 1000]
        for decision_id, entry_id, state in db.session.execute(
                state_query.where(DecisionArtifact.decision_id.in_(chunk))):
            states.setdefault(decision_id, {})[entry_keys[entry_id]] = state
    evaluations: dict[int, list[EvaluationOut]] = {}
    if full_state:
        frame_numbers = dict(db.session.execute(select(Frame.id, Frame.frame_number).where(Frame.scan_id.in_(ids))).all())
        for scan_id, model_id, frame_id, scores, created in db.session.execute(
                select(Evaluation.scan_id, Evaluation.model_version_id, Evaluation.frame_id, Evaluation.scores,
                       Evaluation.created_at).where(Evaluation.scan_id.in_(ids))
                .order_by(Evaluation.scan_id, Evaluation.created_at, Evaluation.id)):
            evaluations.setdefault(scan_id, []).append(EvaluationOut(
                models[model_id], frame_numbers.get(frame_id) if frame_id else None, scores or {}, created))
    entry_order = list(entry_keys.values())
    affines: dict[str, np.ndarray | None] = {}  # each file's header read once per batch
    out = []
    for row in batch:
        scan_decisions = []
        for d in decisions.get(row.id, []):
            found = states.get(d.id, {})
            ordered = miqa_states({key: found[key] for key in entry_order if key in found}, bool(inverted)) \
                if not full_state else {key: found.get(key, "undefined") for key in entry_order}
            creator = creators.get(d.creator_id) if d.creator_id else d.creator_name
            frame_locations = {int(number): None if point is None else tuple(point)
                               for number, point in (d.frame_locations or {}).items()}
            location, space = (d.location_i, d.location_j, d.location_k), d.location_space or VOXEL
            if not full_state and space == VOXEL:  # MIQA's files hold its viewer's world positions
                files = dict(frames.get(row.id, []))
                location = _as_miqa_world(location, files.get(min(files)) if files else None, affines)
                frame_locations = {number: _as_miqa_world(point, files.get(number), affines) if point else None
                                   for number, point in frame_locations.items()}
                space = WORLD
            scan_decisions.append(DecisionOut(option_keys[d.option_id], creator, d.creator_role, d.note or "",
                                              None if d.created_unknown else d.created_at, location, ordered,
                                              d.source, space, frame_locations,
                                              dict(d.unmatched_artifacts or {})))
        out.append(_Id(row.id, ScanOut(None, row.name, row.scan_type, row.subject_id, row.session_id, row.link,
                                       row.archived_at is not None, frames.get(row.id, []), scan_decisions,
                                       evaluations.get(row.id, [])), row.experiment_id))
    return out


def _as_miqa_world(voxel: tuple, location: str | None,
                   affines: dict[str, np.ndarray | None]) -> tuple[float | None, float | None, float | None]:
    """A point of interest given as a voxel of a frame's original grid, as MIQA's viewer gives it: millimetres
    in ITK's LPS space through that frame's affine (``affines`` keeps each file's, None for a file that
    cannot be read). None when there is no point or no affine: no position is better than a wrong one."""
    if voxel[0] is None or location is None:
        return None, None, None
    if location not in affines:
        try:
            affines[location] = imaging.affine_of(volumes.source_path_of(resolve(location)))
        except (ServiceError, StorageError, OSError) as err:
            log.warning("export: points of interest on %s are left out: its image cannot be read (%s)", location, err)
            affines[location] = None
    affine = affines[location]
    if affine is None:
        return None, None, None
    x, y, z = (affine @ np.array([*voxel, 1.0]))[:3]
    return round(-float(x), 3), round(-float(y), 3), round(float(z), 3)


def all_project_ids() -> list[int]:
    return list(db.session.scalars(select(Project.id).order_by(Project.name)))


def export(fmt: str, project_ids: list[int]) -> Iterator[str]:
    """Text chunks of an export of these projects in a format of FORMATS."""
    check_format(fmt)
    if fmt == "miqa-csv":
        return miqa_csv.write(events(project_ids, full_state=False))
    if fmt == "miqa-json":
        return miqa_json.write(events(project_ids, full_state=False), full=False)
    if fmt == "json":
        return miqa_json.write(events(project_ids, full_state=True), full=True)
    return full.write(events(project_ids, full_state=True), artifact_keys(project_ids))


def export_to_file(fmt: str, project_ids: list[int], target: Path) -> Path:
    """Write an export to a file atomically (a reader never sees half a file)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".export-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            for chunk in export(fmt, project_ids):
                handle.write(chunk)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
