"""Reading images: NIfTI, NRRD and DICOM series as one NIfTI-like image with a RAS affine.

Every format becomes a ``nibabel.Nifti1Image`` whose voxel axes are the file's own axes
(i, j, k as stored) and whose affine maps them to RAS millimetres, so that the rest of
qcloop (header facts, locations, the viewer cache) deals with one representation.
"""
from __future__ import annotations

import bz2
import gzip
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
from flask import current_app

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


@dataclass(frozen=True)
class ImageLimits:
    """The largest image qcloop decodes: a small file may declare a huge volume (a decompression bomb)."""

    max_voxels: int
    max_axis: int
    max_bytes: int

    @classmethod
    def from_config(cls) -> ImageLimits:
        config = current_app.config
        return cls(config["IMAGE_MAX_VOXELS"], config["IMAGE_MAX_AXIS"], config["IMAGE_MAX_MB"] * 1024 * 1024)


def check_size(name: str, shape: Sequence[int], itemsize: int) -> None:
    """Refuse (InvalidInput) an image whose header declares more than the settings allow, before any
    voxel is decoded, naming the limit and the setting that raises it."""
    limits = ImageLimits.from_config()
    sizes = [int(n) for n in shape]
    if any(n < 0 for n in sizes):
        raise InvalidInput(f"{name}: the header declares a negative size {sizes}")
    if sizes and max(sizes) > limits.max_axis:
        raise InvalidInput(f"{name}: an axis of {max(sizes)} voxels is over the limit of {limits.max_axis} "
                           "(QCLOOP_IMAGE_MAX_AXIS)")
    voxels = math.prod(sizes)
    if voxels > limits.max_voxels:
        raise InvalidInput(f"{name}: {voxels} voxels ({' x '.join(map(str, sizes))}) is over the limit of "
                           f"{limits.max_voxels} (QCLOOP_IMAGE_MAX_VOXELS)")
    if voxels * itemsize > limits.max_bytes:
        raise InvalidInput(f"{name}: {_mb(voxels * itemsize)} MB of voxel data is over the limit of "
                           f"{_mb(limits.max_bytes)} MB (QCLOOP_IMAGE_MAX_MB)")


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.0f}"


def load_image(path: Path) -> nib.Nifti1Image:
    """The image with a RAS affine; InvalidInput when the file is missing, not a readable image, or
    larger than the image limits (checked on the header, before decoding)."""
    return _open(path, header_only=False)


def _open(path: Path, *, header_only: bool) -> nib.Nifti1Image:
    """The image; with ``header_only`` NRRD voxels are not decoded (a zero-stride stand-in array)."""
    kind = image_format(path)
    try:
        if kind == "nifti":
            image = nib.load(str(path))  # lazy: only the header is read here
            check_size(path.name, image.shape, image.get_data_dtype().itemsize)
            if not isinstance(image, nib.Nifti1Image):  # NIfTI-2 and friends: same data, NIfTI-1 header
                image = nib.Nifti1Image(image.dataobj, image.affine)
            return image
        if kind == "nrrd":
            return _load_nrrd(path, header_only)
        return _load_dicom_series(path)
    except InvalidInput:
        raise
    except Exception as err:  # noqa: BLE001 - the readers raise many types for bad files
        raise InvalidInput(f"{path.name}: not a readable {kind.upper() if kind != 'nifti' else 'NIfTI'} "
                           f"image ({err})") from err


def _load_nrrd(path: Path, header_only: bool) -> nib.Nifti1Image:
    import nrrd

    with open(path, "rb") as handle:
        header = nrrd.read_header(handle)
        sizes = [int(n) for n in header["sizes"]]
        dtype = nrrd.reader._determine_datatype(header)
        check_size(path.name, sizes, dtype.itemsize)
        affine, order = _nrrd_layout(path, header)
        if header_only:  # shape and type, no voxels: a zero-stride view of one zero
            return nib.Nifti1Image(np.transpose(np.broadcast_to(np.zeros((), dtype), sizes), order), affine)
        data = _nrrd_voxels(path, handle, header, sizes, dtype)
    return nib.Nifti1Image(np.ascontiguousarray(np.transpose(data, order)), affine)


def _nrrd_voxels(path: Path, handle, header: dict[str, Any], sizes: list[int], dtype: np.dtype) -> np.ndarray:
    """The voxels in index order "F" (data[i, j, k], i fastest). Compressed data is inflated only up to
    the size the header declares (checked against the limits): a stream holding more is refused."""
    import nrrd

    encoding = str(header["encoding"]).lower()
    detached = header.get("data file") or header.get("datafile")
    if encoding not in ("gzip", "gz", "bzip2", "bz2"):  # raw and text hold no more than the file itself
        return nrrd.read_data(header, handle, str(path))
    if detached is not None and not isinstance(detached, str):
        raise InvalidInput(f"{path.name}: compressed NRRD data in several files is not supported")
    skip = max(0, int(header.get("byte skip", 0)))
    expected = math.prod(sizes) * dtype.itemsize
    source = open(path.parent / detached, "rb") if detached else handle
    try:
        stream = gzip.GzipFile(fileobj=source) if encoding in ("gzip", "gz") else bz2.BZ2File(source)
        with stream:
            raw = stream.read(skip + expected + 1)
    finally:
        if detached:
            source.close()
    if len(raw) != skip + expected:
        problem = "holds more data than" if len(raw) > skip + expected else "holds less data than"
        raise InvalidInput(f"{path.name}: the compressed data {problem} the header declares")
    return np.frombuffer(raw, dtype, offset=skip).reshape(sizes[::-1]).T


def _nrrd_layout(path: Path, header: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
    """The RAS affine and the axis order (spatial axes first) that an NRRD header describes."""
    ndim = int(header["dimension"])
    if ndim < 3:
        raise InvalidInput(f"{path.name}: expected a 3-D (or 4-D) image, got {ndim} dimensions")
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
    if directions is not None and len(kinds) == ndim:
        spatial_axes = [n for n, d in enumerate(directions) if d is not None and not np.isnan(d).any()]
        return affine, spatial_axes + [n for n in range(ndim) if n not in spatial_axes]
    return affine, list(range(ndim))


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
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series)
    _check_dicom_size(path.name, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    image = reader.Execute()
    # SimpleITK arrays are (z, y, x); NIfTI voxel order is (x, y, z). ITK's physical space is LPS.
    data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0) + tuple(range(3, image.GetDimension())))
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return nib.Nifti1Image(np.ascontiguousarray(data), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)


def _check_dicom_size(name: str, files: Sequence[str]) -> None:
    """The series' size from its first file's header (every slice of a series has the same grid)."""
    import SimpleITK as sitk

    if not files:
        raise InvalidInput(f"{name}: no DICOM series found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()
    size = list(reader.GetSize())
    size[-1] *= len(files)  # slices stack along the last axis (a multi-frame file holds its own frames)
    pixel = sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID(), reader.GetNumberOfComponents()))
    check_size(name, size, pixel.dtype.itemsize * reader.GetNumberOfComponents())


def read_info(path: Path) -> ImageInfo:
    """Header facts (shape, spacing, axis codes) of a supported image; InvalidInput when unreadable or
    over the image limits. NIfTI and NRRD voxels are not decoded."""
    image = _open(path, header_only=True)
    shape = [int(n) for n in image.shape]
    spacing = [round(float(z), 6) for z in image.header.get_zooms()[: len(shape)]]
    orientation = "".join(nib.aff2axcodes(image.affine))
    return ImageInfo(shape, spacing, orientation)
