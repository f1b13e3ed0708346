"""Resource limits: decompression bombs refused on their header, deep JSON bodies refused with a 400,
imported text held to the API's lengths."""
from __future__ import annotations

import io
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.db import Experiment, Frame, Scan, db
from app.services import imaging
from app.services.errors import InvalidInput
from app.services.transfer import importer
from tests.app.transfer_helpers import counts, write_csv, write_json
from tests.factories import token_headers

GIB_SIDE = 1024  # 1024^3 one-byte voxels: 1 GiB decompressed
_CHUNK = 1 << 24


def _gzip(prefix: bytes, zeros: int) -> bytes:
    """One gzip member of ``prefix`` then ``zeros`` zero bytes, built without compressing them all:
    after a full flush deflate starts afresh, so one compressed 16 MiB block of zeros repeats."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(_CHUNK)) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(zeros // _CHUNK):
        crc = zlib.crc32(bytes(_CHUNK), crc)
    trailer = (crc & 0xFFFFFFFF).to_bytes(4, "little") + ((len(prefix) + zeros) & 0xFFFFFFFF).to_bytes(4, "little")
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head + block * (zeros // _CHUNK) + b"\x03\x00" + trailer


def nifti_bomb() -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape((GIB_SIDE,) * 3)
    header.set_data_dtype(np.uint8)
    header["vox_offset"] = 352
    return _gzip(header.binaryblock + bytes(4), GIB_SIDE**3)


def nrrd_bomb(sizes: str = f"{GIB_SIDE} {GIB_SIDE} {GIB_SIDE}", zeros: int = GIB_SIDE**3) -> bytes:
    header = f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {sizes}\nencoding: gzip\n\n".encode()
    return header + _gzip(b"", zeros)


def _status_kb(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/self/status")


def _measured(call):
    """(answer, seconds, MB of peak memory growth) of one call: the peak resident size is reset first
    (Linux's clear_refs), so even memory that is freed again counts."""
    Path("/proc/self/clear_refs").write_text("5")
    before, start = _status_kb("VmRSS"), time.perf_counter()
    answer = call()
    seconds = time.perf_counter() - start
    return answer, seconds, (_status_kb("VmHWM") - before) / 1024


@pytest.fixture
def reviewer(client, factory):
    project = factory.project("Bombs")
    factory.member(project, "tier1", "rev1")
    return project, token_headers(client, "rev1")


def _upload(client, project, headers, content: bytes, filename: str):
    return client.post("/api/v1/frames", headers=headers, content_type="multipart/form-data", data={
        "project": str(project.id), "experiment": "e", "scan_name": "s", "frame_number": "0",
        "file": (io.BytesIO(content), filename)})


@pytest.mark.parametrize("filename, make, setting", [
    ("bomb.nii.gz", nifti_bomb, "QCLOOP_IMAGE_MAX_VOXELS"),
    ("bomb.nrrd", nrrd_bomb, "QCLOOP_IMAGE_MAX_VOXELS"),
])
def test_a_one_megabyte_bomb_is_refused_at_upload_in_under_a_second(client, reviewer, filename, make, setting):
    project, headers = reviewer
    content = make()
    assert len(content) < 2 * 1024 * 1024
    answer, seconds, peak_mb = _measured(lambda: _upload(client, project, headers, content, filename))
    assert answer.status_code == 400, answer.get_json()
    assert setting in answer.get_json()["detail"] and "1073741824 voxels" in answer.get_json()["detail"]
    assert seconds < 1.0 and peak_mb < 100, (seconds, peak_mb)
    assert db.session.query(Frame).count() == 0


def test_a_header_declaring_100000_cubed_is_refused_by_its_longest_axis(app, tmp_path):
    path = tmp_path / "huge.nrrd"
    path.write_bytes(nrrd_bomb("100000 100000 100000", 0))
    with pytest.raises(InvalidInput, match="QCLOOP_IMAGE_MAX_AXIS"):
        imaging.read_info(path)


def test_compressed_data_beyond_what_the_header_declares_is_not_inflated(app, tmp_path):
    path = tmp_path / "small-header.nrrd"
    path.write_bytes(nrrd_bomb("8 8 8", 256 * 1024 * 1024))
    info = imaging.read_info(path)  # the header alone is fine
    assert info.shape == [8, 8, 8]

    def refused() -> None:
        with pytest.raises(InvalidInput, match="more data than the header declares"):
            imaging.load_image(path)

    _, seconds, peak_mb = _measured(refused)
    assert seconds < 1.0 and peak_mb < 20


def test_the_byte_limit_names_its_setting(make_app, tmp_path):
    app = make_app(IMAGE_MAX_MB=1)
    path = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((80, 80, 80), np.float32), np.eye(4)), str(path))
    with app.app_context():
        with pytest.raises(InvalidInput, match=r"2 MB of voxel data is over the limit of 1 MB \(QCLOOP_IMAGE_MAX_MB\)"):
            imaging.read_info(path)


