"""Hardening: security headers with a CSP that runs only qcloop's own scripts, passwords that end
old sessions and tokens, log-in limits shared by server processes, expiring /api-token-auth/
tokens and a /healthz that tells anonymous callers nothing but "ok"."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from app.db import ApiToken, ModelVersion, db, utcnow
from app.services import users
from tests.factories import PASSWORD, login, token_headers

TEMPLATES = Path(__file__).resolve().parents[2] / "app" / "templates"
NEW_PASSWORD = "a-brand-new-password"


def _csp(response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy", "")
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def test_pages_and_api_answers_carry_the_security_headers(factory, client):
    factory.user("ada")
    headers = token_headers(client, "ada")
    answers = [client.get("/login"), client.get("/api/v1/users/me", headers=headers),
               client.get("/api/v1/users/me"), client.get("/healthz"), client.get("/no-such-page")]
    for answer in answers:
        csp = _csp(answer)
        assert set(csp["script-src"]) <= {"'self'", "'wasm-unsafe-eval'"}, csp  # no eval of JavaScript
        assert "'unsafe-inline'" not in answer.headers["Content-Security-Policy"]
        assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"


def test_templates_hold_no_inline_scripts_styles_or_event_handlers():
    for template in TEMPLATES.rglob("*.html"):
        html = template.read_text(encoding="utf-8")
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (template, tag)
        assert not re.search(r"\son[a-z]+\s*=", html), template
        assert not re.search(r"\sstyle\s*=|<style\b", html), template


def test_password_reset_ends_every_session_and_token(factory, app):
    user = factory.user("bea")
    browser = login(app.test_client(), "bea")
    scripts = app.test_client()
    headers = token_headers(scripts, "bea")
    assert browser.get("/profile").status_code == 200
    assert scripts.get("/api/v1/users/me", headers=headers).status_code == 200

    link = users.password_reset_token(user)
    stranger = app.test_client()
    answer = stranger.post(f"/password/reset/{link}", data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert answer.status_code == 302

    assert browser.get("/profile").status_code in (302, 401)  # logged out
    assert scripts.get("/api/v1/users/me", headers=headers).status_code == 401
    assert db.session.scalars(select(ApiToken.revoked_at).where(ApiToken.user_id == user.id)).all() != [None]
    assert login(app.test_client(), "bea", NEW_PASSWORD).get("/profile").status_code == 200


def test_password_change_ends_the_other_sessions_and_tokens_but_keeps_this_one(factory, app):
    factory.user("cal")
    here, elsewhere = login(app.test_client(), "cal"), login(app.test_client(), "cal")
    headers = token_headers(app.test_client(), "cal")
    answer = here.post("/profile/password", data={"current_password": PASSWORD, "password": NEW_PASSWORD,
                                                  "confirm": NEW_PASSWORD})
    assert answer.status_code == 302
    assert here.get("/profile").status_code == 200
    assert elsewhere.get("/profile").status_code in (302, 401)
    assert app.test_client().get("/api/v1/users/me", headers=headers).status_code == 401


def test_a_remember_me_cookie_made_with_the_old_password_stops_working(factory, app):
    factory.user("dee")
    client = app.test_client()
    assert client.post("/login", data={"username": "dee", "password": PASSWORD, "remember": "y"}).status_code == 302
    remember = client.get_cookie("remember_token")
    assert remember is not None
    users.set_password(users.find_user("dee"), NEW_PASSWORD)
    db.session.commit()
    fresh = app.test_client()  # the session is gone, only the remember-me cookie is left
    fresh.set_cookie("remember_token", remember.value)
    assert fresh.get("/profile").status_code in (302, 401)


def test_token_auth_tokens_expire_after_the_configured_days(make_app):
    for days, lifetime in ((7, timedelta(days=7)), (0, None)):
        app = make_app(API_TOKEN_AUTH_DAYS=days)
        with app.app_context():
            from tests.factories import Factory

            Factory(app).user(f"eve{days}")
            client = app.test_client()
            token = client.post("/api-token-auth/", data={"username": f"eve{days}", "password": PASSWORD})
            assert token.status_code == 200 and list(token.get_json()) == ["token"]
            stored = db.session.scalar(select(ApiToken).where(ApiToken.digest == users.token_digest(
                token.get_json()["token"])))
            if lifetime is None:
                assert stored.expires_at is None
            else:
                assert abs(stored.expires_at - (utcnow() + lifetime)) < timedelta(minutes=1)
                stored.expires_at = utcnow() - timedelta(seconds=1)
                db.session.commit()
                answer = client.get("/api/v1/users/me", headers={"Authorization": "Token " + token.get_json()["token"]})
                assert answer.status_code == 401
            db.session.rollback()


def test_healthz_tells_anonymous_callers_only_whether_it_is_ok(factory, client):
    factory.user("root", superuser=True)
    factory.user("rev")
    assert client.get("/healthz").get_json() == {"ok": True}
    assert client.get("/healthz", headers=token_headers(client, "rev")).get_json() == {"ok": True}
    report = client.get("/healthz", headers=token_headers(client, "root")).get_json()
    assert {"database", "storage", "queue", "mlflow"} <= set(report) and report["ok"] is True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVER = """
