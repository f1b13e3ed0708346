"""Decisions are append-only: the services layer cannot update or delete them."""
import pytest

from app.db import AppendOnlyError, Decision, db
from app.services import decisions


def _decision(factory):
    project = factory.project()
    reviewer = factory.member(project, "tier1")
    scan = factory.scan(project)
    decision = decisions.record_decision(scan, reviewer, "UN", role="tier1", note="ghosts", present=["ghosting_motion"],
                                         absent=["lesions"], location={"i": 3, "j": 4, "k": 5})
    db.session.commit()
    return decision


def test_decision_stores_every_artifact_state(factory):
    decision = _decision(factory)
    states = {a.entry.key: a.state for a in decision.artifacts}
    assert len(states) == 10
    assert states["ghosting_motion"] == "present" and states["lesions"] == "absent"
    assert states["inhomogeneity"] == "undefined"
    assert (decision.location_i, decision.location_j, decision.location_k) == (3, 4, 5)


def test_decision_cannot_be_updated(factory):
    decision = _decision(factory)
    decision.note = "rewritten"
    with pytest.raises(AppendOnlyError):
        db.session.commit()
    db.session.rollback()
    assert db.session.get(Decision, decision.id).note == "ghosts"


def test_decision_and_artifacts_cannot_be_deleted(factory):
    decision = _decision(factory)
    db.session.delete(decision)
    with pytest.raises(AppendOnlyError):
        db.session.flush()
    db.session.rollback()
    decision = db.session.get(Decision, decision.id)
    decision.artifacts[0].state = "present" if decision.artifacts[0].state != "present" else "absent"
    with pytest.raises(AppendOnlyError):
        db.session.flush()
    db.session.rollback()


@pytest.mark.parametrize("kwargs, field", [
    ({"option_key": "NOPE"}, "decision"),
    ({"note": "x" * 3001}, "note"),
    ({"present": ["no_such_artifact"]}, "artifacts.present"),
    ({"location": {"i": 99, "j": 0, "k": 0}}, "location"),
    ({"option_key": "UN", "note": ""}, "note"),
])
def test_bad_decisions_are_refused(factory, kwargs, field):
    from app.services.errors import InvalidInput

    project = factory.project()
    scan = factory.scan(project)
    arguments = {"option_key": "U", **kwargs}
    with pytest.raises(InvalidInput) as caught:
        decisions.record_decision(scan, None, arguments.pop("option_key"), role="tier1", **arguments)
    assert caught.value.details["field"] == field
    db.session.rollback()
    assert db.session.query(Decision).count() == 0
