"""The masked multi-task loss and the per-epoch metrics."""
from __future__ import annotations

import numpy as np
import torch

from tests.training.conftest import GHOSTING, LESIONS
from training.data import USABLE
from training.metrics import epoch_metrics
from training.module import masked_bce


def test_not_judged_targets_change_neither_loss_nor_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([[1., 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    mask = torch.tensor([[1., 1, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1]])
    pos_weight = torch.tensor([1.0, 2.0, 0.5])
    loss = masked_bce(logits, targets, mask, pos_weight=pos_weight)
    loss.backward()
    grad = logits.grad.clone()
    assert torch.all(grad[mask == 0] == 0)

    other_targets = torch.where(mask > 0, targets, 1 - targets)
    other_logits = torch.where(mask > 0, logits.detach(), torch.full_like(logits, float("nan"))).requires_grad_()
    other = masked_bce(other_logits, other_targets, mask, pos_weight=pos_weight)
    other.backward()
    assert torch.isclose(loss, other)
    assert torch.allclose(grad[mask > 0], other_logits.grad[mask > 0])
    assert torch.all(other_logits.grad[mask == 0] == 0)

    judged_only = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.detach(), targets, pos_weight=pos_weight, reduction="none")[mask > 0].mean()
    assert torch.isclose(loss, judged_only)


def test_usable_sample_weight_scales_only_the_usable_column():
    logits, targets = torch.zeros(2, 2), torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    mask = torch.ones(2, 2)
    full = masked_bce(logits, targets, mask, weight=torch.ones(2))
    halved = masked_bce(logits, targets, mask, weight=torch.tensor([1.0, 0.5]))
    assert torch.isclose(halved, full * (4 - 0.5) / 4)


def test_metrics_skip_outputs_with_one_class():
    logits = np.array([[2.0, 1.0, 0.0], [-2.0, -1.0, 0.0], [1.0, 3.0, 0.0], [-1.0, -3.0, 0.0]])
    targets = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=float)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=float)
    metrics = epoch_metrics([USABLE, GHOSTING, LESIONS], logits, targets, mask)
    assert metrics == {"usable_auc": 1.0, "usable_bacc": 1.0, "ghosting_motion_auc": 1.0}
