"""The demo project: phantom brain volumes with known artifacts, written as NIfTI under the data root.

Besides the scans waiting for review, the demo holds an earlier experiment already reviewed by
two demo reviewers (accounts named as such, without a password), enough for a small model to
train in a couple of minutes on a CPU: :func:`train_demo_model` trains it, and as the project's first
champion it scores every scan, so a new user sees suggestions stamped with a version at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from flask import current_app
from sqlalchemy import select

from app.db import Frame, boundary, db
from app.services import frames as frame_service
from app.services import projects, users, vocabulary
from app.services.loaders import load
from app.services.phantoms import add_artifact, brain_phantom, to_uint16
from app.storage import relative_location

if TYPE_CHECKING:
    from app.services.training import RunStatus

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
# The reviewed history: 32 scans, every other one with an artifact (phantom name -> vocabulary key).
HISTORY_EXPERIMENT = "site-A-2025-reviewed"
HISTORY_SCANS = 32
HISTORY_ARTIFACTS = {"ghosting": "ghosting_motion", "inhomogeneity": "inhomogeneity",
                     "wraparound": "swap_wraparound", "truncation": "truncation_artifact"}
DEMO_REVIEWERS = (("demo-reviewer-tier1", "tier1"), ("demo-reviewer-tier2", "tier2"))
# A run that fits the demo in a couple of minutes on a CPU: a small ResNet on 32^3 volumes, 3-fold
# cross-validated, at least 3 labels of each class. On the demo's history (bench/demo_training.py, 2 idle cores)
# it held out a usable AUC of 0.84-0.91 in 45 s of training, where MIQA's classifier on 64^3 took 77 s for 0.76.
DEMO_TRAINING = {"epochs": 10, "min_labels": 3, "evaluation": "cv", "folds": 3, "arch": "resnet_small",
                 "spatial_size": [32, 32, 32]}


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


@dataclass(frozen=True)
class DemoSummary:
    """The demo project as built: its name, whether its admin was created, its experiments, scans and
    frames, and how many of those frames this build added."""

    project: str
    admin_created: bool
    experiments: int
    scans: int
    frames: int
    created_frames: int


def build_demo(admin_username: str, admin_password: str) -> DemoSummary:
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
    created += _build_history(project, data_root, counts)
    return DemoSummary(project=project.name, admin_created=admin_created, created_frames=created, **counts)


def _build_history(project, data_root: Path, counts: dict[str, int]) -> int:
    """The reviewed experiment: phantoms with and without artifacts, each with a demo reviewer's decision."""
    from app.services.decisions import record_decision

    reviewers = []
    for username, role in DEMO_REVIEWERS:
        user = users.find_user(username) or users.create_user(username, None, first_name="Demo",
                                                              last_name=f"reviewer ({role})")
        projects.set_role(project, user, role, actor=None)
        reviewers.append((user, role))
    experiment = projects.get_or_create_experiment(project, HISTORY_EXPERIMENT)
    counts["experiments"] += 1
    kinds = list(HISTORY_ARTIFACTS)
    created = 0
    for index in range(HISTORY_SCANS):
        artifact = kinds[(index // 2) % len(kinds)] if index % 2 else None
        name = f"sub-h{index + 1:02d}_T1w"
        scan = projects.get_or_create_scan(experiment, name, scan_type="T1", subject_id=name.split("_")[0],
                                           session_id=HISTORY_EXPERIMENT)
        counts["scans"] += 1
        counts["frames"] += 1
        if scan.frames:
            continue
        path = data_root / "demo" / HISTORY_EXPERIMENT / f"{name}.nii.gz"
        if not path.exists():
            write_phantom(path, 1000 + index, artifact)
        frame_service.register_frame(scan, 0, relative_location(path))
        created += 1
        user, role = reviewers[index % len(reviewers)]
        present = [HISTORY_ARTIFACTS[artifact]] if artifact else []
        record_decision(scan, user, "UN" if artifact else "U", role=role, present=present,
                        absent=[key for key in HISTORY_ARTIFACTS.values() if key not in present],
                        note=f"demo: {artifact}" if artifact else "")
    return created


def train_demo_model(project_name: str, progress) -> RunStatus | None:
    """Train the demo's first model and let it score every scan (in this process); None when the
    project already has a model version (a second `make demo` keeps what the first built)."""
    from app.db import Job, ModelVersion, TrainingRun
    from app.services import jobs, promotion, training

    project = projects.find_project(project_name)
    if db.session.scalar(select(ModelVersion.id).where(ModelVersion.project_id == project.id).limit(1)):
        return None
    run = training.create_run(project, None, dict(DEMO_TRAINING))
    boundary.commit()
    progress(f"training the demo model (run {run.id}): a couple of minutes on a CPU")
    jobs.run_job(run.job_id)
    db.session.expire_all()
    summary = training.run_status(load(TrainingRun, run.id))
    version = summary.model_version
    if version is not None and version.alias != "champion":  # the demo shows the loop: promote it, say why
        progress(f"promoting it for the demo although {summary.report.champion_gate}")
        promotion.promote_run(project.id, run.id, None, force=True)
        summary = training.run_status(load(TrainingRun, run.id))
    for job_id in db.session.scalars(select(Job.id).where(Job.project_id == project.id, Job.state == "queued",
                                                          Job.kind.in_(("frames.checksum", "evaluation")))
                                     .order_by(Job.id)):
        progress(f"scoring the scans (job {job_id})")
        jobs.run_job(job_id)
    return summary

