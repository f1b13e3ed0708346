"""The ``qcloop`` command: serve, worker, db, users, demo, train, import, export, sync (models,
evaluate and predict live in :mod:`app.cli_models`)."""
from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click
from flask import current_app

from app import create_app

if TYPE_CHECKING:
    from app.services.training import RunReport
    from app.services.transfer.importer import ImportSummary

log = logging.getLogger(__name__)


def _create_app():
    try:
        return create_app()
    except Exception as err:  # noqa: BLE001 - one clear line, never a traceback
        raise click.ClickException(f"cannot start qcloop: {err}") from err


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """qcloop: review 3-D scans, record decisions, retrain the model on them."""
    ctx.with_resource(_create_app().app_context())


def preflight(*, need_tables: bool = True) -> None:
    """Fail with one clear line when the database, data root or MLflow store is not usable."""
    from sqlalchemy import inspect, text

    from app.db import db
    from app.services.health import mlflow_status

    url = db.engine.url.render_as_string(hide_password=True)
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            has_tables = inspect(connection).has_table("alembic_version")
    except Exception as err:  # noqa: BLE001
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise click.ClickException(f"database {url} is unreachable: {reason}") from err
    if need_tables and not has_tables:
        raise click.ClickException(f"database {url} has no qcloop schema: run `qcloop db upgrade` first")
    root = Path(current_app.config["DATA_ROOT"])
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise click.ClickException(f"data root {root} cannot be created: {err.strerror}") from err
    if not os.access(root, os.W_OK):
        raise click.ClickException(f"data root {root} is not writable")
    status = mlflow_status(current_app.config["MLFLOW_TRACKING_URI"])
    if not status["ok"]:
        raise click.ClickException(status["error"])


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Bring the schema to a revision and seed the default vocabulary."""
    import flask_migrate

    from app.db import boundary
    from app.services import vocabulary

    preflight(need_tables=False)
    flask_migrate.upgrade(revision=revision)
    if revision == "head":
        vocabulary.seed_defaults()
        boundary.commit()
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.option("--revision", default="-1", show_default=True)
def db_downgrade(revision: str) -> None:
    import flask_migrate

    preflight(need_tables=False)
    flask_migrate.downgrade(revision=revision)
    click.echo(f"database downgraded to {revision}")


@cli.group()
def users() -> None:
    """Accounts."""


@users.command("create")
@click.argument("username")
@click.option("--email", default=None)
@click.option("--password", default=None, help="Prompted for when omitted.")
@click.option("--superuser", is_flag=True, help="Give every right in every project.")
def users_create(username: str, email: str | None, password: str | None, superuser: bool) -> None:
    from app.db import boundary
    from app.db import db as database
    from app.services import users as user_service
    from app.services.errors import ServiceError

    preflight()
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = user_service.create_user(username, password, email=email, is_superuser=superuser)
        boundary.commit()
    except ServiceError as err:
        database.session.rollback()
        raise click.ClickException(err.message) from err
    click.echo(f"created user {user.username} (id {user.id}){' as superuser' if superuser else ''}")


@users.command("set-password")
@click.argument("username")
@click.option("--password", default=None, help="Prompted for when omitted.")
def users_set_password(username: str, password: str | None) -> None:
    """Set a user's password (e.g. a lost demo admin password)."""
    from app.db import boundary
    from app.db import db as database
    from app.services import users as user_service
    from app.services.errors import ServiceError

    preflight()
    user = user_service.find_user(username)
    if user is None:
        raise click.ClickException(f"no user named {username!r}")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user_service.set_password(user, password)
        boundary.commit()
    except ServiceError as err:
        database.session.rollback()
        raise click.ClickException(err.message) from err
    click.echo(f"password of {user.username} changed")


@cli.group("projects")
def projects_group() -> None:
    """Projects."""


@projects_group.command("create")
@click.argument("name")
@click.option("--from-template", "template", default=None, metavar="PROJECT",
              help="Copy this project's active decision options, artifact entries and settings (not its members, "
                   "data or models).")
@click.option("--admin", "admin_name", default=None, metavar="USERNAME",
              help="Make this account the project's admin (default: no member; a superuser adds them).")
