"""Sign-up and approval, project members and roles, invitations, reset links and mail about a scan
(mail goes to instance/outbox here; tests/app/test_auth_mail.py uses a real SMTP server)."""
from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

from sqlalchemy import func, select

from app.db import AuditEvent, Invitation, Membership, User, db, utcnow
from app.services import users
from tests.factories import Factory, login, token_headers

NEW_PASSWORD = "a-long-new-secret"


def _outbox(app) -> list:
    folder = Path(app.config["INSTANCE_PATH"]) / "outbox"
    return [message_from_bytes(path.read_bytes(), policy=policy.default) for path in sorted(folder.glob("*.eml"))]


def _link(message) -> str:
    return re.search(r"http://\S+", message.get_content()).group(0)


def _path(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def _user_count() -> int:
    return db.session.scalar(select(func.count()).select_from(User))


def test_sign_up_waits_for_a_superuser(app, factory, client):
    factory.user("root", superuser=True)
    form = {"username": "newbie", "email": "newbie@example.org", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    for field, value in (("email", "not-an-address"), ("password", "short"), ("confirm", "other-secret"),
                         ("username", "bad name!")):
        bad = client.post("/signup", data={**form, field: value})
        assert bad.status_code == 400, field
    assert _user_count() == 1  # nothing half-made
    assert client.post("/signup", data=form).status_code == 302
    assert client.post("/signup", data=form).status_code == 409  # the name is taken
    notice = _outbox(app)[-1]
    assert "newbie asks for an account" in notice["Subject"] and notice["To"] == "root@example.org"

    pending = client.post("/login", data={"username": "newbie", "password": NEW_PASSWORD})
    assert pending.status_code == 400 and b"waits for a superuser" in pending.data
    assert client.post("/api-token-auth/", data={"username": "newbie", "password": NEW_PASSWORD}).status_code == 400

    newbie = users.find_user("newbie")
    login(client, "root")
    assert b"newbie" in client.get("/admin/").data
    assert client.post(f"/admin/users/{newbie.id}/approve").status_code == 302
    assert "approved" in _outbox(app)[-1]["Subject"]
    client.post("/logout")
    login(client, "newbie", NEW_PASSWORD)

    client.post("/logout")
    login(client, "root")
    client.post("/signup")  # a logged-in user is sent home, nothing happens
    spam = users.sign_up("spammer", "spam@example.org", NEW_PASSWORD)
    db.session.commit()
    assert client.post(f"/admin/users/{spam.id}/reject").status_code == 302
    assert users.find_user("spammer") is None
    client.post(f"/admin/users/{newbie.id}/reject")  # approved accounts are disabled, not rejected
    assert users.find_user("newbie") is not None
    assert client.post(f"/admin/users/{newbie.id}/enabled", data={"enabled": "0"}).status_code == 302
    assert client.post("/api-token-auth/", data={"username": "newbie", "password": NEW_PASSWORD}).status_code == 400
    actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"user.signup", "user.approve", "user.reject", "user.disable"} <= actions


def test_project_admins_manage_members_and_roles(factory, client):
    admin = factory.user("boss")
    project = factory.project("team", creator=admin)
    reviewer = factory.member(project, "tier1", "rev")
    factory.user("loner")
    boss, rev = token_headers(client, "boss"), token_headers(client, "rev")
    base = f"/api/v1/projects/{project.id}/members"

    listed = client.get(base, headers=rev).get_json()
    assert listed["count"] == 2 and {m["username"]: m["role"] for m in listed["results"]} == {"boss": "admin",
                                                                                              "rev": "tier1"}
    added = client.post(base, headers=boss, json={"user": "loner@example.org", "role": "collaborator"})
    assert added.status_code == 201 and added.get_json()["role"] == "collaborator"
    assert client.put(f"{base}/{reviewer.id}", headers=boss, json={"role": "tier2"}).get_json()["role"] == "tier2"
    assert client.put(f"{base}/{reviewer.id}", headers=rev, json={"role": "admin"}).status_code == 403

    cases = [
        ("post", base, {"user": "ghost", "role": "tier1"}, 404),
        ("post", base, {"user": "loner", "role": "owner"}, 400),
        ("post", base, {"role": "tier1"}, 400),
        ("put", f"{base}/{reviewer.id}", {"role": 3}, 400),
        ("put", f"{base}/{reviewer.id}", {}, 400),
        ("put", f"{base}/999999", {"role": "tier1"}, 404),
        ("put", f"{base}/{admin.id}", {"role": "tier2"}, 409),  # the last admin stays
        ("delete", f"{base}/{admin.id}", None, 409),
    ]
    for method, url, body, status in cases:
        answer = getattr(client, method)(url, headers=boss, json=body)
        assert answer.status_code == status, (method, url, body, answer.get_json())
        assert answer.is_json and "detail" in answer.get_json()
    assert client.delete(f"{base}/{reviewer.id}", headers=boss).status_code == 204
    assert client.get(base, headers=rev).status_code == 404  # no longer a member: the project is gone for them

    login(client, "boss")
    page = client.get(f"/admin/projects/{project.id}/members")
    assert page.status_code == 200 and b"loner" in page.data
    loner = users.find_user("loner")
    assert client.post(f"/admin/projects/{project.id}/members/{loner.id}", data={"role": "tier1"}).status_code == 302
    assert client.post(f"/admin/projects/{project.id}/members", data={"user": "rev", "role": "tier2"}).status_code == 302
    roles = dict(db.session.execute(select(User.username, Membership.role).join(Membership)).all())
    assert roles == {"boss": "admin", "loner": "tier1", "rev": "tier2"}
    changes = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "role.change")).all()
    assert any(e.details == {"before": "tier2", "after": None} for e in changes)
    assert all(e.actor_id == admin.id for e in changes if e.details.get("before") is not None)


