"""The networks a run may choose, by name. Plain Python (no torch): the Retrain form and the run's
parameter checks list them without loading a network library into a web process."""
from __future__ import annotations

ARCHITECTURES = ("densenet121", "densenet_small", "resnet18", "resnet_small", "miqa", "resnet18_2d")
