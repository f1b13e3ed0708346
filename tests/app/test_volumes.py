"""Frame images for the viewer: RAS volume and preview (ETag, 304, Range), PNG slices, the original
file, NRRD and DICOM series, and clear 4xx answers for missing or unreadable files."""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.db import Frame, db
from app.services import frames, projects
from tests.factories import token_headers, write_dicom_series

LPS_AFFINE = np.array([[-2.0, 0, 0, 30], [0, -2.0, 0, 40], [0, 0, 3.0, -10], [0, 0, 0, 1]])


@pytest.fixture
def setup(factory, client):
    project = factory.project("volumes")
    factory.member(project, "collaborator", "viewer")
    headers = token_headers(client, "viewer")
    return project, headers


def _write_lps_nifti(app, relative: str) -> tuple[Path, np.ndarray]:
    data = np.arange(20 * 24 * 16, dtype=np.int16).reshape(20, 24, 16)
    path = Path(app.config["DATA_ROOT"]) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, LPS_AFFINE), str(path))
    return path, data


def _frame_for(project, name: str, location: str) -> Frame:
    experiment = projects.get_or_create_experiment(project, "e")
    scan = projects.get_or_create_scan(experiment, name)
    frame = frames.register_frame(scan, 0, location)
    db.session.commit()
    return frame


