"""Every /api/v1/ operation documents its success answer, and the documented schemas are the answers.

On a filled database (decisions of two tiers, in voxel and world space, a lock, a champion with a
suggestion, a finished run with its version, jobs, tokens, members, an invitation, vocabulary, and a
second project serving MIQA's published weights as two registered versions), every operation of the
OpenAPI description is called with a valid request and must succeed: each GET, then each write,
including the 202 answers (a large import, a sync, an evaluation), promotion, rollback, prediction and
the deletes. For each JSON answer, recursively through nested objects and list items, its keys are the
documented properties: none undocumented, none of the required ones missing. Over all answers, every
property of every schema met is seen at least once, so no schema promises a field no answer carries;
and the operations answered are exactly the documented ones.
"""
from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import select

from app.db import ArtifactEntry, DecisionOption, Evaluation, Frame, Job, ModelVersion, TrainingRun, db
from app.services import decisions, invitations, model_versions, users
from app.storage import resolve
from tests.conftest import SHARED_DATA
from tests.factories import Factory

PREFIX = "/api/v1/"
FILES = {"POST /api/v1/projects/{project_id}/export", "POST /api/v1/global/export"}  # downloads, not answers


@dataclass
class Checked:
    """Keys seen per documented schema (named by its $ref, or by where it is inline)."""

    spec: dict[str, Any]
    seen: dict[str, set[str]] = field(default_factory=dict)
    properties: dict[str, set[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    statuses: set[str] = field(default_factory=set)

    def resolve(self, schema: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        name = None
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.spec["components"]["schemas"][name]
        return schema, name

    def compare(self, schema: dict[str, Any], value: Any, where: str) -> None:
        schema, name = self.resolve(schema)
        if value is None:
            return
        if "anyOf" in schema:  # a nullable nested object: the branch that describes it
            described = [branch for branch in schema["anyOf"] if "properties" in self.resolve(branch)[0]]
            if described:
                self.compare(described[0], value, where)
            return
        if "properties" in schema and isinstance(value, dict):
            label = name or where
            documented = set(schema["properties"])
            keys = set(value)
            if keys - documented:
                self.failures.append(f"{where} ({label}): undocumented keys {sorted(keys - documented)}")
            missing = set(schema.get("required", ())) - keys
            if missing:
                self.failures.append(f"{where} ({label}): documented keys missing {sorted(missing)}")
            self.properties[label] = documented
            self.seen.setdefault(label, set()).update(keys)
            for key in keys & documented:
                self.compare(schema["properties"][key], value[key], f"{where}.{key}")
        elif schema.get("type") == "array" and isinstance(value, list):
            for index, item in enumerate(value):
                self.compare(schema.get("items", {}), item, f"{where}[{index}]")
        elif isinstance(schema.get("additionalProperties"), dict) and isinstance(value, dict):
            for key, item in value.items():
                self.compare(schema["additionalProperties"], item, f"{where}{{{key}}}")

    def check(self, method: str, path: str, response) -> None:
        """Compare a JSON answer with the schema documented for its status."""
        operation = self.spec["paths"][path][method]
        status = str(response.status_code)
        assert response.status_code < 300, f"{method.upper()} {path}: {status} {response.get_data(as_text=True)}"
        documented = operation["responses"].get(status)
        assert documented is not None, f"{method.upper()} {path} answered {status}, which it does not document"
        self.answered.add(f"{method.upper()} {path}")
        self.statuses.add(f"{method.upper()} {path} {status}")
        if response.status_code == 204:
            assert not response.data, f"{method.upper()} {path} 204 with a body"
            return
        if f"{method.upper()} {path}" in FILES:  # a streamed file (its reading needs a request context)
            assert response.data, f"{method.upper()} {path}: an empty file"
            return
        if response.mimetype != "application/json":
            return
        content = documented.get("content", {}).get("application/json")
        assert content is not None, f"{method.upper()} {path} {status}: JSON answer, no JSON schema documented"
        self.compare(content["schema"], response.get_json(), f"{method.upper()} {path} {status}")


@pytest.fixture
def world(queued_app, two_torch_threads):
    """A project with everything an answer can show; jobs are queued, never run. A second project serves
    MIQA's published weights, registered twice (version 1 the champion) with no training: predicting,
    promoting a run's version and rolling back need real registered models."""
    with queued_app.test_request_context():
        factory = Factory(queued_app)
        root = factory.user("root", superuser=True)
        project = factory.project("filled", creator=root)
        tier1 = factory.member(project, "tier1", "ann")
        tier2 = factory.member(project, "tier2", "bob")
        factory.member(project, "collaborator", "cat")
        scan = factory.scan(project, "exp1", "scan1")
        second = factory.scan(project, "exp1", "scan2")
        key = db.session.scalar(select(ArtifactEntry.key).where(ArtifactEntry.project_id == project.id))
        decisions.record_decision(scan, tier1, "U", role="tier1", note="first look", present=[key])
        latest = decisions.record_decision(scan, tier2, "UN", role="tier2", note="second look", absent=[key],
                                           location={"i": 1, "j": 2, "k": 3})
        decisions.record_decision(second, tier1, "U", role="tier1", location={"i": 1.5, "j": 2.25, "k": 3.0})
        decisions.record_decision(second, None, "U", role=None, source="import", creator_name="miqa-user")
        model = ModelVersion(project_id=project.id, registry_name=project.model_name, version="1", alias="champion",
                             mlflow_run_id="abc", metrics={"heldout_usable_auc": 0.8, "heldout_usable_auc_low": 0.7,
                                                           "heldout_usable_auc_high": 0.9},
                             output_map=[{"kind": "usable", "key": "usable", "entry_id": None}])
        db.session.add(model)
        db.session.flush()
        db.session.add_all([
            Evaluation(model_version_id=model.id, scan_id=scan.id, scores={"usable": 0.3, key: 0.9}),
            Evaluation(model_version_id=model.id, scan_id=second.id, frame_id=second.frames[0].id,
                       scores={"usable": 0.7, key: 0.1})])
        job = Job(kind="training", project_id=project.id, state="succeeded", params={}, progress=1.0,
                  message="done", result={"ok": True})
        db.session.add(job)
        db.session.flush()
        run = TrainingRun(project_id=project.id, job_id=job.id, state="succeeded", model_version_id=model.id,
                          mlflow_run_id="abc", created_by_id=root.id,
                          params={"evaluation_used": "holdout", "evaluation_reason": "enough scans",
                                  "outputs": ["usable", key], "min_labels": 2, "champion_gate": "first champion",
                                  "skipped_outputs": {"lesions": {"present": 0, "absent": 3}}},
                          metrics={"heldout_scans": 2.0, "heldout_usable_auc": 0.8})
        db.session.add(run)
        served = factory.project("served", creator=root)
        for _ in range(2):
            model_versions.import_miqa(served, SHARED_DATA / "miqa-weights" / "miqaT1-val0.pth", root)
        challenger = db.session.scalar(select(ModelVersion).where(ModelVersion.project_id == served.id,
                                                                 ModelVersion.version == "2"))
        served_job = Job(kind="training", project_id=served.id, state="succeeded", params={}, progress=1.0)
        db.session.add(served_job)
        db.session.flush()
        served_run = TrainingRun(project_id=served.id, job_id=served_job.id, state="succeeded",
                                 model_version_id=challenger.id, created_by_id=root.id, params={}, metrics={})
        db.session.add(served_run)
        source = Path(queued_app.config["DATA_ROOT"]) / "incoming" / "exp9"
        source.mkdir(parents=True)
        shutil.copyfile(str(resolve(scan.frames[0].file_location)), source / "synced.nii.gz")
        _, invite_token = invitations.invite("invitee@example.org", project, "tier1", root)
        _, raw = users.issue_token(root, name="schemas")
        _, spare = users.issue_token(root, name="spare")
        db.session.commit()
        experiment = scan.experiment
        ids = {"project_id": project.id, "experiment_id": experiment.id, "scan_id": scan.id,
               "frame_id": scan.frames[0].id, "decision_id": latest.id, "run_id": run.id, "job_id": job.id,
               "user_id": tier2.id, "token_id": users.issue_token(root, name="to-revoke")[0].id,
               "invite_token": invite_token, "invitation_id": invitations.pending(project.id)[0].id,
               "option_id": db.session.scalar(select(DecisionOption.id).where(
                   DecisionOption.project_id == project.id)),
               "entry_id": db.session.scalar(select(ArtifactEntry.id).where(ArtifactEntry.project_id == project.id)),
               "version": 1}
        served_ids = {"project_id": served.id, "run_id": served_run.id}
    return {"ids": ids, "served": served_ids, "headers": {"Authorization": "Token " + raw}, "spare": {"Authorization": "Token " + spare},
            "key": key, "project": project.id, "scan": scan.id, "second": second.id,
            "experiment": experiment.id, "tier2": tier2.id}


def _spec(client) -> dict[str, Any]:
    answer = client.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    return answer.get_json()


def _url(path: str, ids: dict[str, Any]) -> str:
    for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        assert name in ids, f"{path}: the filled world has no id for {{{name}}}: add one"
        path = path.replace("{" + name + "}", str(ids[name]))
    return path


def _named(schema: dict[str, Any]) -> bool:
    """A response schema's answer: a named component, or a list of one."""
    return "$ref" in schema or (schema.get("type") == "array" and "$ref" in schema.get("items", {}))


def test_every_operation_documents_its_success_answer(queued_app):
    spec = _spec(queued_app.test_client())
    undocumented = []
    for path, operations in spec["paths"].items():
        if not path.startswith(PREFIX):
            continue
        for method, operation in operations.items():
            if method == "parameters":
                continue
            label = f"{method.upper()} {path}"
            success = {status: answer for status, answer in operation["responses"].items() if status[0] == "2"}
            if not success:
                undocumented.append(f"{label}: no success answer")
            for status, answer in success.items():
                if status != "204" and not answer.get("content"):
                    undocumented.append(f"{label} {status}: no body documented")
                for media, content in answer.get("content", {}).items():
                    if not content.get("schema"):
                        undocumented.append(f"{label} {status} {media}: no schema")
                    elif media == "application/json" and label not in FILES and not _named(content["schema"]):
                        undocumented.append(f"{label} {status}: a JSON answer not given by a response schema")
    assert len(spec["paths"]) > 40
    assert not undocumented, "\n".join(undocumented)


@dataclass
class Write:
    """One write: its documented path, the test client's keyword arguments, ids that differ from the
    filled project's (or a function giving them when the call is made), and settings for its duration."""

    method: str
    path: str
    request: dict[str, Any] = field(default_factory=dict)
    ids: dict[str, Any] | Callable[[], dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _queued_job(project_id: int | None) -> Callable[[], dict[str, Any]]:
    """The newest queued job of a project (or a global one), when the call is made."""
    def ids() -> dict[str, Any]:
        owner = Job.project_id.is_(None) if project_id is None else Job.project_id == project_id
        return {"job_id": db.session.scalar(select(Job.id).where(Job.state == "queued", owner).order_by(Job.id.desc()))}
    return ids


def _writes(world: dict[str, Any], client, headers) -> list[Write]:
    """Valid writes, in an order where each finds what it needs (a queued run to cancel, a new champion
    to roll back from, a pending invitation to withdraw)."""
    ids, key, served = world["ids"], world["key"], world["served"]
    export = client.post(f"/api/v1/projects/{ids['project_id']}/export", json={"format": "miqa-csv"}, headers=headers)
    assert export.status_code == 200

    def upload(name: str, content: bytes, **form: str) -> dict[str, Any]:
        return {"data": {"file": (io.BytesIO(content), name), **form}, "content_type": "multipart/form-data"}

    image = Path(_first_image(world)).read_bytes()
    large = {"IMPORT_INLINE_MAX_BYTES": 0}  # any file is large: imported by a job (202)
    return [
        Write("post", "/api/v1/experiments/{experiment_id}/lock"),
        Write("post", "/api/v1/scan-decisions", {"json": {"scan": world["scan"], "decision": "U", "note": "again",
                                                          "artifacts": {"present": [key]},
                                                          "location": {"i": 2, "j": 2, "k": 2}}}),
        Write("post", "/api/v1/experiments/{experiment_id}/note", {"json": {"note": "look at the ventricles"}}),
        Write("delete", "/api/v1/experiments/{experiment_id}/lock"),
        Write("post", "/api/v1/tokens", {"json": {"name": "notebook", "expires_in_days": 3}}),
        Write("delete", "/api/v1/tokens/{token_id}"),
        Write("post", "/api/v1/projects", {"json": {"name": "second project"}}),
        Write("post", "/api/v1/projects/{project_id}/members", {"json": {"user": "root", "role": "admin"}}),
        Write("put", "/api/v1/projects/{project_id}/members/{user_id}", {"json": {"role": "tier1"}}),
        Write("post", "/api/v1/projects/{project_id}/invitations", {"json": {"email": "new@example.org",
                                                                            "role": "tier1"}}),
        Write("post", "/api/v1/invitations/{invite_token}/accept", {"json": {"username": "invitee",
                                                                            "password": "a long enough password"}}),
        Write("delete", "/api/v1/projects/{project_id}/invitations/{invitation_id}",
              ids=lambda: {"invitation_id": invitations.pending(ids["project_id"])[0].id}),
        Write("post", "/api/v1/projects/{project_id}/decision-options", {"json": {"key": "MAYBE", "label": "Maybe",
                                                                                 "meaning": "questionable"}}),
        Write("patch", "/api/v1/projects/{project_id}/decision-options/{option_id}", {"json": {"label": "Usable!"}}),
        Write("post", "/api/v1/projects/{project_id}/artifact-entries", {"json": {"key": "spikes", "label": "Spikes"}}),
        Write("patch", "/api/v1/projects/{project_id}/artifact-entries/{entry_id}", {"json": {"position": 7}}),
        Write("patch", "/api/v1/projects/{project_id}/training-settings", {"json": {"min_labels_per_class": 3}}),
        Write("post", "/api/v1/projects/{project_id}/export", {"json": {"format": "miqa-csv"}}),
        Write("post", "/api/v1/global/export", {"json": {"format": "json"}}),
        Write("post", "/api/v1/projects/{project_id}/import", upload("export.csv", export.data, dry_run="true")),
        Write("post", "/api/v1/projects/{project_id}/import", upload("export.csv", export.data, dry_run="true"),
              config=large),
        Write("post", "/api/v1/global/import", upload("export.csv", export.data, dry_run="true")),
        Write("post", "/api/v1/global/import", upload("export.csv", export.data, dry_run="true"), config=large),
        Write("post", "/api/v1/global/jobs/{job_id}/cancel", ids=_queued_job(None)),
        Write("post", "/api/v1/frames", upload("upload.nii.gz", image, frame_number="1", scan=str(world["scan"]))),
        Write("post", "/api/v1/projects/{project_id}/training-runs", {"json": {"epochs": 1}}),
        Write("post", "/api/v1/training-runs/{run_id}/cancel", ids=lambda: {"run_id": db.session.scalar(
            select(TrainingRun.id).where(TrainingRun.state == "queued").order_by(TrainingRun.id.desc()))}),
        Write("post", "/api/v1/projects/{project_id}/evaluations", {"json": {"scope": "all"}}),
        Write("post", "/api/v1/jobs/{job_id}/cancel", ids=_queued_job(ids["project_id"])),
        Write("post", "/api/v1/projects/{project_id}/sync", {"json": {"source": "incoming"}}),
        Write("post", "/api/v1/scans/{scan_id}/email", {"json": {"to": [world["tier2"]], "message": "a ghost?"}}),
        Write("delete", "/api/v1/projects/{project_id}/members/{user_id}"),
        Write("post", "/api/v1/projects/{project_id}/predict", upload("scan.nii.gz", image), ids=served),
        Write("post", "/api/v1/projects/{project_id}/training-runs/{run_id}/promote", {"json": {"force": True}},
              ids=served),
        Write("post", "/api/v1/projects/{project_id}/models/{version}/rollback", {"json": {}},
              ids={**served, "version": 1}),
    ]


def _first_image(world: dict[str, Any]) -> str:
    return str(resolve(db.session.get(Frame, world["ids"]["frame_id"]).file_location))


def test_every_json_answer_carries_exactly_its_documented_fields(queued_app, world, monkeypatch):
    client = queued_app.test_client()
    headers = world["headers"]
    spec = _spec(client)
    checked = Checked(spec)
    for path, operations in spec["paths"].items():
        if path.startswith(PREFIX) and "get" in operations:
            with queued_app.test_request_context():
                checked.check("get", path, client.get(_url(path, world["ids"]), headers=headers))
    for write in _writes(world, client, headers):
        ids = {**world["ids"], **(write.ids() if callable(write.ids) else write.ids)}
        with monkeypatch.context() as settings, queued_app.test_request_context():
            for name, value in write.config.items():
                settings.setitem(queued_app.config, name, value)
            answer = getattr(client, write.method)(_url(write.path, ids), headers=headers, **write.request)
            checked.check(write.method, write.path, answer)
    checked.check("post", "/api/v1/logout", client.post("/api/v1/logout", headers=world["spare"]))

    assert not checked.failures, "\n".join(checked.failures)
    unseen = {name: sorted(checked.properties[name] - keys) for name, keys in checked.seen.items()
              if checked.properties[name] - keys}
    assert not unseen, f"documented properties no answer carried: {unseen}"
    documented = {f"{method.upper()} {path}" for path, operations in spec["paths"].items() if path.startswith(PREFIX)
                  for method in operations if method != "parameters"}
    assert checked.answered == documented, f"never answered: {sorted(documented - checked.answered)}"
    accepted = {f"{operation} 202" for operation in documented
                if "202" in spec["paths"][operation.split(" ", 1)[1]][operation.split(" ", 1)[0].lower()]["responses"]}
    assert accepted <= checked.statuses, f"202 never answered: {sorted(accepted - checked.statuses)}"
