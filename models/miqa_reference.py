"""MIQA's inference written out as MIQA's own code runs it: the yardstick for qcloop's engine.

Read the volume, reorient to LPS+ (nibabel's closest canonical RAS+ array with axes 0 and 1
flipped), min-max scale to 0..1, cut ``ceil(n / 64)`` tiles per axis starting at
``round(k * (n - 64) / (steps - 1))`` (an axis shorter than 64 padded at its end with its edge),
run the tiles one at a time, average the outputs, clamp quality / 10 and each artifact score to
0..1. Nothing is cached or batched. Tests and ``bench/inference.py`` compare
:mod:`models.inference` with it; the product never calls it.
"""
from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from models.networks import MIQA_OUTPUTS

TILE = 64


def lps_array(path: str | Path) -> np.ndarray:
    """The volume as MIQA feeds it: LPS+ voxel order, intensities min-max scaled to 0..1 (float32)."""
    array = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, dtype=np.float64)[::-1, ::-1, :]
    return ((array - array.min()) / (array.max() - array.min())).astype(np.float32)


def tiles(array: np.ndarray) -> list[np.ndarray]:
    """MIQA's 64^3 tiles of an array, in i, j, k order."""
    padded = np.pad(array, [(0, max(0, TILE - n)) for n in array.shape], mode="edge")
    starts = [[round(k * (n - TILE) / max(1, math.ceil(n / TILE) - 1)) for k in range(math.ceil(n / TILE))]
              for n in padded.shape]
    return [padded[i:i + TILE, j:j + TILE, k:k + TILE] for i in starts[0] for j in starts[1] for k in starts[2]]


def scores(path: str | Path, net: torch.nn.Module) -> dict[str, float]:
    """MIQA's labelled results for one file with MIQA's network (eval mode): {output key: 0..1}."""
    outputs = []
    with torch.no_grad():
        for tile in tiles(lps_array(path)):
            outputs.append(net(torch.from_numpy(np.ascontiguousarray(tile))[None, None])[0])
    mean = torch.stack(outputs).mean(dim=0).numpy()
    return {key: float(np.clip(mean[index] / (10 if index == 0 else 1), 0, 1))
            for index, key in enumerate(MIQA_OUTPUTS)}
