"""``train(cfg) -> TrainResult``: one training run from a labelled dataset to a registered model.

Order matters for "fail early, register nothing": the store is checked, the network built
(from scratch, MIQA's weights or the champion) and every file preprocessed into the cache
before the MLflow run opens; the model is registered only after training, evaluation and
the caller's last check (``before_register``, e.g. "the vocabulary did not change").

Held-out metrics (``heldout_*``, with 95% bootstrap intervals) come either from the test
split of a holdout dataset (early stopping and the best checkpoint on the validation usable
AUC) or, for cross-validated datasets, from out-of-fold predictions: each fold's model never
saw the scans it scores, every fold and the final model (trained on every labelled scan)
train the same fixed number of epochs, so no scored scan chose an epoch. Evaluation also
scores the registry's current champion on the same held-out scans (``champion_heldout_*``),
so promotion compares both models on the same frames. A version becomes the first champion
only with a defined held-out usable AUC above chance (``TrainResult.gate``).

Progress and cancellation: :mod:`training.progress`.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from models import registry
from models.networks import build_network, miqa_network, remap_head
from models.preprocessing import MIQA, PreprocessConfig
from training import tracking
from training.data import Dataset, DatasetError
from training.datamodule import QCDataModule
from training.metrics import defined, epoch_metrics, first_champion_gate, heldout_metrics
from training.module import QCModule, masked_bce
from training.progress import ProgressReporter, TrainingCancelled, ProgressRelay, quiet_libraries
from training.transforms import AugmentConfig

log = logging.getLogger(__name__)

INITS = ("scratch", "miqa", "champion")
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
    arch: str = "miqa"
    init: str = "scratch"
    miqa_weights: str | None = None
    weights_file: str | None = None  # local torchvision weights for the 2-D backbone
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 8
    # Learning rate of a warm start's pretrained layers, as a fraction of the head's (1 = same).
    backbone_lr_factor: float = 0.1
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
    evaluation: str
    evaluation_reason: str
    # Why the version was (not) made the first champion; None when a champion already existed.
    gate: str | None = None
    # The champion scored on this run's held-out scans (metrics champion_heldout_usable_*), if any.
    champion_version: str | None = None


def _network(cfg: TrainConfig, output_map: list[dict[str, Any]]) -> tuple[torch.nn.Module, TrainConfig, list[str]]:
    """The network to start from and the config it implies (MIQA and the champion fix shape, architecture and
    preprocessing; a scratch start trains every layer at the full learning rate)."""
    if cfg.init == "scratch":
        net = build_network(cfg.arch, len(output_map), cfg.preprocess.spatial_dims, cfg.weights_file)
        return net, replace(cfg, backbone_lr_factor=1.0), []
    if cfg.init == "miqa":
        if not cfg.miqa_weights:
            raise DatasetError("no MIQA weights file configured (QCLOOP_MIQA_WEIGHTS)")
        try:
            net, kept = miqa_network(cfg.miqa_weights, output_map)
        except FileNotFoundError as err:
            raise DatasetError(str(err)) from err
        return net, replace(cfg, arch="miqa", preprocess=MIQA), kept
    if cfg.init == "champion":
        try:
            net, metadata = registry.load(cfg.tracking_uri, cfg.model_name)
        except LookupError as err:
            raise DatasetError(f"cannot start from the champion: {err}") from err
        if metadata.get("output_kind", "logits") != "logits":
            raise DatasetError("the champion is MIQA's published network: start from MIQA instead")
        kept = remap_head(net, metadata["output_map"], output_map)
        preprocess = PreprocessConfig.from_dict(metadata["preprocessing"])
        return net, replace(cfg, arch=metadata["arch"], preprocess=preprocess), kept
    raise DatasetError(f"init must be one of {', '.join(INITS)}, not {cfg.init!r}")


def _evaluate(module: QCModule, loader) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Each batch of a split with the module's logits (evaluation mode, no gradient, the module's device;
    a tiled network's whole volumes are averaged over their tiles)."""
    module.eval()
    device = next(module.parameters()).device
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            logits = module.evaluate(batch["image"])
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
    logits, targets, mask = (torch.cat(p).float().numpy() for p in zip(*parts))
    return logits, targets, mask, float(np.average(losses, weights=sizes))


