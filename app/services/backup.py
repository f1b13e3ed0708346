"""Backups of a whole installation, and their restore into an empty one.

A backup folder holds a consistent copy of qcloop's database (SQLite's online backup API, or
``pg_dump`` for PostgreSQL), the MLflow store (its tracking database the same way, and the
artifacts folder), and ``manifest.json``: every file under the data root with its SHA-256, and
with ``--with-images`` the files themselves under ``data/``. A restore refuses an installation
that holds anything, checks every file against the manifest before the databases are written
(so a refused restore leaves the installation as empty as it found it), and points MLflow's
recorded artifact locations at this installation's artifacts folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa
from flask import current_app

from app.db import db
from app.services.errors import Conflict, InvalidInput
from app.storage import iter_chunks

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
# MLflow columns that record where artifacts live (paths under the artifacts folder).
MLFLOW_LOCATIONS = {"experiments": ("artifact_location",), "runs": ("artifact_uri",),
                    "logged_models": ("artifact_location",), "model_versions": ("source", "storage_location")}
# Tables that hold something once qcloop or MLflow has been used (an empty schema is still empty).
QCLOOP_CONTENT = ("users", "projects")
MLFLOW_CONTENT = ("runs", "registered_models")
MAX_LISTED = 10


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter_chunks(stream):
            digest.update(chunk)
    return digest.hexdigest()


def _kind(url: str) -> str:
    backend = sa.engine.make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise InvalidInput(f"backups cover SQLite and PostgreSQL databases, not {backend}")
    return backend


def _pg_command(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URL without its password (which goes in PGPASSWORD, not on a command line)."""
    parsed = sa.engine.make_url(url)
    env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        raise InvalidInput(f"{command[0]} failed: {reason}")


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup API: a consistent copy while other processes keep writing."""
    reader, writer = sqlite3.connect(source), sqlite3.connect(target)
    try:
        reader.backup(writer)
    finally:
        writer.close()
        reader.close()


def _dump(url: str, folder: Path, name: str) -> dict[str, str]:
    """A consistent copy of the database at ``url`` into the folder; returns its manifest entry."""
    kind = _kind(url)
    if kind == "sqlite":
        target = folder / f"{name}.db"
        _sqlite_copy(Path(sa.engine.make_url(url).database), target)
    else:
        target = folder / f"{name}.pgdump"
        libpq, env = _pg_command(url)
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={target}", libpq], env)
    return {"kind": kind, "file": target.name}


def _load(entry: dict[str, str], folder: Path, url: str) -> None:
    """Write a dumped database into the (empty) database at ``url``."""
    kind = _kind(url)
    if entry["kind"] != kind:
        raise InvalidInput(f"the backup holds a {entry['kind']} database; this installation uses {kind}")
    source = folder / entry["file"]
    if kind == "sqlite":
        path = Path(sa.engine.make_url(url).database)
        path.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_copy(source, path)
        return
    libpq, env = _pg_command(url)
    _run(["pg_restore", "--no-owner", "--no-privileges", "--clean", "--if-exists", "--single-transaction",
          f"--dbname={libpq}", str(source)], env)


def _holds_rows(url: str, tables: tuple[str, ...]) -> bool:
    if _kind(url) == "sqlite" and not Path(sa.engine.make_url(url).database).is_file():
        return False
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            present = set(sa.inspect(connection).get_table_names())
            return any(connection.scalar(sa.text(f"SELECT EXISTS (SELECT 1 FROM {table})"))
                       for table in tables if table in present)
    finally:
        engine.dispose()


def _data_files(root: Path) -> list[dict[str, Any]]:
    """Every file under the data root (hidden temporary files of writes in progress left out)."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(".incoming-"):
            found.append({"path": path.relative_to(root).as_posix(), "sha256": _sha256(path),
                          "size": path.stat().st_size})
    return found


@dataclass(frozen=True)
class BackupFacts:
    """A backup as its manifest describes it: when it was made, its database's kind, how many data files
    it lists and whether it holds copies of them."""

    created: str
    database: str
    files: int
    with_images: bool

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> BackupFacts:
        return cls(manifest["created"], manifest["database"]["kind"], len(manifest["files"]),
                   bool(manifest.get("with_images")))


