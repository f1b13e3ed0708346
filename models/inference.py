"""Running a network on whole volumes: tiles batched through the network, outputs averaged.

Shared by training (evaluation of tiled networks) and serving (:class:`Engine`), so a version
scores a scan exactly as it was evaluated. No Flask here: the services hand in paths. What the raw outputs mean is the version's ``output_kind``:
``logits`` (qcloop's networks: sigmoid gives the probability) or ``miqa_scores`` (MIQA's
published network: overall quality 0..10, then artifact scores 0..1).
"""
from __future__ import annotations

import copy
import functools
import logging
import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from models.preprocessing import MIQA, PreprocessConfig, cache_name, preprocess, tiles
from models.uncertainty import predictive_entropy

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


def dropout_copy(net: nn.Module) -> nn.Module | None:
    """A copy of ``net`` in evaluation mode except its dropout layers, which keep dropping (Monte-Carlo
    dropout); None when the network has no dropout with a positive rate. A copy, so the shared network's
    mode never changes under another thread."""
    if not any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in net.modules()):
        return None
    stochastic = copy.deepcopy(net).eval()
    for module in stochastic.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
    return stochastic


def mc_dropout_probabilities(stochastic: nn.Module, image: torch.Tensor, config: PreprocessConfig,
                             output_map: Sequence[dict], output_kind: str, passes: int,
                             batch: int = 8, seed: int = 0) -> list[list[float]]:
    """Per pass, the probabilities of each output with dropout active. A tiled volume deals its tiles out
    over the passes (pass p scores tiles p, p + passes, ...), so all passes together cost about one
    scoring of the volume instead of ``passes`` of them; a volume with fewer tiles than passes is scored
    whole in each. Seeded, so a volume scored twice gets the same uncertainty, and run under a forked
    generator so the caller's random state is untouched."""
    inputs = tiles(image, config)
    runs = []
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        for index in range(passes):
            part = inputs[index::passes] if len(inputs) >= passes else inputs
            outputs = torch.cat([stochastic(part[start:start + batch]) for start in range(0, len(part), batch)])
            runs.append(probabilities(outputs.mean(dim=0), output_map, output_kind))
    return runs


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
    stochastic: nn.Module | None = None  # :func:`dropout_copy` of ``net``; None without dropout

    def score_image(self, image: torch.Tensor, batch: int = 8) -> dict[str, float]:
        """Per output key, the probability usable / artifact present, for a volume preprocessed as
        this version expects (:func:`models.preprocessing.preprocess` with ``self.preprocessing``)."""
        with torch.inference_mode():
            outputs = volume_outputs(self.runner, image, self.preprocessing, batch)
        values = probabilities(outputs, self.output_map, self.output_kind)
        return {entry["key"]: value for entry, value in zip(self.output_map, values)}

    def uncertainty(self, image: torch.Tensor, passes: int, batch: int = 8) -> dict[str, Any] | None:
        """Monte-Carlo dropout over ``passes`` passes: per output key, the predictive entropy in bits;
        None when the network has no dropout or ``passes`` is below 2."""
        if self.stochastic is None or passes < 2:
            return None
        runs = mc_dropout_probabilities(self.stochastic, image, self.preprocessing, self.output_map,
                                        self.output_kind, passes, batch)
        entropy = {entry["key"]: value for entry, value in zip(self.output_map, predictive_entropy(runs))}
        return {"method": "mc_dropout", "passes": passes, "entropy": entropy}

    def score(self, path: str) -> dict[str, float]:
        """:meth:`score_image` of an image file (no cache)."""
        return self.score_image(preprocess(self.preprocessing)({"image": str(path)})["image"])


@dataclass(frozen=True)
class Scored:
    """One image's outcome: the deterministic probabilities and, for networks with dropout, the
    Monte-Carlo dropout uncertainty (:meth:`LoadedModel.uncertainty`)."""

    scores: dict[str, float]
    uncertainty: dict[str, Any] | None


