"""Running a network on whole volumes: tiles batched through the network, outputs averaged.

Shared by training (evaluation of tiled networks) and serving, so a version scores a scan
exactly as it was evaluated. What the raw outputs mean is the version's ``output_kind``:
``logits`` (qcloop's networks: sigmoid gives the probability) or ``miqa_scores`` (MIQA's
published network: overall quality 0..10, then artifact scores 0..1).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models.preprocessing import PreprocessConfig, tiles

OUTPUT_KINDS = ("logits", "miqa_scores")


def volume_outputs(net: nn.Module, image: torch.Tensor, config: PreprocessConfig, batch: int = 8) -> torch.Tensor:
    """The network's raw outputs for one preprocessed volume ``(C, *spatial)``: the mean over its
    tiles (one tile unless the config is tiled), ``batch`` tiles per forward pass."""
    inputs = tiles(image, config)
    device = next(net.parameters()).device
    parts = [net(inputs[start:start + batch].to(device)) for start in range(0, len(inputs), batch)]
    return torch.cat(parts).mean(dim=0)


def probabilities(outputs: torch.Tensor, output_map: Sequence[dict], output_kind: str) -> list[float]:
    """Per output map entry, the probability that the scan is usable / the artifact is present."""
    if output_kind == "logits":
        return [float(v) for v in torch.sigmoid(outputs.float())]
    if output_kind == "miqa_scores":
        return [min(1.0, max(0.0, float(v) / (10.0 if entry["kind"] == "usable" else 1.0)))
                for v, entry in zip(outputs, output_map)]
    raise ValueError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, not {output_kind!r}")
