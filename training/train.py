"""``train(cfg) -> TrainResult``: one training run from a labelled dataset to a registered model.

Order matters for "fail early, register nothing": the store is checked, the network built
(from scratch, MIQA's weights or the champion) and every file preprocessed into the cache
before the MLflow run opens; the model is registered only after training, evaluation and
the caller's last check (``before_register``, e.g. "the vocabulary did not change").
Evaluation also scores the registry's current champion on this run's held-out split
(``champion_<split>_usable_auc``), so promotion compares both models on the same frames.

Progress goes through a small JSON file written by rank zero of the trainer and read by a
thread of the calling process, so the same code path serves one device, several devices
(``strategy="ddp_spawn"``) and cancellation: when ``cfg.progress`` raises
:class:`TrainingCancelled`, a flag file tells the trainer to stop at its next batch.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from models import registry
from models.networks import MIQA_SHAPE, build_network, miqa_network, remap_head
from training import tracking
from training.data import Dataset, DatasetError
from training.datamodule import QCDataModule
from training.module import QCModule, epoch_metrics, masked_bce
from training.transforms import AugmentConfig, PreprocessConfig

log = logging.getLogger(__name__)

INITS = ("scratch", "miqa", "champion")


class TrainingCancelled(Exception):
    """Raised by a progress callback to stop the run; the MLflow run ends KILLED."""


@dataclass
class TrainConfig:
    dataset: Dataset
    tracking_uri: str
    artifact_root: str
    experiment: str
    model_name: str
    work_dir: Path
    cache_dir: Path
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    arch: str = "densenet121"
    init: str = "scratch"
    miqa_weights: str | None = None
    weights_file: str | None = None  # local torchvision weights for the 2-D backbone
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_workers: int = 0
    run_name: str = "qcloop"
    params: dict[str, Any] = field(default_factory=dict)  # extra run parameters (vocabulary version, ...)
    tags: dict[str, str] = field(default_factory=dict)
    progress: Callable[[dict[str, Any]], None] | None = None
    before_register: Callable[[], None] | None = None
    # Called with (MLflow run id, experiment id) as soon as the run is open, so a failure can point at it.
    on_run_opened: Callable[[str, str], None] | None = None


@dataclass
class TrainResult:
    run_id: str
    experiment_id: str
    version: str
    alias: str
    output_map: list[dict[str, Any]]
    metrics: dict[str, float]
    counts: dict[str, dict[str, dict[str, int]]]
    dataset_hash: str
    epochs_run: int
    arch: str
    preprocessing: dict[str, Any]
    # The champion scored on this run's held-out split (metrics champion_<split>_usable_*), if any.
    champion_version: str | None = None


class ProgressReporter(L.Callback):
    """Writes epoch, step and current metrics to a file (rank zero) and stops when a cancel flag appears."""

    def __init__(self, folder: Path, interval_s: float = 1.0) -> None:
        self.path, self.flag, self.interval_s = folder / "progress.json", folder / "cancel", interval_s
        self._last = 0.0

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: int, force: bool = False) -> None:
        if self.flag.exists():
            raise TrainingCancelled("training cancelled")
        now = time.monotonic()
        if not trainer.is_global_zero or (not force and now - self._last < self.interval_s):
            return
        self._last = now
        steps = max(1, int(trainer.num_training_batches))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if getattr(pl_module, "last_loss", None) is not None:
            metrics["train/step_loss"] = float(pl_module.last_loss)
        report = {"epoch": trainer.current_epoch + 1, "epochs": trainer.max_epochs, "step": batch, "steps": steps,
                  "fraction": min(1.0, (trainer.current_epoch * steps + batch) / (steps * trainer.max_epochs)),
                  "metrics": metrics}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._write(trainer, pl_module, batch_idx + 1)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, pl_module, int(trainer.num_training_batches), force=True)


class _ProgressRelay(threading.Thread):
    """Reads the reporter's file and hands each new report to the caller; a cancel becomes a flag file."""

    def __init__(self, reporter: ProgressReporter, callback: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(daemon=True, name="qcloop-train-progress")
        self.reporter, self.callback = reporter, callback
        self.stopped, self.cancelled = threading.Event(), False
        self._seen = ""

    def poll(self) -> None:
        try:
            text = self.reporter.path.read_text()
        except OSError:
            return
        if text == self._seen:
            return
        self._seen = text
        try:
            self.callback(json.loads(text))
        except TrainingCancelled:
            self.cancelled = True
            self.reporter.flag.touch()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.poll()


def _network(cfg: TrainConfig, output_map: list[dict[str, Any]]) -> tuple[torch.nn.Module, TrainConfig, list[str]]:
    """The network to start from and the config it implies (MIQA and the champion fix shape and architecture)."""
    if cfg.init == "scratch":
        net = build_network(cfg.arch, len(output_map), cfg.preprocess.spatial_dims, cfg.weights_file)
        return net, cfg, []
    if cfg.init == "miqa":
        if not cfg.miqa_weights:
            raise DatasetError("no MIQA weights file configured (QCLOOP_MIQA_WEIGHTS)")
        try:
            net, kept = miqa_network(cfg.miqa_weights, output_map)
        except FileNotFoundError as err:
            raise DatasetError(str(err)) from err
        return net, replace(cfg, arch="miqa", preprocess=replace(cfg.preprocess, spatial_size=MIQA_SHAPE)), kept
    if cfg.init == "champion":
        try:
            net, metadata = registry.load(cfg.tracking_uri, cfg.model_name)
        except LookupError as err:
            raise DatasetError(f"cannot start from the champion: {err}") from err
        kept = remap_head(net, metadata["output_map"], output_map)
        preprocess = PreprocessConfig.from_dict(metadata["preprocessing"])
        return net, replace(cfg, arch=metadata["arch"], preprocess=preprocess), kept
    raise DatasetError(f"init must be one of {', '.join(INITS)}, not {cfg.init!r}")


def _evaluate(net: torch.nn.Module, loader) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Each batch of a split with the network's logits (evaluation mode, no gradient, the network's device)."""
    net.eval()
    device = next(net.parameters()).device
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            logits = net(batch["image"])
        yield logits, batch


def _predict(module: QCModule, loader) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Logits, targets and masks of a split, and its masked loss (evaluation mode, no gradient)."""
    parts, losses, sizes = [], [], []
    for logits, batch in _evaluate(module, loader):
        losses.append(float(masked_bce(logits, batch["targets"], batch["mask"], batch["weight"], module.pos_weight)))
        sizes.append(len(logits))
        parts.append((logits.cpu(), batch["targets"].cpu(), batch["mask"].cpu()))
    if not parts:
        return np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0)), float("nan")
    logits, targets, mask = (torch.cat(p).numpy() for p in zip(*parts))
    return logits, targets, mask, float(np.average(losses, weights=sizes))