def backup(target: Path, with_images: bool) -> BackupFacts:
    """Write a backup of this installation into ``target`` (a new or empty folder)."""
    config = current_app.config
    if target.exists() and any(target.iterdir()):
        raise Conflict(f"{target} is not empty: back up into a new folder")
    target.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat()}
    db.session.remove()
    manifest["database"] = _dump(config["SQLALCHEMY_DATABASE_URI"], target, "qcloop")
    manifest["mlflow"] = _dump(config["MLFLOW_TRACKING_URI"], target, "mlflow")
    artifacts = Path(config["MLFLOW_ARTIFACT_ROOT"]).resolve()
    manifest["mlflow"]["artifact_root"] = str(artifacts)
    if artifacts.is_dir():
        shutil.copytree(artifacts, target / "mlartifacts")
    data_root = Path(config["DATA_ROOT"])
    manifest["files"] = _data_files(data_root) if data_root.is_dir() else []
    manifest["with_images"] = with_images
    if with_images:
        for entry in manifest["files"]:
            copy = target / "data" / entry["path"]
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data_root / entry["path"], copy)
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    log.info("backup written to %s: %s file(s)", target, len(manifest["files"]))
    return BackupFacts.of(manifest)


def _read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidInput(f"{source} is not a qcloop backup: cannot read {MANIFEST} ({err})") from err
    if manifest.get("format") != FORMAT:
        raise InvalidInput(f"{source}: backup format {manifest.get('format')!r} is not {FORMAT}")
    for entry in manifest["files"]:
        path = PurePosixPath(entry["path"])
        if path.is_absolute() or ".." in path.parts:
            raise InvalidInput(f"{source}: manifest names {entry['path']!r} outside the data root")
    return manifest


def _require_empty(artifacts: Path) -> None:
    config = current_app.config
    if _holds_rows(config["SQLALCHEMY_DATABASE_URI"], QCLOOP_CONTENT):
        raise Conflict("this installation's database is not empty: restore into an empty installation")
    if _holds_rows(config["MLFLOW_TRACKING_URI"], MLFLOW_CONTENT):
        raise Conflict("this installation's MLflow store is not empty: restore into an empty installation")
    if artifacts.is_dir() and any(path.is_file() for path in artifacts.rglob("*")):
        raise Conflict(f"this installation's MLflow artifacts folder {artifacts} is not empty")


def _place_files(manifest: dict[str, Any], source: Path, data_root: Path) -> None:
    """Copy the backed-up files that are not there yet (a file already there is never replaced)."""
    for entry in manifest["files"]:
        target, copy = data_root / entry["path"], source / "data" / entry["path"]
        if target.exists() or not copy.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        incoming = target.with_name(f".incoming-{target.name}")
        shutil.copy2(copy, incoming)
        os.replace(incoming, target)


def _verify(manifest: dict[str, Any], data_root: Path) -> None:
    """Every file of the manifest under the data root with its checksum; else refuse, naming them."""
    wrong = []
    for entry in manifest["files"]:
        path = data_root / entry["path"]
        if not path.is_file():
            wrong.append(f"{entry['path']} is missing")
        elif _sha256(path) != entry["sha256"]:
            wrong.append(f"{entry['path']} has another checksum than when backed up")
    if wrong:
        more = f" (and {len(wrong) - MAX_LISTED} more)" if len(wrong) > MAX_LISTED else ""
        raise Conflict(f"nothing restored: {len(wrong)} data file(s) do not match the backup: "
                       + "; ".join(wrong[:MAX_LISTED]) + more)


def _repoint_mlflow(url: str, old_root: str, new_root: Path) -> None:
    """MLflow records absolute artifact locations: make them name this installation's folder."""
    if old_root == str(new_root):
        return
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            present = set(sa.inspect(connection).get_table_names())
            for table, columns in MLFLOW_LOCATIONS.items():
                if table not in present:
                    continue
                for column in columns:
                    connection.execute(sa.text(f"UPDATE {table} SET {column} = REPLACE({column}, :old, :new) "
                                               f"WHERE {column} LIKE :pattern"),
                                       {"old": old_root, "new": str(new_root), "pattern": f"%{old_root}%"})
    finally:
        engine.dispose()


def restore(source: Path) -> BackupFacts:
    """Restore a backup folder into this (empty) installation; the data root's files must match it."""
    config = current_app.config
    manifest = _read_manifest(source)
    artifacts = Path(config["MLFLOW_ARTIFACT_ROOT"]).resolve()
    data_root = Path(config["DATA_ROOT"])
    db.session.remove()
    db.engine.dispose()
    _require_empty(artifacts)
    _place_files(manifest, source, data_root)
    _verify(manifest, data_root)
    _load(manifest["database"], source, config["SQLALCHEMY_DATABASE_URI"])
    _load(manifest["mlflow"], source, config["MLFLOW_TRACKING_URI"])
    if (source / "mlartifacts").is_dir():
        shutil.copytree(source / "mlartifacts", artifacts, dirs_exist_ok=True)
    _repoint_mlflow(config["MLFLOW_TRACKING_URI"], manifest["mlflow"]["artifact_root"], artifacts)
    log.info("restored %s: %s file(s) verified", source, len(manifest["files"]))
    return BackupFacts.of(manifest)
