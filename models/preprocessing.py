"""File -> network input, one definition shared by training and serving.

A :class:`PreprocessConfig` travels with every registered version (its metadata
``preprocessing``), so the engine that scores a scan applies exactly what the network
was trained on. Two fits exist:

- ``resize`` / ``pad_crop``: the whole volume, oriented (RAS by default), intensities
  scaled between two percentiles, brought to ``spatial_size``: one input per volume.
- ``tiles``: MIQA's way. The volume stays on its native grid (oriented, min-max scaled
  to 0..1) and is cut into ``spatial_size`` tiles placed as MIQA places them
  (:func:`tile_starts`); the volume's outputs are the mean of its tiles' outputs.
  :data:`MIQA` is MIQA's published preprocessing (LPS+ array, min-max, 64^3 tiles).

The deterministic part (:func:`preprocess`) gives one tensor per file, ``(1, *spatial)``,
which is what caches store; :func:`tiles` then cuts the tiles of a ``tiles`` config.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Hashable, Mapping

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    ResizeWithPadOrCropd,
    Resized,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    SpatialPadd,
)

# MONAI says at every image reader it builds that an optional GPU DICOM decoder is missing.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*nvImageCodec decoder plugin did not register.*")

FITS = ("resize", "pad_crop", "tiles")
SCALINGS = ("percentiles", "minmax")


@dataclass(frozen=True)
class PreprocessConfig:
    """What turns a file into the network's input; part of every cache key and of each version's metadata."""

    spatial_size: tuple[int, ...] = (64, 64, 64)
    pixdim: tuple[float, ...] | None = None  # resample to this spacing (mm); None keeps the native grid
    percentiles: tuple[float, float] = (1.0, 99.0)
    fit: str = "resize"  # one of FITS: how the volume reaches spatial_size
    orientation: str = "RAS"
    scaling: str = "percentiles"  # one of SCALINGS

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, not {self.fit!r}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, not {self.scaling!r}")
        if len(self.spatial_size) not in (2, 3):
            raise ValueError("spatial_size must have 2 or 3 dimensions")

    @property
    def spatial_dims(self) -> int:
        return len(self.spatial_size)

    @property
    def tiled(self) -> bool:
        return self.fit == "tiles"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        values = dict(data)
        for name in ("spatial_size", "pixdim", "percentiles"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line for a version's metadata: what the network expects as input."""
        size = ", ".join(map(str, self.spatial_size))
        scaled = ("min-max scaled to 0..1" if self.scaling == "minmax" else
                  f"scaled 0..1 between percentiles {self.percentiles[0]:g} and {self.percentiles[1]:g}")
        shape = (f"native-grid tiles of {size} placed as MIQA places them, outputs averaged over tiles"
                 if self.tiled else f"the whole volume brought to {size} ({self.fit})")
        return f"float32 (batch, 1, {size}): one channel, {self.orientation} array, {scaled}, {shape}"


# MIQA's published inference: LPS+ array on the native grid, min-max scaling, 64^3 tiles.
MIQA = PreprocessConfig(spatial_size=(64, 64, 64), fit="tiles", orientation="LPS", scaling="minmax")


class _SingleChanneld(MapTransform):
    """Average colour or multi-echo channels into one (the networks take one channel)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            if out[key].shape[0] > 1:
                out[key] = out[key].mean(dim=0, keepdim=True)
        return out


class _MinMaxd(MapTransform):
    """Intensities scaled linearly to 0..1 in place (a constant image becomes zeros): one pass for the
    extremes and one for the arithmetic, a quarter of the time of MONAI's ScaleIntensity on a 1 mm brain."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            image = out[key]
            low, high = torch.aminmax(image)
            out[key] = image.zero_() if high == low else image.sub_(low).div_(high - low)
        return out


def preprocess(config: PreprocessConfig) -> Compose:
    """The deterministic file -> tensor chain on ``{"image": path}`` (its result is what caches store)."""
    keys = ["image"]
    steps: list[Callable] = [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys)]
    if config.spatial_dims == 3:
        # nibabel's axis labels (RAS+ world): "LPS" means axis 0 toward patient left, whatever MONAI's default
        steps.append(Orientationd(keys, axcodes=config.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if config.pixdim is not None:
        steps.append(Spacingd(keys, pixdim=config.pixdim, mode="bilinear"))
    steps.append(_SingleChanneld(keys))
    if config.scaling == "minmax":
        steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False))
        steps.append(_MinMaxd(keys))
    else:
        lower, upper = config.percentiles
        steps.append(ScaleIntensityRangePercentilesd(keys, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True))
    if config.fit == "resize":
        steps.append(Resized(keys, spatial_size=config.spatial_size, mode="area"))
    elif config.fit == "pad_crop":
        steps.append(ResizeWithPadOrCropd(keys, spatial_size=config.spatial_size))
    else:  # an axis shorter than a tile is padded at its end by repeating the edge, as MIQA does
        steps.append(SpatialPadd(keys, spatial_size=config.spatial_size, method="end", mode="edge"))
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return Compose(steps)


def file_identity(path: str, checksum: str) -> str:
    """What names a file's content for caches: its checksum plus size and change time (a file
    rewritten in place under an old checksum still gets a new name)."""
    stat = os.stat(path)
    return f"{checksum}|{stat.st_size}|{stat.st_mtime_ns}"


def cache_name(path: str, checksum: str, config: PreprocessConfig) -> str:
    """The cache entry of a file's preprocessed tensor: its identity plus the settings. A file without
    a checksum has no name (ValueError): it is preprocessed each time, never shares an entry."""
    if not checksum:
        raise ValueError(f"{path} has no checksum: it cannot be cached")
    return hashlib.sha256(f"{file_identity(path, checksum)}|{config.digest()}".encode()).hexdigest()


def tile_starts(n: int, size: int) -> list[int]:
    """MIQA's tile placement along an axis of ``n`` voxels: ceil(n / size) tiles spread evenly, overlapping."""
    steps = max(1, math.ceil(n / size))
    return [round(k * (n - size) / max(1, steps - 1)) for k in range(steps)]


def tile_grid(shape: tuple[int, ...], size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every tile's start corner for a volume of ``shape`` (spatial only)."""
    grids = [tile_starts(n, s) for n, s in zip(shape, size)]
    corners: list[tuple[int, ...]] = [()]
    for starts in grids:
        corners = [corner + (start,) for corner in corners for start in starts]
    return corners


def tile_at(image: torch.Tensor, corner: tuple[int, ...], size: tuple[int, ...]) -> torch.Tensor:
    """The tile of a ``(C, *spatial)`` tensor starting at ``corner``."""
    index = (slice(None),) + tuple(slice(start, start + s) for start, s in zip(corner, size))
    return image[index]


def tiles(image: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """The network inputs of one preprocessed volume: ``(T, C, *spatial_size)`` (T = 1 unless tiled)."""
    if not config.tiled:
        return image.unsqueeze(0)
    size = tuple(config.spatial_size)
    return torch.stack([tile_at(image, corner, size) for corner in tile_grid(tuple(image.shape[1:]), size)])
