"""Reading images: the one registry of formats qcloop reads, and each image as a NIfTI-like RAS image.

``FORMATS`` names every readable format once: its suffixes, how a file without a known suffix is
recognised (a DICOM file by the "DICM" preamble), its reader and the files that make one frame (a
detached NRRD's header and data file, every file of a DICOM series). Import, upload, sync and their
messages all ask this module, so they accept and name the same formats.

Every format becomes a ``nibabel.Nifti1Image`` whose voxel axes are the file's own axes (i, j, k as
stored) and whose affine maps them to RAS millimetres, so that the rest of qcloop (header facts,
locations, the viewer cache) deals with one representation. qcloop reviews 3-D volumes: a 2-D image
(or a single slice) is refused with a message saying so, before any view could fail on it.
"""
from __future__ import annotations

import bz2
import gzip
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import nibabel as nib
import numpy as np
from flask import current_app

from app.services.errors import InvalidInput

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
DICOM_MAGIC_OFFSET, DICOM_MAGIC = 128, b"DICM"  # after the 128-byte preamble of a DICOM Part 10 file
# NRRD spaces whose first two axes point the opposite way to RAS.
_LPS_SPACES = {"left-posterior-superior", "lps"}
_RAS_SPACES = {"right-anterior-superior", "ras"}
_SERIES_UID, _SERIES_DESCRIPTION = "0020|000e", "0008|103e"


@dataclass(frozen=True)
class ImageInfo:
    shape: list[int]
    spacing: list[float]
    orientation: str


