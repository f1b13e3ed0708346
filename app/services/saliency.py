"""Saliency maps of the champion, made in the worker on request and kept by frame content, version and output.

A reviewer asks for the map of one output of one frame; the first request queues a "saliency"
job and answers it (the page polls), later ones get the file. Maps live under
``<cache>/saliency/`` named by the frame's content (checksum, else the viewer's fingerprint of its
files), the registry name and version, and the output key, so a new champion or a changed file
makes a new map and never serves an old one.
"""
from __future__ import annotations

import hashlib
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import nibabel as nib
from flask import current_app
from sqlalchemy import select

from app.db import Frame, Job, ModelVersion, db, utcnow
from app.services import access, jobs, review, volumes
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.evaluations import engine, image_path

log = logging.getLogger(__name__)

RECENT_JOBS = 200  # saliency jobs of the project looked through for one already asked
RETRY_AFTER = timedelta(minutes=10)  # a failed map is tried again after this (a worker or registry outage passes)


def _champion(frame: Frame) -> ModelVersion:
    model = review.champion(access.project_of("frame_id", frame.id))
    if model is None:
        raise Conflict("the project has no champion model yet: train and promote one first", field="output")
    return model


def _output(model: ModelVersion, output: str) -> str:
    keys = [entry["key"] for entry in model.output_map]
    if output not in keys:
        raise InvalidInput(f"{model.registry_name} version {model.version} has no output {output!r}; "
                           f"choose from {', '.join(keys)}", field="output")
    return output


def _map_path(frame: Frame, model: ModelVersion, output: str) -> Path:
    content = frame.checksum or volumes.version(frame)
    name = hashlib.sha256(f"{content}|{model.registry_name}|{model.version}|{output}".encode()).hexdigest()[:32]
    return Path(current_app.config["CACHE_DIR"]) / "saliency" / f"{name}.nii.gz"


def saliency(frame: Frame, output: str, user) -> Path | Job:
    """The champion's map of ``output`` for the frame: the file when it was made, else the job making it
    (one job per frame, version and output at a time)."""
    model = _champion(frame)
    output = _output(model, output)
    path = _map_path(frame, model, output)
    if path.is_file():
        return path
    params = {"frame_id": frame.id, "model_version_id": model.id, "output": output, "map": path.name}
    recent = db.session.scalars(select(Job).where(Job.kind == "saliency", Job.project_id == model.project_id)
                                .order_by(Job.id.desc()).limit(RECENT_JOBS))
    earlier = next((job for job in recent if job.params == params), None)
    if earlier is not None and earlier.state in ("queued", "running"):
        return earlier
    if earlier is not None and earlier.state == "failed" and earlier.finished_at is not None \
            and utcnow() - earlier.finished_at < RETRY_AFTER:  # asked again at once, it would fail the same way
        raise volumes.FrameUnreadable(f"the saliency map of frame {frame.id} could not be made: {earlier.error} "
                                      f"(asked again after {RETRY_AFTER.seconds // 60} minutes, it is tried again)")
    return jobs.enqueue("saliency", params, project_id=model.project_id, user=user)


@jobs.handler("saliency")
def make_map(params: dict[str, Any], ctx: jobs.JobContext) -> dict[str, Any]:
    """Compute one map with the version named in the job (even if the champion moved meanwhile)."""
    frame = db.session.get(Frame, params["frame_id"])
    model = db.session.get(ModelVersion, params["model_version_id"])
    if frame is None or model is None:
        raise NotFound("the frame or the model version no longer exists")
    from models.saliency import saliency_image

    loaded = engine().model(model.registry_name, model.version)
    ctx.progress(0.1, f"{model.registry_name} v{model.version}: saliency of {params['output']}")
    try:
        image = saliency_image(loaded, image_path(frame), params["output"])
    except ValueError as err:
        raise InvalidInput(str(err)) from err
    target = _map_path(frame, model, params["output"])
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp.nii.gz")
    nib.save(image, str(partial))
    os.replace(partial, target)
    return {"frame": frame.id, "version": model.version, "output": params["output"], "shape": list(image.shape)}
