"""train(cfg) without the web app: a learnable synthetic task, cancellation, bad files, bad store, 2-D."""
from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
from mlflow import MlflowClient

from app.services.phantoms import brain_phantom
from models import registry
from tests.training.conftest import GHOSTING, LESIONS, T0, ghosting_records
from training.data import USABLE, DatasetError, DecisionRecord, FrameRecord, LabelSettings, ScanRecord, build_dataset
from training.tracking import TrackingError
from training.metrics import first_champion_gate
from training.progress import TrainingCancelled
from training.train import TrainConfig, train
from models.preprocessing import PreprocessConfig
from training.transforms import AugmentConfig

NO_AUGMENT = AugmentConfig(flip_prob=0.5, affine_prob=0.0, noise_prob=0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return ghosting_records(tmp_path_factory.mktemp("volumes"), 40)


def _config(tmp_path, store, dataset, name, **overrides):
    uri, artifacts = store
    values = dict(dataset=dataset, tracking_uri=uri, artifact_root=artifacts, experiment=name, model_name=name,
                  work_dir=tmp_path / "work", cache_dir=tmp_path / "cache", arch="resnet_small",
                  preprocess=PreprocessConfig(spatial_size=(32, 32, 32)), augmentation=NO_AUGMENT,
                  epochs=5, batch_size=8, lr=3e-3, accelerator="cpu", params={"vocabulary_version": "v1"})
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.slow
def test_ghosting_versus_clean_is_learned_and_cross_validated_with_intervals(tmp_path, store, records):
    """40 scans: a 15% test split would hold 6; auto cross-validates, every scan scored by a model that never saw it."""
    dataset = build_dataset(records, [USABLE, GHOSTING, LESIONS], LabelSettings(), seed=0)
    assert dataset.evaluation == "cv" and dataset.folds == 5
    reports = []
    result = train(_config(tmp_path, store, dataset, "qcloop-learnable", progress=reports.append))
    metrics = result.metrics
    assert result.evaluation == "cv" and metrics["heldout_scans"] == 40
    assert metrics["heldout_usable_auc"] >= 0.9 and metrics["heldout_ghosting_motion_auc"] >= 0.9
    assert metrics["heldout_usable_auc_low"] <= metrics["heldout_usable_auc"] <= metrics["heldout_usable_auc_high"]
    assert metrics["heldout_usable_n_present"] == 20 and metrics["heldout_usable_n_absent"] == 20
    # nobody judged lesions: its AUC is undefined (absent), never a bare 0.5
    assert "heldout_lesions_auc" not in metrics and metrics["heldout_lesions_n_present"] == 0
    assert all(value != 0.5 for key, value in metrics.items() if key.endswith("_auc"))
    assert result.alias == "champion" and result.version == "1" and result.gate.startswith("first champion")
    phases = [r["phase"] for r in reports]
    assert "fold 1/5" in phases and "final model" in phases
    assert reports[-1]["fraction"] == pytest.approx(1.0)
    finished = [r["finished_epoch"] for r in reports if r["finished_epoch"]]
    assert finished and all("train/loss" in f and "epoch" in f for f in finished)


def test_cancel_from_progress_stops_training_and_registers_nothing(tmp_path, store, records):
    dataset = build_dataset(records[:12], [USABLE, GHOSTING], LabelSettings(), seed=0)

    def cancel(report):
        raise TrainingCancelled()

    with pytest.raises(TrainingCancelled):
        train(_config(tmp_path, store, dataset, "qcloop-cancelled", progress=cancel, epochs=50))
    client = MlflowClient(tracking_uri=store[0])
    runs = client.search_runs([client.get_experiment_by_name("qcloop-cancelled").experiment_id])
    assert [run.info.status for run in runs] == ["KILLED"]
    assert client.search_model_versions("name = 'qcloop-cancelled'") == []


def test_unreadable_file_and_unreachable_store_fail_before_any_run(tmp_path, store, records):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    scans = list(records[:12])
    first = scans[0]
    scans[0] = ScanRecord(first.scan_id, first.subject, (FrameRecord(0, str(broken), "x" * 64),), first.decisions)
    dataset = build_dataset(scans, [USABLE, GHOSTING], LabelSettings(), seed=0)
    with pytest.raises(DatasetError, match="cannot read an image file"):
        train(_config(tmp_path, store, dataset, "qcloop-broken"))
    assert MlflowClient(tracking_uri=store[0]).get_experiment_by_name("qcloop-broken") is None
    good = build_dataset(records[:12], [USABLE, GHOSTING], LabelSettings(), seed=0)
    with pytest.raises(TrackingError, match="unreachable"):
        train(_config(tmp_path, store, good, "qcloop-down", tracking_uri="http://127.0.0.1:1"))
    with pytest.raises(TrackingError, match="missing or not writable"):
        train(_config(tmp_path, store, good, "qcloop-down", tracking_uri=f"sqlite:///{tmp_path}/no/such/m.db"))


@pytest.mark.slow
def test_two_dimensional_images_train_with_the_torchvision_backbone(tmp_path, store):
    scans = []
    for index in range(12):
        bad = index % 2 == 1
        image = brain_phantom((48, 48, 3), seed=index)[:, :, 1]
        if bad:
            image = image + np.roll(image, 16, axis=0) * 0.6
        path = tmp_path / f"slice{index}.nii.gz"
        nib.save(nib.Nifti1Image((image * 1000).astype(np.int16), np.eye(4)), str(path))
        decision = DecisionRecord("unusable" if bad else "usable", "tier2", T0, {}, index)
        frame = FrameRecord(index, str(path), hashlib.sha256(path.read_bytes()).hexdigest())
        scans.append(ScanRecord(index, f"p{index}", (frame,), (decision,)))
    dataset = build_dataset(scans, [USABLE], LabelSettings(), seed=0)
    result = train(_config(tmp_path, store, dataset, "qcloop-2d", arch="resnet18_2d", epochs=1, batch_size=4,
                           preprocess=PreprocessConfig(spatial_size=(32, 32))))
    assert result.arch == "resnet18_2d" and result.output_map == [USABLE.as_dict()]


def test_the_champion_is_scored_on_the_new_runs_split_through_its_own_preprocessing(tmp_path, store, records,
                                                                                   monkeypatch):
    # No test split: both models are scored on the validation split, here the same subjects for both runs.
    dataset = build_dataset(records[:20], [USABLE, GHOSTING], LabelSettings(), seed=0, test_fraction=0.0,
                            evaluation="holdout")
    champion = train(_config(tmp_path / "a", store, dataset, "qcloop-same-split", epochs=2,
                             preprocess=PreprocessConfig(spatial_size=(24, 24, 24))))
    assert champion.champion_version is None and not any(k.startswith("champion_") for k in champion.metrics)
    assert champion.metrics["heldout_is_validation"] == 1.0
    if champion.alias != "champion":  # this test is about scoring the champion, not about the gate
        registry.promote(store[0], "qcloop-same-split", champion.version)
    candidate = train(_config(tmp_path / "b", store, dataset, "qcloop-same-split", epochs=1))
    # The champion read the frames at its own 24^3, so it scored exactly what it scored on itself.
    assert candidate.champion_version == "1"
    for key in ("usable_auc", "usable_bacc", "usable_auc_low", "usable_auc_high"):
        assert candidate.metrics[f"champion_heldout_{key}"] == pytest.approx(champion.metrics[f"heldout_{key}"])
    logged = MlflowClient(tracking_uri=store[0]).get_run(candidate.run_id).data
    assert logged.params["champion_version"] == "1"
    assert logged.metrics["champion_heldout_usable_auc"] == candidate.metrics["champion_heldout_usable_auc"]

    def unloadable(*args, **kwargs):
        raise RuntimeError("pickled class not found")

    monkeypatch.setattr(registry, "load", unloadable)
    stands = train(_config(tmp_path / "c", store, dataset, "qcloop-same-split", epochs=1))
    assert stands.version == "3" and stands.champion_version is None
    assert not any(k.startswith("champion_") for k in stands.metrics)
    params = MlflowClient(tracking_uri=store[0]).get_run(stands.run_id).data.params
    assert params["champion_score_error"] == "RuntimeError: pickled class not found"


def test_the_first_champion_needs_a_defined_held_out_auc_above_chance(store):
    assert first_champion_gate({}) == (False, "its held-out usable AUC is undefined (the held-out scans lack a class)")
    assert first_champion_gate({"heldout_usable_auc": 0.5})[0] is False
    assert first_champion_gate({"heldout_usable_auc": 0.74})[0] is True
    assert first_champion_gate({"heldout_usable_auc": 0.51, "heldout_usable_auc_low": 0.33}) == (
        False, "its held-out usable AUC 0.510 is not above chance (95% CI from 0.330)")
    assert first_champion_gate({"heldout_usable_auc": 0.87, "heldout_usable_auc_low": 0.75})[0] is True
