"""The reviewer's queues: tier 1 gets unreviewed scans, tier 2 scans needing tier 2; both skip experiments
locked by others; uncertainty, disagreement and random orders; the project's default order; bad input."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db import AuditEvent, Evaluation, ModelVersion, Project, User, db, utcnow
from app.services import decisions, next_scan
from models.uncertainty import binary_entropy
from tests.factories import login, token_headers

SHAPE = (8, 8, 8)


@pytest.fixture
def world(app, factory):
    """Experiments a (free), b (locked by carl for the next minutes) and c (free), with tier-1 decisions."""
    project = factory.project("queues")
    ann = factory.member(project, "tier1", "ann")
    bob = factory.member(project, "tier2", "bob")
    carl = factory.member(project, "tier2", "carl")
    factory.member(project, "admin", "ada")
    scans = {name: factory.scan(project, name[0], name, shape=SHAPE)
             for name in ("a1", "a2", "b1", "b2", "c1", "c2", "c3")}
    for name, key in (("a1", "Q?"), ("b1", "UN"), ("c1", "UE"), ("c3", "U")):
        decisions.record_decision(scans[name], ann, key, role="tier1", note="checked")
    decisions.record_decision(scans["c2"], ann, "UN", role="tier1", note="checked")
    decisions.record_decision(scans["c2"], bob, "UN", role="tier2", note="checked")  # complete
    locked = scans["b1"].experiment
    locked.lock_owner_id, locked.lock_expires_at = carl.id, utcnow() + timedelta(minutes=5)
    db.session.commit()
    return project, scans, locked


def _next(client, project, headers, **args):
    response = client.get(f"/api/v1/projects/{project.id}/next-scan", headers=headers, query_string=args)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _walk(client, project, headers, **args) -> list[str]:
    """Follow the queue with ``after`` until it comes round again: the scan names in queue order."""
    names, after = [], None
    while True:
        answer = _next(client, project, headers, **args, **({"after": after} if after else {}))
        if answer["scan"] is None or answer["scan"]["name"] in names:
            return names
        names.append(answer["scan"]["name"])
        after = answer["scan"]["id"]


def test_tier2_queue_needs_tier2_and_skips_experiments_locked_by_others(client, world):
    project, scans, locked = world
    bob = token_headers(client, "bob")
    first = _next(client, project, bob)
    assert first["queue"] == "tier2" and first["strategy"] == "name" and first["fallback"] is None
    assert first["scan"]["name"] == "a1" and first["scan"]["state"] == "needs_tier2"
    assert first["remaining"] == 2 and first["other"] == {"queue": "tier1", "queue_label": "unreviewed",
                                                          "remaining": 1}
    # every scan the tier-2 queue offers needs tier 2 and none is in carl's experiment
    assert _walk(client, project, bob) == ["a1", "c1"]
    # tier 2 may choose the unreviewed scans, still outside the locked experiment
    assert _walk(client, project, bob, queue="tier1") == ["a2"]
    # carl, who holds the lock, is offered his own experiment
    assert _walk(client, project, token_headers(client, "carl")) == ["a1", "b1", "c1"]
    # once the lock has expired, b is open to everyone
    locked.lock_expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert _walk(client, project, bob) == ["a1", "b1", "c1"]
    assert _walk(client, project, bob, queue="tier1") == ["a2", "b2"]


def test_tier1_queue_and_the_tier2_queue_refused_to_tier1(client, world):
    project, scans, _ = world
    ann = token_headers(client, "ann")
    answer = _next(client, project, ann)
    assert answer["queue"] == "tier1" and answer["scan"]["name"] == "a2" and answer["other"] is None
    assert _walk(client, project, ann) == ["a2"]  # b2 is in carl's experiment
    refused = client.get(f"/api/v1/projects/{project.id}/next-scan?queue=tier2", headers=ann)
    assert refused.status_code == 403 and "tier2 queue" in refused.get_json()["detail"]


def test_an_empty_queue_says_so_and_offers_the_other(client, world):
    project, scans, locked = world
    for name in ("a1", "c1"):
        decisions.record_decision(scans[name], _user("bob"), "U", role="tier2")
    db.session.commit()
    answer = _next(client, project, token_headers(client, "bob"))
    assert answer["scan"] is None and answer["empty"] and answer["remaining"] == 0
    assert answer["message"] == "No scan needing tier 2 is open to you; 1 unreviewed (the tier1 queue)."
    # the pages say the same: the project page offers the other queue, /next goes back with the message
    login(client, "bob")
    html = client.get(f"/projects/{project.id}").get_data(as_text=True)
    assert 'id="queue-empty-tier2"' in html and "No scan needing tier 2 is open to you" in html
    assert 'id="next-unreviewed"' in html and 'id="next-tier2"' not in html
    response = client.get(f"/projects/{project.id}/next")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/projects/{project.id}")
    assert "No scan needing tier 2" in client.get(f"/projects/{project.id}").get_data(as_text=True)
    other = client.get(f"/projects/{project.id}/next?queue=tier1")
    assert other.headers["Location"].endswith(f"/scans/{scans['a2'].id}?queue=tier1")


def _user(username: str) -> User:
    return db.session.scalar(select(User).where(User.username == username))


def _champion(project, scores: dict, sampled: dict | None = None):
    model = ModelVersion(project_id=project.id, registry_name=project.model_name, version="2", alias="champion")
    old = ModelVersion(project_id=project.id, registry_name=project.model_name, version="1")
    db.session.add_all([model, old])
    db.session.flush()
    for scan, usable in scores.items():
        uncertainty = None
        if sampled and scan in sampled:
            uncertainty = {"method": "mc_dropout", "passes": 8, "entropy": {"usable": sampled[scan]}}
        db.session.add(Evaluation(model_version_id=model.id, scan_id=scan.id, scores={"usable": usable},
                                  uncertainty=uncertainty))
        # an older version's opinion is not the champion's
        db.session.add(Evaluation(model_version_id=old.id, scan_id=scan.id, scores={"usable": 0.5}))
    db.session.commit()
    return model


def test_uncertainty_answers_the_unreviewed_unlocked_scan_of_highest_entropy(client, factory, world):
    project, scans, locked = world
    more = {name: factory.scan(project, "a", name, shape=SHAPE) for name in ("a3", "a4", "a5")}
    # b2 (in carl's locked experiment) is the most uncertain of all; c1 is not unreviewed
    _champion(project, {scans["a2"]: 0.95, more["a3"]: 0.62, more["a4"]: 0.44, more["a5"]: 0.2,
                        scans["b2"]: 0.5, scans["c1"]: 0.51})
    ann = token_headers(client, "ann")
    answer = _next(client, project, ann, strategy="uncertainty")
    assert answer["strategy_used"] == "uncertainty" and answer["fallback"] is None
    assert answer["scan"]["name"] == "a4"
    assert _walk(client, project, ann, strategy="uncertainty") == ["a4", "a3", "a5", "a2"]
    assert binary_entropy(0.5) == 1.0 and binary_entropy(0.0) == 0.0


def test_uncertainty_prefers_the_monte_carlo_dropout_entropy_the_evaluation_stored(client, factory, world):
    project, scans, _ = world
    more = {name: factory.scan(project, "a", name, shape=SHAPE) for name in ("a3", "a4")}
    # a3's deterministic score is sure (0.97) but its dropout passes disagree (0.9 bits); a4 sits at 0.45
    # without sampled entropy (0.99 bits from its score); a2 is sure both ways
    _champion(project, {scans["a2"]: 0.95, more["a3"]: 0.97, more["a4"]: 0.45},
              sampled={scans["a2"]: 0.1, more["a3"]: 0.9})
    ann = token_headers(client, "ann")
    assert _walk(client, project, ann, strategy="uncertainty") == ["a4", "a3", "a2"]


def test_disagreement_answers_the_largest_gap_between_champion_and_tier1(client, factory, world):
    project, scans, locked = world
    extra = factory.scan(project, "c", "c4", shape=SHAPE)
    decisions.record_decision(extra, _user("ann"), "Q?", role="tier1", note="checked")
    # gaps: a1 Q? 0.5 vs 0.9 -> 0.4; c1 UE 1 vs 0.2 -> 0.8; c4 Q? 0.5 vs 0.45 -> 0.05; b1 UN 0 vs 0.99 (locked)
    _champion(project, {scans["a1"]: 0.9, scans["c1"]: 0.2, extra: 0.45, scans["b1"]: 0.99})
    bob = token_headers(client, "bob")
    answer = _next(client, project, bob, strategy="disagreement")
    assert answer["scan"]["name"] == "c1" and answer["strategy_used"] == "disagreement"
    assert _walk(client, project, bob, strategy="disagreement") == ["c1", "a1", "c4"]
    # unreviewed scans have no tier-1 decision to disagree with: by name, and the answer says why
    fallback = _next(client, project, bob, queue="tier1", strategy="disagreement")
    assert fallback["strategy_used"] == "name" and "no scan in this queue has both" in fallback["fallback"]


def test_without_a_champion_uncertainty_and_disagreement_fall_back_to_name_visibly(client, world):
    project, scans, _ = world
    bob = token_headers(client, "bob")
    for strategy in ("uncertainty", "disagreement"):
        answer = _next(client, project, bob, strategy=strategy)
        assert answer["strategy"] == strategy and answer["strategy_used"] == "name"
        assert answer["fallback"] == "the project has no champion model: ordered by name"
        assert answer["scan"]["name"] == "a1"
    login(client, "bob")
    html = client.get(f"/projects/{project.id}?strategy=uncertainty").get_data(as_text=True)
    assert 'id="queue-fallback"' in html and "the project has no champion model: ordered by name" in html
    response = client.get(f"/projects/{project.id}/next?strategy=uncertainty")
    assert response.headers["Location"].endswith(f"/scans/{scans['a1'].id}?strategy=uncertainty")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "the project has no champion model: ordered by name" in page  # flashed and in the queue's answer


def test_random_order_is_stable_for_a_user_and_day(client, factory, world, monkeypatch):
    project, scans, locked = world
    locked.lock_expires_at = utcnow() + timedelta(days=3)  # still locked tomorrow: the same scans then
    for n in range(6):
        factory.scan(project, "a", f"r{n}", shape=SHAPE)
    ann = token_headers(client, "ann")
    first = _walk(client, project, ann, strategy="random")
    assert sorted(first) == ["a2"] + [f"r{n}" for n in range(6)]
    assert _walk(client, project, ann, strategy="random") == first  # the same all day
    # another reviewer, or the next day, gets another order (1 in 5040 to coincide by chance)
    assert _walk(client, project, token_headers(client, "bob"), queue="tier1", strategy="random") != first
    tomorrow = utcnow() + timedelta(days=1)
    monkeypatch.setattr(next_scan, "utcnow", lambda: tomorrow)
    assert _walk(client, project, ann, strategy="random") != first


def test_project_default_order_is_a_setting_admins_choose(client, world):
    project, scans, _ = world
    login(client, "bob")
    assert client.post(f"/projects/{project.id}/next-order", data={"strategy": "random"}).status_code == 403
    client.post("/logout")
    login(client, "ada")
    html = client.get(f"/projects/{project.id}").get_data(as_text=True)
    assert 'id="queue-default"' in html and 'id="queue-strategy"' in html
    client.post(f"/projects/{project.id}/next-order", data={"strategy": "nonsense"})
    db.session.expire_all()
    assert next_scan.SETTING not in (db.session.get(Project, project.id).settings or {})
    assert "strategy must be one of" in client.get(f"/projects/{project.id}").get_data(as_text=True)
    client.post(f"/projects/{project.id}/next-order", data={"strategy": "uncertainty"})
    db.session.expire_all()
    assert db.session.get(Project, project.id).settings[next_scan.SETTING] == "uncertainty"
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "project.settings")) is not None
    answer = _next(client, project, token_headers(client, "bob"))
    assert answer["strategy"] == "uncertainty" and answer["strategy_used"] == "name"  # no champion yet


def test_bad_queue_strategy_or_after_is_a_400(client, world):
    project, scans, _ = world
    bob = token_headers(client, "bob")
    for query in ("queue=tier3", "strategy=entropy", "after=0", "after=x"):
        response = client.get(f"/api/v1/projects/{project.id}/next-scan?{query}", headers=bob)
        assert response.status_code == 400, query
        assert response.get_json()["error"]
    login(client, "bob")
    assert client.get(f"/projects/{project.id}/next?strategy=entropy").status_code == 400
    assert client.get(f"/scans/{scans['a1'].id}?queue=tier9").status_code == 200  # the scan, in the role's queue
    assert client.get(f"/api/v1/projects/{project.id + 99}/next-scan", headers=bob).status_code == 404


def test_scan_page_context_follows_the_queue(client, world):
    project, scans, _ = world
    login(client, "bob")
    context = client.get(f"/scans/{scans['a1'].id}/context").get_json()
    queue = context["queue"]
    assert queue["queue"] == "tier2" and queue["next"]["id"] == scans["c1"].id
    assert queue["next"]["page"] == f"/scans/{scans['c1'].id}"
    assert context["neighbours"]["next"]["id"] == scans["a2"].id  # browsing by name stays
    chosen = client.get(f"/scans/{scans['a1'].id}/context?queue=tier1&strategy=name").get_json()
    assert chosen["queue"]["next"]["id"] == scans["a2"].id
    assert chosen["queue"]["next"]["context"] == f"/scans/{scans['a2'].id}/context?queue=tier1&strategy=name"
    assert context["carried"]["creator"] == "ann" and context["carried"]["creator_role"] == "tier1"


def test_a_scan_link_with_a_queue_the_role_may_not_use_still_opens_the_scan(client, world):
    project, scans, _ = world
    login(client, "ann")  # tier 1, following a tier-2 reviewer's link
    page = client.get(f"/scans/{scans['a2'].id}?queue=tier2&strategy=bogus")
    assert page.status_code == 200
    context = client.get(f"/scans/{scans['a2'].id}/context?queue=tier2").get_json()
    assert context["queue"]["queue"] == "tier1" and "queue=" not in (context["queue"]["next"] or {}).get("page", "")


def test_neighbours_browse_by_experiment_then_scan_name_across_experiments_skipping_archived(world):
    project, scans, _ = world
    scans["b2"].archived_at = utcnow()
    db.session.commit()
    order = ["a1", "a2", "b1", "c1", "c2", "c3"]  # b2 is archived
    for position, name in enumerate(order):
        near = next_scan.neighbours(scans[name])
        assert near.previous == (scans[order[position - 1]].id if position else None), name
        assert near.next == (scans[order[position + 1]].id if position < len(order) - 1 else None), name
