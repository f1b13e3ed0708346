"""A training run's parameters: what the API and the Retrain form accept, with defaults and checks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from app.db import Project
from app.services import vocabulary
from app.services.errors import InvalidInput
from app.services.training.records import min_labels

INITS = ("scratch", "miqa", "champion")
ARCHS_3D = ("miqa", "densenet_small", "resnet_small", "densenet121", "resnet18")
EVALUATIONS = ("auto", "holdout", "cv")
FITS = ("resize", "pad_crop", "tiles")


class _Spec:
    """One accepted run parameter: type, default and check."""

    def __init__(self, kind: type | tuple, default: Any, check=None, message: str = "") -> None:
        self.kind, self.default, self.check, self.message = kind, default, check, message


_PARAMS = {
    "epochs": _Spec(int, 30, lambda v: 1 <= v <= 1000, "epochs must be an integer from 1 to 1000"),
    "from": _Spec(str, "scratch", lambda v: v in INITS, f"from must be one of {', '.join(INITS)}"),
    "arch": _Spec((str, type(None)), None, lambda v: v is None or v in ARCHS_3D + ("resnet18_2d",),
                  f"arch must be one of {', '.join(ARCHS_3D + ('resnet18_2d',))}"),
    "batch_size": _Spec(int, 8, lambda v: 1 <= v <= 512, "batch_size must be an integer from 1 to 512"),
    "lr": _Spec((float, int), 1e-3, lambda v: 0 < v < 1, "lr must be a number in (0, 1)"),
    "patience": _Spec(int, 8, lambda v: 1 <= v <= 1000, "patience must be an integer from 1 to 1000"),
    "weight_decay": _Spec((float, int), 1e-2, lambda v: 0 <= v < 1, "weight_decay must be a number in [0, 1)"),
    "evaluation": _Spec(str, "auto", lambda v: v in EVALUATIONS, f"evaluation must be one of {', '.join(EVALUATIONS)}"),
    "folds": _Spec(int, 5, lambda v: 2 <= v <= 20, "folds must be an integer from 2 to 20"),
    "fit": _Spec((str, type(None)), None, lambda v: v is None or v in FITS, f"fit must be one of {', '.join(FITS)}"),
    "seed": _Spec(int, 0, lambda v: 0 <= v < 2**31, "seed must be a non-negative integer"),
    "spatial_size": _Spec((list, type(None)), None,
                          lambda v: v is None or (len(v) in (2, 3) and all(isinstance(n, int) and 8 <= n <= 512
                                                                            for n in v)),
                          "spatial_size must be 2 or 3 integers from 8 to 512"),
    "min_labels": _Spec((int, type(None)), None, lambda v: v is None or 1 <= v <= 100000,
                        "min_labels must be a positive integer"),
    "artifacts": _Spec((str, list), "auto", lambda v: v == "auto" or all(isinstance(k, str) for k in v),
                       "artifacts must be 'auto' or a list of artifact keys"),
    "synthesis": _Spec(dict, {}, lambda v: all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in v.values()),
                       "synthesis must map artifact keys to probabilities in [0, 1]"),
    "val_fraction": _Spec((float, int), 0.15, lambda v: 0 < v < 0.5, "val_fraction must be in (0, 0.5)"),
    "test_fraction": _Spec((float, int), 0.15, lambda v: 0 <= v < 0.5, "test_fraction must be in [0, 0.5)"),
}


def label_rules() -> tuple[str, ...]:
    """How a scan's decisions settle into its label (the project setting ``label_rule``)."""
    from training.data import LABEL_RULES

    return LABEL_RULES


@dataclass(frozen=True)
class FormChoices:
    """What the Retrain form offers: the networks and the artifacts that can be synthesized."""

    architectures: tuple[str, ...]
    synthesizable: tuple[str, ...]


def form_choices() -> FormChoices:
    from models.architectures import ARCHITECTURES
    from training.synthesis import SYNTHESIZABLE

    return FormChoices(ARCHITECTURES, SYNTHESIZABLE)


def clean_params(project: Project, body: dict[str, Any]) -> dict[str, Any]:
    """The run's parameters with defaults filled in; InvalidInput names the first bad field."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be an object")
    unknown = sorted(set(body) - set(_PARAMS))
    if unknown:
        raise InvalidInput(f"unknown parameter(s): {', '.join(unknown)}", field=unknown[0])
    params = {}
    for name, spec in _PARAMS.items():
        value = body.get(name, spec.default)
        if isinstance(value, bool) or not isinstance(value, spec.kind) or not spec.check(value):
            raise InvalidInput(spec.message, field=name)
        params[name] = value
    active = {entry.key for entry in vocabulary.artifact_entries(project.id)}
    chosen = [] if params["artifacts"] == "auto" else params["artifacts"]
    for key in list(chosen) + list(params["synthesis"]):
        if key not in active:
            raise InvalidInput(f"{key!r} is not an active artifact entry of this project", field="artifacts")
    from training.synthesis import SYNTHESIZABLE

    for key in params["synthesis"]:
        if key not in SYNTHESIZABLE:
            raise InvalidInput(f"no synthetic artifact for {key!r}; choose from {', '.join(SYNTHESIZABLE)}",
                               field="synthesis")
    if params["from"] == "miqa" and not current_app.config.get("MIQA_WEIGHTS"):
        raise InvalidInput("starting from MIQA needs QCLOOP_MIQA_WEIGHTS (a local copy of MIQA's weights)",
                           field="from")
    if params["min_labels"] is None:
        params["min_labels"] = min_labels(project)
    return params

