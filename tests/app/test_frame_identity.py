"""Every frame's checksum is its file's SHA-256, however the frame arrived (import, large import, sync,
a re-import that moves it, an upload, a database from before), and training sees one tensor per file."""
from __future__ import annotations

import hashlib
import io
from itertools import combinations
from pathlib import Path

import flask_migrate
import nibabel as nib
import numpy as np
import torch
from sqlalchemy import select, update

from app import create_app
from app.db import Frame, Job, db
from app.services import projects, training
from app.services.sync import engine
from tests.app.test_transfer_api import _upload
from tests.app.transfer_helpers import write_csv
from tests.conftest import _test_settings
from tests.factories import Factory, token_headers


def _volume(data_root: str, relative: str, seed: int) -> Path:
    """A 16^3 NIfTI whose voxels no other seed shares."""
    path = Path(data_root) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    voxels = np.random.default_rng(seed).integers(0, 4000, size=(16, 16, 16)).astype(np.int16)
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), str(path))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _row(scan: str, location: str, experiment: str = "v1") -> list:
    return ["Site", experiment, scan, "T1", 0, location, "", "", "", "", "U", "rev1@example.org", "", "", "", ""]


def _site(factory: Factory) -> tuple:
    admin = factory.user("siteadmin")
    project = factory.project("Site", creator=admin)
    factory.member(project, "tier1", "rev1")
    return project, token_headers(factory.app.test_client(), "siteadmin")


def _import(client, project, headers, rows: list[list], path: Path):
    answer = _upload(client, f"/api/v1/projects/{project.id}/import", write_csv(path, rows).read_bytes(), headers)
    assert answer.status_code in (200, 202), answer.get_json()
    return answer.get_json()


def _checksums() -> dict[str, tuple[str | None, int | None]]:
    return {location: (digest, size) for location, digest, size in db.session.execute(
        select(Frame.file_location, Frame.checksum, Frame.size_bytes).order_by(Frame.id))}


def _checksum_jobs() -> list[Job]:
    db.session.expire_all()
    return list(db.session.scalars(select(Job).where(Job.kind == "frames.checksum").order_by(Job.id)))


def _training_tensors(project_id: int, cache_dir: Path) -> list[torch.Tensor]:
    from training.data import USABLE, LabelSettings, label_items
    from training.transforms import PreprocessConfig, cached_volumes

    items = label_items(training.records(project_id), [USABLE], LabelSettings())
    volumes = cached_volumes(items, PreprocessConfig(spatial_size=(16, 16, 16)), cache_dir)
    return [volumes[index]["image"] for index in range(len(items))]


def _all_different(tensors: list[torch.Tensor]) -> bool:
    return all(not torch.equal(a, b) for a, b in combinations(tensors, 2))


def test_imported_frames_carry_their_files_checksums_and_train_as_different_tensors(client, factory, tmp_path):
    project, headers = _site(factory)
    root = factory.app.config["DATA_ROOT"]
    files = {f"site/{name}.nii.gz": _volume(root, f"site/{name}.nii.gz", seed) for seed, name in enumerate("abc")}
    summary = _import(client, project, headers, [_row(Path(loc).name[0], loc) for loc in files], tmp_path / "a.csv")
    assert summary["counts"]["frames_added"] == 3

    assert _checksums() == {loc: (_sha(path), path.stat().st_size) for loc, path in files.items()}
    (job,) = _checksum_jobs()
    assert (job.state, job.project_id, job.result) == ("succeeded", project.id,
                                                       {"filled": 3, "unreadable": 0, "problems": []})
    tensors = _training_tensors(project.id, tmp_path / "cache")
    assert len(tensors) == 3 and _all_different(tensors)


def test_a_large_import_job_queues_the_checksum_job_too(make_app, tmp_path):
    app = make_app(IMPORT_INLINE_MAX_BYTES=10)
    with app.app_context():
        project, headers = _site(Factory(app))
        path = _volume(app.config["DATA_ROOT"], "site/a.nii.gz", 1)
        answer = _import(app.test_client(), project, headers, [_row("a", "site/a.nii.gz")], tmp_path / "a.csv")
        assert answer["job"]["state"] == "succeeded"
        assert _checksums() == {"site/a.nii.gz": (_sha(path), path.stat().st_size)}
        assert [job.state for job in _checksum_jobs()] == ["succeeded"]