def _champion_metrics(cfg: TrainConfig, dataset: Dataset) -> tuple[str, dict[str, float]] | None:
    """The registry's champion scored on this run's held-out scans (``dataset``'s test split): its
    version and usable metrics with interval.

    Same frames, labels, mask and metric code as the run's own ``heldout_usable_*``, so promotion
    can compare the two on equal terms. The champion reads the frames through its own
    preprocessing (its input contract). None when there is no champion or it has no usable output.
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
    data = QCDataModule(dataset, preprocess, cfg.augmentation, cfg.cache_dir, cfg.batch_size, cfg.num_workers)
    data.setup()
    module = QCModule(net.cpu(), metadata["output_map"], [1.0] * len(metadata["output_map"]),
                      preprocessing=preprocess.as_dict())
    logits, targets, mask, _ = _predict(module, data.test_dataloader())
    test = dataset.split("test")
    found = heldout_metrics([cfg.dataset.outputs[usable]], logits[:, column:column + 1],
                            targets[:, usable:usable + 1], mask[:, usable:usable + 1],
                            [item.subject for item in test], seed=cfg.seed)
    return version, found


def _score_champion(cfg: TrainConfig, dataset: Dataset, run_id: str) -> tuple[str, dict[str, float]] | None:
    """:func:`_champion_metrics`, its version logged as a run parameter; a champion that cannot be
    loaded or run is logged (``champion_score_error``) and skipped: the run stands, promotion falls back."""
    try:
        scored = _champion_metrics(cfg, dataset)
    except Exception as err:  # noqa: BLE001 - any failure of the old model must not fail the new run
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"
        log.warning("could not score the champion of %s on run %s's held-out scans (%s)", cfg.model_name, run_id,
                    reason)
        tracking.log_params(cfg.tracking_uri, run_id, {"champion_score_error": reason})
        return None
    if scored is not None:
        tracking.log_params(cfg.tracking_uri, run_id, {"champion_version": scored[0]})
    return scored


def _run_params(cfg: TrainConfig, dataset: Dataset, kept: list[str]) -> dict[str, Any]:
    splits = {name: {"frames": len(dataset.split(name)), "subjects": len({i.subject for i in dataset.split(name)})}
              for name in ("train", "val", "test", "cv")}
    return {
        **cfg.params,
        "dataset_hash": dataset.digest(), "split": splits, "split_seed": dataset.seed,
        "evaluation": dataset.evaluation, "evaluation_reason": dataset.evaluation_reason, "folds": dataset.folds,
        "counts": {name: dataset.counts(name) for name in ("train", "val", "test", "cv")},
        "outputs": [o.key for o in dataset.outputs], "arch": cfg.arch, "init": cfg.init,
        "init_kept_outputs": kept, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "lr": cfg.lr, "weight_decay": cfg.weight_decay, "backbone_lr_factor": cfg.backbone_lr_factor,
        "patience": cfg.patience, "preprocessing": cfg.preprocess.as_dict(),
        "augmentation": {"synthesis": cfg.augmentation.synthesis, "synthesis_usable": cfg.augmentation.synthesis_usable,
                         "flip_prob": cfg.augmentation.flip_prob, "affine_prob": cfg.augmentation.affine_prob,
                         "noise_prob": cfg.augmentation.noise_prob},
        "devices": cfg.devices, "strategy": cfg.strategy, "accelerator": cfg.accelerator,
        "code_version": tracking.code_version(), "torch": torch.__version__,
    }


def build_trainer(epochs: int, accelerator: str, devices: int | str, strategy: str, logger, work_dir: Path,
                  patience: int | None, callbacks: list[L.Callback]) -> tuple[L.Trainer, ModelCheckpoint | None]:
    """qcloop's Trainer. With ``patience``: early stopping and the best checkpoint on the validation
    usable AUC; without: a fixed number of epochs and no validation (cross-validation folds)."""
    checkpoint = None
    chosen: list[L.Callback] = []
    if patience is not None:
        checkpoint = ModelCheckpoint(dirpath=work_dir / "checkpoints", filename="best", monitor="val/usable_auc",
                                     mode="max", save_top_k=1, enable_version_counter=False)
        chosen = [EarlyStopping(monitor="val/usable_auc", mode="max", patience=patience, check_finite=False),
                  checkpoint]
    trainer = L.Trainer(
        max_epochs=epochs, accelerator=accelerator, devices=devices, strategy=strategy, deterministic="warn",
        logger=logger, log_every_n_steps=10, num_sanity_val_steps=0, limit_val_batches=None if patience else 0,
        callbacks=[*chosen, *callbacks], enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(work_dir),
    )
    return trainer, checkpoint


@dataclass
class _Fit:
    module: QCModule
    trainer: L.Trainer
    checkpoint: ModelCheckpoint | None
    data: QCDataModule


def _fit(cfg: TrainConfig, start: torch.nn.Module, dataset: Dataset, logger, reporter: ProgressReporter,
         early_stopping: bool) -> _Fit:
    """Train a copy of ``start`` on ``dataset``'s train split (best validation checkpoint restored)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = QCDataModule(dataset, cfg.preprocess, cfg.augmentation, cfg.cache_dir, cfg.batch_size, cfg.num_workers)
    module = QCModule(copy.deepcopy(start), [o.as_dict() for o in dataset.outputs], dataset.pos_weight(), lr=cfg.lr,
                      weight_decay=cfg.weight_decay, preprocessing=cfg.preprocess.as_dict(),
                      backbone_lr_factor=cfg.backbone_lr_factor)
    trainer, checkpoint = build_trainer(cfg.epochs, cfg.accelerator, cfg.devices, cfg.strategy, logger,
                                        cfg.work_dir, cfg.patience if early_stopping else None, [reporter])
    trainer.fit(module, datamodule=data)
    if checkpoint is not None and checkpoint.best_model_path and trainer.is_global_zero:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    return _Fit(module.cpu(), trainer, checkpoint, data)


