"""What the viewer and thumbnails read: a cached RAS copy of each frame, a small preview, PNG slices.

The first request for a frame reads its file once (NIfTI, NRRD or DICOM via ``imaging``),
reorients it to the closest canonical (RAS) voxel order with ``nibabel.as_closest_canonical``
and writes, under ``CACHE_DIR/volumes/<checksum>``:

- ``volume.nii.gz``: the full-resolution RAS image (original data type) for Niivue;
- ``preview.nii.gz``: an 8-bit copy, every n-th voxel so that no axis exceeds
  ``PREVIEW_MAX_SIZE``, windowed to the volume's 0.5-99.5 percentiles, painted first;
- ``array.npy``: the first 3-D volume as a plain array, memory-mapped for slice PNGs;
- ``meta.json``: shapes, affines (RAS and original) and the default window.

The cache key is the frame's SHA-256 checksum plus a fingerprint (path, size and change time)
of every file the image is read from: the file itself, or every file of a DICOM series folder,
so that a file changed in place (one slice of a series included) gets a new copy; pages put a
short hash of the key in the image URLs (``version``) so browsers never reuse a stale copy. Locations of points of interest stay in the ORIGINAL voxel grid
(what ``Frame.shape`` describes): the page maps a clicked RAS millimetre position through the
inverse of ``original_affine``.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from flask import current_app
from PIL import Image

from app.db import Frame
from app.services import imaging
from app.services.errors import InvalidInput, ServiceError
from app.storage import LocalLocation, Location, StorageError, local_copy, resolve

log = logging.getLogger(__name__)

PREVIEW_MAX_SIZE = 96
MIN_THUMBNAIL, MAX_THUMBNAIL = 16, 1024  # the slice endpoint's ``size`` bounds
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
CACHE_VERSION = "1"  # bump when the cached files' layout changes
_MEMMAPS: OrderedDict[str, tuple[np.ndarray, dict]] = OrderedDict()
_MEMMAP_LIMIT = 32
_BUILD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()
_PREPARER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qcloop-volume-cache")
_IN_FLIGHT: dict[str, Future] = {}
RETRY_AFTER_S = 2


class FrameFileMissing(ServiceError):
    status = 404
    code = "frame_file_missing"


class FrameUnreadable(ServiceError):
    status = 422
    code = "frame_unreadable"


class StillPreparing(ServiceError):
    status = 503
    code = "preparing"


@dataclass(frozen=True)
class CachedVolume:
    key: str
    folder: Path
    meta: dict[str, Any]

    @property
    def volume_path(self) -> Path:
        return self.folder / "volume.nii.gz"

    @property
    def preview_path(self) -> Path:
        return self.folder / "preview.nii.gz"

    @property
    def array_path(self) -> Path:
        return self.folder / "array.npy"


def source_path(frame: Frame) -> Path:
    """A local file (or DICOM folder) holding the frame; FrameFileMissing when it is gone."""
    try:
        return source_path_of(resolve(frame.file_location))
    except StorageError as err:
        raise FrameFileMissing(f"the file of frame {frame.id} is missing or cannot be read: {err}",
                               frame=frame.id) from err


def source_path_of(location: Location) -> Path:
    """A local file for a resolved location (S3 objects are fetched once into the cache); StorageError if gone."""
    if isinstance(location, LocalLocation) and location.path.is_dir():
        return location.path
    return local_copy(location, Path(current_app.config["CACHE_DIR"]))


def _files_read(path: Path) -> list[Path]:
    """The files an image is read from: the file itself, a detached NRRD's header and data file, or every
    file of its DICOM series folder (a changed slice anywhere in the series changes the volume; listing
    the folder costs less than finding the series)."""
    try:
        if imaging.image_format(path) == "dicom":
            folder = path if path.is_dir() else path.parent
            return sorted(item for item in folder.iterdir() if item.is_file() and not item.name.startswith("."))
        return imaging.frame_files(path)
    except (InvalidInput, OSError):  # reading the image reports the problem
        return [path]


def _key(frame: Frame, path: Path) -> str:
    """The frame's checksum (when known) and a fingerprint of the files read: name, size, mtime."""
    stamps = hashlib.sha256(str(path).encode())
    for item in _files_read(path):
        status = item.stat()
        stamps.update(f"\0{item.name}:{status.st_size}:{status.st_mtime_ns}".encode())
    return f"{frame.checksum or 'frame'}-{stamps.hexdigest()[:20]}"


def version(frame: Frame) -> str:
    """A short token that changes whenever the frame's cached copy does, for ``?v=`` in image URLs
    (falls back to the checksum when the file cannot be read: the image request reports that)."""
    try:
        path = source_path(frame)
        return hashlib.sha256(_key(frame, path).encode()).hexdigest()[:16]
    except (ServiceError, StorageError, OSError):
        return (frame.checksum or str(frame.id))[:16]


def cached(frame: Frame) -> CachedVolume:
    """The frame's cached RAS copy, building it on first use (once per key, even under concurrency)."""
    path = source_path(frame)
    return cached_file(path, _key(frame, path), label=f"frame {frame.id}")


