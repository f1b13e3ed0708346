"""Training runs through the API, the page and the CLI: tracked in MLflow, registered, bad input fails early."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from sqlalchemy import func, select

from app.db import AuditEvent, Decision, Frame, Job, ModelVersion, Project, TrainingRun, db
from app.services import projects, review, training, vocabulary
from app.services.decisions import record_decision
from app.services.loaders import load
from tests.conftest import SHARED_DATA
from tests.factories import login, token_headers

SMALL = {"arch": "resnet_small", "spatial_size": [32, 32, 32], "batch_size": 4, "min_labels": 2}
pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """One MLflow store per module (its first initialisation is the slow part)."""
    folder = tmp_path_factory.mktemp("mlflow")
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "MLFLOW_ARTIFACT_ROOT": str(folder / "art")}


@pytest.fixture
def app(make_app, mlflow_store):
    app = make_app(**mlflow_store, MIQA_WEIGHTS=str(SHARED_DATA / "miqa-weights" / "miqaMix-val0.pth"))
    with app.app_context():
        yield app
        db.session.rollback()


def _labelled_project(factory, n_scans=8, ghosted=None):
    """A project with an admin and n scans: odd ones ghosted (unusable, ghosting present), even ones clean."""
    admin = factory.user()
    project = factory.project(f"train-{uuid.uuid4().hex[:8]}", creator=admin)
    for index in range(n_scans):
        bad = index % 2 == 1 if ghosted is None else ghosted
        scan = factory.scan(project, name=f"s{index}", artifact="ghosting" if bad else None)
        record_decision(scan, admin, "UN" if bad else "U", role="tier2", note="ghosts" if bad else "",
                        present=["ghosting_motion"] if bad else [], absent=[] if bad else ["ghosting_motion"])
    db.session.commit()
    return project, admin


def _registered_versions(app, name):
    client = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"])
    return client.search_model_versions(f"name = '{name}'")


@pytest.mark.slow
def test_two_epoch_run_is_tracked_registered_and_restartable_from_champion(app, client, factory):
    project, admin = _labelled_project(factory, n_scans=12)
    headers = token_headers(client, admin.username)
    response = client.post(f"/api/v1/projects/{project.id}/training-runs", json={"epochs": 6, "lr": 3e-3, **SMALL},
                           headers=headers)
    assert response.status_code == 201, response.get_json()
    run = response.get_json()
    assert run["state"] == "succeeded", run["error"]
    # 12 scans: whether the interval clears chance decides the alias, and the run says which
    gate = run["report"]["champion_gate"]
    assert (run["model_version"]["alias"], gate.split(":")[0]) in {("champion", "first champion"),
                                                                   ("challenger", "not made champion")}, gate
    assert [o["key"] for o in run["model_version"]["output_map"]] == ["usable", "ghosting_motion"]
    assert run["params"]["outputs"] == ["usable", "ghosting_motion"] and "lesions" in run["params"]["skipped_outputs"]
    assert {"heldout_usable_auc", "heldout_usable_auc_low", "heldout_usable_auc_high", "epochs_run"} <= set(run["metrics"])
    assert run["params"]["evaluation_used"] == "cv" and run["metrics"]["heldout_scans"] == 12
    report = run["report"]
    assert report["evaluation"].startswith("5-fold cross-validation") and report["heldout_scans"] == 12
    assert [line["output"] for line in report["heldout"]] == ["usable", "ghosting_motion"]
    assert "95% CI" in report["heldout"][0]["auc"] and "6 present, 6 absent" in report["heldout"][0]["auc"]
    skipped = {line["output"]: line["reason"] for line in report["skipped_outputs"]}
    assert skipped["lesions"] == "too few labels (0 present / 0 absent; at least 2 of each needed)"
    assert "mlflow ui --backend-store-uri" in report["mlflow"]
    if run["model_version"]["alias"] != "champion":  # promoting it anyway is the admin's call
        forced = client.post(f"/api/v1/projects/{project.id}/training-runs/{run['id']}/promote", json={"force": True},
                             headers=headers)
        assert forced.status_code == 200 and forced.get_json()["forced"] is True
    assert "champion_version" not in run["metrics"]  # there was no champion to score

    mlflow_client = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"])
    mlflow_run = mlflow_client.get_run(run["mlflow_run_id"])
    params = mlflow_run.data.params
    assert params["vocabulary_version"] == vocabulary.vocabulary_version(project.id)
    assert {"dataset_hash", "counts", "split", "code_version", "epochs", "batch_size", "arch", "lr"} <= set(params)
    assert json.loads(params["counts"])["cv"]["ghosting_motion"] == {"present": 6, "absent": 6}
    assert params["evaluation"] == "cv" and params["folds"] == "5"
    assert {"train/loss", "heldout_usable_auc", "fold1_usable_auc"} <= set(mlflow_run.data.metrics)
    assert mlflow_run.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow_client.list_artifacts(run["mlflow_run_id"])}
    artifacts |= {a.path for a in mlflow_client.list_artifacts(run["mlflow_run_id"], "plots")}
    assert {"manifest.csv", "plots/confusion_usable.png", "plots/roc_usable.png", "plots/roc_ghosting_motion.png",
            "plots/learning_curves.png"} <= artifacts
    manifest = mlflow_client.download_artifacts(run["mlflow_run_id"], "manifest.csv")
    lines = open(manifest).read().splitlines()
    assert lines[0].startswith("frame_id,scan_id,subject,path,checksum,split,fold,weight,usable,ghosting_motion")
    assert len(lines) == 13
    versions = _registered_versions(app, project.model_name)
    assert len(versions) == 1 and json.loads(versions[0].tags["output_map"])[1]["key"] == "ghosting_motion"
    row = db.session.scalar(select(ModelVersion).where(ModelVersion.project_id == project.id))
    assert row.version == str(versions[0].version) and row.mlflow_run_id == run["mlflow_run_id"]

    listed = client.get(f"/api/v1/projects/{project.id}/training-runs", headers=headers).get_json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == run["id"]
    again = client.post(f"/api/v1/projects/{project.id}/training-runs",
                        json={"epochs": 1, "from": "champion", **SMALL}, headers=headers).get_json()
    assert again["state"] == "succeeded", again["error"]
    assert again["model_version"]["version"] == "2" and again["model_version"]["alias"] == "challenger"
    again_run = mlflow_client.get_run(again["mlflow_run_id"]).data
    assert json.loads(again_run.params["init_kept_outputs"]) == ["usable", "ghosting_motion"]
    # The champion (version 1) was scored on run 2's held-out scans (all 12, cross-validated).
    assert again["metrics"]["champion_version"] == "1" and again_run.params["champion_version"] == "1"
    assert 0 <= again["metrics"]["champion_heldout_usable_auc"] <= 1
    assert again_run.metrics["champion_heldout_usable_auc"] == again["metrics"]["champion_heldout_usable_auc"]
    assert db.session.get(ModelVersion, again["model_version"]["id"]).metrics["champion_version"] == "1"
    promoted = client.post(f"/api/v1/projects/{project.id}/training-runs/{again['id']}/promote",
                           json={"force": True}, headers=headers).get_json()
    assert promoted["comparison"]["same_split"] is True
    assert promoted["comparison"]["metric"] == f"usable AUC on run {again['id']}'s held-out scans"
    assert promoted["comparison"]["champion"] == again["metrics"]["champion_heldout_usable_auc"]


@pytest.mark.slow
def test_run_from_miqa_weights_and_the_training_page(app, client, factory):
    project, admin = _labelled_project(factory, n_scans=10)
    login(client, admin.username)
    page = client.get(f"/projects/{project.id}/training")
    assert page.status_code == 200 and b"Retrain" in page.data and b'data-output="ghosting_motion"' in page.data
    response = client.post(f"/projects/{project.id}/training",
                           data={"from": "miqa", "epochs": "1", "batch_size": "4", "artifacts": ["ghosting_motion"]})
    assert response.status_code == 302
    run = db.session.scalar(select(TrainingRun).where(TrainingRun.project_id == project.id))
    assert run.state == "succeeded", run.error
    assert run.params["arch"] == "miqa" and run.params["spatial_size"] == [64, 64, 64]
    kept = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"]).get_run(run.mlflow_run_id).data.params
    assert json.loads(kept["init_kept_outputs"]) == ["usable", "ghosting_motion"]
    page = client.get(f"/projects/{project.id}/training")
    assert f"{project.model_name} v1".encode() in page.data


def test_roles_start_view_and_cancel(app, client, factory):
    project, admin = _labelled_project(factory, n_scans=0)
    tier2 = factory.member(project, "tier2")
    collaborator = factory.member(project, "collaborator")
    outsider = factory.user()
    url = f"/api/v1/projects/{project.id}/training-runs"
    assert client.post(url, json={}, headers=token_headers(client, tier2.username)).status_code == 403
    assert client.get(url, headers=token_headers(client, collaborator.username)).status_code == 200
    assert client.get(url, headers=token_headers(client, outsider.username)).status_code == 404
    bad = client.post(url, json={"epochs": 0}, headers=token_headers(client, admin.username))
    assert bad.status_code == 400 and bad.get_json()["field"] == "epochs"
    bad = client.post(url, json={"artifacts": ["no_such_artifact"]}, headers=token_headers(client, admin.username))
    assert bad.status_code == 400 and "no_such_artifact" in bad.get_json()["detail"]
    failed = client.post(url, json={}, headers=token_headers(client, admin.username)).get_json()
    assert failed["state"] == "failed" and "nothing to train on" in failed["error"]
    cancel = client.post(f"/api/v1/training-runs/{failed['id']}/cancel", headers=token_headers(client, admin.username))
    assert cancel.status_code == 409
    assert client.post(f"/api/v1/training-runs/{failed['id']}/cancel",
                       headers=token_headers(client, collaborator.username)).status_code == 403
    assert client.get(f"/api/v1/training-runs/{failed['id']}",
                      headers=token_headers(client, collaborator.username)).get_json()["id"] == failed["id"]
    login(client, collaborator.username)
    page = client.get(f"/projects/{project.id}/training")
    assert page.status_code == 200 and b"Retrain" not in page.data and b"nothing to train on" in page.data


def test_queued_run_cancels_and_a_cancelled_job_stops_before_training(make_app, mlflow_store, tmp_path):
    from tests.factories import Factory

    app = make_app(**mlflow_store, QUEUE_IMMEDIATE=False, QUEUE_URL=f"sqlite:///{tmp_path / 'queue.db'}")
    with app.app_context():
        factory = Factory(app)
        project, admin = _labelled_project(factory, n_scans=4)
        client = app.test_client()
        headers = token_headers(client, admin.username)
        run = client.post(f"/api/v1/projects/{project.id}/training-runs", json=SMALL, headers=headers).get_json()
        assert run["state"] == "queued"
        busy = client.post(f"/api/v1/projects/{project.id}/training-runs", json=SMALL, headers=headers)
        assert busy.status_code == 409
        cancelled = client.post(f"/api/v1/training-runs/{run['id']}/cancel", headers=headers).get_json()
        assert cancelled["state"] == "cancelled"

        from app.services import jobs, training

        started = training.create_run(project, admin, SMALL)
        db.session.get(Job, started.job_id).cancel_requested = True
        db.session.commit()
        jobs.run_job(started.job_id)
        db.session.expire_all()
        assert load(TrainingRun, started.id).state == "cancelled"
        assert db.session.get(Job, started.job_id).state == "cancelled"
        db.session.rollback()


@pytest.mark.parametrize("case, expected", [
    ("too_few", "too few labels"),
    ("one_class", "only one class"),
    ("missing_file", "missing or unreadable"),
    ("unreadable_file", "cannot read an image file"),
    ("mlflow_down", "unreachable"),
])
def test_bad_input_fails_early_registers_nothing(make_app, mlflow_store, case, expected):
    from tests.factories import Factory

    settings = dict(mlflow_store)
    if case == "mlflow_down":
        settings["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:1"
    app = make_app(**settings)
    with app.app_context():
        factory = Factory(app)
        project, admin = _labelled_project(factory, n_scans=4 if case == "too_few" else 8,
                                           ghosted=False if case == "one_class" else None)
        if case in ("missing_file", "unreadable_file"):
            frame = db.session.scalars(select(Frame)).first()
            path = Path(app.config["DATA_ROOT"]) / frame.file_location
            path.unlink() if case == "missing_file" else path.write_bytes(b"\x1f\x8b not a NIfTI volume")
        body = {**SMALL, "min_labels": 3} if case == "too_few" else SMALL
        decisions_before = db.session.scalar(select(func.count(Decision.id)))
        vocabulary_before = vocabulary.vocabulary_version(project.id)
        client = app.test_client()
        run = client.post(f"/api/v1/projects/{project.id}/training-runs", json=body,
                          headers=token_headers(client, admin.username)).get_json()
        assert run["state"] == "failed" and expected in run["error"], run["error"]
        job = db.session.get(Job, run["job_id"])
        assert job.state == "failed" and expected in job.error
        assert db.session.scalar(select(func.count(ModelVersion.id))) == 0
        assert db.session.scalar(select(func.count(Decision.id))) == decisions_before
        assert vocabulary.vocabulary_version(project.id) == vocabulary_before
        assert run["mlflow_run_id"] is None  # failed before any MLflow run was opened
        if case != "mlflow_down":
            assert _registered_versions(app, project.model_name) == []
            assert MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"]).get_experiment_by_name(
                project.model_name) is None
        login(client, admin.username)
        assert expected in _text(client.get(f"/projects/{project.id}/training"))
        db.session.rollback()


@pytest.mark.slow
def test_vocabulary_changed_during_the_run_registers_nothing(app, client, factory, monkeypatch):
    project, admin = _labelled_project(factory, n_scans=8)
    versions = iter(["before", "after"])
    monkeypatch.setattr(vocabulary, "vocabulary_version", lambda project_id: next(versions))
    app.config["MLFLOW_UI_URL"] = "http://mlflow.example"
    run = client.post(f"/api/v1/projects/{project.id}/training-runs", json={"epochs": 1, **SMALL},
                      headers=token_headers(client, admin.username)).get_json()
    assert run["state"] == "failed" and "vocabulary changed" in run["error"]
    assert db.session.scalar(select(func.count(ModelVersion.id))) == 0
    assert _registered_versions(app, project.model_name) == []
    # The MLflow run had opened: the failed run keeps its id and link, and MLflow says FAILED and why.
    mlflow_run = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"]).get_run(run["mlflow_run_id"])
    assert mlflow_run.info.status == "FAILED" and "vocabulary changed" in mlflow_run.data.tags["qcloop.error"]
    assert run["mlflow_url"] == (f"http://mlflow.example/#/experiments/{mlflow_run.info.experiment_id}"
                                 f"/runs/{run['mlflow_run_id']}")
    login(client, admin.username)
    assert f'<a href="{run["mlflow_url"]}">'.encode() in client.get(f"/projects/{project.id}/training").data


@pytest.mark.slow
def test_a_run_the_database_cannot_record_is_withdrawn_from_the_registry(app, client, factory):
    project, admin = _labelled_project(factory, n_scans=8)
    # Version 1 of this model name is already known to qcloop (say, from an imported export).
    db.session.add(ModelVersion(project_id=project.id, registry_name=project.model_name, version="1",
                                output_map=[], metrics={}))
    db.session.commit()
    run = client.post(f"/api/v1/projects/{project.id}/training-runs", json={"epochs": 1, **SMALL},
                      headers=token_headers(client, admin.username)).get_json()
    assert run["state"] == "failed" and "could not record" in run["error"] and "withdrawn" in run["error"]
    assert run["model_version"] is None and run["mlflow_run_id"]
    assert _registered_versions(app, project.model_name) == []
    mlflow_run = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"]).get_run(run["mlflow_run_id"])
    assert mlflow_run.info.status == "FAILED"
    assert db.session.scalar(select(func.count(ModelVersion.id))) == 1


@pytest.mark.slow
def test_cli_train_inline_prints_progress_and_fails_clearly(app, factory):
    from app.cli import train

    project, _ = _labelled_project(factory, n_scans=10)
    runner = CliRunner()
    result = runner.invoke(train, ["--project", project.name, "--epochs", "1", "--arch", "resnet_small",
                                   "--spatial-size", "32,32,32", "--batch-size", "4", "--inline"])
    assert result.exit_code == 0, result.output
    assert "training run" in result.output and "registered" in result.output and "%]" in result.output
    result = runner.invoke(train, ["--project", "no-such-project"])
    assert result.exit_code == 1 and "no project named" in result.output
    empty, _ = _labelled_project(factory, n_scans=0)
    result = runner.invoke(train, ["--project", empty.name, "--inline"])
    assert result.exit_code == 1 and "nothing to train on" in result.output


# --- the minimum-labels setting ---------------------------------------------------------------------

def test_min_labels_is_a_project_setting_edited_by_admins_and_used_by_runs(app, client, factory):
    project, admin = _labelled_project(factory, n_scans=4)
    assert project.settings["min_labels_per_class"] == projects.DEFAULT_SETTINGS["min_labels_per_class"] == 5
    tier2 = factory.member(project, "tier2")
    url = f"/api/v1/projects/{project.id}/training-settings"
    headers = token_headers(client, admin.username)
    assert client.get(url, headers=token_headers(client, tier2.username)).get_json() == {
        "label_rule": "tier2_then_newest", "questionable": "exclude", "min_labels_per_class": 5}
    assert client.patch(url, json={"min_labels_per_class": 3},
                        headers=token_headers(client, tier2.username)).status_code == 403
    for body, field in (({"min_labels_per_class": 0}, "min_labels_per_class"), ({"questionable": 2}, "questionable"),
                        ({"label_rule": "oldest"}, "label_rule"), ({"model_name": "x"}, "model_name")):
        bad = client.patch(url, json=body, headers=headers)
        assert bad.status_code == 400 and bad.get_json()["field"] == field, bad.get_json()
    changed = client.patch(url, json={"min_labels_per_class": 2, "questionable": 0.5}, headers=headers)
    assert changed.status_code == 200
    assert changed.get_json() == {"label_rule": "tier2_then_newest", "questionable": 0.5, "min_labels_per_class": 2}
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "project.settings",
                                                       AuditEvent.project_id == project.id))
    assert event.actor_id == admin.id and event.details["after"] == {"min_labels_per_class": 2, "questionable": 0.5}
    counts = {c.key: c for c in training.label_counts(load(Project, project.id))}
    assert counts["ghosting_motion"].enough and not counts["lesions"].enough

    login(client, admin.username)
    page = client.get(f"/projects/{project.id}/training")
    assert b'id="training-settings"' in page.data and b'name="min_labels_per_class" type="number"' in page.data
    assert client.post(f"/projects/{project.id}/training/settings",
                       data={"min_labels_per_class": "3", "label_rule": "newest", "questionable": "exclude"}
                       ).status_code == 302
    db.session.expire_all()
    assert projects.settings_of(load(Project, project.id)).min_labels_per_class == 3
    assert b'<code id="min-labels">3</code>' in client.get(f"/projects/{project.id}/training").data

    # A run without min_labels uses the setting: 2 scans of each class are too few for 3.
    run = client.post(f"/api/v1/projects/{project.id}/training-runs", json={k: v for k, v in SMALL.items()
                                                                            if k != "min_labels"},
                      headers=headers).get_json()
    assert run["params"]["min_labels"] == 3
    assert run["state"] == "failed" and "too few labels" in run["error"] and "at least 3" in run["error"]


def test_projects_made_before_the_setting_existed_read_its_default(app, factory):
    project, _ = _labelled_project(factory, n_scans=0)
    project.settings = {"label_rule": "newest"}
    db.session.commit()
    assert projects.settings_of(project).min_labels_per_class == 5 and training.min_labels(project) == 5
    assert projects.settings_of(project).label_rule == "newest"


# --- promotion ----------------------------------------------------------------------------------------

def _registered_run(app, project, version_metrics: dict, alias: str | None) -> TrainingRun:
    """A succeeded run whose model is registered in MLflow (with its metrics on the MLflow run) and in qcloop."""
    client = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"])
    name = project.model_name
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    mlflow_run = client.create_run(experiment_id)
    for key, value in version_metrics.items():
        if key != "champion_version":  # kept with the metrics in qcloop, a parameter in MLflow
            client.log_metric(mlflow_run.info.run_id, key, value)
    client.set_terminated(mlflow_run.info.run_id, "FINISHED")
    version = str(client.create_model_version(name, app.config["MLFLOW_ARTIFACT_ROOT"],
                                              run_id=mlflow_run.info.run_id).version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    row = ModelVersion(project_id=project.id, registry_name=name, version=version, alias=alias,
                       mlflow_run_id=mlflow_run.info.run_id, output_map=[], metrics=version_metrics)
    db.session.add(row)
    db.session.flush()
    run = TrainingRun(project_id=project.id, state="succeeded", params={}, metrics=dict(version_metrics),
                      mlflow_run_id=mlflow_run.info.run_id, model_version_id=row.id)
    db.session.add(run)
    db.session.commit()
    return run


def _aliases(app, name: str) -> dict[str, str]:
    client = MlflowClient(tracking_uri=app.config["MLFLOW_TRACKING_URI"])
    return {alias: str(client.get_model_version_by_alias(name, alias).version)
            for alias in client.get_registered_model(name).aliases}


def _text(response) -> str:
    """A page's text with runs of white space made single spaces."""
    return " ".join(response.get_data(as_text=True).split())


