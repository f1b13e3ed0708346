"""MONAI dictionary transforms: deterministic preprocessing (cached on disk), then random
artifact synthesis and augmentation applied to the cached tensors at every epoch.

Preprocessing: load, channel first, orient to RAS, optionally resample to a spacing, scale
intensities between two percentiles to 0..1, then resize (or pad/crop) to the network's
input shape. Its output is cached under ``cache_dir`` keyed by the file's checksum and the
preprocessing settings, so a changed file or setting never reads a stale tensor, and labels
(which change with every decision) are never part of what is cached.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import PersistentDataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    GibbsNoise,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandAffined,
    RandBiasField,
    RandFlipd,
    RandGaussianNoised,
    RandomizableTransform,
    ResizeWithPadOrCropd,
    Resized,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)

from training.data import Item, Output

# Which synthetic artifact marks which artifact entry (by key) as present.
SYNTHESIZABLE = ("inhomogeneity", "ghosting_motion", "truncation_artifact", "swap_wraparound")


@dataclass(frozen=True)
class PreprocessConfig:
    """What turns a file into the network's input tensor; part of every cache key and model's metadata."""

    spatial_size: tuple[int, ...] = (64, 64, 64)
    pixdim: tuple[float, ...] | None = None  # resample to this spacing (mm); None keeps the native grid
    percentiles: tuple[float, float] = (1.0, 99.0)
    fit: str = "resize"  # "resize" or "pad_crop" to reach spatial_size
    orientation: str = "RAS"

    def __post_init__(self) -> None:
        if self.fit not in ("resize", "pad_crop"):
            raise ValueError(f"fit must be 'resize' or 'pad_crop', not {self.fit!r}")
        if len(self.spatial_size) not in (2, 3):
            raise ValueError("spatial_size must have 2 or 3 dimensions")

    @property
    def spatial_dims(self) -> int:
        return len(self.spatial_size)

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


@dataclass(frozen=True)
class AugmentConfig:
    """Random training-time changes: artifact synthesis (probability per artifact key) and augmentation."""

    synthesis: dict[str, float] = field(default_factory=dict)
    # What a synthesized artifact does to the usable target: "mask" (unknown) or "unusable".
    synthesis_usable: str = "mask"
    flip_prob: float = 0.5
    affine_prob: float = 0.3
    noise_prob: float = 0.2

    def __post_init__(self) -> None:
        unknown = set(self.synthesis) - set(SYNTHESIZABLE)
        if unknown:
            raise ValueError(f"no synthetic artifact for {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(SYNTHESIZABLE)}")
        if self.synthesis_usable not in ("mask", "unusable"):
            raise ValueError("synthesis_usable must be 'mask' or 'unusable'")


def preprocess(config: PreprocessConfig) -> Compose:
    """The deterministic file -> tensor chain (its result is what the disk cache stores)."""
    keys = ["image"]
    steps: list[Callable] = [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys)]
    if config.spatial_dims == 3:
        steps.append(Orientationd(keys, axcodes=config.orientation))
    if config.pixdim is not None:
        steps.append(Spacingd(keys, pixdim=config.pixdim, mode="bilinear"))
    steps.append(_SingleChanneld(keys))
    lower, upper = config.percentiles
    steps.append(ScaleIntensityRangePercentilesd(keys, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True))
    if config.fit == "resize":
        steps.append(Resized(keys, spatial_size=config.spatial_size, mode="area"))
    else:
        steps.append(ResizeWithPadOrCropd(keys, spatial_size=config.spatial_size))
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return Compose(steps)


class _SingleChanneld(MapTransform):
    """Average colour or multi-echo channels into one (the networks take one channel)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            if out[key].shape[0] > 1:
                out[key] = out[key].mean(dim=0, keepdim=True)
        return out


def cache_key(item: Mapping[str, Any], config: PreprocessConfig) -> bytes:
    """The on-disk cache key: file checksum plus preprocessing settings (never the labels)."""
    return hashlib.sha256(f"{item['checksum']}|{config.digest()}".encode()).hexdigest().encode()


