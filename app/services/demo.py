"""The demo project: phantom brain volumes with known artifacts, written as NIfTI under the data root."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from flask import current_app
from sqlalchemy import select

from app.db import Frame, db
from app.services import frames as frame_service
from app.services import projects, users, vocabulary
from app.services.phantoms import add_artifact, brain_phantom, to_uint16
from app.storage import relative_location

DEMO_PROJECT = "Demo brain QC"
# experiment -> [(scan name, scan type, frames, artifact or None)]
DEMO_TREE = {
    "site-A-2026-01": [("sub-01_T1w", "T1", 1, None), ("sub-02_T1w", "T1", 2, "ghosting"),
                       ("sub-03_T1w", "T1", 1, "inhomogeneity"), ("sub-04_T2w", "T2", 2, None),
                       ("sub-05_T1w", "T1", 1, "noise")],
    "site-A-2026-02": [("sub-06_T1w", "T1", 3, None), ("sub-07_T1w", "T1", 1, "wraparound"),
                       ("sub-08_FLAIR", "FLAIR", 1, "truncation"), ("sub-09_T1w", "T1", 2, None)],
    "site-B-2026-01": [("sub-10_T1w", "T1", 1, "ghosting"), ("sub-11_T2w", "T2", 1, None),
                       ("sub-12_T1w", "T1", 2, "inhomogeneity"), ("sub-13_T1w", "T1", 1, None)],
}
VOXEL_MM = (3.0, 3.0, 3.0)


def write_phantom(path: Path, seed: int, artifact: str | None) -> None:
    volume = brain_phantom(seed=seed)
    if artifact:
        volume = add_artifact(volume, artifact, severity=0.9, seed=seed)
    affine = np.diag([*VOXEL_MM, 1.0])
    affine[:3, 3] = -np.array(volume.shape) * np.array(VOXEL_MM) / 2
    image = nib.Nifti1Image(to_uint16(volume), affine)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.nii.gz")
    nib.save(image, tmp)
    tmp.replace(path)


def build_demo(admin_username: str, admin_password: str) -> dict:
    """Create what is missing of the demo (admin, project, files, rows); reuse what exists."""
    vocabulary.seed_defaults()
    admin = users.find_user(admin_username)
    admin_created = admin is None
    if admin_created:
        admin = users.create_user(admin_username, admin_password, is_superuser=True)
    project = projects.find_project(DEMO_PROJECT) or projects.create_project(DEMO_PROJECT, admin)
    data_root = Path(current_app.config["DATA_ROOT"])
    created, seed, counts = 0, 0, {"experiments": 0, "scans": 0, "frames": 0}
    for experiment_name, scans in DEMO_TREE.items():
        experiment = projects.get_or_create_experiment(project, experiment_name)
        counts["experiments"] += 1
        for scan_name, scan_type, n_frames, artifact in scans:
            subject = scan_name.split("_")[0]
            scan = projects.get_or_create_scan(experiment, scan_name, scan_type=scan_type, subject_id=subject,
                                               session_id=experiment_name)
            counts["scans"] += 1
            have = set(db.session.scalars(select(Frame.frame_number).where(Frame.scan_id == scan.id)))
            for number in range(n_frames):
                seed += 1
                counts["frames"] += 1
                if number in have:
                    continue
                path = data_root / "demo" / experiment_name / f"{scan_name}_frame{number}.nii.gz"
                if not path.exists():
                    write_phantom(path, seed, artifact)
                frame_service.register_frame(scan, number, relative_location(path))
                created += 1
    return {"project": project.name, "admin_created": admin_created, "created_frames": created, **counts}