@functools.lru_cache(maxsize=8)
def load_version(tracking_uri: str, name: str, version: str) -> LoadedModel:
    """A registered version, loaded once per process (cached by store, name and version)."""
    from models import registry

    net, metadata = registry.load(tracking_uri, name, version=version)
    config = PreprocessConfig.from_dict(metadata["preprocessing"])
    return LoadedModel(net.eval(), tuple(metadata["output_map"]), config, metadata.get("output_kind", "logits"),
                       name, str(version), optimized(net, config), dropout_copy(net))


def miqa_published(weights: str | Path) -> LoadedModel:
    """MIQA's published network as MIQA runs it: its preprocessing, its eleven outputs as scores."""
    from models.networks import MIQA_OUTPUTS, build_network

    net = build_network("miqa", len(MIQA_OUTPUTS))
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    output_map = tuple({"kind": "usable" if key == "usable" else "artifact", "key": key, "entry_id": None}
                       for key in MIQA_OUTPUTS)
    return LoadedModel(net.eval(), output_map, MIQA, "miqa_scores", Path(weights).name, "published",
                       optimized(net, MIQA), dropout_copy(net))


class Engine:
    """Scores image files with registered versions: each version loaded once per process, each file
    preprocessed once per settings (tensors cached on disk by file identity and preprocessing), tiles
    batched, ``threads`` torch threads, and (:meth:`score_files`) the next file read while the network
    scores the current one. ``mc_passes`` Monte-Carlo dropout passes give :meth:`score_files` its
    uncertainty (networks with dropout; 0 or 1 turns it off)."""

    def __init__(self, tracking_uri: str, cache_dir: Path, threads: int = 0, batch: int = 8,
                 mc_passes: int = 0) -> None:
        self.tracking_uri, self.cache_dir, self.batch = tracking_uri, Path(cache_dir), batch
        self.mc_passes = mc_passes
        self._reader: ThreadPoolExecutor | None = None
        if threads > 0:
            torch.set_num_threads(threads)

    def model(self, name: str, version: str) -> LoadedModel:
        return load_version(self.tracking_uri, name, str(version))

    def image(self, path: str, checksum: str | None, config: PreprocessConfig) -> torch.Tensor:
        """The preprocessed volume, from the disk cache when this file's content was seen with these settings."""
        if not checksum:
            return preprocess(config)({"image": str(path)})["image"]
        cached = self.cache_dir / f"{cache_name(path, checksum, config)}.npy"
        if cached.is_file():
            return torch.from_numpy(np.load(cached))
        image = preprocess(config)({"image": str(path)})["image"]
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(partial, "wb") as handle:  # plain .npy: a third of torch.save's time, no pickle to trust
            np.save(handle, image.numpy())
        os.replace(partial, cached)
        return image

    def score(self, model: LoadedModel, path: str, checksum: str | None) -> dict[str, float]:
        return model.score_image(self.image(path, checksum, model.preprocessing), self.batch)

    def score_files(self, model: LoadedModel,
                    files: Iterable[tuple[Callable[[], str], str | None]]) -> Iterator[Scored | Exception]:
        """Per file, in order, its :class:`Scored` or the error that stopped it (the others go on). ``files`` gives
        for each a function answering its path (called in the caller's thread, just before the file is
        read) and its checksum. While the network scores one file, the next is read, preprocessed and
        cached in a background thread: reading is decompression and disk, scoring is arithmetic, so the
        two overlap instead of taking turns."""
        ahead: Future | None = None
        for locate, checksum in files:
            upcoming = self._read_ahead(locate, checksum, model.preprocessing)
            if ahead is not None:
                yield self._outcome(model, ahead)
            ahead = upcoming
        if ahead is not None:
            yield self._outcome(model, ahead)

    def _read_ahead(self, locate: Callable[[], str], checksum: str | None, config: PreprocessConfig) -> Future:
        try:
            path = locate()
        except Exception as err:  # noqa: BLE001 - reported as this file's outcome
            failed: Future = Future()
            failed.set_exception(err)
            return failed
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qcloop-read-ahead")
        return self._reader.submit(self.image, path, checksum, config)

    def _outcome(self, model: LoadedModel, image: Future) -> Scored | Exception:
        try:
            volume = image.result()
            return Scored(model.score_image(volume, self.batch), model.uncertainty(volume, self.mc_passes, self.batch))
        except Exception as err:  # noqa: BLE001 - one unreadable image is reported, not the end of the others
            return err