def _champion_metrics(cfg: TrainConfig, data: QCDataModule, split: str) -> tuple[str, dict[str, float]] | None:
    """The registry's champion scored on this run's ``split``: its version and usable metrics.

    Same frames, labels, mask and metric code as the run's own ``best_<split>_usable_*``, so
    promotion can compare the two on equal terms. The champion reads the frames through its
    own preprocessing (its input contract), the run's own whenever the settings match. None
    when the run has no usable output, or there is no champion or it has none.
    """
    usable = next((i for i, o in enumerate(cfg.dataset.outputs) if o.kind == "usable"), None)
    version = None if usable is None else registry.alias_version(cfg.tracking_uri, cfg.model_name)
    if version is None:
        return None
    net, metadata = registry.load(cfg.tracking_uri, cfg.model_name, version=version)
    column = next((i for i, o in enumerate(metadata.get("output_map") or []) if o["kind"] == "usable"), None)
    if column is None:
        log.info("%s version %s has no usable output: not scored on this run's split", cfg.model_name, version)
        return None
    preprocess = PreprocessConfig.from_dict(metadata["preprocessing"])
    if preprocess != cfg.preprocess:
        data = QCDataModule(cfg.dataset, preprocess, cfg.augmentation, cfg.cache_dir, cfg.batch_size,
                            cfg.num_workers)
        data.setup()
    loader = data.test_dataloader() if split == "test" else data.val_dataloader()
    parts = [(logits[:, column:column + 1].cpu(), batch["targets"][:, usable:usable + 1].cpu(),
              batch["mask"][:, usable:usable + 1].cpu()) for logits, batch in _evaluate(net.cpu(), loader)]
    logits, targets, mask = (torch.cat(p).float().numpy() for p in zip(*parts))
    return version, epoch_metrics([cfg.dataset.outputs[usable]], logits, targets, mask)