def test_the_viewer_refuses_a_frame_whose_file_became_a_bomb(client, factory, reviewer):
    project, headers = reviewer
    scan = factory.scan(project, shape=(16, 16, 16))
    frame = scan.frames[0]
    from app.storage import resolve

    resolve(frame.file_location).path.write_bytes(nifti_bomb())
    answer, seconds, peak_mb = _measured(lambda: client.get(f"/api/v1/frames/{frame.id}/volume", headers=headers))
    assert answer.status_code == 422 and "QCLOOP_IMAGE_MAX_VOXELS" in answer.get_json()["detail"]
    assert seconds < 1.0 and peak_mb < 100, (seconds, peak_mb)


# --- JSON bodies ---------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


def test_deeply_nested_json_is_a_400_everywhere(client, factory, reviewer):
    project, _ = reviewer
    factory.user("root", superuser=True)
    headers = token_headers(client, "root")
    experiment = Experiment(project_id=project.id, name="e1")
    db.session.add(experiment)
    db.session.commit()
    for url in (f"/api/v1/experiments/{experiment.id}/note",  # a JSON object read by the view
                f"/api/v1/projects/{project.id}/decision-options",  # a schema-validated body
                f"/api/v1/projects/{project.id}/export",
                "/api-token-auth/"):
        answer = client.post(url, data=DEEP, content_type="application/json", headers=headers)
        assert answer.status_code == 400, (url, answer.status_code, answer.get_data(as_text=True)[:200])
        assert answer.get_json()["error"] == "invalid" and "nested" in answer.get_json()["detail"]


# --- import text limits --------------------------------------------------------------------------

def _row(**changes):
    row = {"project_name": "Site", "experiment_name": "v1", "scan_name": "a", "scan_type": "T1", "frame_number": 0,
           "file_location": "site/a.nii.gz", "experiment_notes": "", "subject_id": "", "session_id": "",
           "scan_link": "", "last_decision": "U", "last_decision_creator": "", "last_decision_note": "",
           "last_decision_created": "", "identified_artifacts": "", "location_of_interest": ""}
    row.update(changes)
    return list(row.values())


@pytest.mark.parametrize("column, value, limit", [
    ("experiment_notes", "n" * 3001, 3000),
    ("last_decision_note", "n" * 3001, 3000),
    ("scan_name", "s" * 256, 255),
    ("experiment_name", "e" * 256, 255),
    ("subject_id", "x" * 256, 255),
    ("scan_link", "http://x/" + "l" * 2000, 2000),
    ("last_decision_creator", "c" * 255, 254),
])
def test_import_text_over_the_api_limits_is_refused_with_row_and_field(factory, tmp_path, column, value, limit):
    project = factory.project("Site")
    factory.nifti("site/a.nii.gz", shape=(8, 8, 8))
    before = counts()
    source = write_csv(tmp_path / "long.csv", [_row(), _row(frame_number=1, **{column: value})])
    with pytest.raises(InvalidInput) as refused:
        importer.import_file(source, project=project)
    db.session.rollback()
    assert f"row 3, field {column}: longer than {limit} characters" in refused.value.message
    assert refused.value.details["field"] == column
    assert counts() == before


def test_import_of_a_long_project_name_and_json_names_the_place(factory, tmp_path):
    before = counts()
    long_name = "p" * 256
    source = write_csv(tmp_path / "project.csv", [_row(project_name=long_name)])
    with pytest.raises(InvalidInput, match="row 2, field project_name: longer than 255 characters"):
        importer.import_file(source, project=None)
    db.session.rollback()
    body = {"projects": {"Site": {"experiments": {"v1": {"notes": "n" * 3001, "scans": {}}}}}}
    with pytest.raises(InvalidInput, match=r"field notes: longer than 3000 characters"):
        importer.import_file(write_json(tmp_path / "site.json", body), project=None)
    db.session.rollback()
    assert counts() == before


def test_import_text_at_the_limits_is_written(factory, tmp_path):
    project = factory.project("Site")
    factory.nifti("site/a.nii.gz", shape=(8, 8, 8))
    source = write_csv(tmp_path / "full.csv", [_row(experiment_notes="n" * 3000, scan_name="s" * 255,
                                                    last_decision_note="d" * 3000)])
    importer.import_file(source, project=project)
    db.session.commit()
    assert db.session.query(Experiment).one().note == "n" * 3000
    assert db.session.query(Scan).one().name == "s" * 255
