"""``qcloop models``, ``qcloop evaluate`` and ``qcloop predict``: model versions and what they say of scans."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from app.cli import cli, follow_job, preflight
from app import cli_jobs


def _project(name: str):
    from app.services import projects

    project = projects.find_project(name)
    if project is None:
        raise click.ClickException(f"no project named {name!r}")
    return project


def _service_call(function, *args):
    """Run a service call and commit its writes (the command's boundary); its refusal becomes one line and a
    non-zero exit."""
    from app.db import boundary
    from app.services.errors import ServiceError

    try:
        result = function(*args)
    except ServiceError as err:
        boundary.rollback()
        raise click.ClickException(err.message) from err
    boundary.commit()
    return result


def say_waiting_evaluations(project) -> None:
    """Without a worker, the champion's evaluation job waits: say how to run it."""
    from app.services import evaluations

    waiting = evaluations.waiting_jobs(project.id)
    if waiting:
        click.echo(f"suggestions: evaluation job {', '.join(map(str, waiting))} waits for a worker (`qcloop worker`); "
                   f"or score now with `qcloop evaluate --project {json.dumps(project.name)} --inline`")


@cli.group()
def models() -> None:
    """A project's model versions."""


@models.command("import-miqa")
@click.option("--weights", required=True, type=click.Path(path_type=Path),
              help="MIQA's published weights (a local .pth file; nothing is downloaded).")
@click.option("--project", "project_name", required=True, help="Project name.")
def import_miqa(weights: Path, project_name: str) -> None:
    """Register MIQA's published network as a version of the project's model (champion if there is none),
    with MIQA's preprocessing and its outputs mapped to the project's entries by key."""
    from app.services import model_versions

    preflight()
    project = _project(project_name)
    row = _service_call(model_versions.import_miqa, project, weights, None)
    mapped = [o["key"] for o in row.output_map if o["kind"] == "usable" or o.get("entry_id") is not None]
    click.echo(f"registered {row.registry_name} version {row.version}{' (champion)' if row.alias else ''}; "
               f"outputs mapped to the project: {', '.join(mapped)}")
    say_waiting_evaluations(project)


@cli.command()
@click.option("--project", "project_name", required=True, help="Project name.")
@click.option("--version", default=None, help="Model version (default: the champion).")
@click.option("--all", "all_frames", is_flag=True, help="Score every frame, not only those the version has not scored.")
@click.option("--inline", is_flag=True, help="Score here instead of in the worker.")
def evaluate(project_name: str, version: str | None, all_frames: bool, inline: bool) -> None:
    """Score the project's frames with a model version; the scores become the scans' suggestions."""
    from app.services import evaluations

    preflight()
    project = _project(project_name)
    body = {"version": version, "scope": "all" if all_frames else "unscored"}
    if version is None:
        body.pop("version")
    if inline:
        job = cli_jobs.run_inline(_service_call(evaluations.create_job, project, body).id)
    else:
        job = follow_job(_service_call(evaluations.start, project, None, body).id)
    if job.state != "succeeded":
        raise click.ClickException(f"evaluation job {job.id} {job.state}: {job.error or job.message}")
    result = job.result or {}
    click.echo(f"{result.get('scored', 0)} frames scored, {result.get('failed', 0)} not scored "
               f"(version {result.get('version')})")


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", "project_name", required=True, help="Project name.")
def predict(file: Path, project_name: str) -> None:
    """Print the champion's scores for an image file (NIfTI or NRRD) as JSON; nothing is stored."""
    from app.services import evaluations

    preflight()
    project = _project(project_name)
    with open(file, "rb") as stream:
        answer = _service_call(evaluations.predict, project, stream, file.name, file.stat().st_size)
    click.echo(json.dumps(asdict(answer), indent=2, sort_keys=True))
