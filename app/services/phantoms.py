"""Brain-like phantom volumes and synthetic artifacts, for the demo and for tests.

Nested ellipsoids (scalp, skull, grey matter, white matter, ventricles) with smooth
texture; artifacts are made the way scanners make them (k-space ghosting and truncation,
a multiplicative bias field, phase wrap, Rician noise).
"""
from __future__ import annotations

import numpy as np

ARTIFACTS = ("ghosting", "inhomogeneity", "wraparound", "truncation", "noise")


def _ellipsoid(grid: tuple[np.ndarray, ...], center, radii) -> np.ndarray:
    return sum(((axis - c) / r) ** 2 for axis, c, r in zip(grid, center, radii)) <= 1.0


def brain_phantom(shape: tuple[int, int, int] = (64, 72, 56), seed: int = 0) -> np.ndarray:
    """A float32 T1-like head in [0, 1] with subject-to-subject variation from the seed."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    scale = 1 + rng.uniform(-0.06, 0.06, 3)
    shift = rng.uniform(-0.03, 0.03, 3)
    volume = np.zeros(shape, np.float32)
    layers = (  # (radii, intensity): scalp, skull (dark), CSF, grey matter, white matter
        ((0.92, 0.95, 0.90), 0.55), ((0.86, 0.89, 0.84), 0.08), ((0.82, 0.85, 0.80), 0.25),
        ((0.78, 0.81, 0.76), 0.55), ((0.58, 0.63, 0.56), 0.85),
    )
    for radii, value in layers:
        volume[_ellipsoid(grid, shift, np.array(radii) * scale)] = value
    for side in (-1, 1):  # lateral ventricles
        volume[_ellipsoid(grid, shift + (0.14 * side, 0.05, 0.05), (0.08, 0.3, 0.12))] = 0.2
    texture = rng.normal(0, 1, shape)
    kernel = np.fft.fftn(np.exp(-sum(g ** 2 for g in grid) / 0.01))
    texture = np.real(np.fft.ifftn(np.fft.fftn(texture) * kernel))
    texture /= np.abs(texture).max() + 1e-9
    volume *= 1 + 0.08 * texture.astype(np.float32)
    return np.clip(volume, 0, 1).astype(np.float32)


def add_artifact(volume: np.ndarray, artifact: str, severity: float = 1.0, seed: int = 0) -> np.ndarray:
    """The volume with one synthetic artifact of the given severity (0..1]."""
    rng = np.random.default_rng(seed)
    if artifact == "ghosting":  # periodic phase errors along the phase-encode axis -> N/2 ghosts
        k = np.fft.fftshift(np.fft.fftn(volume))
        k[:, ::2, :] *= np.exp(1j * 0.9 * severity)
        out = np.abs(np.fft.ifftn(np.fft.ifftshift(k)))
    elif artifact == "inhomogeneity":  # smooth multiplicative bias field
        grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in volume.shape), indexing="ij")
        coeffs = rng.uniform(-1, 1, 3)
        field = np.exp(severity * 0.9 * sum(c * g for c, g in zip(coeffs, grid)))
        out = volume * field
    elif artifact == "wraparound":  # field of view too small along the phase-encode axis
        n = volume.shape[1]
        cut = max(1, int(n * 0.18 * severity))
        out = volume.copy()
        out[:, :cut, :] += volume[:, n - cut:, :]
        out[:, n - cut:, :] += volume[:, :cut, :]
    elif artifact == "truncation":  # k-space truncation -> Gibbs ringing at edges
        k = np.fft.fftshift(np.fft.fftn(volume))
        mask = np.zeros(volume.shape, bool)
        keep = [max(2, int(n / 2 * (0.7 - 0.3 * severity))) for n in volume.shape]
        mask[tuple(slice(n // 2 - h, n // 2 + h) for n, h in zip(volume.shape, keep))] = True
        out = np.abs(np.fft.ifftn(np.fft.ifftshift(k * mask)))
    elif artifact == "noise":  # Rician noise of a magnitude image
        sigma = 0.08 * severity
        out = np.sqrt((volume + rng.normal(0, sigma, volume.shape)) ** 2 + rng.normal(0, sigma, volume.shape) ** 2)
    else:
        raise ValueError(f"unknown artifact {artifact!r}; choose from {', '.join(ARTIFACTS)}")
    return np.clip(out, 0, None).astype(np.float32)


def to_uint16(volume: np.ndarray) -> np.ndarray:
    return np.clip(volume / max(float(volume.max()), 1e-6) * 4000, 0, 65535).astype(np.uint16)