def projects_create(name: str, template: str | None, admin_name: str | None) -> None:
    """Create an empty project (audited)."""
    from app.db import boundary
    from app.db import db as database
    from app.services import projects
    from app.services import users as user_service
    from app.services.errors import ServiceError

    preflight()
    admin = None
    if admin_name is not None:
        admin = user_service.find_user(admin_name)
        if admin is None:
            raise click.ClickException(f"no user named {admin_name!r}")
    try:
        project = projects.create_project(name, admin, template)
        boundary.commit()
    except ServiceError as err:
        database.session.rollback()
        raise click.ClickException(err.message) from err
    click.echo(f"created project {project.name} (id {project.id}"
               + (f", from template {template}" if template else "")
               + (f", admin {admin.username}" if admin else "") + ")")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--threads", default=4, show_default=True, type=int)
@click.option("--with-worker", is_flag=True, help="Also start the background job worker (started again when it dies).")
def serve(host: str, port: int, workers: int, threads: int, with_worker: bool) -> None:
    """Serve the web app with gunicorn."""
    from gunicorn.app.base import BaseApplication

    from app.db import db as database

    preflight()
    database.engine.dispose()  # gunicorn forks: each worker must open its own connections
    app = current_app._get_current_object()

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")
            self.cfg.set("timeout", 120)

        def load(self):
            return app

    stop = threading.Event()
    supervisor = threading.Thread(target=cli_jobs.keep_worker_running,
                                  args=([sys.executable, "-m", "app.cli", "worker"], stop),
                                  name="qcloop-worker-supervisor", daemon=True)
    if with_worker:
        supervisor.start()
    click.echo(f"qcloop is serving on http://{host}:{port}")
    try:
        Server().run()
    finally:
        stop.set()
        if with_worker:
            supervisor.join(timeout=35)


@cli.command()
@click.option("--threads", default=1, show_default=True, type=int,
              help="worker threads (keep 1 with the SQLite queue)")
def worker(threads: int) -> None:
    """Run background jobs (imports, training, evaluation) from the queue; ends the jobs of workers that
    stopped (their heartbeat older than QCLOOP_JOB_LEASE_S) at start and every half lease."""
    from huey.consumer import Consumer

    from app.services import jobs

    preflight()
    huey = current_app.extensions["huey"]
    click.echo(f"qcloop worker on {type(huey).__name__}")
    threading.Thread(target=jobs.watch_leases, args=(current_app._get_current_object(),), name="qcloop-leases",
                     daemon=True).start()
    Consumer(huey, workers=threads, worker_type="thread").run()


@cli.command()
@click.option("--admin-username", default="admin", show_default=True)
def demo(admin_username: str) -> None:
    """Build (or reuse) the demo project of phantom brain volumes and its admin account."""
    from app.db import boundary
    from app.services import demo as demo_service

    preflight()
    password = os.environ.get("QCLOOP_ADMIN_PASSWORD") or None
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    summary = demo_service.build_demo(admin_username, password)
    boundary.commit()
    click.echo(
        f"demo project {summary.project!r}: {summary.experiments} experiments, "
        f"{summary.scans} scans, {summary.frames} frames ({summary.created_frames} new)"
    )
    run = demo_service.train_demo_model(summary.project, click.echo)
    if run is not None:
        version = run.model_version
        if version is None:
            click.echo(f"the demo model did not train: {run.error}")
        else:
            click.echo(f"{version.registry_name} version {version.version} ({version.alias}) suggests on "
                       "every scan")
            _print_report(run.report)
    if summary.admin_created:
        shown = password if generated else "the value of QCLOOP_ADMIN_PASSWORD"
        click.echo(f"log in at {current_app.config['BASE_URL']}/login as {admin_username} with password: {shown}")
        if generated:
            click.echo("(this password is shown once; change it on your profile page)")
    else:
        click.echo(f"log in at {current_app.config['BASE_URL']}/login as {admin_username} (existing password)")


# --- training ------------------------------------------------------------------------------------

def follow_job(job_id: int, queued_hint_s: float = 30.0) -> "Job":  # noqa: F821
    """Print a line whenever the job's progress message changes, until it ends; returns the final row."""
    import time

    from app.db import Job
    from app.db import db as database

    last, started, hinted = None, time.monotonic(), False
    while True:
        database.session.expire_all()
        job = database.session.get(Job, job_id)
        line = f"[{job.progress * 100:5.1f}%] {job.state}: {job.message}".rstrip(": ")
        if line != last:
            click.echo(line)
            last = line
        if job.state in ("succeeded", "failed", "cancelled"):
            return job
        if job.state == "queued" and not hinted and time.monotonic() - started > queued_hint_s:
            click.echo("still queued: is a worker running (`qcloop worker`)? Or use --inline.")
            hinted = True
        time.sleep(1.0)