def _nifti(content: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def test_volume_is_ras_with_etag_304_and_range(app, client, setup):
    project, headers = setup
    path, data = _write_lps_nifti(app, "v/lps.nii.gz")
    frame = _frame_for(project, "lps", "v/lps.nii.gz")
    answer = client.get(f"/api/v1/frames/{frame.id}/volume", headers=headers)
    assert answer.status_code == 200 and "private" in answer.headers["Cache-Control"]
    image = _nifti(answer.data)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert np.array_equal(np.asanyarray(image.dataobj), data[::-1, ::-1, :])  # LPS -> RAS flips i and j
    etag = answer.headers["ETag"]
    assert frame.checksum in etag
    assert client.get(f"/api/v1/frames/{frame.id}/volume", headers={**headers, "If-None-Match": etag}).status_code == 304
    part = client.get(f"/api/v1/frames/{frame.id}/volume", headers={**headers, "Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.data) == 100 and part.data == answer.data[:100]

    preview = _nifti(client.get(f"/api/v1/frames/{frame.id}/preview", headers=headers).data)
    assert preview.get_data_dtype() == np.uint8 and max(preview.shape) <= 96
    geometry = client.get(f"/api/v1/frames/{frame.id}/geometry", headers=headers).get_json()
    assert geometry["shape"] == [20, 24, 16] and geometry["original_shape"] == [20, 24, 16]
    # A RAS position maps back to the voxel of the original (LPS) grid it came from.
    mm = LPS_AFFINE @ [3, 5, 7, 1]
    voxel = np.asarray(geometry["inverse_original_affine"]) @ mm
    assert np.allclose(voxel[:3], [3, 5, 7])

    original = client.get(f"/api/v1/frames/{frame.id}/download", headers=headers)
    assert original.status_code == 200 and original.data == path.read_bytes()
    assert "attachment" in original.headers["Content-Disposition"]


def test_slices_are_pngs_with_window_level_and_clear_errors(app, client, setup):
    project, headers = setup
    _write_lps_nifti(app, "v/slices.nii.gz")
    frame = _frame_for(project, "slices", "v/slices.nii.gz")
    url = f"/api/v1/frames/{frame.id}/slice"
    axial = client.get(url + "?axis=axial&index=3", headers=headers)
    assert axial.status_code == 200 and axial.mimetype == "image/png"
    assert Image.open(io.BytesIO(axial.data)).size == (20, 24)  # x across, y up
    coronal = Image.open(io.BytesIO(client.get(url + "?axis=coronal&index=0", headers=headers).data))
    assert coronal.size == (20, round(16 * 3 / 2))  # 2 mm x 3 mm voxels shown with their true aspect
    narrow = np.asarray(Image.open(io.BytesIO(client.get(url + "?index=3&window=10&level=0", headers=headers).data)))
    wide = np.asarray(Image.open(io.BytesIO(client.get(url + "?index=3&window=100000&level=0", headers=headers).data)))
    assert narrow.max() == 255 and wide.max() < 255
    etag = axial.headers["ETag"]
    assert client.get(url + "?axis=axial&index=3", headers={**headers, "If-None-Match": etag}).status_code == 304
    for query, field in (("axis=oblique", "axis"), ("index=16", "index"), ("index=-1", "index"),
                         ("index=1.5", "index"), ("window=0", "window"), ("level=abc", "level"),
                         ("window=nan", "window")):
        answer = client.get(f"{url}?{query}", headers=headers)
        assert answer.status_code == 400 and answer.get_json()["field"] == field, query


def test_missing_and_unreadable_files_answer_4xx(app, client, setup):
    project, headers = setup
    path, _ = _write_lps_nifti(app, "v/gone.nii.gz")
    frame = _frame_for(project, "gone", "v/gone.nii.gz")
    path.unlink()
    for endpoint in ("volume", "preview", "geometry", "slice", "download"):
        answer = client.get(f"/api/v1/frames/{frame.id}/{endpoint}", headers=headers)
        assert answer.status_code == 404 and answer.get_json()["error"] == "frame_file_missing", endpoint
        assert "missing" in answer.get_json()["detail"]
    damaged, _ = _write_lps_nifti(app, "v/damaged.nii.gz")
    broken = _frame_for(project, "broken", "v/damaged.nii.gz")  # registered while readable ...
    damaged.write_bytes(damaged.read_bytes()[:400])  # ... then truncated
    answer = client.get(f"/api/v1/frames/{broken.id}/volume", headers=headers)
    assert answer.status_code == 422 and answer.get_json()["error"] == "frame_unreadable"
    assert client.get(f"/api/v1/frames/{broken.id}/saliency", headers=headers).status_code == 409


def test_nrrd_frames_read_in_lps_space(app, client, setup):
    import nrrd

    project, headers = setup
    data = np.random.default_rng(0).integers(0, 1000, (12, 10, 8)).astype(np.int16)
    path = Path(app.config["DATA_ROOT"]) / "v/scan.nrrd"
    path.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(path), data, {"space": "left-posterior-superior", "space directions": np.diag([1.0, 1.5, 2.0]),
                                 "space origin": np.array([5.0, 6.0, 7.0]), "kinds": ["domain"] * 3})
    frame = _frame_for(project, "nrrd", "v/scan.nrrd")
    assert frame.shape == [12, 10, 8] and frame.orientation == "LPS" and frame.spacing == [1.0, 1.5, 2.0]
    image = _nifti(client.get(f"/api/v1/frames/{frame.id}/volume", headers=headers).data)
    assert np.array_equal(np.asanyarray(image.dataobj), data[::-1, ::-1, :])
    # voxel (0, 0, 0) sits at LPS (5, 6, 7), i.e. RAS (-5, -6, 7)
    assert np.allclose(image.affine @ [11, 9, 0, 1], [-5, -6, 7, 1])


SERIES = "1.2.826.0.1.3680043.2.1125.1.4242"


def test_dicom_series_frames(app, client, setup):
    project, headers = setup
    volume = np.random.default_rng(1).integers(0, 500, (6, 9, 11)).astype(np.int16)  # (z, y, x) as ITK gives it
    write_dicom_series(Path(app.config["DATA_ROOT"]) / "v/dicom", volume, SERIES)
    frame = _frame_for(project, "dicom", "v/dicom/slice000.dcm")
    assert frame.shape == [11, 9, 6] and frame.orientation == "LPS"
    image = _nifti(client.get(f"/api/v1/frames/{frame.id}/volume", headers=headers).data)
    assert image.shape == (11, 9, 6)
    expected = np.transpose(volume, (2, 1, 0))[::-1, ::-1, :]
    assert np.array_equal(np.asanyarray(image.dataobj), expected)
    assert np.allclose(image.header.get_zooms(), (0.8, 0.9, 2.5), atol=1e-3)


def test_a_dicom_series_changed_in_another_file_is_read_again(app, client, setup):
    """The frame names slice000.dcm (its checksum is that file's); a change to slice004.dcm must
    still give a new volume, slice, ETag and page URL, never the stale cached copy."""
    project, headers = setup
    folder = Path(app.config["DATA_ROOT"]) / "v/series"
    volume = np.random.default_rng(2).integers(0, 500, (6, 9, 11)).astype(np.int16)
    write_dicom_series(folder, volume, SERIES)
    frame = _frame_for(project, "series", "v/series/slice000.dcm")
    url = f"/api/v1/frames/{frame.id}"
    first = client.get(f"{url}/volume", headers=headers)
    first.close()
    first_slice = client.get(f"{url}/slice?axis=axial&index=4&window=500&level=250", headers=headers)
    first_page = client.get(f"/scans/{frame.scan_id}/context", headers=headers).get_json()["frames"][0]
    untouched = (folder / "slice000.dcm").read_bytes()

    changed = volume.copy()
    changed[4] = 999  # only the fifth plane, stored in slice004.dcm
    write_dicom_series(folder, changed, SERIES, planes=[4])
    assert (folder / "slice000.dcm").read_bytes() == untouched  # the named file (and its checksum) is the same
    stamp = (folder / "slice004.dcm").stat().st_mtime_ns + 10**9  # even on a coarse-clock file system
    os.utime(folder / "slice004.dcm", ns=(stamp, stamp))

    second = client.get(f"{url}/volume", headers=headers)
    assert second.status_code == 200 and second.headers["ETag"] != first.headers["ETag"]
    data = np.asanyarray(_nifti(second.data).dataobj)
    assert np.array_equal(data, np.transpose(changed, (2, 1, 0))[::-1, ::-1, :])
    # the old ETag no longer matches: a revalidating browser gets the new volume, not a 304
    revalidated = client.get(f"{url}/volume", headers={**headers, "If-None-Match": first.headers["ETag"]})
    assert revalidated.status_code == 200
    revalidated.close()
    second_slice = client.get(f"{url}/slice?axis=axial&index=4&window=500&level=250", headers=headers)
    assert second_slice.headers["ETag"] != first_slice.headers["ETag"]
    assert np.asarray(Image.open(io.BytesIO(second_slice.data))).min() == 255  # 999 is above the window
    assert np.asarray(Image.open(io.BytesIO(first_slice.data))).min() < 255
    second_page = client.get(f"/scans/{frame.scan_id}/context", headers=headers).get_json()["frames"][0]
    assert second_page["volume_url"] != first_page["volume_url"]  # a new URL: the private max-age cannot hide it
    # unchanged files keep their key: the cache is not rebuilt on every request
    assert client.get(f"{url}/volume", headers={**headers, "If-None-Match": second.headers["ETag"]}).status_code == 304


def test_outsiders_get_404_for_frame_data(factory, client, setup):
    project, _ = setup
    frame_scan = factory.scan(project, "e", "s")
    frame = db.session.scalar(select(Frame).where(Frame.scan_id == frame_scan.id))
    factory.member(factory.project("other"), "admin", "stranger")
    headers = token_headers(client, "stranger")
    for endpoint in ("volume", "preview", "slice", "download", "geometry"):
        assert client.get(f"/api/v1/frames/{frame.id}/{endpoint}", headers=headers).status_code == 404


def test_the_scan_page_offers_saliency_of_each_champion_output(app, client, factory, setup):
    from app.db import ModelVersion

    project, headers = setup
    _write_lps_nifti(app, "v/plain.nii.gz")
    frame = _frame_for(project, "salient", "v/plain.nii.gz")
    context = client.get(f"/scans/{frame.scan_id}/context", headers=headers).get_json()
    assert context["frames"][0]["saliency_url"] is None and context["saliency_outputs"] == []
    db.session.add(ModelVersion(project_id=project.id, registry_name=project.model_name, version="2",
                                alias="champion", output_map=[{"kind": "usable", "key": "usable", "entry_id": None}]))
    db.session.commit()
    context = client.get(f"/scans/{frame.scan_id}/context", headers=headers).get_json()
    assert context["frames"][0]["saliency_url"].endswith(f"/frames/{frame.id}/saliency")
    assert context["saliency_outputs"] == [{"key": "usable", "label": "Usable"}]


def test_a_first_read_past_the_wait_answers_503_with_retry_after_then_the_volume(app, client, setup, monkeypatch):
    """The viewer's first read of a big file is built off the request: the request waits at most
    VIEW_PREPARE_WAIT_S, then says when to ask again, and the build goes on."""
    import threading

    from app.services import volumes

    project, headers = setup
    _write_lps_nifti(app, "slow/a.nii.gz")
    frame = _frame_for(project, "slow", "slow/a.nii.gz")
    release, build = threading.Event(), volumes._build

    def slow_build(*args, **kwargs):
        release.wait(10)
        return build(*args, **kwargs)

    monkeypatch.setattr(volumes, "_build", slow_build)
    app.config["VIEW_PREPARE_WAIT_S"] = 0.2
    waiting = client.get(f"/api/v1/frames/{frame.id}/preview", headers=headers)
    assert waiting.status_code == 503 and waiting.headers["Retry-After"] == "2"
    assert "being prepared" in waiting.get_json()["detail"]
    release.set()
    app.config["VIEW_PREPARE_WAIT_S"] = 10
    ready = client.get(f"/api/v1/frames/{frame.id}/preview", headers=headers)
    assert ready.status_code == 200 and ready.data[:2] == b"\x1f\x8b"
