"""Nothing lost between tiers: a later reviewer's form starts from the latest decision's artifacts, and each
artifact's training label comes from the most senior reviewer who judged it ("not judged" erases nothing)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from app.db import Project, db
from app.services import training
from tests.factories import login, token_headers
from training.data import DecisionRecord, settle_artifacts, settled_label


@pytest.fixture
def reviewed(app, factory, client):
    """Two scans ann (tier 1) judged through the API: ghosting present and lesions absent on each."""
    project = factory.project("tiers")
    factory.member(project, "tier1", "ann")
    factory.member(project, "tier2", "bob")
    scans = [factory.scan(project, "exp", f"s{n}", shape=(8, 8, 8)) for n in range(2)]
    ann = token_headers(client, "ann")
    client.post(f"/api/v1/experiments/{scans[0].experiment_id}/lock", headers=ann)
    for scan in scans:
        response = client.post("/api/v1/scan-decisions", headers=ann, json={
            "scan": scan.id, "decision": "Q?", "note": "look again",
            "artifacts": {"present": ["ghosting_motion"], "absent": ["lesions"]}})
        assert response.status_code == 201, response.get_json()
    client.delete(f"/api/v1/experiments/{scans[0].experiment_id}/lock", headers=ann)
    return project, scans


def _counts(project_id: int) -> dict[str, tuple[int, int]]:
    db.session.expire_all()
    return {row.key: (row.present, row.absent)
            for row in training.label_counts(db.session.get(Project, project_id))}


def _decide(client, headers, scan, decision, present=(), absent=()):
    client.post(f"/api/v1/experiments/{scan.experiment_id}/lock", headers=headers)
    response = client.post("/api/v1/scan-decisions", headers=headers, json={
        "scan": scan.id, "decision": decision, "note": "tier 2",
        "artifacts": {"present": list(present), "absent": list(absent)}})
    assert response.status_code == 201, response.get_json()


def test_tier2_form_starts_from_tier1_artifacts_marked_carried_over(client, reviewed):
    project, scans = reviewed
    login(client, "bob")
    context = client.get(f"/scans/{scans[0].id}/context").get_json()
    assert context["carried"]["artifacts"] == {"ghosting_motion": "present", "lesions": "absent"}
    assert context["carried"]["creator"] == "ann" and context["carried"]["creator_role"] == "tier1"
    page = client.get(f"/scans/{scans[0].id}").get_data(as_text=True)
    embedded = re.search(r'<script id="scan-context" type="application/json">(.*?)</script>', page, re.S).group(1)
    assert '"carried"' in embedded and '"ghosting_motion": "present"' in embedded.replace('":"', '": "')


def test_a_tier2_confirm_keeps_tier1_artifact_labels_in_the_training_data(client, reviewed):
    project, scans = reviewed
    assert _counts(project.id)["ghosting_motion"] == (2, 0) and _counts(project.id)["lesions"] == (0, 2)
    bob = token_headers(client, "bob")
    # "2, Enter" with a form that (as an API client may) sends no artifacts: tier 1's judgments still label
    _decide(client, bob, scans[0], "UE")
    # confirming the carried-over tags, as the page sends them
    _decide(client, bob, scans[1], "UN", present=["ghosting_motion"], absent=["lesions"])
    counts = _counts(project.id)
    assert counts["ghosting_motion"] == (2, 0) and counts["lesions"] == (0, 2)
    assert counts["usable"] == (1, 1)  # tier 2 settles the decision: usable_extra and unusable
    # the training page shows the same counts
    login(client, "bob")
    html = client.get(f"/projects/{project.id}/training").get_data(as_text=True)
    row = re.search(r'<tr data-output="ghosting_motion">(.*?)</tr>', html, re.S).group(1)
    assert re.findall(r"<td>(\d+)</td>", row) == ["2", "0"]


def test_the_most_senior_judgment_wins_per_artifact(client, reviewed):
    project, scans = reviewed
    bob = token_headers(client, "bob")
    _decide(client, bob, scans[0], "UE", absent=["ghosting_motion"])  # tier 2 overrules tier 1 on ghosting only
    ann = token_headers(client, "ann")
    client.delete(f"/api/v1/experiments/{scans[0].experiment_id}/lock", headers=bob)
    client.post(f"/api/v1/experiments/{scans[0].experiment_id}/lock", headers=ann)
    # a newer tier-1 decision on the other scan, judging ghosting absent: it is the newest tier-1 word
    response = client.post("/api/v1/scan-decisions", headers=ann, json={
        "scan": scans[1].id, "decision": "Q?", "note": "again", "artifacts": {"absent": ["ghosting_motion"]}})
    assert response.status_code == 201
    counts = _counts(project.id)
    assert counts["ghosting_motion"] == (0, 2) and counts["lesions"] == (0, 2)


def test_settled_artifacts_under_each_label_rule():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def record(role, minutes, **states):
        return DecisionRecord("questionable", role, start + timedelta(minutes=minutes), states, minutes)

    tier1 = record("tier1", 0, **{"1": "present", "2": "absent", "3": "present"})
    tier2 = record("tier2", 5, **{"1": "undefined", "2": "present"})
    newer_tier1 = record("tier1", 9, **{"3": "absent", "4": "present"})
    assert settle_artifacts([tier1, tier2, newer_tier1]) == {"1": "present", "2": "present", "3": "absent",
                                                             "4": "present"}
    assert settle_artifacts([tier2, tier1], "newest") == {"1": "present", "2": "present", "3": "present"}
    label = settled_label([tier1, tier2, newer_tier1])
    assert label.creator_role == "tier2" and label.artifacts["1"] == "present"  # tier 2's decision, every judgment
    assert settled_label([]) is None
