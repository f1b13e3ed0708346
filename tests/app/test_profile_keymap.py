"""Each reviewer chooses the review page's keys on the profile page: qcloop's own or MIQA's."""
from __future__ import annotations

import re

from app.db import User, db
from tests.factories import login


def checked(page: str) -> list[str]:
    """The values of the checked keymap choices on the profile page."""
    return re.findall(r'<input checked[^>]* name="keymap" type="radio" value="(\w+)"', page)


def test_a_reviewer_chooses_miqas_keys_and_the_scan_page_binds_them(client, factory):
    project = factory.project("neuro")
    ann = factory.member(project, "tier1", "ann")
    scan = factory.scan(project, "exp", "s0")
    assert ann.keymap == "qcloop"
    login(client, "ann")
    page = client.get("/profile").get_data(as_text=True)
    assert checked(page) == ["qcloop"] and "u usable, i usable-extra, o questionable, p unusable" in page
    assert 'data-keymap="qcloop"' in client.get(f"/scans/{scan.id}").get_data(as_text=True)

    answer = client.post("/profile/keymap", data={"keymap": "miqa"}, follow_redirects=True)
    assert answer.status_code == 200 and "The review page now uses MIQA&#39;s keys." in answer.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, ann.id).keymap == "miqa"
    assert checked(answer.get_data(as_text=True)) == ["miqa"]
    assert 'data-keymap="miqa"' in client.get(f"/scans/{scan.id}").get_data(as_text=True)


def test_an_unknown_keymap_is_refused_with_the_choices_and_nothing_changes(client, factory):
    ann = factory.user("ann")
    login(client, "ann")
    for data in ({"keymap": "vim"}, {}):
        answer = client.post("/profile/keymap", data=data)
        assert answer.status_code == 400
        assert "keymap must be one of qcloop, miqa" in answer.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, ann.id).keymap == "qcloop"
    assert client.post("/logout").status_code == 302
    anonymous = client.post("/profile/keymap", data={"keymap": "miqa"})
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    db.session.expire_all()
    assert db.session.get(User, ann.id).keymap == "qcloop"
