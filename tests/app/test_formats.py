"""Image formats held to one list (``imaging.FORMATS``) and their edge cases, the way users meet them: a
MIQA CSV import, an upload, the viewer and ``/download``. Every image is written here with nibabel,
pynrrd or SimpleITK (DICOM)."""
from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from sqlalchemy import func, select

from app.db import Frame, Scan, db
from app.services import imaging
from app.services.errors import InvalidInput
from tests.app.transfer_helpers import write_csv
from tests.factories import token_headers, write_dicom_series

T1_SERIES, T2_SERIES = "1.2.826.0.1.3680043.2.1125.7.1", "1.2.826.0.1.3680043.2.1125.7.2"


@pytest.fixture
def site(factory, client):
    admin = factory.user("formats-admin")
    project = factory.project("Formats", creator=admin)
    factory.member(project, "tier1", "formats-rev")
    return project, token_headers(client, admin.username), token_headers(client, "formats-rev")


@pytest.fixture
def root(app) -> Path:
    return Path(app.config["DATA_ROOT"])


def _import(client, project, headers, tmp_path, locations: dict[str, str]):
    """A MIQA CSV import of one scan per location (scan name: its key)."""
    rows = [["Formats", "e", scan, "T1", 0, location] + [""] * 10 for scan, location in locations.items()]
    content = write_csv(tmp_path / "import.csv", rows).read_bytes()
    return client.post(f"/api/v1/projects/{project.id}/import", data={"file": (io.BytesIO(content), "import.csv")},
                       headers=headers, content_type="multipart/form-data")


def _upload(client, project, headers, content: bytes, filename: str):
    return client.post("/api/v1/frames", headers=headers, content_type="multipart/form-data", data={
        "project": str(project.id), "experiment": "e", "scan_name": "uploaded", "frame_number": "0",
        "file": (io.BytesIO(content), filename)})


def _frame(scan_name: str) -> Frame:
    return db.session.scalar(select(Frame).join(Scan).where(Scan.name == scan_name))


def _volume(z: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 500, (z, 9, 11)).astype(np.int16)  # (z, y, x) as ITK has it


def _uploads_left(root: Path, project) -> list[Path]:
    return [item for item in (root / "uploads" / str(project.id)).rglob("*") if item.is_file()]


def test_a_2d_nifti_is_refused_at_import_and_upload_saying_why(client, site, root, tmp_path):
    project, admin, reviewer = site
    flat = root / "flat" / "xray.nii.gz"
    flat.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((256, 256), np.int16), np.eye(4)), str(flat))
    message = "xray.nii.gz: 2-D image (256 x 256): qcloop reviews 3-D volumes"

    imported = _import(client, project, admin, tmp_path, {"xray": "flat/xray.nii.gz"})
    assert imported.status_code == 400 and message in imported.get_json()["detail"], imported.get_json()
    uploaded = _upload(client, project, reviewer, flat.read_bytes(), "xray.nii.gz")
    assert uploaded.status_code == 400 and message in uploaded.get_json()["detail"], uploaded.get_json()
    assert db.session.scalar(select(func.count()).select_from(Frame)) == 0
    assert _uploads_left(root, project) == []  # the refused upload left no file behind


def test_a_frame_whose_file_became_2d_answers_a_clear_422(client, site, root, tmp_path):
    project, admin, reviewer = site
    path = root / "later.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.int16), np.eye(4)), str(path))
    assert _import(client, project, admin, tmp_path, {"later": "later.nii.gz"}).status_code == 200
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.int16), np.eye(4)), str(path))  # replaced in place
    answer = client.get(f"/api/v1/frames/{_frame('later').id}/volume", headers=reviewer)
    assert answer.status_code == 422 and answer.get_json()["error"] == "frame_unreadable"
    assert "2-D image (8 x 8): qcloop reviews 3-D volumes" in answer.get_json()["detail"]


def test_every_format_refuses_a_single_slice_as_2d(app, root):
    nib.save(nib.Nifti1Image(np.zeros((64, 48, 1), np.int16), np.eye(4)), str(root / "slice.nii"))
    nrrd.write(str(root / "flat.nrrd"), np.zeros((64, 48), np.int16))
    write_dicom_series(root / "one-slice", _volume(1, 0), T1_SERIES)
    for path, shape in ((root / "slice.nii", "64 x 48 x 1"), (root / "flat.nrrd", "64 x 48"),
                        (root / "one-slice" / "slice000.dcm", "11 x 9 x 1"), (root / "one-slice", "11 x 9 x 1")):
        with pytest.raises(InvalidInput, match=rf"2-D image \({shape}\): qcloop reviews 3-D volumes"):
            imaging.read_info(path)


