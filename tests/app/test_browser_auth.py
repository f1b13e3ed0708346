"""A real browser (Playwright driving Debian's chromium) logs in, is refused a form post
without a CSRF token, and logs out."""
from __future__ import annotations

import pytest

from app.db import ApiToken, db

pytestmark = pytest.mark.browser

POST_FORM = """async ([url, headers]) => {
  const answer = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/x-www-form-urlencoded", ...headers}, body: "name=from-js"});
  return answer.status;
}"""


def test_browser_logs_in_is_refused_without_csrf_and_logs_out(app, factory, live_server, page):
    app.config["WTF_CSRF_ENABLED"] = True  # as in production; the other tests switch it off
    factory.user("viewer", password="browser-secret-1")
    base = live_server.url

    page.goto(base + "/profile")
    assert page.url.startswith(base + "/login")  # anonymous: sent to the log-in page
    page.fill("#username", "viewer")
    page.fill("#password", "browser-secret-1")
    page.click("#login-submit")
    page.wait_for_url(base + "/profile")
    assert page.locator("h1").inner_text() == "viewer"

    refused = page.evaluate(POST_FORM, [base + "/profile/tokens", {}])
    assert refused == 400
    assert db.session.query(ApiToken).count() == 0
    token = page.get_attribute('meta[name="csrf-token"]', "content")
    accepted = page.evaluate(POST_FORM, [base + "/profile/tokens", {"X-CSRFToken": token}])
    assert accepted == 201
    db.session.expire_all()
    assert [t.name for t in db.session.query(ApiToken)] == ["from-js"]

    page.evaluate("document.querySelector('#password-section input[name=csrf_token]').remove()")
    page.fill("#current_password", "browser-secret-1")
    page.fill("#password-section #password", "another-secret-2")
    page.fill("#confirm", "another-secret-2")
    page.click("#password-submit")
    assert "CSRF" in page.locator("main").inner_text()  # the stripped form is refused as well

    page.goto(base + "/profile")
    page.click("#logout")
    page.wait_for_url(base + "/login")
    assert "You are logged out." in page.locator("main").inner_text()
    page.goto(base + "/profile")
    assert page.url.startswith(base + "/login")