def test_sync_and_a_moved_frame_get_the_new_files_checksums(client, factory, tmp_path):
    project, headers = _site(factory)
    root = factory.app.config["DATA_ROOT"]
    first = _volume(root, "repo/v1/a_T1_0.nii.gz", 1)
    _import(client, project, headers, [_row("a", "repo/v1/a_T1_0.nii.gz")], tmp_path / "a.csv")
    added = [_volume(root, "repo/v1/b_T1_0.nii.gz", 2), _volume(root, "repo/v2/c_T1_0.nii.gz", 3)]

    run = engine.run_sync(project, str(Path(root) / "repo"), None)
    assert (run.added_items, run.unchanged) == (["v1/b_T1_0.nii.gz", "v2/c_T1_0.nii.gz"], 1)  # a: imported before
    assert {loc: digest for loc, (digest, _) in _checksums().items()} == {
        "repo/v1/a_T1_0.nii.gz": _sha(first), "repo/v1/b_T1_0.nii.gz": _sha(added[0]),
        "repo/v2/c_T1_0.nii.gz": _sha(added[1])}
    assert [job.state for job in _checksum_jobs()] == ["succeeded"]  # the import's: the sync read its own

    moved = _volume(root, "repo/v1/a_rescan.nii.gz", 4)
    summary = _import(client, project, headers, [_row("a", "repo/v1/a_rescan.nii.gz")], tmp_path / "moved.csv")
    assert summary["counts"]["frames_changed"] == 1
    assert _checksums()["repo/v1/a_rescan.nii.gz"] == (_sha(moved), moved.stat().st_size)
    decide = [_row("b", "repo/v1/b_T1_0.nii.gz"), _row("c", "repo/v2/c_T1_0.nii.gz", experiment="v2")]
    _import(client, project, headers, decide, tmp_path / "decide.csv")
    tensors = _training_tensors(project.id, tmp_path / "cache")
    assert len(tensors) == 3 and _all_different(tensors)


def test_an_unreadable_file_is_counted_and_the_rest_still_filled(make_app, tmp_path):
    app = make_app(IMPORT_MISSING_FILES="warn")
    with app.app_context():
        project, headers = _site(Factory(app))
        path = _volume(app.config["DATA_ROOT"], "site/a.nii.gz", 1)
        rows = [_row("a", "site/a.nii.gz"), _row("gone", "site/gone.nii.gz")]
        _import(app.test_client(), project, headers, rows, tmp_path / "a.csv")
        assert _checksums() == {"site/a.nii.gz": (_sha(path), path.stat().st_size),
                                "site/gone.nii.gz": (None, None)}
        (job,) = _checksum_jobs()
        assert job.state == "succeeded" and (job.result["filled"], job.result["unreadable"]) == (1, 1)
        assert "site/gone.nii.gz" in job.result["problems"][0]


def test_uploads_under_names_a_path_makes_equal_keep_their_own_files(client, factory):
    project, _ = _site(factory)
    headers = token_headers(client, "rev1")
    images = [_volume(factory.app.config["DATA_ROOT"], f"elsewhere/{n}.nii.gz", n).read_bytes() for n in (1, 2)]
    bodies = []
    for scan_name, image in zip(("my scan", "my_scan"), images):
        answer = client.post("/api/v1/frames", headers=headers, content_type="multipart/form-data", data={
            "project": str(project.id), "experiment": "uploads", "scan_name": scan_name,
            "file": (io.BytesIO(image), "upload.nii.gz")})
        assert answer.status_code == 201, answer.get_json()
        bodies.append(answer.get_json())
    assert bodies[0]["file_location"] != bodies[1]["file_location"]
    for body, image in zip(bodies, images):
        stored = Path(factory.app.config["DATA_ROOT"]) / body["file_location"]
        assert stored.read_bytes() == image and body["checksum"] == hashlib.sha256(image).hexdigest()


def test_the_migration_fills_checksums_a_database_lacks(database_factory, tmp_path):
    app = create_app(_test_settings(tmp_path / "instance", database_factory("identity")))
    with app.app_context():
        flask_migrate.upgrade(revision="0001")
        path = _volume(app.config["DATA_ROOT"], "old/a.nii.gz", 1)
        experiment = projects.get_or_create_experiment(projects.create_project("Old", None), "v1")
        scan = projects.get_or_create_scan(experiment, "a")
        projects.add_frame(scan, 0, "old/a.nii.gz")
        projects.add_frame(scan, 1, "old/gone.nii.gz")
        db.session.execute(update(Frame).values(checksum=None, size_bytes=None))
        db.session.commit()
        db.session.remove()

        flask_migrate.upgrade()
        assert _checksums() == {"old/a.nii.gz": (_sha(path), path.stat().st_size),
                                "old/gone.nii.gz": (None, None)}
        db.session.remove()
        db.engine.dispose()
