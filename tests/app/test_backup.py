"""Backup and restore as an operator runs them, and the demo's full export re-imported into an empty qcloop:
the demo's data (users, memberships, decisions, a FLAIR scan) with MIQA's network registered as its champion
(an MLflow run and a registered model with its artifacts), built once through the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.app.transfer_helpers import snapshot
from tests.conftest import SHARED_DATA

WEIGHTS = SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth"
BUILD_DEMO = ("from app import create_app; from app.db import db; from app.services import demo; "
              "app = create_app(); app.app_context().push(); demo.build_demo('admin', 'demo-password-1'); "
              "db.session.commit()")

TABLES = {  # table -> the columns that say what it holds (ids are kept by a restore)
    "users": "id, username, email, password_hash, is_superuser",
    "memberships": "user_id, project_id, role",
    "decisions": "id, scan_id, option_id, creator_id, creator_role, note, created_at",
    "decision_artifacts": "decision_id, entry_id, state",
    "training_runs": "id, project_id, state, mlflow_run_id",
    "model_versions": "id, registry_name, version, alias, mlflow_run_id",
    "frames": "id, file_location, checksum, size_bytes",
}


def _env(root: Path, url: str) -> dict[str, str]:
    return {**os.environ, "QCLOOP_INSTANCE_PATH": str(root / "instance"), "DATABASE_URL": url,
            "QCLOOP_DATA_ROOT": str(root / "data"), "QCLOOP_ADMIN_PASSWORD": "demo-password-1",
            "OMP_NUM_THREADS": "2", "QCLOOP_INFERENCE_THREADS": "2"}


def _qcloop(env, *args, timeout: int = 900):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, database_factory) -> dict[str, str]:
    """An installation holding the demo's data, MIQA's network as champion and a trained challenger."""
    env = _env(tmp_path_factory.mktemp("demo"), database_factory("backup_demo"))
    assert _qcloop(env, "db", "upgrade").returncode == 0
    built = subprocess.run([sys.executable, "-c", BUILD_DEMO], capture_output=True, text=True, env=env, timeout=600)
    assert built.returncode == 0, built.stderr
    registered = _qcloop(env, "models", "import-miqa", "--weights", str(WEIGHTS), "--project", "Demo brain QC")
    assert registered.returncode == 0, registered.stderr
    trained = _qcloop(env, "train", "--project", "Demo brain QC", "--inline", "--epochs", "1", "--folds", "2",
                      "--arch", "resnet_small")  # a real training run and its version: both must survive
    assert trained.returncode == 0, trained.stderr
    return env


def _rows(url: str) -> dict[str, list[tuple]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        found = {table: [tuple(row) for row in connection.execute(text(f"SELECT {columns} FROM {table} ORDER BY 1, 2"))]
                 for table, columns in TABLES.items()}
    engine.dispose()
    return found


def _registry(env: dict[str, str]) -> list[tuple]:
    """Every registered version with its run, metrics and the files its model consists of."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{Path(env['QCLOOP_INSTANCE_PATH']) / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found, instance = [], Path(env["QCLOOP_INSTANCE_PATH"]).resolve()
    for version in client.search_model_versions():
        source = client.get_model_version_download_uri(version.name, version.version)
        path = Path(source.removeprefix("file://"))
        files = tuple(sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()))
        assert path.is_relative_to(instance) and files, source
        found.append((version.name, version.version, version.run_id, tuple(sorted(version.aliases)),
                      json.dumps(client.get_run(version.run_id).data.metrics, sort_keys=True), files))
    return sorted(found)


