"""Frame locations never resolve outside the allowed roots."""
import os

import pytest

from app.storage import LocalLocation, Roots, S3Location, StorageError, relative_location, resolve


@pytest.fixture
def roots(tmp_path) -> Roots:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.nii.gz").write_bytes(b"x")
    extra = tmp_path / "archive"
    extra.mkdir()
    return Roots.from_config({"DATA_ROOT": str(data), "ALLOWED_ROOTS": [str(extra), "s3://bucket/qc"]})


def test_relative_absolute_and_file_uri_resolve_inside_roots(roots):
    expected = roots.data_root / "sub" / "a.nii.gz"
    assert resolve("sub/a.nii.gz", roots) == LocalLocation(expected)
    assert resolve(str(expected), roots) == LocalLocation(expected)
    assert resolve(f"file://{expected}", roots) == LocalLocation(expected)
    assert resolve(str(roots.local[1] / "b.nii"), roots) == LocalLocation(roots.local[1] / "b.nii")
    assert relative_location(expected, roots) == "sub/a.nii.gz"


@pytest.mark.parametrize("location", [
    "../outside.nii.gz", "sub/../../outside.nii.gz", "/etc/passwd", "file:///etc/passwd",
    "file://otherhost/data/a.nii", "http://example.org/a.nii", "", "sub/\x00a.nii",
    "s3://otherbucket/qc/a.nii", "s3://bucket/elsewhere/a.nii", "s3://bucket/qc/../x.nii", "s3://bucket",
])
def test_locations_outside_roots_are_refused(roots, location):
    with pytest.raises(StorageError):
        resolve(location, roots)


def test_symlink_pointing_out_is_refused(roots, tmp_path):
    secret = tmp_path / "secret.nii"
    secret.write_bytes(b"s")
    os.symlink(secret, roots.data_root / "sub" / "link.nii")
    with pytest.raises(StorageError, match="outside the allowed roots"):
        resolve("sub/link.nii", roots)


def test_s3_location_under_allowed_prefix(roots):
    assert resolve("s3://bucket/qc/site/a.nii.gz", roots) == S3Location("bucket", "qc/site/a.nii.gz")


def test_uploads_are_stored_at_their_content_path_and_never_replaced(roots):
    import hashlib
    import io

    from app.storage.identity import store

    first = store(io.BytesIO(b"abc"), 7, ".nii", roots)
    digest = hashlib.sha256(b"abc").hexdigest()
    assert first.location == f"uploads/7/{digest[:2]}/{digest}.nii" and first.created
    assert first.path.read_bytes() == b"abc" and first.path.is_relative_to(roots.data_root)
    again = store(io.BytesIO(b"abc"), 7, ".nii", roots)
    assert again.location == first.location and not again.created
    assert sorted(p.name for p in first.path.parent.parent.iterdir()) == [digest[:2]]
