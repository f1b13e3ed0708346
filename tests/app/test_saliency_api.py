"""Saliency maps as the viewer asks for them: 202 with the job on first request, then the map on the
frame's grid; an output the champion lacks or a project without a champion refused."""
from __future__ import annotations

import gzip
from datetime import timedelta
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.db import Job, db
from app.services import model_versions
from tests.conftest import SHARED_DATA
from tests.factories import token_headers

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def test_saliency_is_made_by_a_job_then_served_on_the_frames_grid(app, client, factory):
    admin = factory.user(superuser=True)
    headers = token_headers(client, admin.username)
    project = factory.project("Salient", creator=admin)
    scan = factory.scan(project, name="s0", shape=(40, 36, 30))
    frame = scan.frames[0]
    url = f"/api/v1/frames/{frame.id}/saliency?output=ghosting_motion"
    none_yet = client.get(url, headers=headers)
    assert none_yet.status_code == 409 and "no champion" in none_yet.get_json()["detail"]

    model_versions.import_miqa(project, SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth", admin)
    started = client.get(url, headers=headers)
    assert started.status_code == 202, started.get_json()
    job = started.get_json()["job"]
    assert job["kind"] == "saliency"
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=headers).get_json()["state"] == "succeeded"
    served = client.get(url, headers=headers)
    assert served.status_code == 200
    image = nib.Nifti1Image.from_bytes(gzip.decompress(served.data))
    assert image.shape == (40, 36, 30)  # the frame's voxels (the viewer's RAS copy of this RAS file)
    values = np.asarray(image.dataobj)
    assert 0.0 <= values.min() and values.max() <= 1.0

    unknown = client.get(f"/api/v1/frames/{frame.id}/saliency?output=halo", headers=headers)
    assert unknown.status_code == 400 and "no output 'halo'" in unknown.get_json()["detail"]
    assert client.get("/api/v1/frames/999999/saliency?output=usable", headers=headers).status_code == 404
    assert io.BytesIO(served.data).read(2) == b"\x1f\x8b"


def test_a_frame_that_cannot_be_read_answers_why_and_stores_nothing(app, client, factory):
    admin = factory.user(superuser=True)
    headers = token_headers(client, admin.username)
    project = factory.project("Unreadable", creator=admin)
    scan = factory.scan(project, name="s0")
    model_versions.import_miqa(project, SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth", admin)
    path = Path(app.config["DATA_ROOT"]) / project.name / "exp1" / "s0_0.nii.gz"
    with open(path, "wb") as handle:
        handle.write(b"\x1f\x8b broken")
    url = f"/api/v1/frames/{scan.frames[0].id}/saliency?output=usable"
    first = client.get(url, headers=headers)
    assert first.status_code == 202 and first.get_json()["job"]["state"] == "failed"
    again = client.get(url, headers=headers)
    assert again.status_code == 422 and "could not be made" in again.get_json()["detail"]
    failed = db.session.get(Job, first.get_json()["job"]["id"])
    failed.finished_at -= timedelta(minutes=11)  # a while later (an outage may have passed): tried again
    db.session.commit()
    retried = client.get(url, headers=headers)
    assert retried.status_code == 202 and retried.get_json()["job"]["id"] != failed.id
    assert not list((Path(app.config["CACHE_DIR"]) / "saliency").glob("*.nii.gz"))