def _score_champion(cfg: TrainConfig, data: QCDataModule, split: str,
                    run_id: str) -> tuple[str, dict[str, float]] | None:
    """:func:`_champion_metrics`, its version logged as a run parameter; a champion that cannot be
    loaded or run is logged (``champion_score_error``) and skipped: the run stands, promotion falls back."""
    try:
        scored = _champion_metrics(cfg, data, split)
    except Exception as err:  # noqa: BLE001 - any failure of the old model must not fail the new run
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"
        log.warning("could not score the champion of %s on run %s's %s split (%s)", cfg.model_name, run_id,
                    split, reason)
        tracking.log_params(cfg.tracking_uri, run_id, {"champion_score_error": reason})
        return None
    if scored is not None:
        tracking.log_params(cfg.tracking_uri, run_id, {"champion_version": scored[0], "champion_split": split})
    return scored


def _run_params(cfg: TrainConfig, dataset: Dataset, kept: list[str]) -> dict[str, Any]:
    splits = {name: {"frames": len(dataset.split(name)), "subjects": len({i.subject for i in dataset.split(name)})}
              for name in ("train", "val", "test")}
    return {
        **cfg.params,
        "dataset_hash": dataset.digest(), "split": splits, "split_seed": dataset.seed,
        "counts": {name: dataset.counts(name) for name in ("train", "val", "test")},
        "outputs": [o.key for o in dataset.outputs], "arch": cfg.arch, "init": cfg.init,
        "init_kept_outputs": kept, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "patience": cfg.patience, "preprocessing": cfg.preprocess.as_dict(),
        "augmentation": {"synthesis": cfg.augmentation.synthesis, "synthesis_usable": cfg.augmentation.synthesis_usable,
                         "flip_prob": cfg.augmentation.flip_prob, "affine_prob": cfg.augmentation.affine_prob,
                         "noise_prob": cfg.augmentation.noise_prob},
        "devices": cfg.devices, "strategy": cfg.strategy, "accelerator": cfg.accelerator,
        "code_version": tracking.code_version(), "torch": torch.__version__,
    }


def build_trainer(epochs: int, accelerator: str, devices: int | str, strategy: str, logger, work_dir: Path,
                  patience: int, callbacks: list[L.Callback]) -> tuple[L.Trainer, ModelCheckpoint]:
    """qcloop's Trainer: early stopping and best checkpoint on val/loss, metrics to the logger every 10 steps."""
    checkpoint = ModelCheckpoint(dirpath=work_dir / "checkpoints", filename="best", monitor="val/loss", mode="min",
                                 save_top_k=1)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=accelerator, devices=devices, strategy=strategy, deterministic="warn",
        logger=logger, log_every_n_steps=10, num_sanity_val_steps=0,
        callbacks=[EarlyStopping(monitor="val/loss", mode="min", patience=patience), checkpoint, *callbacks],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(work_dir),
    )
    return trainer, checkpoint