def test_invitations_create_account_and_membership_or_nothing(app, factory, client):
    admin = factory.user("host")
    project = factory.project("guests", creator=admin)
    factory.member(project, "tier2", "senior")
    host = token_headers(client, "host")
    base = f"/api/v1/projects/{project.id}/invitations"
    for body, status in (({"email": "nope", "role": "tier1"}, 400), ({"email": "x@example.org"}, 400),
                         ({"email": "senior@example.org", "role": "tier1"}, 409),
                         ({"email": "x@example.org", "role": "boss"}, 400)):
        assert client.post(base, headers=host, json=body).status_code == status, body
    assert client.post(base, headers=token_headers(client, "senior"),
                       json={"email": "x@example.org", "role": "tier1"}).status_code == 403

    sent = client.post(base, headers=host, json={"email": "Guest@Example.org", "role": "tier2"})
    assert sent.status_code == 201 and sent.get_json()["email"] == "guest@example.org"
    mail = _outbox(app)[-1]
    assert mail["To"] == "guest@example.org" and mail["Reply-To"] == "host@example.org"
    token = _link(mail).rsplit("/", 1)[1]
    info = client.get(f"/api/v1/invitations/{token}").get_json()
    assert info["email"] == "guest@example.org" and info["role"] == "tier2"

    accept = f"/api/v1/invitations/{token}/accept"
    users_before = _user_count()
    for body in ({"username": "guest"}, {"username": "guest", "password": "short"},
                 {"username": "bad name", "password": NEW_PASSWORD}, {"username": "host", "password": NEW_PASSWORD},
                 {"username": ["guest"], "password": NEW_PASSWORD}):
        answer = client.post(accept, json=body)
        assert answer.status_code in (400, 409) and answer.is_json, body
        assert _user_count() == users_before, body  # no partial user
    assert client.get(_path(_link(mail))).status_code == 200  # the page still offers the form
    bad_form = client.post(_path(_link(mail)), data={"username": "guest", "password": "short", "confirm": "short"})
    assert bad_form.status_code == 400 and _user_count() == users_before

    done = client.post(accept, json={"username": "guest", "password": NEW_PASSWORD, "first_name": "Gus"})
    assert done.status_code == 201 and done.get_json()["username"] == "guest"
    guest = token_headers(client, "guest", NEW_PASSWORD)
    members = client.get(f"/api/v1/projects/{project.id}/members", headers=guest).get_json()["results"]
    assert {m["username"]: m["role"] for m in members}["guest"] == "tier2"
    used = client.post(accept, json={"username": "guest2", "password": NEW_PASSWORD})
    assert used.status_code == 400 and used.get_json()["reason"] == "used"
    assert client.get(f"/api/v1/invitations/{'z' * 43}").status_code == 404

    client.post(base, headers=host, json={"email": "late@example.org", "role": "tier1"})
    late = _link(_outbox(app)[-1]).rsplit("/", 1)[1]
    db.session.scalar(select(Invitation).where(Invitation.email == "late@example.org")).expires_at = \
        utcnow() - timedelta(minutes=1)
    db.session.commit()
    expired = client.post(f"/api/v1/invitations/{late}/accept", json={"username": "late", "password": NEW_PASSWORD})
    assert expired.status_code == 400 and expired.get_json()["reason"] == "expired"
    assert "expired on" in expired.get_json()["detail"]
    assert client.get(f"/invite/{late}").status_code == 400
    listed = client.get(base, headers=host).get_json()["results"]
    assert [i["expired"] for i in listed] == [True]
    assert client.delete(f"{base}/{listed[0]['id']}", headers=host).status_code == 204
    assert client.get(f"/invite/{late}").status_code == 404


