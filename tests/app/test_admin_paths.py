"""A project admin reaches the members and vocabulary pages from the project page (no superuser
needed), and an invitation made without a mail server shows its link to the inviting admin once."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from sqlalchemy import select

from app.db import Invitation, Membership, User, db
from tests.factories import PASSWORD, login

LINK = re.compile(r'<div class="flash invite-link" role="status">(http://[^<]+)</div>')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp(app):
    """A real SMTP server that accepts and drops every mail, and the app sending through it."""
    controller = Controller(Sink(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=controller.port)
    yield controller
    controller.stop()


def _outbox(app) -> list[Path]:
    return sorted(Path(app.config["INSTANCE_PATH"], "outbox").glob("*.eml"))


def test_project_admins_reach_members_and_vocabulary_from_the_project_page(client, factory):
    project = factory.project("neuro")
    factory.member(project, "admin", "ada")
    factory.member(project, "tier2", "tom")
    factory.user("root", superuser=True)

    login(client, "ada")
    page = client.get(f"/projects/{project.id}").get_data(as_text=True)
    assert f'id="members-link" href="/admin/projects/{project.id}/members"' in page
    assert f'id="vocabulary-link" href="/admin/projects/{project.id}/vocabulary"' in page
    assert 'href="/admin/"' not in page  # the site-wide admin pages stay for superusers
    members = client.get(f"/admin/projects/{project.id}/members")
    assert members.status_code == 200 and "tom" in members.get_data(as_text=True)
    vocabulary = client.get(f"/admin/projects/{project.id}/vocabulary")
    assert vocabulary.status_code == 200 and "ghosting_motion" in vocabulary.get_data(as_text=True)
    assert f'href="/projects/{project.id}" id="back-to-project"' in vocabulary.get_data(as_text=True)
    assert client.get("/admin/").status_code == 403

    # a project admin changes a role there; a tier 2 reviewer sees no links and is refused the pages
    tom = db.session.scalar(select(User).where(User.username == "tom"))
    answer = client.post(f"/admin/projects/{project.id}/members/{tom.id}", data={"role": "tier1"},
                         follow_redirects=True)
    assert "Role changed to tier1." in answer.get_data(as_text=True)
    client.post("/logout")
    login(client, "tom")
    page = client.get(f"/projects/{project.id}").get_data(as_text=True)
    assert "members-link" not in page and "vocabulary-link" not in page
    assert client.get(f"/admin/projects/{project.id}/members").status_code == 403
    assert client.get(f"/admin/projects/{project.id}/vocabulary").status_code == 403

    client.post("/logout")
    login(client, "root")
    assert 'id="members-link"' in client.get(f"/projects/{project.id}").get_data(as_text=True)


def test_an_invitation_without_a_mail_server_shows_its_link_once_and_the_link_works(app, client, factory):
    project = factory.project("neuro")
    factory.member(project, "admin", "ada")
    login(client, "ada")
    members_url = f"/admin/projects/{project.id}/members"
    assert 'id="no-mail-note"' in client.get(members_url).get_data(as_text=True)

    page = client.post(f"/admin/projects/{project.id}/invitations", data={"email": "Eve@Example.org", "role": "tier1"},
                       follow_redirects=True).get_data(as_text=True)
    assert "was NOT mailed to eve@example.org" in page
    assert "An invitation is mailed" not in page
    links = LINK.findall(page)
    assert len(links) == 1
    token = links[0].rsplit("/", 1)[-1]
    assert len(_outbox(app)) == 1 and token in _outbox(app)[0].read_text()  # the outbox copy is still written
    again = client.get(members_url).get_data(as_text=True)
    assert token not in again and "eve@example.org" in again  # shown once; the invitation is listed as pending

    # the link is the real one: it opens the invitation and creates the account with its role
    client.post("/logout")
    path = "/" + links[0].split("/", 3)[3]
    assert client.get(path).status_code == 200
    answer = client.post(path, data={"username": "eve", "password": PASSWORD, "confirm": PASSWORD})
    assert answer.status_code == 302
    eve = db.session.scalar(select(User).where(User.username == "eve"))
    assert db.session.scalar(select(Membership.role).where(Membership.user_id == eve.id)) == "tier1"

    # bad input: a clear message on the page, nothing stored, no link shown
    client.post("/logout")
    login(client, "ada")
    page = client.post(f"/admin/projects/{project.id}/invitations", data={"email": "not an email", "role": "tier1"},
                       follow_redirects=True).get_data(as_text=True)
    assert 'class="flash error"' in page and "email is not valid" in page and not LINK.findall(page)
    page = client.post(f"/admin/projects/{project.id}/invitations", data={"email": "x@example.org", "role": "boss"},
                       follow_redirects=True).get_data(as_text=True)
    assert "role must be one of" in page and not LINK.findall(page)
    assert db.session.scalar(select(Invitation.id).where(Invitation.email == "x@example.org")) is None


def test_superusers_see_the_link_too_and_a_configured_mail_server_keeps_it_out_of_the_page(app, client, factory, smtp):
    factory.user("root", superuser=True)
    login(client, "root")
    page = client.get("/admin/").get_data(as_text=True)
    assert 'id="no-mail-note"' not in page
    page = client.post("/admin/invitations", data={"email": "sam@example.org"}, follow_redirects=True)
    text = page.get_data(as_text=True)
    assert "An invitation is mailed to sam@example.org." in text and not LINK.findall(text)
    assert _outbox(app) == []

    app.config.update(SMTP_HOST="")
    text = client.post("/admin/invitations", data={"email": "kim@example.org"},
                       follow_redirects=True).get_data(as_text=True)
    assert "was NOT mailed to kim@example.org" in text and len(LINK.findall(text)) == 1


def test_the_api_answers_invite_url_only_when_the_link_was_not_mailed(app, client, factory, smtp):
    project = factory.project("neuro")
    factory.member(project, "admin", "ada")
    login(client, "ada")
    url = f"/api/v1/projects/{project.id}/invitations"

    mailed = client.post(url, json={"email": "sam@example.org", "role": "tier2"})
    assert mailed.status_code == 201
    assert mailed.get_json()["mailed"] is True and mailed.get_json()["invite_url"] is None

    app.config.update(SMTP_HOST="")
    answer = client.post(url, json={"email": "kim@example.org", "role": "tier2"})
    assert answer.status_code == 201
    body = answer.get_json()
    assert body["mailed"] is False and body["email"] == "kim@example.org" and body["role"] == "tier2"
    token = body["invite_url"].rsplit("/", 1)[-1]
    offer = client.get(f"/api/v1/invitations/{token}")
    assert offer.status_code == 200 and offer.get_json()["email"] == "kim@example.org"
    listed = client.get(url).get_json()["results"]
    assert {i["email"] for i in listed} == {"sam@example.org", "kim@example.org"}
    assert all("invite_url" not in i for i in listed)  # the link is never shown again