def _audit(action: str, project_id: int) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action,
                                                            AuditEvent.project_id == project_id)))


def test_promote_refuses_a_model_that_is_not_better_unless_forced(app, client, factory):
    project, admin = _labelled_project(factory, n_scans=0)
    tier2 = factory.member(project, "tier2")
    _registered_run(app, project, {"heldout_usable_auc": 0.90}, "champion")
    worse = _registered_run(app, project, {"heldout_usable_auc": 0.85}, "challenger")
    url = f"/api/v1/projects/{project.id}/training-runs/{worse.id}/promote"
    headers = token_headers(client, admin.username)

    assert client.post(url, json={}, headers=token_headers(client, tier2.username)).status_code == 403
    refused = client.post(url, json={}, headers=headers)
    assert refused.status_code == 409
    body = refused.get_json()
    assert "not better than the champion (version 1)" in body["detail"] and "force" in body["detail"]
    assert body["comparison"] == {"metric": "heldout_usable_auc", "candidate": 0.85, "champion": 0.90,
                                  "better": False, "champion_version": "1", "same_split": False,
                                  "reason": "heldout_usable_auc 0.8500 <= 0.9000, each on its own run's held-out "
                                            f"scans: run {worse.id} has no score of champion v1 on its held-out scans"}
    assert _aliases(app, project.model_name) == {"champion": "1", "challenger": "2"}
    assert _audit("model.promote", project.id) == [] and _audit("model.force_promote", project.id) == []
    assert client.post(url, json={"force": "yes"}, headers=headers).status_code == 400

    forced = client.post(url, json={"force": True}, headers=headers)
    assert forced.status_code == 200, forced.get_json()
    answer = forced.get_json()
    assert answer["forced"] is True and answer["previous_champion"] == "1"
    assert answer["run"]["model_version"]["alias"] == "champion"
    assert _aliases(app, project.model_name) == {"champion": "2"}
    rows = {row.version: row.alias for row in db.session.scalars(
        select(ModelVersion).where(ModelVersion.project_id == project.id))}
    assert rows == {"1": None, "2": "champion"}
    assert review.champion(project.id).version == "2"
    [event] = _audit("model.force_promote", project.id)
    assert event.actor_id == admin.id and event.target_id == str(worse.model_version_id)
    assert event.details["previous_champion"] == "1" and event.details["comparison"]["better"] is False
    again = client.post(url, json={"force": True}, headers=headers)
    assert again.status_code == 409 and "already the champion" in again.get_json()["detail"]