def _files(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_backup_then_restore_into_an_empty_installation_keeps_everything(demo, tmp_path, database_factory):
    target = tmp_path / "backup"
    made = _qcloop(demo, "backup", "-o", str(target), "--with-images")
    assert made.returncode == 0, made.stderr
    manifest = json.loads((target / "manifest.json").read_text())
    assert _files(Path(demo["QCLOOP_DATA_ROOT"])) == {entry["path"]: entry["sha256"] for entry in manifest["files"]}

    fresh = _env(tmp_path / "fresh", database_factory("restored"))
    restored = _qcloop(fresh, "restore", str(target))
    assert restored.returncode == 0, restored.stderr
    assert f"{len(manifest['files'])} file(s) verified" in restored.stdout
    rows = _rows(demo["DATABASE_URL"])
    assert [row[2] for row in rows["training_runs"]] == ["succeeded"] and len(rows["model_versions"]) == 2
    assert _rows(fresh["DATABASE_URL"]) == rows
    assert _registry(fresh) == _registry(demo)
    assert _files(Path(fresh["QCLOOP_DATA_ROOT"])) == _files(Path(demo["QCLOOP_DATA_ROOT"]))
    served = _qcloop(fresh, "predict", next(iter(Path(fresh["QCLOOP_DATA_ROOT"]).rglob("*.nii.gz"))).as_posix(),
                     "--project", "Demo brain QC")
    assert served.returncode == 0, served.stderr

    again = _qcloop(fresh, "restore", str(target))
    assert again.returncode == 1 and "not empty" in again.stderr


def test_a_restore_refuses_files_whose_checksums_differ(demo, tmp_path, database_factory):
    target = tmp_path / "backup"
    assert _qcloop(demo, "backup", "-o", str(target)).returncode == 0
    assert not (target / "data").exists(), "images are copied only with --with-images"
    fresh = _env(tmp_path / "fresh", database_factory("tampered"))
    changed = sorted(Path(demo["QCLOOP_DATA_ROOT"]).rglob("*.nii.gz"))[0]
    copy = Path(fresh["QCLOOP_DATA_ROOT"]) / changed.relative_to(demo["QCLOOP_DATA_ROOT"])
    for path in Path(demo["QCLOOP_DATA_ROOT"]).rglob("*"):
        if path.is_file():
            (Path(fresh["QCLOOP_DATA_ROOT"]) / path.relative_to(demo["QCLOOP_DATA_ROOT"])).parent.mkdir(
                parents=True, exist_ok=True)
            (Path(fresh["QCLOOP_DATA_ROOT"]) / path.relative_to(demo["QCLOOP_DATA_ROOT"])).write_bytes(
                path.read_bytes())
    copy.write_bytes(b"changed")
    refused = _qcloop(fresh, "restore", str(target))
    assert refused.returncode == 1 and "checksum" in refused.stderr and changed.name in refused.stderr


@pytest.mark.parametrize("fmt, suffix", [("csv", ".csv"), ("json", ".json")])
def test_the_demos_full_export_reimports_into_an_empty_qcloop(demo, tmp_path, database_factory, fmt, suffix):
    from app import create_app
    from app.db import db
    from tests.conftest import _test_settings

    exported = tmp_path / f"all{suffix}"
    made = _qcloop(demo, "export", "--format", fmt, "-o", str(exported))
    assert made.returncode == 0, made.stderr
    empty = {**_env(tmp_path / "empty", database_factory(f"reimport_{fmt}")),
             "QCLOOP_DATA_ROOT": demo["QCLOOP_DATA_ROOT"]}
    assert _qcloop(empty, "db", "upgrade").returncode == 0
    imported = _qcloop(empty, "import", str(exported))
    assert imported.returncode == 0, imported.stderr

    pictures = []
    for env in (demo, empty):
        app = create_app(_test_settings(Path(env["QCLOOP_INSTANCE_PATH"]), env["DATABASE_URL"],
                                        DATA_ROOT=env["QCLOOP_DATA_ROOT"]))
        with app.app_context():
            people = sorted(tuple(row) for row in db.session.execute(text(
                "SELECT u.username, u.email, p.name, m.role FROM memberships m JOIN users u ON u.id = m.user_id "
                "JOIN projects p ON p.id = m.project_id")))
            pictures.append((snapshot(), people))
            db.session.remove()
            db.engine.dispose()
    assert pictures[1][1] == pictures[0][1] and pictures[0][1]
    assert pictures[1][0] == pictures[0][0]
