"""Shared pieces of the transfer tests: MIQA-layout files, an id-free picture of the database."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sqlalchemy import select

from app.db import (
    ArtifactEntry, Decision, DecisionArtifact, Evaluation, Experiment, Frame, ModelVersion, Project, Scan, User, db,
)
from app.services import vocabulary

MIQA_HEADER = ["project_name", "experiment_name", "scan_name", "scan_type", "frame_number", "file_location",
               "experiment_notes", "subject_id", "session_id", "scan_link", "last_decision", "last_decision_creator",
               "last_decision_note", "last_decision_created", "identified_artifacts", "location_of_interest"]


def write_csv(path: Path, rows: list[list], header: list[str] = MIQA_HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_json(path: Path, body: dict) -> Path:
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def read_csv_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def snapshot() -> dict:
    """Everything an import or export should keep, by name (ids differ between databases)."""
    users = {u.id: u.username for u in db.session.scalars(select(User))}
    entry_keys = dict(db.session.execute(select(ArtifactEntry.id, ArtifactEntry.key)).all())
    states: dict[int, dict[str, str]] = {}
    for decision_id, entry_id, state in db.session.execute(
            select(DecisionArtifact.decision_id, DecisionArtifact.entry_id, DecisionArtifact.state)):
        states.setdefault(decision_id, {})[entry_keys[entry_id]] = state
    result: dict = {}
    for project in db.session.scalars(select(Project).order_by(Project.name)):
        vocab = ([(o.key, o.label, o.meaning, o.retired) for o in vocabulary.decision_options(project.id, True)],
                 [(e.key, e.label, e.retired) for e in vocabulary.artifact_entries(project.id, True)])
        experiments = {}
        for experiment in db.session.scalars(select(Experiment).where(Experiment.project_id == project.id)):
            scans = {}
            for scan in db.session.scalars(select(Scan).where(Scan.experiment_id == experiment.id)):
                frames = {f.frame_number: f.file_location for f in scan.frames}
                numbers = {f.id: f.frame_number for f in scan.frames}
                decisions = sorted(
                    (d.option.key, users.get(d.creator_id) or d.creator_name, d.creator_role, d.note,
                     d.created_at.isoformat(), (d.location_i, d.location_j, d.location_k), d.source,
                     tuple(sorted(states.get(d.id, {}).items())))
                    for d in db.session.scalars(select(Decision).where(Decision.scan_id == scan.id)))
                evaluations = sorted(
                    (e.model_version.registry_name, e.model_version.version, numbers.get(e.frame_id, -1),
                     json.dumps(e.scores, sort_keys=True), e.created_at.isoformat())
                    for e in db.session.scalars(select(Evaluation).where(Evaluation.scan_id == scan.id)))
                scans[scan.name] = {"type": scan.scan_type, "subject": scan.subject_id, "session": scan.session_id,
                                    "link": scan.link, "archived": scan.archived_at is not None, "frames": frames,
                                    "decisions": decisions, "evaluations": evaluations}
            experiments[experiment.name] = {"note": experiment.note, "archived": experiment.archived_at is not None,
                                            "scans": scans}
        models = sorted((m.registry_name, m.version, m.alias, json.dumps(m.metrics, sort_keys=True),
                         tuple((i.get("kind"), i.get("key")) for i in m.output_map))
                        for m in db.session.scalars(select(ModelVersion).where(ModelVersion.project_id == project.id)))
        result[project.name] = {"vocabulary": vocab, "experiments": experiments, "models": models}
    return result


def counts() -> dict[str, int]:
    from sqlalchemy import func

    return {model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
            for model in (Experiment, Scan, Frame, Decision, DecisionArtifact, Evaluation, ModelVersion, Project)}


def empty_database() -> None:
    """Every table emptied and the default vocabulary seeded again: a fresh qcloop."""
    db.session.rollback()
    for table in reversed(db.metadata.sorted_tables):
        db.session.execute(table.delete())
    db.session.commit()
    vocabulary.seed_defaults()
    db.session.commit()