def test_promote_a_better_model_and_the_buttons_on_the_training_page(app, client, factory):
    project, admin = _labelled_project(factory, n_scans=0)
    _registered_run(app, project, {"heldout_usable_auc": 0.75}, "champion")
    worse = _registered_run(app, project, {"heldout_usable_auc": 0.70}, None)
    better = _registered_run(app, project, {"heldout_usable_auc": 0.88}, "challenger")
    failed = TrainingRun(project_id=project.id, state="failed", params={}, error="too few labels")
    other_project, _ = _labelled_project(factory, n_scans=0)
    db.session.add(failed)
    db.session.commit()

    login(client, admin.username)
    page = _text(client.get(f"/projects/{project.id}/training"))
    assert ("vs champion v1: heldout_usable_auc 0.8800 &gt; 0.7500, each on its own run&#39;s held-out scans: "
            f"run {better.id} has no score of champion v1 on its held-out scans (better)") in page
    assert ("vs champion v1: heldout_usable_auc 0.7000 &lt;= 0.7500, each on its own run&#39;s held-out scans: "
            f"run {worse.id} has no score of champion v1 on its held-out scans (not better)") in page
    assert page.count(">Promote</button>") == 1 and page.count(">Promote anyway</button>") == 1
    collaborator = factory.member(project, "collaborator")
    page = _text(login(app.test_client(), collaborator.username).get(f"/projects/{project.id}/training"))
    assert "(better)" in page and "Promote</button>" not in page

    headers = token_headers(client, admin.username)
    base = f"/api/v1/projects/{project.id}/training-runs"
    assert client.post(f"{base}/{failed.id}/promote", json={}, headers=headers).status_code == 409
    assert client.post(f"/api/v1/projects/{other_project.id}/training-runs/{better.id}/promote", json={},
                       headers=headers).status_code == 404  # the admin of this project is no member there
    response = client.post(f"/projects/{project.id}/training-runs/{better.id}/promote", data={})
    assert response.status_code == 302
    assert _aliases(app, project.model_name) == {"champion": "3"}
    [event] = _audit("model.promote", project.id)
    assert event.details["comparison"]["metric"] == "heldout_usable_auc" and event.details["version"] == "3"
    assert _audit("model.force_promote", project.id) == []
    page = _text(client.get(f"/projects/{project.id}/training"))
    assert "is now the champion" in page and f"{project.model_name} v3 (champion)" in page
    refused = client.post(f"/projects/{project.id}/training-runs/{worse.id}/promote", data={}, follow_redirects=True)
    assert "not better than the champion (version 3)" in _text(refused)
    assert _aliases(app, project.model_name) == {"champion": "3"}


