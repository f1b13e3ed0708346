"""MONAI dictionary transforms: deterministic preprocessing (cached on disk), then random
artifact synthesis and augmentation applied to the cached tensors at every epoch.

Preprocessing is :func:`models.preprocessing.preprocess` (one definition shared with serving).
Its output is cached under ``cache_dir`` keyed by the file's content (checksum), its size and
change time, and the preprocessing settings, so a changed file or setting never reads a stale
tensor and two different files never share a key; a frame without a checksum is preprocessed
on every read, never cached. Labels (which change with every decision) are never cached.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import Dataset as MonaiDataset
from monai.data import PersistentDataset
from monai.transforms import (
    Compose,
    EnsureTyped,
    GibbsNoise,
    MapTransform,
    RandAffined,
    RandBiasField,
    RandFlipd,
    RandGaussianNoised,
    RandomizableTransform,
    RandSpatialCropd,
)

from models.preprocessing import PreprocessConfig, cache_name, preprocess
from training.data import Item, Output
from training.synthesis import SYNTHESIZABLE

# Which synthetic artifact marks which artifact entry (by key) as present.


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


def cache_key(item: Mapping[str, Any], config: PreprocessConfig) -> bytes:
    """The on-disk cache key: the file's identity plus preprocessing settings (never the labels)."""
    return cache_name(item["image"], item["checksum"], config).encode()


class CachedVolumes(torch.utils.data.Dataset):
    """Preprocessed image tensors: on disk per file identity and settings, or (no checksum) made on every read."""

    def __init__(self, items: Sequence[Item], config: PreprocessConfig, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        chain = preprocess(config)
        data = [{"image": item.path, "checksum": item.checksum} for item in items]
        self.where = [(bool(d["checksum"]), index) for index, d in enumerate(data)]
        cached = [d for d in data if d["checksum"]]
        self.cached = PersistentDataset(cached, transform=chain, cache_dir=cache_dir,
                                        hash_func=functools.partial(cache_key, config=config))
        self.uncached = MonaiDataset([d for d in data if not d["checksum"]], transform=chain)
        positions = {True: 0, False: 0}
        for slot, (has_checksum, _) in enumerate(self.where):
            self.where[slot] = (has_checksum, positions[has_checksum])
            positions[has_checksum] += 1

    def __len__(self) -> int:
        return len(self.where)

    def __getitem__(self, index: int) -> dict[str, Any]:
        has_checksum, position = self.where[index]
        return (self.cached if has_checksum else self.uncached)[position]


def cached_volumes(items: Sequence[Item], config: PreprocessConfig, cache_dir: Path) -> CachedVolumes:
    """Preprocessed image tensors of the items, computed once per (file identity, settings) and kept on disk."""
    return CachedVolumes(items, config, cache_dir)


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


def augment(outputs: Sequence[Output], config: AugmentConfig, preprocessing: PreprocessConfig) -> Compose:
    """Training-time randomness: synthesis first (on the clean cached tensor), then for a tiled
    network one tile-sized crop at a random place, then augmentation."""
    keys = ["image"]
    spatial_dims = preprocessing.spatial_dims
    steps: list[Callable] = []
    if config.synthesis:
        steps.append(ArtifactSynthesisd(outputs, config))
    if preprocessing.tiled:
        steps.append(RandSpatialCropd(keys, roi_size=preprocessing.spatial_size, random_size=False))
    if config.flip_prob > 0:
        steps.append(RandFlipd(keys, prob=config.flip_prob, spatial_axis=0))
    if config.affine_prob > 0:
        # every input has the network's size here: a cached base grid saves about half of the affine's cost
        steps.append(RandAffined(keys, prob=config.affine_prob, rotate_range=[0.1] * (3 if spatial_dims == 3 else 1),
                                 scale_range=[0.1] * spatial_dims, padding_mode="zeros",
                                 spatial_size=preprocessing.spatial_size, cache_grid=True))
    if config.noise_prob > 0:
        steps.append(RandGaussianNoised(keys, prob=config.noise_prob, std=0.02))
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return Compose(steps)


class LabelledVolumes(torch.utils.data.Dataset):
    """Cached image tensors joined with the current labels, then the random transforms if any.

    With ``in_memory`` each tensor is read from the disk cache once and then kept (the
    training loop then costs no file reads per step).
    """

    def __init__(self, items: Sequence[Item], volumes: CachedVolumes, transform: Compose | None = None,
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
