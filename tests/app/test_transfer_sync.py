"""The sync cycle as a service: which files of a site's tree the default pattern and a custom one pick up."""
from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np
import pytest
from flask import current_app

from app.db import db
from app.services.errors import InvalidInput
from app.services.transfer import sync
from tests.app.transfer_helpers import snapshot


def test_default_pattern_takes_nrrd_and_any_case(factory):
    project = factory.project("Site")
    db.session.commit()
    root = Path(current_app.config["DATA_ROOT"]) / "repo"
    factory.nifti("repo/visit1/sub-01_T1_0.nii.gz", shape=(8, 8, 8))
    factory.nifti("repo/visit1/sub-01_T1_1.NII.GZ", shape=(8, 8, 8))
    (root / "visit2").mkdir(parents=True)
    nrrd.write(str(root / "visit2" / "sub-02_t2.nrrd"), np.zeros((8, 8, 8), dtype=np.uint8),
               {"space": "left-posterior-superior", "space directions": np.eye(3), "space origin": np.zeros(3)})
    (root / "visit2" / "sub-02_t2.json").write_text("{}")  # a sidecar, not an image

    report = sync.sync(project, root)
    db.session.commit()
    assert sorted(report["added"]) == ["repo/visit1/sub-01_T1_0.nii.gz", "repo/visit1/sub-01_T1_1.NII.GZ",
                                       "repo/visit2/sub-02_t2.nrrd"]
    scans = snapshot()["Site"]["experiments"]
    assert scans["visit1"]["scans"]["sub-01"]["frames"] == {0: "repo/visit1/sub-01_T1_0.nii.gz",
                                                            1: "repo/visit1/sub-01_T1_1.NII.GZ"}
    assert scans["visit2"]["scans"]["sub-02"]["type"] == "T2"
    assert Path(report["export"]).is_file() and report["backup"] is None

    again = sync.sync(project, root)
    db.session.commit()
    assert again["added"] == [] and again["summary"] is None and Path(again["backup"]).is_file()


def test_custom_pattern_and_a_frame_that_is_not_a_number(factory):
    project = factory.project("Site")
    db.session.commit()
    root = Path(current_app.config["DATA_ROOT"]) / "bids"
    factory.nifti("bids/sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz", shape=(8, 8, 8))
    factory.nifti("bids/sub-01/ses-1/anat/sub-01_ses-1_run-x_T1w.nii.gz", shape=(8, 8, 8))
    pattern = r"^(?P<scan>sub-[^/]+)/(?P<experiment>ses-[^/]+)/anat/.*_run-(?P<frame>[^_]+)_T1w\.nii\.gz$"

    report = sync.sync(project, root, pattern)
    db.session.commit()
    assert report["added"] == ["bids/sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz"]
    assert report["skipped"] == ["sub-01/ses-1/anat/sub-01_ses-1_run-x_T1w.nii.gz: frame 'x' is not a whole number"]
    assert snapshot()["Site"]["experiments"]["ses-1"]["scans"]["sub-01"]["frames"] == {
        1: "bids/sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz"}
    with pytest.raises(InvalidInput, match="named group"):
        sync.sync(project, root, r"(?P<scan>.*)")