def test_a_folder_of_two_dicom_series_is_refused_naming_each_and_each_file_reads_its_own(client, site, root,
                                                                                         tmp_path):
    project, admin, _ = site
    t1, t2 = _volume(6, 1), _volume(4, 2)
    write_dicom_series(root / "mixed", t1, T1_SERIES, description="T1 MPRAGE")
    write_dicom_series(root / "mixed", t2, T2_SERIES, description="T2 axial", name="t2-{z:02d}.dcm")

    refused = _import(client, project, admin, tmp_path, {"both": "mixed"})
    detail = refused.get_json()["detail"]
    assert refused.status_code == 400 and "mixed: 2 DICOM series in one folder" in detail, detail
    assert f'{T1_SERIES} "T1 MPRAGE" (6 files)' in detail and f'{T2_SERIES} "T2 axial" (4 files)' in detail
    assert db.session.scalar(select(func.count()).select_from(Scan)) == 0

    taken = _import(client, project, admin, tmp_path, {"t1": "mixed/slice000.dcm", "t2": "mixed/t2-00.dcm"})
    assert taken.status_code == 200, taken.get_json()
    assert _frame("t1").shape == [11, 9, 6] and _frame("t2").shape == [11, 9, 4]


def test_a_dicom_file_without_extension_is_known_by_its_preamble_alone_and_in_a_folder(client, site, root,
                                                                                       tmp_path):
    project, admin, reviewer = site
    volume = _volume(5, 3)
    write_dicom_series(root / "scanner", volume, T1_SERIES, name="IM{z:04d}")
    assert imaging.image_format(root / "scanner" / "IM0000") == "dicom"

    answer = _import(client, project, admin, tmp_path, {"alone": "scanner/IM0000", "folder": "scanner"})
    assert answer.status_code == 200, answer.get_json()
    assert _frame("alone").shape == _frame("folder").shape == [11, 9, 5]
    view = client.get(f"/api/v1/frames/{_frame('alone').id}/volume", headers=reviewer)
    image = nib.Nifti1Image.from_bytes(gzip.decompress(view.data))
    assert view.status_code == 200 and np.array_equal(np.asanyarray(image.dataobj),
                                                      np.transpose(volume, (2, 1, 0))[::-1, ::-1, :])
    download = client.get(f"/api/v1/frames/{_frame('folder').id}/download", headers=reviewer)
    assert download.status_code == 200 and "filename=scanner.zip" in download.headers["Content-Disposition"]
    assert _zip_of(download).namelist() == [f"scanner/IM{z:04d}" for z in range(5)]

    (root / "notes").mkdir()
    (root / "notes" / "README").write_text("not an image")
    refused = _import(client, project, admin, tmp_path, {"notes": "notes/README"})
    assert refused.status_code == 400 and imaging.SUPPORTED in refused.get_json()["detail"]


def _zip_of(answer) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(answer.get_data()))


def test_download_of_a_detached_nrrd_is_a_zip_of_header_and_data(client, site, root, tmp_path):
    project, admin, reviewer = site
    data = np.random.default_rng(4).integers(0, 1000, (12, 10, 8)).astype(np.int16)
    (root / "nrrd").mkdir()
    nrrd.write(str(root / "nrrd" / "t1.nhdr"), data, {"encoding": "raw", "space": "left-posterior-superior",
                                                      "space directions": np.diag([1.0, 1.5, 2.0])})
    assert sorted(item.name for item in (root / "nrrd").iterdir()) == ["t1.nhdr", "t1.raw"]
    assert _import(client, project, admin, tmp_path, {"detached": "nrrd/t1.nhdr"}).status_code == 200

    answer = client.get(f"/api/v1/frames/{_frame('detached').id}/download", headers=reviewer)
    assert answer.status_code == 200 and answer.is_streamed and answer.mimetype == "application/zip"
    assert answer.headers["Content-Disposition"] == "attachment; filename=t1.zip"
    archive = _zip_of(answer)
    assert archive.namelist() == ["t1/t1.nhdr", "t1/t1.raw"]
    archive.extractall(tmp_path / "unpacked")
    unpacked, _ = nrrd.read(str(tmp_path / "unpacked" / "t1" / "t1.nhdr"))
    assert np.array_equal(unpacked, data)  # the header finds its data file once unpacked