@cli.command()
@click.option("--project", "project_name", required=True, help="Project name.")
@click.option("--epochs", type=int, default=None,
              help="Epochs (default 30; a holdout run may stop early on its validation AUC).")
@click.option("--from", "init", type=click.Choice(["scratch", "champion", "miqa"]), default="scratch",
              show_default=True, help="Start from random weights, the registered champion or MIQA's weights "
                                      "(MIQA's preprocessing and tiles come with them).")
@click.option("--arch", default=None, help="Network: miqa (default for 3-D, MIQA's small classifier), densenet_small, "
                                           "resnet_small, densenet121, resnet18; resnet18_2d for 2-D images.")
@click.option("--fit", type=click.Choice(["resize", "pad_crop", "tiles"]), default=None,
              help="How a volume reaches the input shape: resized whole (default), padded/cropped, or native-grid "
                   "tiles averaged as MIQA does (what --from miqa uses).")
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Learning rate (default 0.001).")
@click.option("--patience", type=int, default=None, help="Epochs without a better validation AUC before a holdout "
                                                          "run stops (default 8).")
@click.option("--seed", type=int, default=None, help="Seed of the split, the folds, the weights and augmentation.")
@click.option("--evaluation", type=click.Choice(["auto", "holdout", "cv"]), default=None,
              help="Held-out metrics from a test split or k-fold cross-validation (auto: cross-validation "
                   "below 200 labelled subjects or when a split would lack a class).")
@click.option("--folds", type=int, default=None, help="Cross-validation folds (default 5).")
@click.option("--spatial-size", default=None, help="Network input shape, e.g. 64,64,64 (default 64^3 / 224^2).")
@click.option("--synthesize", multiple=True, help="Artifact key to synthesize on clean volumes (p=0.2); repeatable.")
@click.option("--inline", is_flag=True, help="Train in this process instead of the worker.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Print progress until the run ends (else print the run id and return).")
def train(project_name: str, epochs: int | None, init: str, arch: str | None, fit: str | None,
          batch_size: int | None, lr: float | None, patience: int | None, seed: int | None, evaluation: str | None,
          folds: int | None, spatial_size: str | None, synthesize: tuple[str, ...], inline: bool, wait: bool) -> None:
    """Retrain the project's model on its reviewer decisions.

    By default the run goes to the job queue (a `qcloop worker` trains it) and this command
    prints a progress line whenever it changes until the run ends; --no-wait returns at once,
    --inline trains here without a worker. Exits non-zero with the reason when the run fails.
    """
    from app.db import TrainingRun, boundary
    from app.db import db as database
    from app.services import projects
    from app.services import training as training_service
    from app.services.errors import ServiceError
    from app.services.loaders import load

    preflight()
    project = projects.find_project(project_name)
    if project is None:
        raise click.ClickException(f"no project named {project_name!r}")
    body: dict = {"from": init}
    for name, value in (("epochs", epochs), ("arch", arch), ("fit", fit), ("batch_size", batch_size), ("lr", lr),
                        ("patience", patience), ("seed", seed), ("evaluation", evaluation), ("folds", folds)):
        if value is not None:
            body[name] = value
    if spatial_size:
        try:
            body["spatial_size"] = [int(n) for n in spatial_size.split(",")]
        except ValueError as err:
            raise click.ClickException("--spatial-size must be integers separated by commas") from err
    if synthesize:
        body["synthesis"] = {key: 0.2 for key in synthesize}
    try:
        run = training_service.create_run(project, None, body) if inline else \
            training_service.start_run(project, None, body)
        boundary.commit()
    except ServiceError as err:
        database.session.rollback()
        raise click.ClickException(err.message) from err
    click.echo(f"training run {run.id} of {project.name} (job {run.job_id})")
    if inline:
        job = cli_jobs.run_inline(run.job_id)
    elif not wait:
        return
    else:
        job = follow_job(run.job_id)
    database.session.expire_all()
    status = training_service.run_status(load(TrainingRun, run.id))
    if job.state != "succeeded":
        raise click.ClickException(f"training run {run.id} {job.state}: {status.error or job.message}")
    version = status.model_version
    click.echo(f"registered {version.registry_name} version {version.version} ({version.alias})")
    _print_report(status.report)
    cli_models.say_waiting_evaluations(project)