@dataclass(frozen=True)
class ImageFormat:
    """A readable format: how a path is recognised, how it is read and which files make one frame."""

    name: str
    label: str
    described: str  # how messages name it: label and suffixes
    suffixes: tuple[str, ...]
    read: Callable[[Path, bool], nib.Nifti1Image]  # (path, header_only) -> image
    files: Callable[[Path], list[Path]]  # every file of the frame the path names
    single_file: tuple[str, ...] = ()  # suffixes of files that hold a whole frame: what an upload can carry
    several: str = ""  # how messages name its frames made of several files
    sniff: Callable[[bytes], bool] | None = None  # recognises the first bytes of a file without a known suffix


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series of a folder: its SeriesInstanceUID, SeriesDescription and files (in slice order)."""

    uid: str
    description: str
    files: list[Path]

    def __str__(self) -> str:
        described = f' "{self.description}"' if self.description else ""
        return f"{self.uid}{described} ({len(self.files)} file{'s' if len(self.files) != 1 else ''})"


def format_of(path: Path) -> ImageFormat:
    """The path's format: a folder is a DICOM series, a file is known by its suffix or, failing that, by its
    first bytes (a DICOM file without extension); InvalidInput naming the supported formats otherwise."""
    if path.is_dir():
        return FORMATS["dicom"]
    name = path.name.lower()
    for found in FORMATS.values():
        if name.endswith(found.suffixes):
            return found
    head = _head(path)
    for found in FORMATS.values():
        if found.sniff is not None and found.sniff(head):
            return found
    raise InvalidInput(f"{path.name}: unsupported image format (expected {SUPPORTED})")


def image_format(path: Path) -> str:
    """'nifti', 'nrrd' or 'dicom' (see :func:`format_of`)."""
    return format_of(path).name


def frame_files(path: Path) -> list[Path]:
    """Every file one frame is made of: the file itself, a detached NRRD's header and data file, or every
    file of a DICOM series (the folder's only series, or the series of the file named); InvalidInput when
    a companion file is missing or the folder holds several series."""
    return format_of(path).files(path)


def _head(path: Path, size: int = DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _is_dicom(head: bytes) -> bool:
    return head[DICOM_MAGIC_OFFSET:DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)] == DICOM_MAGIC


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


def check_volume(name: str, shape: Sequence[int]) -> None:
    """Refuse (InvalidInput) an image that is not a 3-D volume: the viewer, thumbnails and networks need
    three spatial axes of more than one voxel, which a 2-D image or a single slice lacks."""
    sizes = [int(n) for n in shape]
    extent = sum(n > 1 for n in sizes[:3])
    if extent < 3:
        raise InvalidInput(f"{name}: {extent}-D image ({' x '.join(map(str, sizes))}): qcloop reviews 3-D volumes")


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.0f}"


def load_image(path: Path) -> nib.Nifti1Image:
    """The image with a RAS affine; InvalidInput when the file is missing, not a readable image, not a 3-D
    volume, or larger than the image limits (checked on the header, before decoding)."""
    return _open(path, header_only=False)


def read_info(path: Path) -> ImageInfo:
    """Header facts (shape, spacing, axis codes) of a supported 3-D image; InvalidInput when unreadable, 2-D
    or over the image limits. NIfTI and NRRD voxels are not decoded."""
    image = _open(path, header_only=True)
    shape = [int(n) for n in image.shape]
    spacing = [round(float(z), 6) for z in image.header.get_zooms()[: len(shape)]]
    orientation = "".join(nib.aff2axcodes(image.affine))
    return ImageInfo(shape, spacing, orientation)


def affine_of(path: Path) -> np.ndarray:
    """The 4x4 RAS affine of the file's own voxel axes (NIfTI and NRRD: the header alone is read)."""
    return _open(path, header_only=True).affine


def _open(path: Path, *, header_only: bool) -> nib.Nifti1Image:
    """The image; with ``header_only`` NRRD voxels are not decoded (a zero-stride stand-in array)."""
    found = format_of(path)
    try:
        image = found.read(path, header_only)
    except InvalidInput:
        raise
    except Exception as err:  # noqa: BLE001 - the readers raise many types for bad files
        raise InvalidInput(f"{path.name}: not a readable {found.label} image ({err})") from err
    check_volume(path.name, image.shape)
    return image


def _read_nifti(path: Path, header_only: bool) -> nib.Nifti1Image:
    image = nib.load(str(path))  # lazy: only the header is read here
    check_size(path.name, image.shape, image.get_data_dtype().itemsize)
    if not isinstance(image, nib.Nifti1Image):  # NIfTI-2 and friends: same data, NIfTI-1 header
        image = nib.Nifti1Image(image.dataobj, image.affine)
    return image


def _read_nrrd(path: Path, header_only: bool) -> nib.Nifti1Image:
    import nrrd

    with open(path, "rb") as handle:
        header = nrrd.read_header(handle)
        sizes = [int(n) for n in header["sizes"]]
        dtype = nrrd.reader._determine_datatype(header)
        check_size(path.name, sizes, dtype.itemsize)
        affine, order = _nrrd_layout(path, header)
        data_file = _nrrd_data_file(path, header)
        if header_only:  # shape and type, no voxels: a zero-stride view of one zero
            return nib.Nifti1Image(np.transpose(np.broadcast_to(np.zeros((), dtype), sizes), order), affine)
        data = _nrrd_voxels(path, handle, header, data_file, sizes, dtype)
    return nib.Nifti1Image(np.ascontiguousarray(np.transpose(data, order)), affine)


def _nrrd_files(path: Path) -> list[Path]:
    import nrrd

    try:
        with open(path, "rb") as handle:
            header = nrrd.read_header(handle)
    except Exception as err:  # noqa: BLE001 - pynrrd raises many types for bad headers
        raise InvalidInput(f"{path.name}: not a readable NRRD image ({err})") from err
    data_file = _nrrd_data_file(path, header)
    return [path] if data_file is None else [path, data_file]


def _nrrd_data_file(path: Path, header: dict[str, Any]) -> Path | None:
    """A detached header's data file (None when the data follows the header); it must exist in the header's
    folder or below it (a header must not make qcloop read or serve a file elsewhere)."""
    detached = header.get("data file") or header.get("datafile")
    if detached is None:
        return None
    detached = str(detached).strip()
    words = detached.split()
    if words[0] == "LIST" or (len(words) >= 4 and "%" in words[0]):
        raise InvalidInput(f"{path.name}: NRRD data in several files ({detached}) is not supported")
    data_file = Path(os.path.normpath(path.parent / detached))
    if not data_file.resolve().is_relative_to(path.parent.resolve()):
        raise InvalidInput(f"{path.name}: its data file {detached} must lie in the header's folder or below it")
    if not data_file.is_file():
        raise InvalidInput(f"{path.name}: its data file {detached} does not exist")
    return data_file


def _nrrd_voxels(path: Path, handle, header: dict[str, Any], data_file: Path | None, sizes: list[int],
                 dtype: np.dtype) -> np.ndarray:
    """The voxels in index order "F" (data[i, j, k], i fastest). Compressed data is inflated only up to
    the size the header declares (checked against the limits): a stream holding more is refused."""
    import nrrd

    encoding = str(header["encoding"]).lower()
    if encoding not in ("gzip", "gz", "bzip2", "bz2"):  # raw and text hold no more than the file itself
        return nrrd.read_data(header, handle, str(path))
    skip = max(0, int(header.get("byte skip", 0)))
    expected = math.prod(sizes) * dtype.itemsize
    source = open(data_file, "rb") if data_file else handle
    try:
        stream = gzip.GzipFile(fileobj=source) if encoding in ("gzip", "gz") else bz2.BZ2File(source)
        with stream:
            raw = stream.read(skip + expected + 1)
    finally:
        if data_file:
            source.close()
    if len(raw) != skip + expected:
        problem = "holds more data than" if len(raw) > skip + expected else "holds less data than"
        raise InvalidInput(f"{path.name}: the compressed data {problem} the header declares")
    return np.frombuffer(raw, dtype, offset=skip).reshape(sizes[::-1]).T


def _nrrd_layout(path: Path, header: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
    """The RAS affine and the axis order (spatial axes first) that an NRRD header describes."""
    ndim = int(header["dimension"])
    if ndim < 3:
        check_volume(path.name, header["sizes"])
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


def dicom_series(folder: Path) -> list[DicomSeries]:
    """Every DICOM series of a folder (not its subfolders), with descriptions: what a sync lists and a
    refusal names."""
    return [DicomSeries(uid, _dicom_tag(files[0], _SERIES_DESCRIPTION) if files else "", files)
            for uid, files in _series_files(folder).items()]


def _series_files(folder: Path) -> dict[str, list[Path]]:
    """Each series' files in slice order, by SeriesInstanceUID (GDCM reads any file name, extension or not)."""
    import SimpleITK as sitk

    return {uid: [Path(name) for name in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)]
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()}


def _dicom_tag(path: Path, tag: str) -> str:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
    except (RuntimeError, UnicodeDecodeError):  # an unreadable header, or a description in a legacy encoding
        return ""


def _series_of(path: Path) -> list[Path]:
    """The files of the series a path names: a folder's only series, or the series holding the file."""
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        raise InvalidInput(f"{path.name}: DICOM series folder does not exist")
    series = _series_files(folder)
    if not series:
        raise InvalidInput(f"{path.name}: no DICOM series found")
    if path.is_dir():
        if len(series) > 1:
            named = "; ".join(map(str, dicom_series(folder)))
            raise InvalidInput(f"{path.name}: {len(series)} DICOM series in one folder, and a frame is one series "
                               f"(name one of its files, or give each series its own folder): {named}")
        return next(iter(series.values()))
    for files in series.values():
        if any(item.name == path.name for item in files):
            return files
    raise InvalidInput(f"{path.name}: not a DICOM file of a series in its folder")


def _read_dicom(path: Path, header_only: bool) -> nib.Nifti1Image:
    import SimpleITK as sitk

    files = _series_of(path)
    _check_dicom_size(path.name, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(item) for item in files])
    image = reader.Execute()
    # SimpleITK arrays are (z, y, x); NIfTI voxel order is (x, y, z). ITK's physical space is LPS.
    data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0) + tuple(range(3, image.GetDimension())))
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return nib.Nifti1Image(np.ascontiguousarray(data), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps)