def train(cfg: TrainConfig) -> TrainResult:
    """Train, evaluate, log and register; raises DatasetError/TrackingError before anything is logged."""
    dataset = cfg.dataset
    output_map = [o.as_dict() for o in dataset.outputs]
    tracking.check_store(cfg.tracking_uri)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    net, cfg, kept = _network(cfg, output_map)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    data = QCDataModule(dataset, cfg.preprocess, cfg.augmentation, cfg.cache_dir, cfg.batch_size, cfg.num_workers)
    try:
        data.warm_cache()
    except Exception as err:  # noqa: BLE001 - MONAI wraps reader errors; say which file in one line
        raise DatasetError(f"cannot read an image file: {str(err).strip().splitlines()[-1][:300]}") from err

    experiment_id = tracking.ensure_experiment(cfg.tracking_uri, cfg.experiment, cfg.artifact_root)
    logger = tracking.make_logger(cfg.tracking_uri, cfg.experiment, cfg.run_name, cfg.tags)
    run_id = logger.run_id
    reporter = ProgressReporter(cfg.work_dir)
    relay = _ProgressRelay(reporter, cfg.progress) if cfg.progress else None
    try:
        if cfg.on_run_opened is not None:
            cfg.on_run_opened(run_id, experiment_id)
        tracking.log_params(cfg.tracking_uri, run_id, _run_params(cfg, dataset, kept))
        tracking.log_files(cfg.tracking_uri, run_id, [dataset.write_manifest(cfg.work_dir / "manifest.csv")])
        module = QCModule(net, output_map, dataset.pos_weight(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        trainer, checkpoint = build_trainer(cfg.epochs, cfg.accelerator, cfg.devices, cfg.strategy, logger,
                                            cfg.work_dir, cfg.patience, [reporter])
        if relay is not None:
            relay.start()
        try:
            trainer.fit(module, datamodule=data)
        finally:
            if relay is not None:
                relay.stopped.set()
                relay.join()
                relay.poll()
        if relay is not None and relay.cancelled:
            raise TrainingCancelled("training cancelled")
        if not trainer.is_global_zero:  # other ranks of a subprocess-launched DDP run stop here
            return None  # type: ignore[return-value]
        result = _finish_run(cfg, trainer, module, checkpoint, data, run_id, experiment_id, output_map)
    except TrainingCancelled:
        tracking.finish(cfg.tracking_uri, run_id, "KILLED", "cancelled")
        raise
    except BaseException as err:
        tracking.finish(cfg.tracking_uri, run_id, "FAILED", f"{type(err).__name__}: {err}")
        raise
    tracking.finish(cfg.tracking_uri, run_id, "FINISHED")
    return result


def _finish_run(cfg: TrainConfig, trainer: L.Trainer, module: QCModule, checkpoint: ModelCheckpoint,
                data: QCDataModule, run_id: str, experiment_id: str, output_map: list[dict]) -> TrainResult:
    """Best weights back, val/test metrics, the champion's on the same held-out split, plots, then (after
    the caller's check) log and register."""
    dataset = cfg.dataset
    if checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    module = module.cpu()
    metrics: dict[str, float] = {}
    evaluated = {}
    for split, loader in (("val", data.val_dataloader()), ("test", data.test_dataloader())):
        logits, targets, mask, loss = _predict(module, loader)
        if len(logits):
            evaluated[split] = (logits, targets, mask)
            metrics[f"{split}/loss"] = loss
            found = epoch_metrics(dataset.outputs, logits, targets, mask)
            metrics.update({f"{split}/{key}": value for key, value in found.items()})
    final = {f"best_{k.replace('/', '_')}": v for k, v in metrics.items()}
    split = "test" if "test" in evaluated else "val"
    champion = _score_champion(cfg, data, split, run_id)
    if champion is not None:
        final.update({f"champion_{split}_{key}": value for key, value in champion[1].items()})
    tracking.log_metrics(cfg.tracking_uri, run_id, final, step=trainer.global_step)
    logits, targets, mask = evaluated[split]
    curves = tracking.metric_history(cfg.tracking_uri, run_id, ["train/loss", "val/loss", "val/usable_auc"])
    pngs = tracking.plots(cfg.work_dir / "plots", dataset.outputs, logits, targets, mask, curves)
    tracking.log_files(cfg.tracking_uri, run_id, pngs, "plots")
    if cfg.before_register is not None:
        cfg.before_register()
    example = torch.zeros((1, 1, *cfg.preprocess.spatial_size), dtype=torch.float32)
    metadata = {
        "output_map": output_map, "preprocessing": cfg.preprocess.as_dict(), "arch": cfg.arch,
        "input": f"float32 (batch, 1, {', '.join(map(str, cfg.preprocess.spatial_size))}): one channel, "
                 f"{cfg.preprocess.orientation}, intensities scaled 0..1 between percentiles "
                 f"{cfg.preprocess.percentiles[0]:g} and {cfg.preprocess.percentiles[1]:g}",
        "output": "one logit per output_map entry; sigmoid = probability usable / artifact present",
        "vocabulary_version": cfg.params.get("vocabulary_version"), "dataset_hash": dataset.digest(),
        "code_version": tracking.code_version(),
    }
    version = tracking.log_model(cfg.tracking_uri, run_id, module.net, example, cfg.model_name, metadata)
    alias = registry.assign_new_version(cfg.tracking_uri, cfg.model_name, version)
    return TrainResult(run_id=run_id, experiment_id=experiment_id, version=version, alias=alias,
                       output_map=output_map, metrics=final,
                       counts={name: dataset.counts(name) for name in ("train", "val", "test")},
                       dataset_hash=dataset.digest(), epochs_run=len(curves["val/loss"]),
                       arch=cfg.arch, preprocessing=cfg.preprocess.as_dict(),
                       champion_version=None if champion is None else champion[0])
