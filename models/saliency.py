"""Where a version looked: a Grad-CAM map of one output, on the grid of the image file it scored.

The map is computed on the network's input exactly as scoring prepares it (the version's
:class:`~models.preprocessing.PreprocessConfig`), then carried back to the file's voxels: a
``resize`` input is resized back to the oriented volume, a ``tiles`` input has its tiles' maps
averaged where they overlap and its end padding cut, and the orientation is undone. The layer is
the deepest convolution that still keeps 8 voxels along every axis, so the map is coarse enough to
mean something and fine enough to point at a region. Values are scaled to 0..1 for display.
"""
from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from torch import nn

from models.inference import LoadedModel
from models.preprocessing import PreprocessConfig, preprocess, tile_grid, tiles

log = logging.getLogger(__name__)

MIN_MAP_VOXELS = 8  # along each axis, at the layer the map is read from
_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's axis labels, as preprocessing orients


def target_layer(net: nn.Module, config: PreprocessConfig) -> str:
    """The deepest convolution whose output keeps at least MIN_MAP_VOXELS along every axis (for this
    input size); ValueError when the network has none."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [module.register_forward_hook(lambda m, i, out, name=name: shapes.__setitem__(name, tuple(out.shape[2:])))
             for name, module in net.named_modules() if isinstance(module, (nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros((1, 1, *config.spatial_size)))
    finally:
        for hook in hooks:
            hook.remove()
    fine_enough = [name for name, shape in shapes.items() if min(shape) >= MIN_MAP_VOXELS]
    if not fine_enough:
        raise ValueError("the network has no convolution to read a saliency map from")
    return fine_enough[-1]


def _raw(x: torch.Tensor) -> torch.Tensor:
    return x


def _network_map(model: LoadedModel, image: torch.Tensor, output: int) -> torch.Tensor:
    """Grad-CAM of one output over the preprocessed volume ``(1, *spatial)``: tiles' maps averaged where
    they overlap (unnormalised, so tiles keep their relative weight)."""
    config = model.preprocessing
    cam = GradCAM(model.net, target_layers=target_layer(model.net, config), postprocessing=_raw)
    inputs = tiles(image, config)
    maps = torch.cat([cam(inputs[start:start + 1], class_idx=output).detach() for start in range(len(inputs))])
    if not config.tiled:
        return maps[0, 0]
    size = tuple(config.spatial_size)
    total = torch.zeros(image.shape[1:])
    covered = torch.zeros(image.shape[1:])
    for corner, tile_map in zip(tile_grid(tuple(image.shape[1:]), size), maps):
        where = tuple(slice(start, start + s) for start, s in zip(corner, size))
        total[where] += tile_map[0]
        covered[where] += 1
    return total / covered.clamp(min=1)


def saliency_image(model: LoadedModel, path: str, output_key: str) -> nib.Nifti1Image:
    """The map of ``output_key`` for the image file at ``path``, on that file's voxel grid and affine,
    float32 scaled to 0..1; ValueError for an output the version lacks or a 2-D version."""
    keys = [entry["key"] for entry in model.output_map]
    if output_key not in keys:
        raise ValueError(f"the model has no output {output_key!r}; it has {', '.join(keys)}")
    config = model.preprocessing
    if config.spatial_dims != 3:
        raise ValueError("saliency maps are made for 3-D versions")
    source = nib.load(path)
    grid = tuple(int(n) for n in source.shape[:3])
    to_network = ornt_transform(io_orientation(source.affine), axcodes2ornt(config.orientation, labels=_LABELS))
    oriented = tuple(int(n) for n in apply_orientation(np.zeros(grid, dtype=np.uint8), to_network).shape)
    image = preprocess(config)({"image": str(path)})["image"]
    with torch.enable_grad():
        heat = _network_map(model, image, keys.index(output_key))
    if config.tiled and config.pixdim is None:
        heat = heat[tuple(slice(0, n) for n in oriented)]  # the end padding of short axes
    else:
        heat = F.interpolate(heat[None, None], size=oriented, mode="trilinear", align_corners=False)[0, 0]
    back = ornt_transform(axcodes2ornt(config.orientation, labels=_LABELS), io_orientation(source.affine))
    values = apply_orientation(heat.numpy(), back).astype(np.float32)
    span = float(values.max() - values.min())
    values = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    log.info("saliency of %s for %s %s: %s map from %s", output_key, model.name, model.version,
             "x".join(map(str, values.shape)), path)
    return nib.Nifti1Image(np.ascontiguousarray(values), source.affine)