def cached_volumes(items: Sequence[Item], config: PreprocessConfig, cache_dir: Path) -> PersistentDataset:
    """Preprocessed image tensors of the items, computed once per (checksum, settings) and kept on disk."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = [{"image": item.path, "checksum": item.checksum} for item in items]
    return PersistentDataset(data, transform=preprocess(config), cache_dir=cache_dir,
                             hash_func=functools.partial(cache_key, config=config))


# --- artifact synthesis ---------------------------------------------------------------------------

def _rescale(image: torch.Tensor) -> torch.Tensor:
    return image.clamp(min=0) / image.max().clamp(min=1e-6)


def ghosting(image: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """N/2 ghosts: a phase error on every other k-space line of a random phase-encode axis."""
    axis = 1 + int(rng.randint(0, image.ndim - 1))
    kspace = torch.fft.fftshift(torch.fft.fftn(image, dim=tuple(range(1, image.ndim))))
    index = [slice(None)] * image.ndim
    index[axis] = slice(0, None, 2)
    kspace[tuple(index)] *= torch.polar(torch.tensor(1.0), torch.tensor(float(rng.uniform(0.6, 1.2))))
    out = torch.fft.ifftn(torch.fft.ifftshift(kspace), dim=tuple(range(1, image.ndim))).abs()
    return _rescale(out)


def wraparound(image: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """Phase wrap: a field of view too small along one axis folds both edges inwards."""
    axis = 1 + int(rng.randint(0, image.ndim - 1))
    n = image.shape[axis]
    cut = max(1, int(n * rng.uniform(0.1, 0.25)))
    out = image.clone()
    out.narrow(axis, 0, cut).add_(image.narrow(axis, n - cut, cut))
    out.narrow(axis, n - cut, cut).add_(image.narrow(axis, 0, cut))
    return _rescale(out)


def bias_field(image: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """A smooth multiplicative field (MONAI's RandBiasField)."""
    transform = RandBiasField(coeff_range=(0.3, 0.6), prob=1.0)
    transform.set_random_state(state=rng)
    return _rescale(torch.as_tensor(transform(image)))


def gibbs(image: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """Ringing at edges from k-space truncation (MONAI's GibbsNoise)."""
    return _rescale(torch.as_tensor(GibbsNoise(alpha=float(rng.uniform(0.6, 0.85)))(image)))


SYNTHESIZERS: dict[str, Callable[[torch.Tensor, np.random.RandomState], torch.Tensor]] = {
    "inhomogeneity": bias_field, "ghosting_motion": ghosting,
    "truncation_artifact": gibbs, "swap_wraparound": wraparound,
}


class ArtifactSynthesisd(RandomizableTransform, MapTransform):
    """Add a known artifact to a volume not already marked with it, and set its label to present."""

    def __init__(self, outputs: Sequence[Output], config: AugmentConfig) -> None:
        MapTransform.__init__(self, ["image"])
        RandomizableTransform.__init__(self, prob=1.0)
        self.plan = [(index, output.key, config.synthesis[output.key]) for index, output in enumerate(outputs)
                     if output.kind == "artifact" and config.synthesis.get(output.key, 0) > 0]
        self.usable_index = next((i for i, o in enumerate(outputs) if o.kind == "usable"), None)
        self.mark_unusable = config.synthesis_usable == "unusable"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        targets, mask = out["targets"].clone(), out["mask"].clone()
        for index, key, probability in self.plan:
            if self.R.rand() >= probability or (mask[index] and targets[index] >= 0.5):
                continue
            out["image"] = SYNTHESIZERS[key](torch.as_tensor(out["image"]), self.R)
            targets[index], mask[index] = 1.0, 1.0
            if self.usable_index is not None:
                targets[self.usable_index] = 0.0
                mask[self.usable_index] = 1.0 if self.mark_unusable else 0.0
        out["targets"], out["mask"] = targets, mask
        return out


def augment(outputs: Sequence[Output], config: AugmentConfig, spatial_dims: int) -> Compose:
    """Training-time randomness: synthesis first (on the clean cached tensor), then augmentation."""
    keys = ["image"]
    steps: list[Callable] = []
    if config.synthesis:
        steps.append(ArtifactSynthesisd(outputs, config))
    if config.flip_prob > 0:
        steps.append(RandFlipd(keys, prob=config.flip_prob, spatial_axis=0))
    if config.affine_prob > 0:
        steps.append(RandAffined(keys, prob=config.affine_prob, rotate_range=[0.1] * (3 if spatial_dims == 3 else 1),
                                 scale_range=[0.1] * spatial_dims, padding_mode="zeros"))
    if config.noise_prob > 0:
        steps.append(RandGaussianNoised(keys, prob=config.noise_prob, std=0.02))
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return Compose(steps)


class LabelledVolumes(torch.utils.data.Dataset):
    """Cached image tensors joined with the current labels, then the random transforms if any.

    With ``in_memory`` each tensor is read from the disk cache once and then kept (the
    training loop then costs no file reads per step).
    """

    def __init__(self, items: Sequence[Item], volumes: PersistentDataset, transform: Compose | None = None,
                 in_memory: bool = False) -> None:
        self.items, self.volumes, self.transform = list(items), volumes, transform
        self.memory: dict[int, torch.Tensor] | None = {} if in_memory else None

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> torch.Tensor:
        if self.memory is None:
            return torch.as_tensor(self.volumes[index]["image"])
        if index not in self.memory:
            self.memory[index] = torch.as_tensor(self.volumes[index]["image"])
        return self.memory[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        sample = {"image": self.image(index),
                  "targets": torch.tensor(item.targets, dtype=torch.float32),
                  "mask": torch.tensor(item.mask, dtype=torch.float32),
                  "weight": torch.tensor(item.weight, dtype=torch.float32)}
        if self.transform is not None:
            sample = self.transform(sample)
        sample["image"] = torch.as_tensor(sample["image"])
        return sample