def _check_dicom_size(name: str, files: Sequence[Path]) -> None:
    """The series' size from its first file's header (every slice of a series has the same grid)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    reader.ReadImageInformation()
    size = list(reader.GetSize())
    size[-1] *= len(files)  # slices stack along the last axis (a multi-frame file holds its own frames)
    pixel = sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID(), reader.GetNumberOfComponents()))
    check_size(name, size, pixel.dtype.itemsize * reader.GetNumberOfComponents())
    check_volume(name, size)


FORMATS: dict[str, ImageFormat] = {
    "nifti": ImageFormat("nifti", "NIfTI", "NIfTI (.nii, .nii.gz)", NIFTI_SUFFIXES, _read_nifti,
                         lambda path: [path], single_file=NIFTI_SUFFIXES),
    "nrrd": ImageFormat("nrrd", "NRRD", "NRRD (.nrrd, or a .nhdr header beside its data file)", NRRD_SUFFIXES,
                        _read_nrrd, _nrrd_files, single_file=(".nrrd",),
                        several="a detached NRRD (a .nhdr header and its data file)"),
    "dicom": ImageFormat("dicom", "DICOM", "a DICOM series (its folder, or one of its files: .dcm, .dicom, .ima "
                         "or any name, known by its DICM preamble)", DICOM_SUFFIXES, _read_dicom, _series_of,
                         several="a DICOM series", sniff=_is_dicom),
}
SUPPORTED = ", ".join(found.described for found in list(FORMATS.values())[:-1]) + \
    f" or {list(FORMATS.values())[-1].described}"
UPLOADABLE_SUFFIXES = tuple(suffix for found in FORMATS.values() for suffix in found.single_file)
UPLOADABLE = " or ".join(f"{found.label} ({', '.join(found.single_file)})" for found in FORMATS.values()
                         if found.single_file) + " holding its own data"
SEVERAL_FILES = " and ".join(found.several for found in FORMATS.values() if found.several)