def test_a_detached_nrrd_whose_data_file_changed_is_read_again(client, site, root, tmp_path):
    project, admin, reviewer = site
    (root / "nrrd").mkdir()
    header = {"encoding": "raw", "space": "left-posterior-superior", "space directions": np.eye(3)}
    nrrd.write(str(root / "nrrd" / "t1.nhdr"), np.zeros((6, 5, 4), np.int16), header)
    assert _import(client, project, admin, tmp_path, {"detached": "nrrd/t1.nhdr"}).status_code == 200
    url = f"/api/v1/frames/{_frame('detached').id}/volume"
    first = client.get(url, headers=reviewer)
    (root / "nrrd" / "t1.raw").write_bytes(np.full((6, 5, 4), 7, np.int16).tobytes())  # the header is untouched
    stamp = (root / "nrrd" / "t1.raw").stat().st_mtime_ns + 10**9  # even on a coarse-clock file system
    os.utime(root / "nrrd" / "t1.raw", ns=(stamp, stamp))
    second = client.get(url, headers=reviewer)
    assert second.headers["ETag"] != first.headers["ETag"]
    assert np.asanyarray(nib.Nifti1Image.from_bytes(gzip.decompress(second.data)).dataobj).min() == 7


def test_download_of_a_dicom_series_is_a_zip_of_its_own_files_and_a_single_file_is_itself(client, site, root,
                                                                                          tmp_path):
    project, admin, reviewer = site
    write_dicom_series(root / "mixed", _volume(3, 5), T1_SERIES, description="T1")
    write_dicom_series(root / "mixed", _volume(2, 6), T2_SERIES, description="T2", name="t2-{z:02d}.dcm")
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.int16), np.eye(4)), str(root / "plain.nii.gz"))
    answer = _import(client, project, admin, tmp_path, {"t2": "mixed/t2-01.dcm", "plain": "plain.nii.gz"})
    assert answer.status_code == 200, answer.get_json()

    series = client.get(f"/api/v1/frames/{_frame('t2').id}/download", headers=reviewer)
    assert series.status_code == 200 and "filename=mixed.zip" in series.headers["Content-Disposition"]
    archive = _zip_of(series)
    assert archive.namelist() == ["mixed/t2-00.dcm", "mixed/t2-01.dcm"]  # the T2 series only, in slice order
    assert archive.read("mixed/t2-00.dcm") == (root / "mixed" / "t2-00.dcm").read_bytes()

    single = client.get(f"/api/v1/frames/{_frame('plain').id}/download", headers=reviewer)
    assert single.status_code == 200 and single.mimetype == "application/octet-stream"
    assert single.data == (root / "plain.nii.gz").read_bytes() and single.headers["ETag"]
    assert "filename=plain.nii.gz" in single.headers["Content-Disposition"]


def test_a_detached_nrrd_needs_its_data_file_beside_its_header(client, site, root, tmp_path):
    project, admin, _ = site
    (root / "nrrd").mkdir()
    (root / "secret.raw").write_bytes(bytes(12 * 10 * 8 * 2))
    header = "NRRD0004\ntype: int16\ndimension: 3\nsizes: 12 10 8\nendian: little\nencoding: raw\ndata file: {}\n\n"
    (root / "nrrd" / "gone.nhdr").write_text(header.format("gone.raw"))
    (root / "nrrd" / "escape.nhdr").write_text(header.format("../secret.raw"))
    answer = _import(client, project, admin, tmp_path, {"gone": "nrrd/gone.nhdr", "escape": "nrrd/escape.nhdr"})
    detail = answer.get_json()["detail"]
    assert answer.status_code == 400 and "gone.nhdr: its data file gone.raw does not exist" in detail
    assert "escape.nhdr: its data file ../secret.raw must lie in the header's folder or below it" in detail


def test_upload_and_import_name_the_same_formats(client, site, root, tmp_path):
    project, admin, reviewer = site
    for name in ("t1.nhdr", "IM0001.dcm", "IM0001"):
        refused = _upload(client, project, reviewer, b"not read", name)
        detail = refused.get_json()["detail"]
        assert refused.status_code == 400 and imaging.UPLOADABLE in detail and imaging.SEVERAL_FILES in detail
        assert all(found.label in detail for found in imaging.FORMATS.values())
    (root / "scan.txt").write_text("not an image")
    imported = _import(client, project, admin, tmp_path, {"text": "scan.txt"})
    assert imported.status_code == 400 and imaging.SUPPORTED in imported.get_json()["detail"]
    assert all(found.label in imaging.SUPPORTED for found in imaging.FORMATS.values())

    # an .nrrd whose voxels sit in another file is not a whole volume in one file
    detached = b"NRRD0004\ntype: int16\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: t1.raw\n\n"
    refused = _upload(client, project, reviewer, detached, "t1.nrrd")
    assert refused.status_code == 400 and "t1.raw" in refused.get_json()["detail"]
    assert db.session.scalar(select(func.count()).select_from(Frame)) == 0 and _uploads_left(root, project) == []
