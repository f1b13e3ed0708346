"""Scoring frames with a registered model version: the "evaluation" job and the suggestions it leaves.

One Evaluation row per frame and version, naming the version (registry name, number, MLflow
run). A job's rows are "pending" while it runs and become "scored" (suggestions) together
when it completes; a frame whose image cannot be read gets a "failed" row with the reason,
and a job that fails or is cancelled marks its pending rows failed: never a silent gap,
never half a job shown as current. Jobs start by themselves after a promotion, a rollback or new
frames: the champion scores every frame it has not scored yet.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import and_, exists, or_, select, update

from app.db import Evaluation, Experiment, Frame, Job, ModelVersion, Project, Scan, User, boundary, db
from app.services import jobs, review, vocabulary
from app.services.errors import Conflict, InvalidInput, NotFound, ServiceError, TooLarge
from app.services.imaging import NIFTI_SUFFIXES

log = logging.getLogger(__name__)

SCOPES = ("unscored", "all")
BATCH = 20


def engine():
    """The process's inference engine (models loaded once, preprocessed tensors cached on disk)."""
    from models.inference import Engine

    found = current_app.extensions.get("qcloop.engine")
    if found is None:
        config = current_app.config
        found = Engine(config["MLFLOW_TRACKING_URI"], Path(config["CACHE_DIR"]) / "inference",
                       threads=int(config["INFERENCE_THREADS"]), mc_passes=int(config["MC_DROPOUT_PASSES"]))
        current_app.extensions["qcloop.engine"] = found
    return found


def version_of(project: Project, version: str | None) -> ModelVersion:
    """The project's model version by number, or its champion; NotFound / InvalidInput with the reason."""
    if version is None:
        found = review.champion(project.id)
        if found is None:
            raise Conflict(f"project {project.name!r} has no champion model yet: train one, or import MIQA's "
                           "with `qcloop models import-miqa`", field="version")
        return found
    if not isinstance(version, (str, int)) or isinstance(version, bool):
        raise InvalidInput("version must be a version number", field="version")
    found = db.session.scalar(select(ModelVersion).where(ModelVersion.project_id == project.id,
                                                         ModelVersion.version == str(version)))
    if found is None:
        raise NotFound(f"{project.model_name} has no version {version} in this project", field="version")
    return found


def check_fits(model: ModelVersion) -> dict[int, str]:
    """Entry id -> current key of every artifact output the version maps; InvalidInput when an entry it
    was trained on is gone from the vocabulary (its scores would land on nothing: retrain)."""
    entries = {entry.id: entry.key for entry in vocabulary.artifact_entries(model.project_id)}
    gone = [o["key"] for o in model.output_map if o["kind"] == "artifact" and o.get("entry_id") is not None
            and o["entry_id"] not in entries]
    if gone:
        raise InvalidInput(f"{model.registry_name} version {model.version} was trained on artifact entries the "
                           f"vocabulary no longer has ({', '.join(gone)}): retrain, or choose another version",
                           field="version")
    return entries


def project_scores(model: ModelVersion, raw: dict[str, float], entries: dict[int, str]) -> dict[str, float]:
    """The network's {output key: probability} as the project's {entry key: probability}: usable, then each
    artifact output mapped by entry id (its key today), outputs with no entry of the project left out."""
    scores = {}
    for output in model.output_map:
        if output["key"] not in raw:
            continue
        if output["kind"] == "usable":
            scores["usable"] = raw[output["key"]]
        elif output.get("entry_id") in entries:
            scores[entries[output["entry_id"]]] = raw[output["key"]]
    return scores


def project_uncertainty(model: ModelVersion, raw: dict[str, Any] | None,
                        entries: dict[int, str]) -> dict[str, Any] | None:
    """The engine's Monte-Carlo dropout uncertainty with its entropies keyed as :func:`project_scores` keys
    the scores; None when the network has none."""
    if raw is None:
        return None
    return {**raw, "entropy": project_scores(model, raw["entropy"], entries)}


