"""The networks qcloop trains: one logit for usable/unusable plus one per artifact output.

3-D: MONAI's DenseNet121 or ResNet (full size or a small configuration for tests and quick
runs), or MIQA's own ``Classifier`` shape so its published weights load. 2-D: torchvision's
ResNet-18 built without downloaded weights (optionally from a local state-dict file) with a
one-channel stem. Whatever the network, the last linear layer is its head: starting from
MIQA or from the current champion keeps the head rows of outputs whose entries still exist
(matched by artifact entry id, then by key) and initialises rows for new outputs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from monai.networks.layers import Reshape
from monai.networks.nets import Classifier, DenseNet, DenseNet121, ResNet
from torch import nn

from models.architectures import ARCHITECTURES

log = logging.getLogger(__name__)

MIQA_SHAPE = (64, 64, 64)
# MIQA's eleven outputs: overall quality (0..10) then ten artifact scores (0..1), in this order.
MIQA_OUTPUTS = ("usable", "normal_variants", "lesions", "full_brain_coverage", "misalignment", "swap_wraparound",
                "ghosting_motion", "inhomogeneity", "susceptibility_metal", "flow_artifact", "truncation_artifact")


def build_network(arch: str, n_outputs: int, spatial_dims: int = 3,
                  weights_file: str | Path | None = None) -> nn.Module:
    """A fresh network with ``n_outputs`` logits for one-channel input."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if (arch == "resnet18_2d") != (spatial_dims == 2):
        raise ValueError(f"architecture {arch!r} does not take {spatial_dims}-D images")
    if arch == "densenet121":
        return DenseNet121(spatial_dims=3, in_channels=1, out_channels=n_outputs)
    if arch == "densenet_small":
        return DenseNet(spatial_dims=3, in_channels=1, out_channels=n_outputs, init_features=8, growth_rate=8,
                        block_config=(2, 2), bn_size=2)
    if arch == "resnet18":
        return ResNet("basic", [2, 2, 2, 2], [64, 128, 256, 512], spatial_dims=3, n_input_channels=1,
                      num_classes=n_outputs)
    if arch == "resnet_small":
        return ResNet("basic", [1, 1, 1, 1], [8, 16, 32, 64], spatial_dims=3, n_input_channels=1,
                      num_classes=n_outputs, conv1_t_stride=2)
    if arch == "miqa":
        return Classifier(in_shape=(1, *MIQA_SHAPE), classes=n_outputs, channels=(4, 8, 16, 32, 64),
                          strides=(2, 2, 2, 2, 2), dropout=0.1)
    return _resnet18_2d(n_outputs, weights_file)


def _resnet18_2d(n_outputs: int, weights_file: str | Path | None) -> nn.Module:
    """torchvision ResNet-18, never downloading: random weights or a local state dict; one input channel."""
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    if weights_file is not None:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    stem = model.conv1
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():  # a grey image sees the sum of the colour filters
        model.conv1.weight.copy_(stem.weight.sum(dim=1, keepdim=True))
    model.fc = nn.Linear(model.fc.in_features, n_outputs)
    return model


def head(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """The module holding the final linear layer, its attribute name and the layer itself."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError("network has no linear output layer")
    parent_name, _, attribute = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attribute, getattr(parent, attribute)


def _match(old_map: Sequence[dict], output: dict) -> int | None:
    """Index of the old output that is the same as ``output`` (usable; artifact by entry id, else key)."""
    for index, old in enumerate(old_map):
        if output["kind"] == "usable" and old["kind"] == "usable":
            return index
        if output["kind"] == "artifact" and old["kind"] == "artifact":
            if output.get("entry_id") is not None and old.get("entry_id") == output["entry_id"]:
                return index
    for index, old in enumerate(old_map):
        if output["kind"] == "artifact" and old["kind"] == "artifact" and old["key"] == output["key"]:
            return index
    return None


def remap_head(model: nn.Module, old_map: Sequence[dict], new_map: Sequence[dict],
               scale: Sequence[tuple[float, float]] | None = None) -> list[str]:
    """Replace the head with one row per new output, keeping matched rows; returns the kept keys.

    ``scale`` gives, per old row, (a, b) so that the new logit is ``a * old + b`` (MIQA's
    outputs are scores, not logits).
    """
    parent, attribute, old = head(model)
    new = nn.Linear(old.in_features, len(new_map), bias=old.bias is not None)
    kept = []
    with torch.no_grad():
        for index, output in enumerate(new_map):
            source = _match(old_map, output)
            if source is None:
                continue
            a, b = scale[source] if scale else (1.0, 0.0)
            new.weight[index] = a * old.weight[source]
            if old.bias is not None:
                new.bias[index] = a * old.bias[source] + b
            kept.append(output["key"])
    setattr(parent, attribute, new)
    if isinstance(getattr(model, "reshape", None), Reshape):  # MONAI's Regressor/Classifier reshape their output
        model.out_shape, model.reshape = (len(new_map),), Reshape(len(new_map))
    return kept


def miqa_network(weights: str | Path, output_map: Sequence[dict]) -> tuple[nn.Module, list[str]]:
    """MIQA's Classifier with its published weights, its head remapped onto ``output_map`` by key.

    MIQA's quality (0..10) and artifact scores (0..1) become logits ``4 * (score - 0.5)``
    (quality divided by 10 first), a warm start close to MIQA's own decision at 0.5.
    """
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"MIQA weights {path} not found")
    model = build_network("miqa", len(MIQA_OUTPUTS))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    old_map = [{"kind": "usable", "key": "usable", "entry_id": None}]
    old_map += [{"kind": "artifact", "key": key, "entry_id": None} for key in MIQA_OUTPUTS[1:]]
    scale = [(0.4, -2.0)] + [(4.0, -2.0)] * (len(MIQA_OUTPUTS) - 1)
    kept = remap_head(model, old_map, output_map, scale)
    log.info("MIQA weights %s: kept outputs %s", path.name, ", ".join(kept))
    return model, kept
