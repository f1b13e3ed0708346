"""``qcloop backup`` and ``qcloop restore``: a whole installation into a folder, and back into an empty one."""
from __future__ import annotations

from pathlib import Path

import click

from app.cli import cli, preflight


@cli.command()
@click.option("-o", "--output", "target", required=True, type=click.Path(path_type=Path),
              help="A new (or empty) folder to write the backup into.")
@click.option("--with-images", is_flag=True,
              help="Copy the data root's files too (else only their checksums, to verify a restore against).")
def backup(target: Path, with_images: bool) -> None:
    """Back up the database, the MLflow store and a manifest of the data root's files with checksums."""
    from app.services import backup as service
    from app.services.errors import ServiceError

    preflight()
    try:
        facts = service.backup(target, with_images)
    except ServiceError as err:
        raise click.ClickException(err.message) from err
    copied = " (copied)" if with_images else " (checksums only; keep the data root's files)"
    click.echo(f"backup written to {target}: {facts.database} database, MLflow store, "
               f"{facts.files} data file(s){copied}")


@cli.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
def restore(source: Path) -> None:
    """Restore a backup into this empty installation, after checking every data file against its checksum."""
    from app.services import backup as service
    from app.services.errors import ServiceError

    preflight(need_tables=False)
    try:
        facts = service.restore(source)
    except ServiceError as err:
        raise click.ClickException(err.message) from err
    click.echo(f"restored the backup of {facts.created}: {facts.files} file(s) verified")
