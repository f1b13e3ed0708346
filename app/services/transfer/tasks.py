"""Running imports: small files at once, large ones as "transfer.import" background jobs; either
way the files of added or moved frames are then hashed in a "frames.checksum" job.

Uploaded import files wait in the instance folder (``imports/``) under a random name until
imported, so a preview (dry run) can be applied later without uploading the file again.
"""
from __future__ import annotations

import re
import shutil
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, BinaryIO

from flask import current_app

from app.db import Job, Project, User, boundary, db
from app.services import frames, jobs, projects
from app.services.errors import InvalidInput, NotFound
from app.services.transfer import importer

_TOKEN = re.compile(r"^[0-9a-f]{32}\.(csv|json)$")
STALE_SECONDS = 2 * 24 * 3600


def _folder() -> Path:
    folder = Path(current_app.config["INSTANCE_PATH"]) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stash_upload(stream: BinaryIO, filename: str) -> str:
    """Keep an uploaded import file; returns its token (the stored name). Old leftovers are removed."""
    suffix = ".json" if (filename or "").lower().endswith(".json") else ".csv"
    folder = _folder()
    for old in folder.iterdir():
        if old.is_file() and time.time() - old.stat().st_mtime > STALE_SECONDS:
            old.unlink(missing_ok=True)
    token = uuid.uuid4().hex + suffix
    with open(folder / token, "wb") as handle:
        shutil.copyfileobj(stream, handle)
    return token


def stashed(token: str) -> Path:
    if not isinstance(token, str) or not _TOKEN.match(token) or not (_folder() / token).is_file():
        raise NotFound("that uploaded import file is gone; upload it again")
    return _folder() / token


def _detailed(err: InvalidInput) -> InvalidInput:
    """The same error with up to 20 of its problems in the message (a job keeps only the message)."""
    problems = err.details.get("errors") or []
    if len(problems) <= 1:
        return err
    lines = [f"{p['where']}, field {p['field']}: {p['message']}" if p["field"] else f"{p['where']}: {p['message']}"
             for p in problems[:20]]
    more = err.details.get("error_count", len(problems)) - len(lines)
    return InvalidInput("\n".join(lines + ([f"... and {more} more"] if more > 0 else [])), **err.details)


def run_import(token: str, *, project: Project | None, mode: str, dry_run: bool, actor: User | None,
               filename: str | None = None, progress: importer.Progress = importer._no_progress,
               add_unknown_artifacts: bool = False) -> importer.ImportSummary:
    """Import a stashed file here and now, committing (or, for a dry run, rolling back).

    The file is kept after a dry run (so the preview can be applied) and removed after a real import.
    """
    path = stashed(token)
    try:
        summary = importer.import_file(path, project=project, mode=mode, dry_run=dry_run, actor=actor,
                                       filename=filename or path.name, progress=progress,
                                       add_unknown_artifacts=add_unknown_artifacts)
    except InvalidInput as err:
        db.session.rollback()
        raise _detailed(err) from err
    except BaseException:
        db.session.rollback()
        raise
    if dry_run:
        db.session.rollback()
    else:
        boundary.commit()
        path.unlink(missing_ok=True)
        frames_added(summary, actor)
    return replace(summary, token=token if dry_run else None, add_unknown_artifacts=add_unknown_artifacts)


def frames_added(summary: importer.ImportSummary, actor: User | None = None) -> list[Job]:
    """After a committed import that added frames or moved them to other files: hash those files in the
    worker, then have the champion score them (:func:`app.services.frames.frames_added`)."""
    if summary.dry_run or not (summary.counts["frames_added"] or summary.counts["frames_changed"]):
        return []
    found = (projects.find_project(name) for name in summary.projects)
    return frames.frames_added([project.id for project in found if project is not None], actor)


def start_import(token: str, *, project: Project | None, mode: str, dry_run: bool, actor: User | None,
                 filename: str | None = None,
                 add_unknown_artifacts: bool = False) -> tuple[importer.ImportSummary | None, Job | None]:
    """(summary, None) for a small file imported at once; (None, job) for a large one sent to the worker."""
    if mode not in importer.MODES:
        raise InvalidInput(f"mode must be one of {', '.join(importer.MODES)}", field="mode")
    path = stashed(token)
    if path.stat().st_size <= current_app.config.get("IMPORT_INLINE_MAX_BYTES", 2 << 20):
        return run_import(token, project=project, mode=mode, dry_run=dry_run, actor=actor, filename=filename,
                          add_unknown_artifacts=add_unknown_artifacts), None
    params = {"token": token, "project_id": project.id if project else None, "mode": mode, "dry_run": dry_run,
              "actor_id": actor.id if actor is not None and getattr(actor, "is_authenticated", False) else None,
              "filename": filename, "add_unknown_artifacts": add_unknown_artifacts}
    return None, jobs.enqueue("transfer.import", params, project_id=project.id if project else None, user=actor)


@jobs.handler("transfer.import")
def _import_job(params: dict[str, Any], context: jobs.JobContext) -> dict[str, Any]:
    actor = db.session.get(User, params["actor_id"]) if params.get("actor_id") else None
    project = None
    if params.get("project_id") is not None:
        project = db.session.get(Project, params["project_id"])
        if project is None:
            raise NotFound("the project of this import was deleted")
    return asdict(run_import(params["token"], project=project, mode=params["mode"], dry_run=params["dry_run"],
                             actor=actor, filename=params.get("filename"), progress=context.progress,
                             add_unknown_artifacts=bool(params.get("add_unknown_artifacts"))))