def viewable(frame: Frame) -> CachedVolume:
    """:func:`cached` for a web request: the first read of a big file is built off the request's thread
    and waited for at most ``VIEW_PREPARE_WAIT_S``; past that, StillPreparing (503, Retry-After) while
    the build goes on, so no request holds a server worker for a whole decode."""
    path = source_path(frame)
    key, cache_dir = _key(frame, path), Path(current_app.config["CACHE_DIR"])
    folder = cache_dir / "volumes" / f"{key}-v{CACHE_VERSION}"
    if (folder / "meta.json").is_file():
        return CachedVolume(key, folder, json.loads((folder / "meta.json").read_text()))
    with _GUARD:
        future = _IN_FLIGHT.get(key)
        if future is None:
            future = _IN_FLIGHT[key] = _PREPARER.submit(_in_context, current_app._get_current_object(), path, key,
                                                        f"frame {frame.id}", cache_dir)
            future.add_done_callback(lambda _: _forget(key))
    try:
        return future.result(timeout=float(current_app.config["VIEW_PREPARE_WAIT_S"]))
    except FutureTimeout as err:
        raise StillPreparing(f"frame {frame.id} is being prepared for viewing; try again in a few seconds",
                             retry_after=RETRY_AFTER_S) from err


def _in_context(app, path: Path, key: str, label: str, cache_dir: Path) -> CachedVolume:
    """:func:`cached_file` on a pool thread, inside the app (reading an image checks its header against
    the app's limits)."""
    with app.app_context():
        return cached_file(path, key, label=label, cache_dir=cache_dir)


def _forget(key: str) -> None:
    with _GUARD:
        _IN_FLIGHT.pop(key, None)


def cached_file(path: Path, key: str, *, label: str, cache_dir: Path | None = None) -> CachedVolume:
    """The cached RAS copy of an image file under ``key`` (frames and saliency maps share this)."""
    folder = Path(cache_dir or current_app.config["CACHE_DIR"]) / "volumes" / f"{key}-v{CACHE_VERSION}"
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        with _GUARD:
            lock = _BUILD_LOCKS.setdefault(key, threading.Lock())
        with lock:
            if not meta_path.is_file():
                _build(path, folder, label)
    return CachedVolume(key, folder, json.loads(meta_path.read_text()))


def prepare(frames: list[Frame]) -> None:
    """Build the caches of these frames in the background (best effort): a page that will ask for
    them starts this before its scripts load, so the viewer finds the work done or under way."""
    cache_dir = Path(current_app.config["CACHE_DIR"])
    jobs = []
    for frame in frames:
        try:
            path = source_path(frame)
            jobs.append((path, _key(frame, path), f"frame {frame.id}"))
        except (ServiceError, StorageError, OSError):
            continue  # the viewer's own request reports the problem
    for path, key, label in jobs:
        if not (cache_dir / "volumes" / f"{key}-v{CACHE_VERSION}" / "meta.json").is_file():
            _PREPARER.submit(_prepare_one, current_app._get_current_object(), path, key, label, cache_dir)


def _prepare_one(app, path: Path, key: str, label: str, cache_dir: Path) -> None:
    try:
        _in_context(app, path, key, label, cache_dir)
    except Exception as err:  # noqa: BLE001 - best effort: the viewer's request reports failures
        log.debug("background cache of %s failed: %s", label, err)


