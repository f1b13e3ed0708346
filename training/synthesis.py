"""The artifacts a run can synthesize on clean volumes, by key. Plain Python (no torch): the Retrain form
and the run's parameter checks list them; training/transforms.py makes them."""
from __future__ import annotations

SYNTHESIZABLE = ("inhomogeneity", "ghosting_motion", "truncation_artifact", "swap_wraparound")
