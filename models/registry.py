"""The MLflow model registry as training needs it: aliases, never the deprecated stages.

A project's model is registered under ``Project.model_name``. The first version trained
becomes ``champion`` when its held-out usable AUC is defined and above chance; later versions are ``challenger`` until someone promotes them
(:func:`promote`). A run can start from ``models:/<name>@champion``.
"""
from __future__ import annotations

from typing import Any

import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CHAMPION = "champion"
CHALLENGER = "challenger"


def _client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(tracking_uri: str, name: str, alias: str = CHAMPION) -> str | None:
    """The version number holding an alias, or None when the model or alias does not exist."""
    try:
        return str(_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def assign_new_version(tracking_uri: str, name: str, version: str, may_be_champion: bool = True) -> str:
    """Alias a freshly registered version: champion when there is none yet and it passed the
    caller's gate (a defined held-out metric above chance), else challenger."""
    first = may_be_champion and not alias_version(tracking_uri, name, CHAMPION)
    alias = CHAMPION if first else CHALLENGER
    _client(tracking_uri).set_registered_model_alias(name, alias, version)
    return alias


def promote(tracking_uri: str, name: str, version: str) -> None:
    """Make a version the champion (the alias moves; the old champion keeps its version).

    A promoted challenger stops being the challenger: a version is one or the other.
    """
    client = _client(tracking_uri)
    client.set_registered_model_alias(name, CHAMPION, version)
    if alias_version(tracking_uri, name, CHALLENGER) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)


def version_metrics(tracking_uri: str, name: str, version: str) -> dict[str, float]:
    """The metrics logged on the MLflow run that produced a version (empty when it has no run)."""
    client = _client(tracking_uri)
    run_id = client.get_model_version(name, version).run_id
    return dict(client.get_run(run_id).data.metrics) if run_id else {}


def withdraw(tracking_uri: str, name: str, version: str) -> None:
    """Delete a registered version (its aliases go with it): used when its run could not be recorded."""
    _client(tracking_uri).delete_model_version(name, version)


def withdraw_unrecorded(tracking_uri: str, name: str, run_id: str, recorded: set[str]) -> list[str]:
    """Delete the versions of ``name`` that a run registered but qcloop never recorded (the run's process
    died in between); returns their numbers."""
    client = _client(tracking_uri)
    versions = [str(v.version) for v in client.search_model_versions(f"run_id = '{run_id}'") if v.name == name]
    left = [version for version in versions if version not in recorded]
    for version in left:
        client.delete_model_version(name, version)
    return left


def load(tracking_uri: str, name: str, alias: str = CHAMPION,
         version: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The aliased model (or, given ``version``, that version, so an alias moved meanwhile cannot swap it)
    and its metadata (output map, preprocessing, architecture)."""
    import mlflow
    import mlflow.pytorch

    uri = f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        info = mlflow.models.get_model_info(uri)
        model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except MlflowException as err:
        wanted = f"version {version}" if version is not None else f"{alias} version"
        raise LookupError(f"no {wanted} of model {name!r} in the registry") from err
    return model, dict(info.metadata or {})