def _atomic_write(target: Path, write) -> None:
    """Write through ``write(temporary path)`` then rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix="-" + target.name)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _window(data: np.ndarray) -> tuple[float, float]:
    sample = data[::2, ::2, ::2] if min(data.shape) >= 4 else data
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if high <= low:
        low, high = float(data.min()), float(data.max())
    if high <= low:
        high = low + 1.0
    return low, high


def _build(path: Path, folder: Path, label: str) -> None:
    try:
        original = imaging.load_image(path)
        canonical = nib.as_closest_canonical(original)
        data = np.asanyarray(canonical.dataobj)
    except InvalidInput as err:
        raise FrameUnreadable(f"{label}: {err.message}") from err
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for truncated data
        raise FrameUnreadable(f"{label}: the image data cannot be read ({err})") from err
    volume3 = data[..., 0] if data.ndim > 3 else data
    volume3 = volume3.reshape(volume3.shape[:3])
    low, high = _window(volume3)
    step = max(1, math.ceil(max(volume3.shape) / PREVIEW_MAX_SIZE))
    small = volume3[::step, ::step, ::step].astype(np.float32)
    preview = np.clip((small - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    preview_image = nib.Nifti1Image(preview, canonical.affine @ np.diag([step, step, step, 1.0]))
    preview_image.header["cal_min"], preview_image.header["cal_max"] = 0, 255
    full = nib.Nifti1Image(data.astype(np.float32) if data.dtype == np.float64 else data, canonical.affine)
    full.header["cal_min"], full.header["cal_max"] = low, high
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / "volume.nii.gz", lambda tmp: nib.save(full, tmp))
    _atomic_write(folder / "preview.nii.gz", lambda tmp: nib.save(preview_image, tmp))
    _atomic_write(folder / "array.npy", lambda tmp: _save_npy(tmp, np.ascontiguousarray(volume3)))
    zooms = [float(z) for z in canonical.header.get_zooms()[:3]]
    meta = {
        "shape": [int(n) for n in volume3.shape], "original_shape": [int(n) for n in original.shape],
        "affine": canonical.affine.tolist(), "original_affine": original.affine.tolist(), "spacing": zooms,
        "window": [low, high], "range": [float(volume3.min()), float(volume3.max())],
        "preview_step": step, "dtype": str(data.dtype),
    }
    _atomic_write(folder / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    log.info("cached %s as RAS volume %s (preview every %d voxels)", label, meta["shape"], step)


def _save_npy(target: str, array: np.ndarray) -> None:
    with open(target, "wb") as handle:
        np.save(handle, array)


def _array(volume: CachedVolume) -> np.ndarray:
    with _GUARD:
        if volume.key in _MEMMAPS:
            _MEMMAPS.move_to_end(volume.key)
            return _MEMMAPS[volume.key][0]
    array = np.load(volume.array_path, mmap_mode="r")
    with _GUARD:
        _MEMMAPS[volume.key] = (array, volume.meta)
        while len(_MEMMAPS) > _MEMMAP_LIMIT:
            _MEMMAPS.popitem(last=False)
    return array


def _number(name: str, raw: str | None, default: float | None) -> float | None:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise InvalidInput(f"{name} must be a number", field=name) from err
    if not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number", field=name)
    return value


@dataclass(frozen=True)
class SliceRequest:
    axis: str
    index: int
    window: float
    level: float
    size: int | None  # longest side in pixels (thumbnails); None: the slice's own size

    @property
    def tag(self) -> str:
        return f"{self.axis}-{self.index}-{self.window:g}-{self.level:g}-{self.size or 'full'}"


def slice_args(volume: CachedVolume, args: dict[str, str]) -> SliceRequest:
    """Checked axis, index, window, level and size from query arguments, defaulting to the middle
    slice, the volume's 0.5-99.5 percentile window and the slice's own size."""
    axis = (args.get("axis") or "axial").lower()
    if axis not in AXES:
        raise InvalidInput(f"axis must be one of {', '.join(AXES)}", field="axis")
    size = volume.meta["shape"][AXES[axis]]
    index = _number("index", args.get("index"), size // 2)
    if index != int(index) or not 0 <= index < size:
        raise InvalidInput(f"index must be an integer from 0 to {size - 1} for the {axis} axis", field="index")
    low, high = volume.meta["window"]
    window = _number("window", args.get("window"), high - low)
    level = _number("level", args.get("level"), (high + low) / 2)
    if window <= 0:
        raise InvalidInput("window must be greater than 0", field="window")
    longest = _number("size", args.get("size"), None)
    if longest is not None and (longest != int(longest) or not MIN_THUMBNAIL <= longest <= MAX_THUMBNAIL):
        raise InvalidInput(f"size must be an integer from {MIN_THUMBNAIL} to {MAX_THUMBNAIL}", field="size")
    return SliceRequest(axis, int(index), window, level, int(longest) if longest is not None else None)


def render_slice(volume: CachedVolume, request: SliceRequest) -> bytes:
    """A PNG of one RAS slice (neurological view: patient left on the left, superior/anterior up),
    shrunk to fit ``request.size`` when given (never enlarged)."""
    array = _array(volume)
    axis_number = AXES[request.axis]
    plane = np.take(array, request.index, axis=axis_number).astype(np.float32)  # (x, y), (x, z) or (y, z)
    low = request.level - request.window / 2
    pixels = np.clip((plane - low) * (255.0 / request.window), 0, 255).astype(np.uint8).T[::-1]
    image = Image.fromarray(np.ascontiguousarray(pixels))
    spacing = [s for n, s in enumerate(volume.meta["spacing"]) if n != axis_number]
    if spacing[0] > 0 and spacing[1] > 0 and abs(spacing[0] - spacing[1]) > 1e-3:
        unit = min(spacing)
        image = image.resize((max(1, round(image.width * spacing[0] / unit)),
                              max(1, round(image.height * spacing[1] / unit))), Image.Resampling.BILINEAR)
    if request.size is not None:
        image.thumbnail((request.size, request.size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@dataclass(frozen=True)
class ViewerFacts:
    """Shapes, affines (RAS and original) and the default window of a frame's viewer volume."""

    shape: list[int]
    original_shape: list[int]
    original_affine: list[list[float]]
    affine: list[list[float]]
    inverse_original_affine: list[list[float]]
    window: list[float]
    range: list[float]


def viewer_facts(volume: CachedVolume) -> ViewerFacts:
    """What the page needs to map viewer positions (RAS mm) to original voxels and to set windows."""
    meta = volume.meta
    return ViewerFacts(shape=meta["shape"], original_shape=meta["original_shape"][:3],
                       original_affine=meta["original_affine"], affine=meta["affine"],
                       inverse_original_affine=np.linalg.inv(np.asarray(meta["original_affine"])).tolist(),
                       window=meta["window"], range=meta["range"])