def train(cfg: TrainConfig) -> TrainResult:
    """Train, evaluate, log and register; raises DatasetError/TrackingError before anything is logged."""
    with quiet_libraries():
        return _train(cfg)


def _train(cfg: TrainConfig) -> TrainResult:
    dataset = cfg.dataset
    output_map = [o.as_dict() for o in dataset.outputs]
    tracking.check_store(cfg.tracking_uri)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    start, cfg, kept = _network(cfg, output_map)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    everything = dataset.everything()
    try:
        QCDataModule(everything, cfg.preprocess, cfg.augmentation, cfg.cache_dir, cfg.batch_size,
                     cfg.num_workers).warm_cache()
    except Exception as err:  # noqa: BLE001 - MONAI wraps reader errors; say which file in one line
        raise DatasetError(f"cannot read an image file: {str(err).strip().splitlines()[-1][:300]}") from err

    experiment_id = tracking.ensure_experiment(cfg.tracking_uri, cfg.experiment, cfg.artifact_root)
    logger = tracking.make_logger(cfg.tracking_uri, cfg.experiment, cfg.run_name, cfg.tags)
    run_id = logger.run_id
    reporter = ProgressReporter(cfg.work_dir)
    relay = ProgressRelay(reporter, cfg.progress) if cfg.progress else None
    try:
        if cfg.on_run_opened is not None:
            cfg.on_run_opened(run_id, experiment_id)
        tracking.log_params(cfg.tracking_uri, run_id, _run_params(cfg, dataset, kept))
        tracking.log_files(cfg.tracking_uri, run_id, [dataset.write_manifest(cfg.work_dir / "manifest.csv")])
        if relay is not None:
            relay.start()
        try:
            outcome = _cross_validate(cfg, start, logger, reporter) if dataset.evaluation == "cv" else \
                _holdout(cfg, start, logger, reporter)
        finally:
            if relay is not None:
                relay.stopped.set()
                relay.join()
                relay.poll()
        if relay is not None and relay.cancelled:
            raise TrainingCancelled("training cancelled")
        if outcome is None:  # other ranks of a subprocess-launched DDP run stop here
            return None  # type: ignore[return-value]
        result = _finish_run(cfg, outcome, run_id, experiment_id, output_map)
    except TrainingCancelled:
        tracking.finish(cfg.tracking_uri, run_id, "KILLED", "cancelled")
        raise
    except BaseException as err:
        tracking.finish(cfg.tracking_uri, run_id, "FAILED", f"{type(err).__name__}: {err}")
        raise
    tracking.finish(cfg.tracking_uri, run_id, "FINISHED")
    return result