def _print_report(report: RunReport) -> None:
    """The run's own account: evaluation, held-out AUCs with intervals, outputs left out, gate, MLflow."""
    if report.evaluation:
        click.echo(f"evaluated by {report.evaluation}")
    if report.heldout:
        click.echo(f"held-out AUC on {report.heldout_scans} scans:")
        for line in report.heldout:
            click.echo(f"  {line.output}: {line.auc}")
    for line in report.skipped_outputs:
        click.echo(f"not trained: {line.output}: {line.reason}")
    if report.champion_gate:
        click.echo(report.champion_gate)
    if report.mlflow:
        click.echo(f"open in MLflow: {report.mlflow}")


# --- import, export and sync ---------------------------------------------------------------------

class _ProgressLine:
    """Prints "[ 42%] message" whenever the whole percent or the message changes."""

    def __init__(self) -> None:
        self.last: tuple[int, str] | None = None

    def __call__(self, fraction: float, message: str = "") -> None:
        state = (int(fraction * 100), message)
        if state != self.last:
            self.last = state
            click.echo(f"[{state[0]:3d}%] {message}".rstrip())


def _project_option(name: str | None, create: bool | None = None):
    """The named project; with ``create`` a missing one is created (in the command's transaction, so a
    failed import or sync leaves no project behind); None: the command has no --create-project."""
    from app.services import projects

    if name is None:
        if create:
            raise click.ClickException("--create-project needs --project NAME")
        return None
    project = projects.find_project(name)
    if project is None and create:
        project = projects.create_project(name, None)
        click.echo(f"creating project {project.name}")
    if project is None:
        raise click.ClickException(f"no project named {name!r}" + ("" if create is None else
                                                                    " (--create-project creates it)"))
    return project


def _print_summary(summary: ImportSummary) -> None:
    counts = {name: value for name, value in summary.counts.items() if value}
    verb = "would change" if summary.dry_run else "changed"
    click.echo(f"{summary.format} file, {summary.rows} rows, {summary.mode} mode: "
               f"{verb} {summary.changes} item(s)")
    for name, value in counts.items():
        samples = summary.samples.get(name, [])
        shown = f" (e.g. {', '.join(samples[:5])})" if samples else ""
        click.echo(f"  {name.replace('_', ' ')}: {value}{shown}")
    for warning in summary.warnings[:20]:
        click.echo(f"warning: {warning}", err=True)
    if summary.warning_count > 20:
        click.echo(f"warning: ... and {summary.warning_count - 20} more", err=True)


def _refused(err) -> click.ClickException:
    from app.db import db as database

    database.session.rollback()
    for problem in (err.details.get("errors") or [])[1:20]:
        click.echo(f"error: {problem['where']}, field {problem['field']}: {problem['message']}"
                   if problem["field"] else f"error: {problem['where']}: {problem['message']}", err=True)
    return click.ClickException(f"nothing imported: {err.message}")


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", "project_name", default=None,
              help="Import into this project (every row must name it); without it the file's projects, "
                   "created when missing.")
@click.option("--mode", type=click.Choice(["merge", "replace"]), default="merge", show_default=True,
              help="merge adds and updates; replace also archives what left the file (decisions stay).")
@click.option("--dry-run", is_flag=True, help="Report what would be added, changed and archived; write nothing.")
@click.option("--create-project", is_flag=True,
              help="Create --project (empty, default vocabularies) when it does not exist; undone if the import fails.")
@click.option("--add-unknown-artifacts", is_flag=True,
              help="Add artifact names the vocabulary lacks to it (default: keep them on the decisions as "
                   "unmatched tags, listed in the report and exported back).")
def import_command(file: Path, project_name: str | None, mode: str, dry_run: bool, create_project: bool,
                   add_unknown_artifacts: bool) -> None:
    """Import a MIQA CSV/JSON or qcloop full CSV/JSON file, all or nothing."""
    from app.db import boundary
    from app.db import db as database
    from app.services.errors import ServiceError
    from app.services.transfer import importer, tasks
    from app.storage import StorageError

    preflight()
    try:
        project = _project_option(project_name, create_project)
        summary = importer.import_file(file, project=project, mode=mode, dry_run=dry_run, actor=None,
                                       progress=_ProgressLine(), add_unknown_artifacts=add_unknown_artifacts)
    except ServiceError as err:
        raise _refused(err) from err
    except StorageError as err:
        database.session.rollback()
        raise click.ClickException(f"nothing imported: {err}") from err
    if dry_run:
        database.session.rollback()
    else:
        boundary.commit()
        tasks.frames_added(summary)
    _print_summary(summary)


