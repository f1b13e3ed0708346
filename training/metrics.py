"""Metrics a team can trust: undefined where a class is missing, intervals where data are few.

An AUC needs both classes: on a one-class set it is *undefined* (left out of the result,
shown as such), never 0.5. Held-out AUCs come with a 95% bootstrap interval over scans, so
"0.87 on 8 scans" reads as the wide estimate it is.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from training.data import Output

CONFIDENCE = 0.95


def epoch_metrics(outputs: Sequence[Output], logits: np.ndarray, targets: np.ndarray,
                  mask: np.ndarray) -> dict[str, float]:
    """Usable AUC and balanced accuracy, and each artifact's AUC, where both classes are present."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    metrics: dict[str, float] = {}
    for index, output in enumerate(outputs):
        judged = mask[:, index] > 0
        y, score = targets[judged, index], logits[judged, index]
        if len(np.unique(y)) < 2:
            continue
        metrics[f"{output.key}_auc"] = float(roc_auc_score(y, score))
        if output.kind == "usable":
            metrics["usable_bacc"] = float(balanced_accuracy_score(y, score > 0))
    return metrics


def auc_interval(y: np.ndarray, score: np.ndarray, groups: np.ndarray | None = None, resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the AUC, resampling groups (scans) with replacement.

    None when the AUC is undefined or no resample holds both classes often enough.
    """
    from sklearn.metrics import roc_auc_score

    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    if len(np.unique(y)) < 2:
        return None
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    names, index = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        chosen = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        if len(np.unique(y[chosen])) == 2:
            values.append(roc_auc_score(y[chosen], score[chosen]))
    if len(values) < resamples // 2:
        return None
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def heldout_metrics(outputs: Sequence[Output], logits: np.ndarray, targets: np.ndarray, mask: np.ndarray,
                    groups: Sequence[str], seed: int = 0) -> dict[str, float]:
    """Per output: AUC with its interval (``<key>_auc``, ``_auc_low``, ``_auc_high``), the count of
    judged scans per class (``<key>_n_present``, ``_n_absent``), and the usable balanced accuracy."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    metrics: dict[str, float] = {}
    groups = np.asarray(groups)
    for index, output in enumerate(outputs):
        judged = mask[:, index] > 0
        y, score = targets[judged, index], logits[judged, index]
        metrics[f"{output.key}_n_present"] = float((y >= 0.5).sum())
        metrics[f"{output.key}_n_absent"] = float((y < 0.5).sum())
        if len(np.unique(y)) < 2:
            continue
        metrics[f"{output.key}_auc"] = float(roc_auc_score(y, score))
        interval = auc_interval(y, score, groups[judged], seed=seed)
        if interval is not None:
            metrics[f"{output.key}_auc_low"], metrics[f"{output.key}_auc_high"] = interval
        if output.kind == "usable":
            metrics["usable_bacc"] = float(balanced_accuracy_score(y, score > 0))
    return metrics


def defined(value: object) -> bool:
    """A number that says something (not None, NaN or infinite)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def describe_auc(metrics: dict[str, float], key: str, prefix: str = "") -> str:
    """'0.872 (95% CI 0.751-0.962, 20 vs 20)' or 'undefined (one class: 12 present, 0 absent)'."""
    auc = metrics.get(f"{prefix}{key}_auc")
    present, absent = metrics.get(f"{prefix}{key}_n_present"), metrics.get(f"{prefix}{key}_n_absent")
    counts = f"{int(present)} present, {int(absent)} absent" if defined(present) and defined(absent) else ""
    if not defined(auc):
        return f"undefined (needs both classes{'; ' + counts if counts else ''})"
    low, high = metrics.get(f"{prefix}{key}_auc_low"), metrics.get(f"{prefix}{key}_auc_high")
    interval = f"95% CI {low:.3f}-{high:.3f}" if defined(low) and defined(high) else "no interval"
    return f"{auc:.3f} ({interval}{', ' + counts if counts else ''})"


def first_champion_gate(metrics: dict[str, float]) -> tuple[bool, str]:
    """Whether a version may become the first champion: a defined held-out usable AUC above chance,
    its whole 95% interval above 0.5 when it has one (0.51 on 40 scans is not better than a coin)."""
    auc, low = metrics.get("heldout_usable_auc"), metrics.get("heldout_usable_auc_low")
    if not defined(auc):
        return False, "its held-out usable AUC is undefined (the held-out scans lack a class)"
    if defined(low):
        if low <= 0.5:
            return False, f"its held-out usable AUC {auc:.3f} is not above chance (95% CI from {low:.3f})"
        return True, f"held-out usable AUC {auc:.3f} is above chance (95% CI from {low:.3f})"
    if auc <= 0.5:
        return False, f"its held-out usable AUC {auc:.3f} is not above chance (0.5)"
    return True, f"held-out usable AUC {auc:.3f} is above chance (no interval)"