def job_params(project: Project, body: dict[str, Any]) -> dict[str, Any]:
    """An evaluation job's parameters from an API/CLI body {"version": ..., "scope": "unscored"|"all"}."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be an object")
    unknown = sorted(set(body) - {"version", "scope"})
    if unknown:
        raise InvalidInput(f"unknown parameter(s): {', '.join(unknown)}", field=unknown[0])
    scope = body.get("scope", "unscored")
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}", field="scope")
    model = version_of(project, body.get("version"))
    check_fits(model)
    return {"model_version_id": model.id, "scope": scope}


def start(project: Project, user: User | None, body: dict[str, Any]) -> Job:
    """Queue an evaluation job (the answer to POST /projects/{id}/evaluations)."""
    return jobs.enqueue("evaluation", job_params(project, body), project_id=project.id, user=user)


def create_job(project: Project, body: dict[str, Any]) -> Job:
    """The job row without queuing it (the CLI's --inline runs it in its own process)."""
    job = Job(kind="evaluation", params=job_params(project, body), project_id=project.id)
    db.session.add(job)
    boundary.commit()
    return job


def score_unscored(project_id: int, user: User | None = None) -> Job | None:
    """The champion scores every frame of the project it has not scored yet: all of them after a
    promotion, the new ones after an import, sync or upload (None when there is no champion)."""
    model = review.champion(project_id)
    if model is None:
        return None
    return jobs.enqueue("evaluation", {"model_version_id": model.id, "scope": "unscored"}, project_id=project_id,
                        user=user)


def _frames(model: ModelVersion, scope: str) -> list[Frame]:
    query = (select(Frame).join(Scan).join(Experiment)
             .where(Experiment.project_id == model.project_id, Scan.archived_at.is_(None),
                    Experiment.archived_at.is_(None)).order_by(Frame.id))
    if scope == "unscored":
        query = query.where(~exists().where(Evaluation.frame_id == Frame.id,
                                            Evaluation.model_version_id == model.id,
                                            Evaluation.state == "scored"))
    return list(db.session.scalars(query))


def image_path(frame: Frame) -> str:
    """A local NIfTI of the frame: its own file when it is one, else the viewer's cached RAS copy."""
    from app.services import volumes

    source = volumes.source_path(frame)
    if source.is_file() and source.name.lower().endswith(NIFTI_SUFFIXES):
        return str(source)
    return str(volumes.cached(frame).volume_path)


def _reason(err: Exception) -> str:
    text = err.message if isinstance(err, ServiceError) else f"{type(err).__name__}: {err}"
    return (text.strip().splitlines() or [""])[-1][:500]


@jobs.handler("evaluation")
def run_evaluation(params: dict[str, Any], ctx: jobs.JobContext) -> dict[str, Any]:
    """Score the frames with the version; rows become current together when every frame is done."""
    model = db.session.get(ModelVersion, params["model_version_id"])
    if model is None:
        raise NotFound("that model version no longer exists")
    entries = check_fits(model)
    try:
        loaded = engine().model(model.registry_name, model.version)
    except LookupError as err:
        raise InvalidInput(f"{model.registry_name} version {model.version} cannot be loaded from the MLflow "
                           f"registry: {err}") from err
    frames = _frames(model, params["scope"])
    counts = {"scored": 0, "failed": 0}
    outcomes = engine().score_files(loaded, ((functools.partial(image_path, frame), frame.checksum)
                                             for frame in frames))
    try:
        for index, (frame, outcome) in enumerate(zip(frames, outcomes)):
            row = Evaluation(model_version_id=model.id, scan_id=frame.scan_id, frame_id=frame.id, job_id=ctx.job_id,
                             state="pending", scores={})
            if isinstance(outcome, Exception):  # one unreadable image is recorded, not the job's end
                row.state, row.error = "failed", _reason(outcome)
                counts["failed"] += 1
                log.warning("evaluation job %s: frame %s not scored (%s)", ctx.job_id, frame.id, row.error)
            else:
                row.scores = project_scores(model, outcome.scores, entries)
                row.uncertainty = project_uncertainty(model, outcome.uncertainty, entries)
                counts["scored"] += 1
            db.session.add(row)
            if (index + 1) % BATCH == 0 or index + 1 == len(frames):
                boundary.commit()
                ctx.progress((index + 1) / max(1, len(frames)),
                             f"{model.registry_name} v{model.version}: {index + 1}/{len(frames)} frames")
    except BaseException as err:
        db.session.rollback()
        _fail_pending(ctx.job_id, "cancelled" if isinstance(err, jobs.JobCancelled) else _reason(err))
        raise
    db.session.execute(update(Evaluation).where(Evaluation.job_id == ctx.job_id, Evaluation.state == "pending")
                       .values(state="scored"))
    boundary.commit()
    return {"model_version_id": model.id, "version": model.version, "frames": len(frames), **counts}


@jobs.abandoned("evaluation")
def _abandoned(job: Job, state: str, reason: str) -> None:
    _fail_pending(job.id, reason)


def _fail_pending(job_id: int, reason: str) -> None:
    db.session.execute(update(Evaluation).where(Evaluation.job_id == job_id, Evaluation.state == "pending")
                       .values(state="failed", error=f"evaluation job {job_id} did not complete: {reason}"))
    boundary.commit()


def history(scan: Scan) -> list[Evaluation]:
    """Every evaluation of a scan and its frames, newest first (every version, every state)."""
    return list(db.session.scalars(select(Evaluation).where(Evaluation.scan_id == scan.id)
                                   .order_by(Evaluation.created_at.desc(), Evaluation.id.desc())))


def scan_suggestions(scans: list[Scan]) -> dict[int, Evaluation | None]:
    """Scan id -> its project's champion's latest scored evaluation (a query per project, not per scan)."""
    by_project: dict[int, list[int]] = {}
    for scan in scans:
        by_project.setdefault(scan.experiment.project_id, []).append(scan.id)
    found: dict[int, Evaluation | None] = {scan.id: None for scan in scans}
    for project_id, scan_ids in by_project.items():
        found.update(review.latest_evaluations(review.champion(project_id), scan_ids))
    return found


def frame_suggestions(frames: list[Frame]) -> dict[int, Evaluation | None]:
    """Frame id -> its project's champion's suggestion (the frame's own evaluation, else its scan's):
    two queries per project on the page, not four per frame."""
    found: dict[int, Evaluation | None] = {frame.id: None for frame in frames}
    projects = db.session.execute(select(Frame.id, Experiment.project_id).join(Scan, Frame.scan_id == Scan.id)
                                  .join(Experiment, Scan.experiment_id == Experiment.id)
                                  .where(Frame.id.in_(list(found)))).all()
    by_project: dict[int, list[Frame]] = {}
    frame_of = {frame.id: frame for frame in frames}
    for frame_id, project_id in projects:
        by_project.setdefault(project_id, []).append(frame_of[frame_id])
    for project_id, members in by_project.items():
        model = review.champion(project_id)
        if model is None:
            continue
        scan_ids = {frame.scan_id for frame in members}
        rows = db.session.scalars(
            select(Evaluation).where(Evaluation.model_version_id == model.id, Evaluation.state == "scored",
                                     or_(Evaluation.frame_id.in_([frame.id for frame in members]),
                                         and_(Evaluation.frame_id.is_(None), Evaluation.scan_id.in_(scan_ids))))
            .order_by(Evaluation.created_at.desc(), Evaluation.id.desc()))
        own: dict[int, Evaluation] = {}
        whole_scan: dict[int, Evaluation] = {}
        for row in rows:
            if row.frame_id is None:
                whole_scan.setdefault(row.scan_id, row)
            else:
                own.setdefault(row.frame_id, row)
        for frame in members:
            found[frame.id] = own.get(frame.id) or whole_scan.get(frame.scan_id)
    return found


def _suffix(head: bytes, filename: str) -> str:
    """The file's type from its name, else from its first bytes; InvalidInput when it is no NIfTI or NRRD."""
    name = (filename or "").lower()
    for suffix in (".nii.gz", ".nii", ".nrrd"):
        if name.endswith(suffix):
            return suffix
    if head[:2] == b"\x1f\x8b":
        return ".nii.gz"
    if head[:4] == b"NRRD":
        return ".nrrd"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return ".nii"
    raise InvalidInput("the file is not a NIfTI (.nii, .nii.gz) or NRRD (.nrrd) image", field="file")


@dataclass(frozen=True)
class Prediction:
    """The champion's scores for an image, by output key, and which version gave them."""

    model: str
    version: str
    mlflow_run_id: str | None
    scores: dict[str, float]


def predict(project: Project, stream, filename: str, declared_length: int | None) -> Prediction:
    """The champion's scores for an image sent by an outside pipeline, with its version; nothing stored.

    The file is streamed to a temporary folder (refused past ``PREDICT_MAX_BYTES`` with 413), checked
    as a readable image, scored and deleted.
    """
    import tempfile

    from app.services import imaging

    limit = int(current_app.config["PREDICT_MAX_BYTES"])
    if declared_length is not None and declared_length > limit:
        raise TooLarge(f"the file is larger than the {limit} bytes this server accepts (QCLOOP_PREDICT_MAX_BYTES)")
    model = version_of(project, None)
    entries = check_fits(model)
    with tempfile.TemporaryDirectory(prefix="qcloop-predict-") as folder:
        head, size, partial = b"", 0, Path(folder) / "upload"
        with open(partial, "wb") as handle:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the file is larger than the {limit} bytes this server accepts "
                                   "(QCLOOP_PREDICT_MAX_BYTES)")
                if len(head) < 348:
                    head += chunk[:348 - len(head)]
                handle.write(chunk)
        if size == 0:
            raise InvalidInput("the request carries no image file", field="file")
        path = partial.rename(Path(folder) / f"image{_suffix(head, filename)}")
        imaging.read_info(path)
        if not path.name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            converted = Path(folder) / "image.nii.gz"
            nib.save(imaging.load_image(path), str(converted))
            path = converted
        loaded = engine().model(model.registry_name, model.version)
        scores = project_scores(model, loaded.score(str(path)), entries)
    return Prediction(model.registry_name, model.version, model.mlflow_run_id, scores)


def waiting_jobs(project_id: int) -> list[int]:
    """Ids of the project's evaluation jobs still queued (a CLI run without a worker says so)."""
    return list(db.session.scalars(select(Job.id).where(Job.project_id == project_id, Job.kind == "evaluation",
                                                        Job.state == "queued").order_by(Job.id)))