@cli.command("export")
@click.option("--project", "project_name", default=None, help="Export this project (default: every project).")
@click.option("--format", "fmt", type=click.Choice(["miqa-csv", "miqa-json", "csv", "json"]), required=True,
              help="MIQA's CSV or JSON (last decision per scan), or qcloop's full CSV or JSON (every decision, "
                   "artifact state and evaluation).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export_command(project_name: str | None, fmt: str, output: Path) -> None:
    """Export projects to a file (streamed; written atomically)."""
    from app.services.transfer import exporter

    preflight()
    project = _project_option(project_name)
    ids = [project.id] if project else exporter.all_project_ids()
    path = exporter.export_to_file(fmt, ids, output)
    click.echo(f"wrote {path} ({path.stat().st_size} bytes, {len(ids)} project(s), {fmt})")


@cli.command("sync")
@click.option("--project", "project_name", required=True)
@click.option("--source", required=True,
              help="The site's repository: a folder of images (under the data root or an allowed root), "
                   "bids:PATH (a BIDS dataset) or dicomweb+http(s)://HOST/PATH (a DICOMweb server).")
@click.option("--pattern", "patterns", multiple=True,
              help="Folder sources: regular expression on paths relative to --source (a DICOM folder's path ends "
                   "with /), with the named group scan and optionally experiment, type, frame, subject and session; "
                   "repeat it to try several in order (default: BIDS-like, EXPERIMENT/SCAN[_TYPE][_FRAME], "
                   "EXPERIMENT/SCAN/FRAME and flat folders). Kept for the source's later runs.")
@click.option("--every", "every_minutes", type=click.IntRange(min=0), default=None,
              help="Also sync this source every MINUTES in the worker from now on (0: only when asked).")
@click.option("--create-project", is_flag=True, help="Create --project when it does not exist.")
@click.option("--all-skipped", is_flag=True, help="List every file not taken (default: the first 50).")
def sync_command(project_name: str, source: str, patterns: tuple[str, ...], every_minutes: int | None,
                 create_project: bool, all_skipped: bool) -> None:
    """Sync the project with its repository now: export its state, add the images that are new or changed,
    push the latest decisions back, and record the run; every image not taken is listed with the reason."""
    from app.services.errors import ServiceError
    from app.services.sync import ON_DISK, engine

    preflight()
    every = engine.UNCHANGED if every_minutes is None else (every_minutes or None)
    try:
        project = _project_option(project_name, create_project)
        run = engine.run_sync(project, source, None, patterns=patterns, every_minutes=every,
                              progress=_ProgressLine())
    except ServiceError as err:
        raise _refused(err) from err
    click.echo(f"exported the state before this sync to {run.export_file}"
               + (f" (previous export kept as {run.backup_file})" if run.backup_file else ""))
    for label, lines in (("skipped", run.skipped_items), ("failed", run.failed_items)):
        shown = lines if all_skipped else lines[:50]
        for line in shown:
            click.echo(f"{label}: {line['item']}: {line['reason']}", err=True)
        if len(lines) > len(shown):
            click.echo(f"{label}: ... and {len(lines) - len(shown)} more (--all-skipped lists them)", err=True)
    for key in run.removed_items:
        click.echo(f"removed from the source (its scan and decisions stay): {key}")
    if run.unchanged:
        click.echo(f"{run.unchanged} file(s) already in the project")
    if run.added or run.changed:
        click.echo(f"added {run.added} file(s), skipped {run.skipped}"
                   + (f", {run.changed} changed (a new frame each)" if run.changed else "") + ":")
        prefix = f"{run.source.url}/" if run.source.kind in ON_DISK else ""
        for key in run.added_items[:50]:
            click.echo(f"  {prefix}{key}")
        if len(run.added_items) > 50:
            click.echo(f"  ... and {len(run.added_items) - 50} more")
    else:
        click.echo(f"nothing new to add ({run.skipped} file(s) skipped)")
    if run.pushed:
        click.echo(f"pushed {run.pushed} decision(s) back" + (f" ({run.push_file})" if run.push_file else ""))
    if run.failed:
        click.echo(f"{run.failed} item(s) failed (listed above)")
    if run.source.every_minutes:
        click.echo(f"syncs every {run.source.every_minutes} minute(s) in the worker (`qcloop worker`)")


from app import cli_jobs  # noqa: E402,F401 - registers jobs on cli; runs inline jobs
from app import cli_models  # noqa: E402,F401 - registers models, evaluate and predict on cli
from app import cli_backup  # noqa: E402,F401 - registers backup and restore on cli

if __name__ == "__main__":  # `python -m app.cli`: the commands live on the imported module's group
    from app.cli import cli as imported

    imported()