def test_promote_without_a_champion_and_with_the_mlflow_store_gone(make_app, mlflow_store, tmp_path):
    from tests.factories import Factory

    app = make_app(**mlflow_store)
    with app.app_context():
        factory = Factory(app)
        project, admin = _labelled_project(factory, n_scans=0)
        first = _registered_run(app, project, {"heldout_usable_auc": 0.6}, None)
        client = app.test_client()
        headers = token_headers(client, admin.username)
        url = f"/api/v1/projects/{project.id}/training-runs/{first.id}/promote"
        answer = client.post(url, json={}, headers=headers).get_json()
        assert answer["comparison"]["reason"] == ("there is no champion yet; held-out usable AUC 0.600 is above "
                                                  "chance (no interval)") and answer["forced"] is False
        assert _aliases(app, project.model_name) == {"champion": "1"}
        second = _registered_run(app, project, {"heldout_usable_auc": 0.9}, None)
        app.config["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'gone' / 'mlflow.db'}"
        down = client.post(f"/api/v1/projects/{project.id}/training-runs/{second.id}/promote", json={},
                           headers=headers)
        assert down.status_code == 503 and "missing or not writable" in down.get_json()["detail"]
        assert db.session.get(ModelVersion, second.model_version_id).alias is None
        db.session.rollback()


def test_promotion_compares_on_the_candidates_split_when_it_scored_the_current_champion(app, client, factory):
    project, admin = _labelled_project(factory, n_scans=0)
    _registered_run(app, project, {"heldout_usable_auc": 0.80}, "champion")
    # Beats the champion's AUC from the champion's own held-out scans, not its AUC on this run's.
    lucky = _registered_run(app, project, {"heldout_usable_auc": 0.85, "champion_heldout_usable_auc": 0.90,
                                           "champion_version": "1"}, "challenger")
    # Below the champion's own held-out AUC, above the champion's AUC on this run's (harder) scans.
    harder = _registered_run(app, project, {"heldout_usable_auc": 0.75, "champion_heldout_usable_auc": 0.70,
                                            "champion_version": "1"}, None)
    # A one-class held-out set: the AUC is undefined, so the run cannot be promoted on it.
    undefined = _registered_run(app, project, {"champion_heldout_usable_auc": 0.65, "champion_version": "1"}, None)
    login(client, admin.username)
    page = _text(client.get(f"/projects/{project.id}/training"))
    assert (f"vs champion v1: usable AUC on run {lucky.id}&#39;s held-out scans 0.8500 &lt;= 0.9000, both models "
            "scored on the same scans (not better)") in page
    assert f"usable AUC on run {harder.id}&#39;s held-out scans 0.7500 &gt; 0.7000" in page
    assert (f"run {undefined.id} has no defined held-out usable AUC (its held-out scans lack a class) "
            "(not better)") in page

    headers = token_headers(client, admin.username)
    base = f"/api/v1/projects/{project.id}/training-runs"
    refused = client.post(f"{base}/{lucky.id}/promote", json={}, headers=headers)
    assert refused.status_code == 409
    assert f"usable AUC on run {lucky.id}'s held-out scans 0.8500 <= 0.9000" in refused.get_json()["detail"]
    assert refused.get_json()["comparison"] == {
        "metric": f"usable AUC on run {lucky.id}'s held-out scans", "candidate": 0.85, "champion": 0.90,
        "better": False, "same_split": True, "champion_version": "1",
        "reason": f"usable AUC on run {lucky.id}'s held-out scans 0.8500 <= 0.9000, both models scored on the same "
                  "scans"}
    promoted = client.post(f"{base}/{harder.id}/promote", json={}, headers=headers).get_json()
    assert promoted["forced"] is False and promoted["comparison"]["same_split"] is True
    assert _aliases(app, project.model_name) == {"champion": "3", "challenger": "2"}

    # The champion is now version 3: version 1's score on run 2's split no longer decides; the fallback says so.
    fallback = client.post(f"{base}/{lucky.id}/promote", json={}, headers=headers).get_json()
    assert fallback["comparison"] == {
        "metric": "heldout_usable_auc", "candidate": 0.85, "champion": 0.75, "better": True, "same_split": False,
        "champion_version": "3",
        "reason": f"heldout_usable_auc 0.8500 > 0.7500, each on its own run's held-out scans: run {lucky.id} scored "
                  "champion v1 on its held-out scans, not the current v3"}
    [event] = [e for e in _audit("model.promote", project.id) if e.details["version"] == "2"]
    assert event.details["comparison"]["same_split"] is False
