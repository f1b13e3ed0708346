"""A training run's progress and quiet: what rank zero reports, how the caller hears it, how it stops.

Progress goes through a small JSON file written by rank zero of the trainer and read by a
thread of the calling process, so the same code path serves one device, several devices
(``strategy="ddp_spawn"``) and cancellation: when the caller's callback raises
:class:`TrainingCancelled`, a flag file tells the trainer to stop at its next batch.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L

# Warnings of the libraries that say nothing to the person running qcloop (they were read once and
# judged harmless here: qcloop sets workers, logging interval and device itself).
QUIET_WARNINGS = (
    r".*does not have many workers.*", r".*number of training batches.*logging interval.*",
    r".*GPU available but not used.*", r".*Total length of .* across ranks is zero.*",
    r".*LightningModule.*has parameters that were not used.*", r".*`isinstance\(treespec, LeafSpec\)`.*",
    r".*Checkpoint directory .* exists and is not empty.*", r".*pickle.*", r".*cloudpickle.*",
    r".*Starting from v1\.9\.0, `tensorboardX`.*", r".*_pytree.*", r".*torch\.load.*weights_only.*",
    r".*use_deterministic_algorithms.*", r".*deterministic.*", r".*Saving the model.*",
    r".*Model logged without a signature.*", r".*`artifact_path` is deprecated.*",
)


class TrainingCancelled(Exception):
    """Raised by a progress callback to stop the run; the MLflow run ends KILLED."""


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Training without the libraries' routine chatter; anything else they warn still shows."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "mlflow")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


class ProgressReporter(L.Callback):
    """Writes phase, epoch, step, the step loss and the last finished epoch's metrics (rank zero)
    to a file; stops when a cancel flag appears. ``phase``/``phases`` place a fit in the run."""

    def __init__(self, folder: Path, interval_s: float = 1.0) -> None:
        self.path, self.flag, self.interval_s = folder / "progress.json", folder / "cancel", interval_s
        self._last = 0.0
        self.phase, self.phases, self.label = 0, 1, ""
        self.finished: dict[str, Any] = {}

    def start_phase(self, index: int, count: int, label: str) -> None:
        self.phase, self.phases, self.label, self.finished = index, count, label, {}

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: int, force: bool = False) -> None:
        if self.flag.exists():
            raise TrainingCancelled("training cancelled")
        now = time.monotonic()
        if not trainer.is_global_zero or (not force and now - self._last < self.interval_s):
            return
        self._last = now
        steps = max(1, int(trainer.num_training_batches))
        within = min(1.0, (trainer.current_epoch * steps + batch) / (steps * trainer.max_epochs))
        metrics = {}
        if getattr(pl_module, "last_loss", None) is not None:
            metrics["train/step_loss"] = float(pl_module.last_loss)
        report = {"phase": self.label, "epoch": trainer.current_epoch + 1, "epochs": trainer.max_epochs,
                  "step": batch, "steps": steps, "fraction": (self.phase + within) / self.phases,
                  "metrics": metrics, "finished_epoch": self.finished}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report))
        os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._write(trainer, pl_module, batch_idx + 1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Validation of this epoch has run: its metrics and the epoch's training loss belong together."""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if v.numel() == 1 and k in ("train/loss", "val/loss", "val/usable_auc", "val/usable_bacc")}
        self.finished = {"epoch": trainer.current_epoch + 1, **metrics}
        self._write(trainer, pl_module, int(trainer.num_training_batches), force=True)


class ProgressRelay(threading.Thread):
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