def test_password_reset_links_expire_and_work_once(app, factory, client, monkeypatch):
    factory.user("kim")
    assert client.post("/password/forgot", data={"login": "nobody"}).status_code == 302  # says nothing
    assert _outbox(app) == []
    assert client.post("/password/forgot", data={"login": "kim@example.org"}).status_code == 302
    link = _path(_link(_outbox(app)[-1]))
    assert client.get(link).status_code == 200
    assert client.post(link, data={"password": "short", "confirm": "short"}).status_code == 400
    assert client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}).status_code == 302
    assert client.get(link).status_code == 400  # used: the password it was made for has changed
    assert client.get(link + "x").status_code == 400
    token_headers(client, "kim", NEW_PASSWORD)

    client.post("/password/forgot", data={"login": "kim"})
    later = _path(_link(_outbox(app)[-1]))
    monkeypatch.setattr(users, "RESET_MAX_AGE", timedelta(seconds=-1))
    answer = client.get(later, headers={"Accept": "application/json"})
    assert answer.status_code == 400 and answer.get_json()["reason"] == "expired"


def test_members_mail_each_other_about_a_scan(app, factory, client):
    project = factory.project("mailing")
    factory.member(project, "tier1", "ann")
    bea = factory.member(project, "collaborator", "bea")
    factory.member(factory.project("other"), "admin", "carl")
    scan = factory.scan(project, "exp", "subject-7")
    ann = token_headers(client, "ann")
    url = f"/api/v1/scans/{scan.id}/email"

    draft = client.get(url, headers=ann).get_json()
    assert draft["subject"] == "[qcloop] mailing / exp / subject-7"
    assert draft["link"].startswith(app.config["BASE_URL"]) and draft["link"] in draft["body"]
    assert [r["username"] for r in draft["recipients"]] == ["bea"]

    for body, status in (({"to": ["carl"], "message": "hi"}, 400), ({"to": [], "message": "hi"}, 400),
                         ({"message": "hi"}, 400), ({"to": [{"x": 1}]}, 400), ({"to": ["bea"], "message": 5}, 400),
                         ({"to": ["bea"], "subject": "a\nb"}, 400)):
        answer = client.post(url, headers=ann, json=body)
        assert answer.status_code == status and answer.is_json, body
    assert client.post(url, headers=token_headers(client, "carl"), json={"to": ["bea"]}).status_code == 404

    sent = client.post(url, headers=ann, json={"to": [bea.id, "bea"], "message": "Ghosting in frame 2?"})
    assert sent.status_code == 200 and sent.get_json()["sent_to"] == ["bea"]
    mail = _outbox(app)[-1]
    assert mail["Subject"] == draft["subject"] and mail["To"] == "bea@example.org"
    assert mail["Reply-To"] == "ann@example.org"
    assert "Ghosting in frame 2?" in mail.get_content() and draft["link"] in mail.get_content()
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "scan.email")).details == {"to": ["bea"]}
    assert client.post("/api/v1/scans/999999/email", headers=ann, json={"to": ["bea"]}).status_code == 404


def test_password_reset_requests_are_limited_per_account_and_address(make_app):
    """Each request mails a link: past the budget a 429 with Retry-After, and no more mail."""
    app = make_app(RATELIMIT_ENABLED=True, RESET_LIMIT_PER_ACCOUNT="2 per hour", RESET_LIMIT_PER_ADDRESS="3 per hour")
    with app.app_context():
        Factory(app).user("kim")
        client = app.test_client()
        assert [client.post("/password/forgot", data={"login": "kim"}).status_code for _ in range(2)] == [302, 302]
        refused = client.post("/password/forgot", data={"login": "kim"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert b"Too many password-reset requests for this account" in refused.data
        assert len(_outbox(app)) == 2
        assert client.post("/password/forgot", data={"login": "someone-else"}).status_code == 302
        other = client.post("/password/forgot", data={"login": "a-third"})
        assert other.status_code == 429 and b"for your address" in other.data
