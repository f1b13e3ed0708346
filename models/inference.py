"""Running a network on whole volumes: tiles batched through the network, outputs averaged.

Shared by training (evaluation of tiled networks) and serving (:class:`Engine`), so a version
scores a scan exactly as it was evaluated. No Flask here: the services hand in paths. What the raw outputs mean is the version's ``output_kind``:
``logits`` (qcloop's networks: sigmoid gives the probability) or ``miqa_scores`` (MIQA's
published network: overall quality 0..10, then artifact scores 0..1).
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from models.preprocessing import MIQA, PreprocessConfig, cache_name, preprocess, tiles

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("logits", "miqa_scores")


def volume_outputs(net: nn.Module, image: torch.Tensor, config: PreprocessConfig, batch: int = 8) -> torch.Tensor:
    """The network's raw outputs for one preprocessed volume ``(C, *spatial)``: the mean over its
    tiles (one tile unless the config is tiled), ``batch`` tiles per forward pass."""
    inputs = tiles(image, config)
    first = next(net.parameters(), None)  # a frozen (optimized) network keeps its weights as constants
    device = first.device if first is not None else torch.device("cpu")
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


def optimized(net: nn.Module, config: PreprocessConfig, batch: int = 8) -> nn.Module:
    """The network traced for its input shape, frozen and fused for inference (convolution and
    normalisation folded, oneDNN kernels): about twice as fast on a CPU, same outputs within 1e-5.
    A network that cannot be traced is used as it is."""
    example = torch.zeros((batch, 1, *config.spatial_size))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic
            traced = torch.jit.trace(net.eval(), example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception as err:  # noqa: BLE001 - tracing fails in many ways; eager mode always works
        log.info("network not traced for inference (%s): running it eagerly", err)
        return net.eval()


@dataclass(frozen=True)
class LoadedModel:
    """A network ready to score, with what its registered metadata says about inputs and outputs.

    ``net`` is the network as registered; ``runner`` what scores (:func:`optimized`)."""

    net: nn.Module
    output_map: tuple[dict, ...]
    preprocessing: PreprocessConfig
    output_kind: str
    name: str
    version: str
    runner: nn.Module

    def score_image(self, image: torch.Tensor, batch: int = 8) -> dict[str, float]:
        """Per output key, the probability usable / artifact present, for a volume preprocessed as
        this version expects (:func:`models.preprocessing.preprocess` with ``self.preprocessing``)."""
        with torch.inference_mode():
            outputs = volume_outputs(self.runner, image, self.preprocessing, batch)
        values = probabilities(outputs, self.output_map, self.output_kind)
        return {entry["key"]: value for entry, value in zip(self.output_map, values)}

    def score(self, path: str) -> dict[str, float]:
        """:meth:`score_image` of an image file (no cache)."""
        return self.score_image(preprocess(self.preprocessing)({"image": str(path)})["image"])


@functools.lru_cache(maxsize=8)
def load_version(tracking_uri: str, name: str, version: str) -> LoadedModel:
    """A registered version, loaded once per process (cached by store, name and version)."""
    from models import registry

    net, metadata = registry.load(tracking_uri, name, version=version)
    config = PreprocessConfig.from_dict(metadata["preprocessing"])
    return LoadedModel(net.eval(), tuple(metadata["output_map"]), config, metadata.get("output_kind", "logits"),
                       name, str(version), optimized(net, config))


def miqa_published(weights: str | Path) -> LoadedModel:
    """MIQA's published network as MIQA runs it: its preprocessing, its eleven outputs as scores."""
    from models.networks import MIQA_OUTPUTS, build_network

    net = build_network("miqa", len(MIQA_OUTPUTS))
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    output_map = tuple({"kind": "usable" if key == "usable" else "artifact", "key": key, "entry_id": None}
                       for key in MIQA_OUTPUTS)
    return LoadedModel(net.eval(), output_map, MIQA, "miqa_scores", Path(weights).name, "published",
                       optimized(net, MIQA))


class Engine:
    """Scores image files with registered versions: each version loaded once per process, each file
    preprocessed once per settings (tensors cached on disk by file identity and preprocessing), tiles
    batched, ``threads`` torch threads."""

    def __init__(self, tracking_uri: str, cache_dir: Path, threads: int = 0, batch: int = 8) -> None:
        self.tracking_uri, self.cache_dir, self.batch = tracking_uri, Path(cache_dir), batch
        if threads > 0:
            torch.set_num_threads(threads)

    def model(self, name: str, version: str) -> LoadedModel:
        return load_version(self.tracking_uri, name, str(version))

    def image(self, path: str, checksum: str | None, config: PreprocessConfig) -> torch.Tensor:
        """The preprocessed volume, from the disk cache when this file's content was seen with these settings."""
        if not checksum:
            return preprocess(config)({"image": str(path)})["image"]
        cached = self.cache_dir / f"{cache_name(path, checksum, config)}.pt"
        if cached.is_file():
            return torch.load(cached, weights_only=True)
        image = preprocess(config)({"image": str(path)})["image"]
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        torch.save(image, partial)
        os.replace(partial, cached)
        return image

    def score(self, model: LoadedModel, path: str, checksum: str | None) -> dict[str, float]:
        return model.score_image(self.image(path, checksum, model.preprocessing), self.batch)
