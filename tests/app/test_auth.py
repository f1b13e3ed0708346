"""Log-in, log-out, password change, MIQA-compatible tokens, failed-log-in limits and audit."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.db import ApiToken, AuditEvent, db, utcnow
from app.services import users
from tests.factories import PASSWORD, login, token_headers


def _actions() -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_token_endpoint_answers_like_miqa(factory, client):
    factory.user("ada")
    by_form = client.post("/api-token-auth/", data={"username": "ada", "password": PASSWORD})
    by_json = client.post("/api-token-auth/", json={"username": "ada", "password": PASSWORD})
    for answer in (by_form, by_json):
        assert answer.status_code == 200 and list(answer.get_json()) == ["token"]
        assert len(answer.get_json()["token"]) == 40
    headers = {"Authorization": "Token " + by_json.get_json()["token"]}
    assert client.get("/api/v1/users/me", headers=headers).get_json()["username"] == "ada"
    page = client.get("/api/v1/users?limit=1&offset=0", headers=headers).get_json()
    assert set(page) == {"count", "next", "previous", "results"} and page["results"][0]["username"] == "ada"
    stored = db.session.scalars(select(ApiToken.digest)).all()
    assert by_form.get_json()["token"] not in stored and len(stored) == 2  # only SHA-256 digests are kept

    wrong = client.post("/api-token-auth/", data={"username": "ada", "password": "not-it"})
    assert wrong.status_code == 400
    assert wrong.get_json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
    unknown = client.post("/api-token-auth/", json={"username": "nobody", "password": "whatever"})
    assert unknown.status_code == 400 and "non_field_errors" in unknown.get_json()
    missing = client.post("/api-token-auth/", data={})
    assert missing.status_code == 400
    assert missing.get_json() == {"username": ["This field is required."], "password": ["This field is required."]}
    typed = client.post("/api-token-auth/", json={"username": 12, "password": ["x"]})
    assert typed.status_code == 400 and set(typed.get_json()) == {"username", "password"}
    not_json = client.post("/api-token-auth/", data="{", content_type="application/json")
    assert not_json.status_code == 400
    assert _actions().count("login") == 2 and _actions().count("login.failed") == 2


def test_bad_revoked_and_expired_tokens_are_401_json(factory, client):
    user = factory.user("bob")
    for header in ("Token 0123", "Token " + "0" * 40, "Token "):
        answer = client.get("/api/v1/users/me", headers={"Authorization": header})
        assert answer.status_code == 401 and answer.get_json()["error"] == "unauthorized"
    assert client.get("/api/v1/users/me").status_code == 401

    headers = token_headers(client, "bob")
    assert client.post("/api/v1/logout", headers=headers).status_code == 200
    revoked = client.get("/api/v1/users/me", headers=headers)
    assert revoked.status_code == 401 and revoked.get_json()["detail"] == "Invalid token."

    _, raw = users.issue_token(user, lifetime=timedelta(days=1))
    token = db.session.scalar(select(ApiToken).where(ApiToken.digest == users.token_digest(raw)))
    token.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    expired = client.get("/api/v1/users/me", headers={"Authorization": "Token " + raw})
    assert expired.status_code == 401 and expired.get_json()["detail"] == "Token has expired."
    assert "token.revoke" in _actions()


def test_tokens_are_listed_created_and_revoked_through_the_api(factory, client):
    factory.user("cy")
    factory.user("dee")
    headers = token_headers(client, "cy")
    created = client.post("/api/v1/tokens", headers=headers, json={"name": "nightly", "expires_in_days": 30})
    assert created.status_code == 201
    body = created.get_json()
    assert body["state"] == "active" and body["expires"] and len(body["token"]) == 40
    listed = client.get("/api/v1/tokens", headers=headers).get_json()
    assert listed["count"] == 2 and "token" not in listed["results"][0]
    assert {t["name"] for t in listed["results"]} == {"nightly", "api-token-auth"}

    for bad in ({"expires_in_days": "soon"}, {"expires_in_days": 0}, {"expires_in_days": 99999}, {"name": 5},
                {"name": "x" * 101}):
        answer = client.post("/api/v1/tokens", headers=headers, json=bad)
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid", bad

    foreign = client.delete(f"/api/v1/tokens/{body['id']}", headers=token_headers(client, "dee"))
    assert foreign.status_code == 404
    assert client.delete(f"/api/v1/tokens/{body['id']}", headers=headers).status_code == 204
    assert client.get("/api/v1/users/me", headers={"Authorization": "Token " + body["token"]}).status_code == 401
    states = {t["name"]: t["state"] for t in client.get("/api/v1/tokens", headers=headers).get_json()["results"]}
    assert states == {"nightly": "revoked", "api-token-auth": "active"}
    assert _actions().count("token.create") == 3 and _actions().count("token.revoke") == 1


def test_profile_page_creates_shows_once_and_revokes_tokens(factory, client):
    factory.user("eve")
    login(client, "eve")
    page = client.post("/profile/tokens", data={"name": "laptop", "expires_in_days": "7"})
    assert page.status_code == 201
    html = page.get_data(as_text=True)
    raw = html.split('id="new-token">')[1].split("<")[0]
    assert len(raw) == 40 and "laptop" in html
    assert client.get("/api/v1/users/me", headers={"Authorization": "Token " + raw}).status_code == 200
    assert raw not in client.get("/profile").get_data(as_text=True)  # shown once only

    bad = client.post("/profile/tokens", data={"name": "x", "expires_in_days": "-3"})
    assert bad.status_code == 400
    token_id = db.session.scalar(select(ApiToken.id).where(ApiToken.name == "laptop"))
    revoked = client.post(f"/profile/tokens/{token_id}/revoke")
    assert revoked.status_code == 302
    assert client.get("/api/v1/users/me", headers={"Authorization": "Token " + raw}).status_code == 401
    assert "revoked" in client.get("/profile").get_data(as_text=True)


def test_login_logout_and_password_change(factory, client):
    factory.user("fay")
    assert client.get("/profile").status_code == 302  # pages send anonymous callers to /login
    refused = client.post("/login", data={"username": "fay", "password": "wrong-password"})
    assert refused.status_code == 400 and b"Unable to log in" in refused.data
    assert client.post("/login", data={"username": "fay"}).status_code == 400
    login(client, "fay")
    assert client.get("/profile").status_code == 200

    wrong = client.post("/profile/password", data={"current_password": "nope", "password": "brand-new-secret",
                                                   "confirm": "brand-new-secret"})
    assert wrong.status_code == 400 and b"current password is not correct" in wrong.data
    mismatch = client.post("/profile/password", data={"current_password": PASSWORD, "password": "brand-new-secret",
                                                      "confirm": "different-secret"})
    assert mismatch.status_code == 400
    short = client.post("/profile/password", data={"current_password": PASSWORD, "password": "short",
                                                   "confirm": "short"})
    assert short.status_code == 400
    changed = client.post("/profile/password", data={"current_password": PASSWORD, "password": "brand-new-secret",
                                                     "confirm": "brand-new-secret"})
    assert changed.status_code == 302

    assert client.post("/logout").status_code == 302
    assert client.get("/profile").status_code == 302
    assert client.post("/api-token-auth/", data={"username": "fay", "password": PASSWORD}).status_code == 400
    login(client, "fay", "brand-new-secret")
    assert {"login", "login.failed", "password.change"} <= set(_actions())


def test_login_by_email_and_next_stays_on_site(factory, client):
    factory.user("gus", email="Gus@Example.org")
    answer = client.post("/login?next=//evil.example/x", data={"username": "gus@example.org", "password": PASSWORD})
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    client.post("/logout")
    answer = client.post("/login?next=/profile", data={"username": "GUS", "password": PASSWORD})
    assert answer.headers["Location"] == "/profile"


def test_failed_logins_are_limited_per_account_and_per_address(make_app):
    app = make_app(RATELIMIT_ENABLED=True, LOGIN_LIMIT_PER_ACCOUNT="3 per 15 minutes",
                   LOGIN_LIMIT_PER_ADDRESS="5 per 15 minutes")
    with app.app_context():
        from tests.factories import Factory

        factory = Factory(app)
        factory.user("hal")
        factory.user("ivy")
        client = app.test_client()
        for _ in range(6):  # successes are never counted
            assert client.post("/api-token-auth/", data={"username": "hal", "password": PASSWORD}).status_code == 200

        for _ in range(3):
            assert client.post("/api-token-auth/", data={"username": "hal", "password": "bad"}).status_code == 400
        locked = client.post("/api-token-auth/", data={"username": "hal", "password": PASSWORD})
        assert locked.status_code == 429
        retry_after = int(locked.headers["Retry-After"])
        assert 0 < retry_after <= 15 * 60
        assert "Try again in 15 minutes" in locked.get_json()["detail"]
        assert locked.get_json()["retry_after"] == retry_after
        by_email = client.post("/api-token-auth/", data={"username": "hal@example.org", "password": PASSWORD})
        assert by_email.status_code == 429  # the same account, named by its address
        page = client.post("/login", data={"username": "hal", "password": PASSWORD})
        assert page.status_code == 429 and "Retry-After" in page.headers
        assert b"Too many failed log-ins for this account" in page.data

        # Another account from the same address still works until the address's budget is spent.
        assert client.post("/api-token-auth/", data={"username": "ivy", "password": PASSWORD}).status_code == 200
        for name in ("x1", "x2"):
            assert client.post("/login", data={"username": name, "password": "bad"}).status_code == 400
        by_address = client.post("/api-token-auth/", data={"username": "ivy", "password": PASSWORD})
        assert by_address.status_code == 429 and "your address" in by_address.get_json()["detail"]

        elsewhere = app.test_client()
        answer = elsewhere.post("/api-token-auth/", data={"username": "ivy", "password": PASSWORD},
                                environ_base={"REMOTE_ADDR": "10.1.2.3"})
        assert answer.status_code == 200
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "login.throttled")) is not None
        db.session.rollback()


def test_audit_events_are_visible_to_superusers_only(factory, client):
    factory.user("root", superuser=True)
    project = factory.project("audited")
    member = factory.member(project, "tier1", "jo")
    client.post("/api-token-auth/", data={"username": "jo", "password": "wrong-one"})
    jo = token_headers(client, "jo")
    root = token_headers(client, "root")
    assert client.get("/api/v1/audit-events", headers=jo).status_code == 403
    assert client.put(f"/api/v1/projects/{project.id}/members/{member.id}", headers=root,
                      json={"role": "tier2"}).status_code == 200
    events = client.get("/api/v1/audit-events?limit=100", headers=root).get_json()
    actions = {event["action"] for event in events["results"]}
    assert {"login", "login.failed", "role.change", "token.create"} <= actions
    change = next(e for e in events["results"] if e["action"] == "role.change" and e["details"]["after"] == "tier2")
    assert change["details"]["before"] == "tier1" and change["project"] == project.id
    tokens = client.get("/api/v1/audit-events?action=token.", headers=root).get_json()
    assert tokens["count"] == 2 and {e["action"] for e in tokens["results"]} == {"token.create"}
    assert client.get("/api/v1/audit-events?limit=0", headers=root).status_code == 400

    login(client, "root")
    page = client.get("/admin/audit?action=role.change")
    assert page.status_code == 200 and b"role.change" in page.data and b"tier2" in page.data
    assert client.get("/admin/audit?offset=x").status_code == 400


def test_a_token_header_decides_alone_beside_a_session_cookie(factory, client):
    factory.user("lee")
    factory.user("max")
    client.get("/login")  # a browser session holding only a CSRF token
    max_headers = token_headers(client, "max")
    assert client.get("/api/v1/users/me", headers=max_headers).get_json()["username"] == "max"
    login(client, "lee")
    assert client.get("/api/v1/users/me").get_json()["username"] == "lee"
    assert client.get("/api/v1/users/me", headers=max_headers).get_json()["username"] == "max"
    client.post("/api/v1/logout", headers=max_headers)
    assert client.get("/api/v1/users/me", headers=max_headers).status_code == 401  # never falls back to the cookie
