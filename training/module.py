"""The LightningModule: a network, a masked multi-task loss and per-epoch metrics.

Every output is a binary logit (usable, then each artifact). A target that nobody judged
has mask 0 and contributes nothing to the loss or its gradient. Positive classes are
weighted by negatives/positives of the training split, and questionable decisions by the
project's weight on the usable output. A tiled network is evaluated on whole volumes (one
per batch): the mean of its tiles' outputs, as serving computes it. A warm-started network
can train its pretrained layers at a fraction of the head's learning rate.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from models.inference import volume_outputs
from models.networks import head
from models.preprocessing import PreprocessConfig
from training.data import Output
from training.metrics import epoch_metrics


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
               weight: torch.Tensor | None = None, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over judged targets only; ``weight`` (per sample) scales the usable column (index 0)."""
    judged = mask > 0
    # where() rather than a product: a masked logit (even nan) never reaches the loss or its gradient.
    logits = torch.where(judged, logits, torch.zeros_like(logits))
    targets = torch.where(judged, targets, torch.zeros_like(targets))
    losses = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    weights = mask.clone()
    if weight is not None:
        weights[:, 0] = weights[:, 0] * weight
    return (losses * weights).sum() / mask.sum().clamp(min=1.0)


class QCModule(L.LightningModule):
    """Trains ``net`` on the masked loss; logs train/loss, val/loss, val/usable_auc, val/<key>_auc."""

    def __init__(self, net: nn.Module, outputs: Sequence[dict[str, Any]], pos_weight: Sequence[float],
                 lr: float = 1e-3, weight_decay: float = 1e-4, preprocessing: dict[str, Any] | None = None,
                 backbone_lr_factor: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.preprocessing = PreprocessConfig.from_dict(preprocessing) if preprocessing else PreprocessConfig()
        self.outputs = [Output.from_dict(o) for o in outputs]
        self.register_buffer("pos_weight", torch.tensor(list(pos_weight), dtype=torch.float32))
        self._collected: dict[str, list[tuple[torch.Tensor, ...]]] = {"val": [], "test": []}
        self.last_loss: torch.Tensor | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def model_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        loss = masked_bce(logits, batch["targets"], batch["mask"], batch["weight"], self.pos_weight)
        return loss, logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.model_step(batch)
        self.last_loss = loss.detach()  # read by the progress reporter; per-step logging costs ~1 ms a step
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["image"]), sync_dist=True)
        return loss

    def evaluate(self, image: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of whole volumes (tiled: one volume whose tiles are averaged)."""
        if not self.preprocessing.tiled:
            return self(image)
        return torch.stack([volume_outputs(self.net, volume, self.preprocessing) for volume in image])

    def _eval_step(self, split: str, batch: dict[str, torch.Tensor]) -> None:
        logits = self.evaluate(batch["image"])
        loss = masked_bce(logits, batch["targets"], batch["mask"], batch["weight"], self.pos_weight)
        self.log(f"{split}/loss", loss, on_epoch=True, batch_size=len(batch["image"]), sync_dist=True)
        self._collected[split].append((logits.detach().cpu(), batch["targets"].cpu(), batch["mask"].cpu()))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_epoch_end(self, split: str) -> None:
        collected, self._collected[split] = self._collected[split], []
        if not collected:
            return
        logits, targets, mask = (torch.cat(parts).float().numpy() for parts in zip(*collected))
        for name, value in epoch_metrics(self.outputs, logits, targets, mask).items():
            if not math.isnan(value):
                self.log(f"{split}/{name}", value, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        lr, factor = self.hparams.lr, self.hparams.backbone_lr_factor
        if factor == 1.0:
            return torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=self.hparams.weight_decay)
        head_params = {id(p) for p in head(self.net)[2].parameters()}
        groups = [{"params": [p for p in self.net.parameters() if id(p) in head_params], "lr": lr},
                  {"params": [p for p in self.net.parameters() if id(p) not in head_params], "lr": lr * factor}]
        return torch.optim.AdamW(groups, lr=lr, weight_decay=self.hparams.weight_decay)
