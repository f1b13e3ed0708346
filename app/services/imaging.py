"""Reading image headers: shape, spacing and orientation of a frame file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib

from app.services.errors import InvalidInput

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class ImageInfo:
    shape: list[int]
    spacing: list[float]
    orientation: str


def read_info(path: Path) -> ImageInfo:
    """Header facts of a NIfTI file; InvalidInput when it is not a readable image."""
    name = path.name.lower()
    if not name.endswith(NIFTI_SUFFIXES):
        raise InvalidInput(f"{path.name}: unsupported image format (expected .nii or .nii.gz)")
    try:
        image = nib.load(str(path))
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for bad files
        raise InvalidInput(f"{path.name}: not a readable NIfTI image ({err})") from err
    shape = [int(n) for n in image.shape]
    spacing = [round(float(z), 6) for z in image.header.get_zooms()[: len(shape)]]
    orientation = "".join(nib.aff2axcodes(image.affine))
    return ImageInfo(shape, spacing, orientation)
