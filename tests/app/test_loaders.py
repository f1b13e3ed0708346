"""One loader for routes: a row by id, or NotFound naming the resource while answering only "Not found."."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import MAX_ID, ApiToken, Invitation, Membership, Project, Scan, db
from app.services import invitations, users
from app.services.errors import NotFound
from app.services.loaders import Missing, load, load_one
from tests.factories import login


def test_load_answers_the_row_or_a_named_not_found(factory):
    project = factory.project("alpha")
    other = factory.project("beta")
    scan = factory.scan(project, "exp", "s1")
    ann = factory.user("ann")
    token, _ = users.create_token(ann, "laptop")
    db.session.commit()

    assert load(Scan, scan.id) is scan
    assert load(Scan, scan.id, project_id=project.id) is scan  # a scan's project is found through its experiment
    assert load(Project, project.id, project_id=project.id) is project
    assert load(ApiToken, token.id, owner_id=ann.id) is token
    for attempt in (lambda: load(Scan, scan.id + 1000), lambda: load(Scan, MAX_ID + 1), lambda: load(Scan, 0),
                    lambda: load(Scan, scan.id, project_id=other.id),
                    lambda: load(ApiToken, token.id, owner_id=factory.user("bob").id)):
        with pytest.raises(Missing) as caught:
            attempt()
        assert isinstance(caught.value, NotFound) and caught.value.status == 404
        assert caught.value.message == "Not found."  # the answer a permission check gives: nothing leaks
    assert caught.value.resource == "apitoken" and str(caught.value) == f"apitoken {token.id} not found"


def test_pages_answer_404_for_rows_that_are_not_there_or_not_theirs(factory, client):
    """Ids the permission check cannot see (a user, an invitation of another project) go through the loader."""
    mine = factory.project("mine")
    theirs = factory.project("theirs")
    root = factory.user("root", superuser=True)
    invitation, _ = invitations.invite("guest@example.org", theirs, "tier1", root)
    db.session.commit()
    login(client, "root")

    assert client.post(f"/admin/users/{root.id + 1000}/approve").status_code == 404
    hidden = client.post(f"/admin/projects/{mine.id}/invitations/{invitation.id}/revoke")
    assert hidden.status_code == 404
    assert db.session.get(Invitation, invitation.id) is not None  # nothing revoked through the wrong project
    missing = client.post("/admin/invitations", data={"email": "new@example.org", "project_id": str(MAX_ID),
                                                       "role": "tier1"}, headers={"Accept": "application/json"})
    assert missing.status_code == 404 and missing.get_json() == {"error": "not_found", "detail": "Not found."}
    stored = select(Invitation.id).where(Invitation.email == "new@example.org")
    assert db.session.scalars(stored).all() == []  # nothing stored for a project that is not there


def test_load_one_finds_a_row_by_its_columns_or_answers_not_found(factory):
    """A membership is named by project and user, not by an id of its own."""
    project = factory.project("gamma")
    ann = factory.member(project, "tier1", "ann")
    assert load_one(Membership, project_id=project.id, user_id=ann.id).role == "tier1"
    with pytest.raises(Missing) as caught:
        load_one(Membership, project_id=project.id, user_id=factory.user("bob").id)
    assert caught.value.message == "Not found." and caught.value.resource == "membership"
