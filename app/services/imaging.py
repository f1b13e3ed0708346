"""Reading images: NIfTI, NRRD and DICOM series as one NIfTI-like image with a RAS affine.

Every format becomes a ``nibabel.Nifti1Image`` whose voxel axes are the file's own axes
(i, j, k as stored) and whose affine maps them to RAS millimetres, so that the rest of
qcloop (header facts, locations, the viewer cache) deals with one representation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from app.services.errors import InvalidInput

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or a DICOM series (a folder, or one of its .dcm files)"
# NRRD spaces whose first two axes point the opposite way to RAS.
_LPS_SPACES = {"left-posterior-superior", "lps"}
_RAS_SPACES = {"right-anterior-superior", "ras"}


@dataclass(frozen=True)
class ImageInfo:
    shape: list[int]
    spacing: list[float]
    orientation: str


def image_format(path: Path) -> str:
    """'nifti', 'nrrd' or 'dicom' from the name (a folder is a DICOM series); InvalidInput otherwise."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    if name.endswith(DICOM_SUFFIXES) or path.is_dir():
        return "dicom"
    raise InvalidInput(f"{path.name}: unsupported image format (expected {SUPPORTED})")


def load_image(path: Path) -> nib.Nifti1Image:
    """The image with a RAS affine; InvalidInput when the file is missing or not a readable image."""
    kind = image_format(path)
    try:
        if kind == "nifti":
            image = nib.load(str(path))
            if not isinstance(image, nib.Nifti1Image):  # NIfTI-2 and friends: same data, NIfTI-1 header
                image = nib.Nifti1Image(image.dataobj, image.affine)
            return image
        if kind == "nrrd":
            return _load_nrrd(path)
        return _load_dicom_series(path)
    except InvalidInput:
        raise
    except Exception as err:  # noqa: BLE001 - the readers raise many types for bad files
        raise InvalidInput(f"{path.name}: not a readable {kind.upper() if kind != 'nifti' else 'NIfTI'} "
                           f"image ({err})") from err


def _load_nrrd(path: Path) -> nib.Nifti1Image:
    import nrrd

    data, header = nrrd.read(str(path))  # index order "F": data[i, j, k] with i the fastest axis
    if data.ndim < 3:
        raise InvalidInput(f"{path.name}: expected a 3-D (or 4-D) image, got {data.ndim} dimensions")
    space = str(header.get("space", "")).lower()
    directions = header.get("space directions")
    affine = np.eye(4)
    if directions is not None:
        spatial = [np.asarray(d, dtype=float) for d in directions if d is not None and not np.isnan(d).any()]
        if len(spatial) != 3:
            raise InvalidInput(f"{path.name}: expected three spatial axes in 'space directions'")
        affine[:3, :3] = np.stack(spatial, axis=1)
        origin = header.get("space origin")
        if origin is not None:
            affine[:3, 3] = np.asarray(origin, dtype=float)
        if space in _LPS_SPACES:
            affine[:2, :] *= -1
        elif space and space not in _RAS_SPACES:
            raise InvalidInput(f"{path.name}: unsupported NRRD space {space!r} (expected RAS or LPS)")
    elif header.get("spacings") is not None:
        affine[:3, :3] = np.diag([float(s) for s in header["spacings"][:3]])
    # Non-spatial axes (e.g. a leading vector/time axis) go last, as in NIfTI.
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    if directions is not None and len(kinds) == data.ndim:
        spatial_axes = [n for n, d in enumerate(directions) if d is not None and not np.isnan(d).any()]
        other_axes = [n for n in range(data.ndim) if n not in spatial_axes]
        data = np.transpose(data, spatial_axes + other_axes)
    return nib.Nifti1Image(np.ascontiguousarray(data), affine)


def _load_dicom_series(path: Path) -> nib.Nifti1Image:
    import SimpleITK as sitk

    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        raise InvalidInput(f"{path.name}: DICOM series folder does not exist")
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    if not series_ids:
        raise InvalidInput(f"{path.name}: no DICOM series found")
    series = series_ids[0]
    if path.is_file():  # the series this file belongs to
        file_reader = sitk.ImageFileReader()
        file_reader.SetFileName(str(path))
        file_reader.ReadImageInformation()
        if file_reader.HasMetaDataKey("0020|000e"):
            series = file_reader.GetMetaData("0020|000e").strip()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series))
    image = reader.Execute()
    # SimpleITK arrays are (z, y, x); NIfTI voxel order is (x, y, z). ITK's physical space is LPS.
    data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0) + tuple(range(3, image.GetDimension())))
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return nib.Nifti1Image(np.ascontiguousarray(data), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)


def read_info(path: Path) -> ImageInfo:
    """Header facts (shape, spacing, axis codes) of a supported image; InvalidInput when unreadable."""
    image = load_image(path)
    shape = [int(n) for n in image.shape]
    spacing = [round(float(z), 6) for z in image.header.get_zooms()[: len(shape)]]
    orientation = "".join(nib.aff2axcodes(image.affine))
    return ImageInfo(shape, spacing, orientation)