import json, sys
from werkzeug.serving import run_simple
from app import create_app
settings, port = json.loads(sys.argv[1]), int(sys.argv[2])
run_simple("127.0.0.1", port, create_app(settings), threaded=True)
"""


def test_the_log_in_limit_holds_across_two_server_processes(app, factory, tmp_path):
    factory.user("fay")
    settings = {key: app.config[key] for key in (
        "TESTING", "SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "DATA_ROOT", "CACHE_DIR", "MLFLOW_TRACKING_URI",
        "MLFLOW_ARTIFACT_ROOT", "QUEUE_IMMEDIATE")}
    settings.update(RATELIMIT_ENABLED=True, LOGIN_LIMIT_PER_ACCOUNT="5 per 15 minutes", LOG_LEVEL="WARNING")
    servers, urls = [], []
    try:
        for number in range(2):
            port = _free_port()
            instance = tmp_path / f"server{number}"
            instance.mkdir()
            servers.append(subprocess.Popen(
                [sys.executable, "-c", SERVER, json.dumps({**settings, "INSTANCE_PATH": str(instance),
                                                           "QUEUE_URL": f"sqlite:///{instance / 'q.db'}"}),
                 str(port)], cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE))
            urls.append(f"http://127.0.0.1:{port}")
        for url, server in zip(urls, servers):
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                try:
                    requests.get(url + "/login", timeout=2)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
        answers = [requests.post(urls[attempt % 2] + "/api-token-auth/",
                                 data={"username": "fay", "password": "wrong"}, timeout=30).status_code
                   for attempt in range(10)]
        assert answers == [400] * 5 + [429] * 5
        right = requests.post(urls[1] + "/api-token-auth/", data={"username": "fay", "password": PASSWORD}, timeout=30)
        assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


@pytest.mark.browser
def test_pages_run_their_scripts_under_the_csp(app, factory, live_server, page):
    """Review, training, models, import and API docs pages: no CSP violation in the console, and a
    confirmation the user declines still stops the form."""
    admin = factory.user("gil", superuser=True)
    project = factory.project("hard", creator=admin)
    scan = factory.scan(project, "exp", "s1", shape=(16, 16, 16))
    db.session.add_all([ModelVersion(project_id=project.id, registry_name=project.model_name, version=str(v),
                                     alias="champion" if v == 1 else None,
                                     output_map=[{"kind": "usable", "key": "usable", "entry_id": None}])
                        for v in (1, 2)])
    db.session.commit()
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    page.on("pageerror", lambda error: messages.append(str(error)))
    base = live_server.url
    page.goto(base + "/login")
    page.fill("#username", "gil")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(base + "/")
    page.wait_for_selector("svg.timeline text")  # timeline.js ran
    assert page.eval_on_selector(".progress .bar.complete", "bar => bar.style.width") == "0%"
    page.goto(f"{base}/scans/{scan.id}")
    page.wait_for_function("() => document.querySelector('#viewer').dataset.loaded === 'full'", timeout=30000)
    for path in (f"/projects/{project.id}/training", f"/admin/projects/{project.id}/import", "/api/v1/docs"):
        page.goto(base + path)
    page.wait_for_selector(".swagger-ui .info")
    page.goto(f"{base}/projects/{project.id}/models")
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("tr[data-version='2'] button")
    page.wait_for_timeout(300)
    assert asked and "Make version 2 the champion?" in asked[0]
    assert page.url == f"{base}/projects/{project.id}/models"
    violations = [text for text in messages if "Content Security Policy" in text or "Refused to" in text]
    assert not violations, violations