@dataclass
class _Outcome:
    """A trained model and its held-out predictions: test split, or out-of-fold over every scan."""

    final: _Fit
    heldout: Dataset  # its "test" split is what the predictions score (the champion is scored on it too)
    logits: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    metrics: dict[str, float]  # extra metrics (validation of the best checkpoint, per-fold AUCs)


def _holdout(cfg: TrainConfig, start: torch.nn.Module, logger, reporter: ProgressReporter) -> _Outcome | None:
    """Train on train, stop early and keep the best checkpoint on validation, score test."""
    dataset = cfg.dataset
    reporter.start_phase(0, 1, "")
    fit = _fit(cfg, start, dataset, logger, reporter, early_stopping=True)
    if not fit.trainer.is_global_zero:
        return None
    extra: dict[str, float] = {}
    logits, targets, mask, loss = _predict(fit.module, fit.data.val_dataloader())
    if len(logits):
        extra.update({"best_val_loss": loss, **{f"best_val_{k}": v for k, v in
                                                epoch_metrics(dataset.outputs, logits, targets, mask).items()}})
    if fit.checkpoint is not None and defined(fit.checkpoint.best_model_score):
        extra["best_epoch"] = float(_best_epoch(fit.checkpoint))
    if not dataset.split("test"):  # no test split asked for: validation is all there is (it also chose the epoch)
        extra["heldout_is_validation"] = 1.0
        heldout = Dataset(dataset.outputs, [replace(item, split="test") for item in dataset.split("val")],
                          dataset.seed, "holdout", dataset.evaluation_reason)
        data = QCDataModule(heldout, cfg.preprocess, cfg.augmentation, cfg.cache_dir, cfg.batch_size,
                            cfg.num_workers)
        data.setup()
        logits, targets, mask, _ = _predict(fit.module, data.test_dataloader())
        return _Outcome(fit, heldout, logits, targets, mask, extra)
    logits, targets, mask, _ = _predict(fit.module, fit.data.test_dataloader())
    return _Outcome(fit, dataset, logits, targets, mask, extra)


def _best_epoch(checkpoint: ModelCheckpoint) -> int:
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    return int(state.get("epoch", 0)) + 1


def _cross_validate(cfg: TrainConfig, start: torch.nn.Module, logger,
                    reporter: ProgressReporter) -> _Outcome | None:
    """k folds (each scan scored by the fold model that did not train on it), then the final model
    on every labelled scan; all with the same fixed number of epochs."""
    dataset = cfg.dataset
    k = dataset.folds
    order = {id(item): index for index, item in enumerate(dataset.items)}
    n_out = len(dataset.outputs)
    logits = np.zeros((len(dataset.items), n_out), dtype=np.float32)
    extra: dict[str, float] = {}
    for fold in range(k):
        reporter.start_phase(fold, k + 1, f"fold {fold + 1}/{k}")
        fold_set = dataset.fold(fold)
        fit = _fit(cfg, start, fold_set, False, reporter, early_stopping=False)
        if not fit.trainer.is_global_zero:
            return None
        fold_logits, targets, mask, _ = _predict(fit.module, fit.data.test_dataloader())
        held = [item for item in dataset.items if item.fold == fold]
        for row, item in zip(fold_logits, held):
            logits[order[id(item)]] = row
        for key, value in epoch_metrics(dataset.outputs, fold_logits, targets, mask).items():
            extra[f"fold{fold + 1}_{key}"] = value
    reporter.start_phase(k, k + 1, "final model")
    final = _fit(cfg, start, dataset.everything(), logger, reporter, early_stopping=False)
    if not final.trainer.is_global_zero:
        return None
    targets = np.array([item.targets for item in dataset.items], dtype=np.float32)
    mask = np.array([item.mask for item in dataset.items], dtype=np.float32)
    aucs = [v for key, v in extra.items() if key.endswith("_usable_auc")]
    if aucs:
        extra["fold_mean_usable_auc"], extra["folds_with_usable_auc"] = float(np.mean(aucs)), float(len(aucs))
    heldout = Dataset(dataset.outputs, [replace(item, split="test") for item in dataset.items], dataset.seed,
                      "cv", dataset.evaluation_reason, k)
    return _Outcome(final, heldout, logits, targets, mask, extra)


