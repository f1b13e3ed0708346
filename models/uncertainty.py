"""How unsure a model is of a yes/no output, in bits. Plain Python (no torch), so the review queues can
order scans by it without loading a network."""
from __future__ import annotations

import math
from typing import Sequence


def binary_entropy(p: float) -> float:
    """Entropy in bits of a yes/no answer given with probability ``p``: 1 at 0.5, 0 at 0 or 1."""
    return -sum(q * math.log2(q) for q in (p, 1 - p) if q > 0)


def predictive_entropy(passes: Sequence[Sequence[float]]) -> list[float]:
    """Per output, the entropy of the probability averaged over Monte-Carlo dropout passes (one row of
    probabilities per pass): high where the passes sit near 0.5 or disagree with each other."""
    return [binary_entropy(sum(column) / len(column)) for column in zip(*passes)]
