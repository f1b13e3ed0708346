"""Plain training records over small phantom volumes (no database): clean vs ghosting scans."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.services.phantoms import add_artifact, brain_phantom, to_uint16
from training.data import DecisionRecord, FrameRecord, Output, ScanRecord

GHOSTING = Output("artifact", "ghosting_motion", entry_id=6)
LESIONS = Output("artifact", "lesions", entry_id=2)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _two_threads(two_torch_threads):
    """Every test here runs networks."""


def write_volume(path: Path, seed: int, artifact: str | None, shape=(32, 32, 32)) -> str:
    volume = brain_phantom(shape, seed=seed)
    if artifact:
        volume = add_artifact(volume, artifact, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(to_uint16(volume), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ghosting_records(folder: Path, n: int, shape=(32, 32, 32)) -> list[ScanRecord]:
    """n scans alternating clean (usable, ghosting absent) and ghosted (unusable, ghosting present)."""
    records = []
    for index in range(n):
        ghosted = index % 2 == 1
        path = folder / f"scan{index}.nii.gz"
        checksum = write_volume(path, seed=100 + index, artifact="ghosting" if ghosted else None, shape=shape)
        decision = DecisionRecord("unusable" if ghosted else "usable", "tier2", T0 + timedelta(minutes=index),
                                  {GHOSTING.entry_id: "present" if ghosted else "absent", LESIONS.entry_id: "undefined"},
                                  decision_id=index)
        records.append(ScanRecord(index, f"subject{index}", (FrameRecord(index, str(path), checksum),), (decision,)))
    return records
