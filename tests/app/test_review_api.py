"""The MIQA-compatible review API: lists and filters, decisions with the lock and the tier rule,
bad input answered with 4xx, locks (expiry, renewal, admin break), notes, task overview."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select

from app.db import AuditEvent, Decision, Experiment, db, utcnow
from tests.factories import token_headers


@pytest.fixture
def world(factory, client):
    project = factory.project("review")
    people = {role: factory.member(project, role, role) for role in ("collaborator", "tier1", "tier2", "admin")}
    people["tier1b"] = factory.member(project, "tier1", "tier1b")
    scans = [factory.scan(project, "exp1", f"s{n}") for n in range(3)]
    other = factory.scan(project, "exp2", "t0")
    elsewhere = factory.project("elsewhere")
    factory.member(elsewhere, "admin", "outsider")
    foreign = factory.scan(elsewhere, "x", "foreign")
    headers = {name: token_headers(client, name) for name in [*people, "outsider"]}
    return {"project": project, "scans": scans, "other": other, "foreign": foreign, "headers": headers,
            "experiment": scans[0].experiment_id}


def decide(client, headers, scan_id, decision="U", **extra):
    return client.post("/api/v1/scan-decisions", json={"scan": scan_id, "decision": decision, **extra},
                       headers=headers)


def lock(client, headers, experiment_id):
    return client.post(f"/api/v1/experiments/{experiment_id}/lock", headers=headers)


def test_lists_filter_by_parent_and_hide_other_projects(client, world):
    h = world["headers"]["tier1"]
    projects = client.get("/api/v1/projects", headers=h).get_json()
    assert [p["name"] for p in projects["results"]] == ["review"]
    assert client.get("/api/v1/projects", headers=world["headers"]["outsider"]).get_json()["count"] == 1
    experiments = client.get(f"/api/v1/experiments?project={world['project'].id}", headers=h).get_json()
    assert [e["name"] for e in experiments["results"]] == ["exp1", "exp2"]
    assert experiments["results"][0]["scans"] == [s.id for s in world["scans"]]
    scans = client.get(f"/api/v1/scans?experiment={world['experiment']}", headers=h).get_json()
    assert scans["count"] == 3 and {s["state"] for s in scans["results"]} == {"unreviewed"}
    assert set(scans["results"][0]) >= {"id", "name", "experiment", "scan_type", "frames", "decisions", "subject_id"}
    frames = client.get(f"/api/v1/frames?scan={world['scans'][0].id}", headers=h).get_json()
    assert frames["count"] == 1
    frame = frames["results"][0]
    assert frame["content_url"].endswith(f"/frames/{frame['id']}/download") and frame["shape"] == [32, 32, 32]
    assert client.get(f"/api/v1/scans?experiment={world['foreign'].experiment_id}", headers=h).get_json()["count"] == 0
    assert client.get(f"/api/v1/scans/{world['foreign'].id}", headers=h).status_code == 404
    assert client.get(f"/api/v1/projects/{world['project'].id}", headers=h).get_json()["my_role"] == "tier1"


def test_tier1_decides_with_the_lock_and_tier2_completes(client, world):
    h1, h2 = world["headers"]["tier1"], world["headers"]["tier2"]
    scan = world["scans"][0]
    refused = decide(client, h1, scan.id, "Q?", note="blurry")
    assert refused.status_code == 409 and "lock" in refused.get_json()["detail"]
    assert lock(client, h1, world["experiment"]).get_json()["lock_owner"]["username"] == "tier1"
    answer = decide(client, h1, scan.id, "Q?", note="blurry",
                    artifacts={"present": ["ghosting_motion", "inhomogeneity"], "absent": ["lesions"]},
                    location={"i": 3, "j": 4, "k": 5})
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["artifacts"] == {"present": ["ghosting_motion", "inhomogeneity"], "absent": ["lesions"]}
    assert body["location"] == {"i": 3, "j": 4, "k": 5} and body["creator_role"] == "tier1"
    assert client.get(f"/api/v1/scans/{scan.id}", headers=h1).get_json()["state"] == "needs_tier2"

    taken = lock(client, h2, world["experiment"])
    assert taken.status_code == 409 and taken.get_json()["lock"]["owner"]["username"] == "tier1"
    assert client.delete(f"/api/v1/experiments/{world['experiment']}/lock", headers=h1).status_code == 200
    assert lock(client, h2, world["experiment"]).status_code == 200
    assert decide(client, h2, scan.id, "UN", note="motion").status_code == 201
    assert client.get(f"/api/v1/scans/{scan.id}", headers=h2).get_json()["state"] == "complete"
    history = client.get(f"/api/v1/scan-decisions?scan={scan.id}", headers=h1).get_json()["results"]
    assert [d["decision"] for d in history] == ["UN", "Q?"]  # newest first

    client.delete(f"/api/v1/experiments/{world['experiment']}/lock", headers=h2)
    lock(client, h1, world["experiment"])
    overrule = decide(client, h1, scan.id, "U")
    assert overrule.status_code == 403 and "tier 2" in overrule.get_json()["detail"]
    assert decide(client, h1, world["scans"][1].id, "U").status_code == 201  # usable by tier 1: complete
    overview = client.get(f"/api/v1/projects/{world['project'].id}/task_overview", headers=h1).get_json()
    assert overview["state_counts"] == {"unreviewed": 2, "needs_tier2": 0, "complete": 2}
    assert overview["my_project_role"] == "tier1" and overview["scan_states"][str(scan.id)] == "complete"
    assert {r["user"]["username"]: r["decisions"] for r in overview["reviewers"]} == {"tier1": 2, "tier2": 1}


@pytest.mark.parametrize("body, field, text", [
    ({"decision": "NOPE"}, "decision", "unknown decision"),
    ({"decision": "U", "artifacts": {"present": ["no_such_artifact"]}}, "artifacts.present", "unknown artifact"),
    ({"decision": "U", "note": "x" * 3001}, "note", "3000"),
    ({"decision": "U", "location": {"i": 1, "j": 2, "k": 32}}, "location", "outside"),
    ({"decision": "U", "location": {"i": "a", "j": 2, "k": 3}}, "location", "'a' is not a number"),
    ({"decision": "U", "location": {"i": 1.5, "j": 2, "k": 3, "space": "voxel"}}, "location", "whole numbers"),
    ({"decision": "U", "location": {"i": 1, "j": 2, "k": 3, "space": "galaxy"}}, "location", "'voxel' or 'world'"),
    ({"decision": "U", "location": {"i": True, "j": 2, "k": 3}}, "location", "True is not a number"),
    ({"decision": "U", "location": {"i": 1, "j": 2}}, "location", "k is missing"),
    ({"decision": "U", "location": {"i": -1, "j": 2, "k": 3}}, "location", "outside"),
    ({"decision": "Q?"}, "note", "note is required"),
    ({"decision": "U", "artifacts": ["lesions"]}, "artifacts", "present"),
])
def test_bad_decisions_are_refused_with_a_clear_400(client, world, body, field, text):
    h = world["headers"]["tier1"]
    lock(client, h, world["experiment"])
    answer = client.post("/api/v1/scan-decisions", json={"scan": world["scans"][0].id, **body}, headers=h)
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["field"] == field and text in answer.get_json()["detail"]
    assert db.session.scalar(select(Decision.id)) is None


def test_a_miqa_client_posts_its_viewers_world_position_and_gets_it_back(client, world):
    """MIQA's web client posts the crosshair's world position in mm (floats, negative too), unchanged."""
    h = world["headers"]["tier1"]
    lock(client, h, world["experiment"])
    answer = decide(client, h, world["scans"][0].id, "U", location={"i": -45.504, "j": -20.451, "k": 15.5})
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["location"] == {"i": -45.504, "j": -20.451, "k": 15.5, "space": "world"}
    stored = db.session.scalar(select(Decision))
    assert (stored.location_i, stored.location_space) == (-45.504, "world")
    whole = decide(client, h, world["scans"][1].id, "U", location={"i": -40, "j": 12, "k": 300, "space": "world"})
    assert whole.status_code == 201 and whole.get_json()["location"]["space"] == "world"


def test_scans_of_other_projects_and_low_roles_are_refused(client, world):
    h = world["headers"]["tier1"]
    lock(client, h, world["experiment"])
    other_project = decide(client, h, world["scans"][0].id, "U", project=world["foreign"].experiment.project_id)
    assert other_project.status_code == 400 and "not in project" in other_project.get_json()["detail"]
    assert decide(client, h, world["foreign"].id, "U").status_code == 404  # a project it cannot read
    assert decide(client, world["headers"]["collaborator"], world["scans"][0].id, "U").status_code == 403
    assert client.post("/api/v1/scan-decisions", data="not json", headers=h).status_code == 400
    assert decide(client, h, "abc").status_code == 400
    assert db.session.scalar(select(Decision.id)) is None


def test_locks_expire_and_admins_break_them_with_an_audit_event(client, world):
    h1, hb, admin = world["headers"]["tier1"], world["headers"]["tier1b"], world["headers"]["admin"]
    experiment_id = world["experiment"]
    assert lock(client, h1, experiment_id).status_code == 200
    assert client.delete(f"/api/v1/experiments/{experiment_id}/lock", headers=hb).status_code == 403
    experiment = db.session.get(Experiment, experiment_id)
    experiment.lock_expires_at = utcnow() - timedelta(seconds=1)  # five idle minutes have passed
    db.session.commit()
    assert decide(client, h1, world["scans"][0].id).status_code == 409  # an expired lock is no lock
    assert lock(client, hb, experiment_id).get_json()["lock_owner"]["username"] == "tier1b"
    renewed = lock(client, hb, experiment_id).get_json()["lock_expires"]
    assert renewed > utcnow().isoformat()
    broken = client.delete(f"/api/v1/experiments/{experiment_id}/lock", headers=admin)
    assert broken.status_code == 200 and broken.get_json()["lock_owner"] is None
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "experiment.lock_break"))
    assert event.details["holder"]["username"] == "tier1b" and event.target_id == str(experiment_id)


def test_experiment_note(client, world):
    h = world["headers"]["tier1"]
    url = f"/api/v1/experiments/{world['experiment']}/note"
    assert client.post(url, json={"note": "check motion"}, headers=h).get_json()["note"] == "check motion"
    too_long = client.post(url, json={"note": "x" * 3001}, headers=h)
    assert too_long.status_code == 400 and too_long.get_json()["field"] == "note"
    assert client.post(url, json={"note": "x"}, headers=world["headers"]["collaborator"]).status_code == 403


def test_two_reviewers_posting_at_the_same_moment_both_get_their_decision(client, world, live_server):
    h1, h2 = world["headers"]["tier1"], world["headers"]["tier1b"]
    assert lock(client, h1, world["experiment"]).status_code == 200
    assert lock(client, h2, world["other"].experiment_id).status_code == 200
    barrier = threading.Barrier(2)
    answers = {}

    def post(name, headers, scan_id):
        barrier.wait()
        answers[name] = requests.post(live_server.url + "/api/v1/scan-decisions", headers=headers, timeout=30,
                                      json={"scan": scan_id, "decision": "U"}).status_code

    threads = [threading.Thread(target=post, args=("a", h1, world["scans"][0].id)),
               threading.Thread(target=post, args=("b", h2, world["other"].id))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {"a": 201, "b": 201}
    db.session.expire_all()
    assert len(db.session.scalars(select(Decision)).all()) == 2