def _finish_run(cfg: TrainConfig, outcome: _Outcome, run_id: str, experiment_id: str,
                output_map: list[dict]) -> TrainResult:
    """Held-out metrics with intervals, the champion's on the same scans, plots, then (after the
    caller's check) log and register."""
    dataset, trainer = cfg.dataset, outcome.final.trainer
    groups = [item.subject for item in outcome.heldout.split("test")]
    found = heldout_metrics(dataset.outputs, outcome.logits, outcome.targets, outcome.mask, groups, seed=cfg.seed)
    final = {f"heldout_{k}": v for k, v in found.items()}
    final["heldout_scans"] = float(len({item.scan_id for item in outcome.heldout.split("test")}))
    final.update(outcome.metrics)
    champion = _score_champion(cfg, outcome.heldout, run_id)
    if champion is not None:
        final.update({f"champion_heldout_{key}": value for key, value in champion[1].items()})
    tracking.log_metrics(cfg.tracking_uri, run_id, final, step=trainer.global_step)
    curves = tracking.metric_history(cfg.tracking_uri, run_id, ["train/loss", "val/loss", "val/usable_auc"])
    pngs = tracking.plots(cfg.work_dir / "plots", dataset.outputs, outcome.logits, outcome.targets, outcome.mask,
                          curves)
    tracking.log_files(cfg.tracking_uri, run_id, pngs, "plots")
    if cfg.before_register is not None:
        cfg.before_register()
    example = torch.zeros((1, 1, *cfg.preprocess.spatial_size), dtype=torch.float32)
    metadata = {
        "output_map": output_map, "preprocessing": cfg.preprocess.as_dict(), "arch": cfg.arch,
        "output_kind": "logits", "input": cfg.preprocess.describe(),
        "output": "one logit per output_map entry; sigmoid = probability usable / artifact present",
        "vocabulary_version": cfg.params.get("vocabulary_version"), "dataset_hash": dataset.digest(),
        "code_version": tracking.code_version(),
    }
    version = tracking.log_model(cfg.tracking_uri, run_id, outcome.final.module.net, example, cfg.model_name,
                                 metadata)
    eligible, why = first_champion_gate(final)
    had_champion = registry.alias_version(cfg.tracking_uri, cfg.model_name) is not None
    alias = registry.assign_new_version(cfg.tracking_uri, cfg.model_name, version, may_be_champion=eligible)
    gate = None if had_champion else f"first champion: {why}" if eligible else f"not made champion: {why}"
    if gate is not None:
        tracking.log_params(cfg.tracking_uri, run_id, {"champion_gate": gate})
    return TrainResult(run_id=run_id, experiment_id=experiment_id, version=version, alias=alias,
                       output_map=output_map, metrics=final,
                       counts={name: dataset.counts(name) for name in ("train", "val", "test", "cv")},
                       dataset_hash=dataset.digest(), epochs_run=trainer.current_epoch,
                       arch=cfg.arch, preprocessing=cfg.preprocess.as_dict(), evaluation=dataset.evaluation,
                       evaluation_reason=dataset.evaluation_reason, gate=gate,
                       champion_version=None if champion is None else champion[0])
