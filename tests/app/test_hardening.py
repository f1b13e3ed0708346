"""Hardening: security headers with a CSP that runs only qcloop's own scripts."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.db import ModelVersion, db
from tests.factories import PASSWORD, token_headers

TEMPLATES = Path(__file__).resolve().parents[2] / "app" / "templates"


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
        html = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (template, tag)
        assert not re.search(r"\son[a-z]+\s*=", html), template
        assert not re.search(r"\sstyle\s*=|<style\b", html), template


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
