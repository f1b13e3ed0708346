"""Invitation and password-reset mails go through a real SMTP server (aiosmtpd on 127.0.0.1)
and the links they carry work against a live qcloop."""
from __future__ import annotations

import re
import socket
import time
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message

from tests.factories import PASSWORD

NEW_PASSWORD = "mailed-new-secret"


class Inbox(Message):
    """Collects every delivered message."""

    def __init__(self) -> None:
        super().__init__(message_class=EmailMessage)
        self.messages: list[EmailMessage] = []

    def handle_message(self, message) -> None:
        self.messages.append(message_from_bytes(bytes(message), policy=policy.default))

    def wait_for(self, count: int, timeout: float = 10.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.messages) >= count, f"{len(self.messages)} mails received, waited for {count}"
        return self.messages[count - 1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def inbox(app, live_server):
    """A real SMTP server, and the app sending through it with links to the live server."""
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=controller.port, BASE_URL=live_server.url,
                      MAIL_FROM="qcloop@example.org")
    yield handler
    controller.stop()


def _link(message: EmailMessage) -> str:
    return re.search(r"http://\S+", message.get_body(("plain",)).get_content()).group(0)


def _token(base: str, username: str, password: str) -> requests.Response:
    return requests.post(base + "/api-token-auth/", data={"username": username, "password": password}, timeout=30)


def test_invitation_mail_link_creates_the_account(factory, live_server, inbox):
    admin = factory.user("lead")
    project = factory.project("smtp-team", creator=admin)
    base = live_server.url
    headers = {"Authorization": "Token " + _token(base, "lead", PASSWORD).json()["token"]}
    sent = requests.post(f"{base}/api/v1/projects/{project.id}/invitations", headers=headers,
                         json={"email": "newcomer@example.org", "role": "tier1"}, timeout=30)
    assert sent.status_code == 201, sent.text

    mail = inbox.wait_for(1)
    assert mail["To"] == "newcomer@example.org" and mail["From"] == "qcloop@example.org"
    assert "smtp-team" in mail["Subject"]
    link = _link(mail)
    assert link.startswith(base + "/invite/")

    browser = requests.Session()
    form = browser.get(link, timeout=30)
    assert form.status_code == 200 and "newcomer@example.org" in form.text
    joined = browser.post(link, data={"username": "newcomer", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
                          allow_redirects=False, timeout=30)
    assert joined.status_code == 302
    assert browser.get(base + "/profile", timeout=30).status_code == 200  # logged in by accepting
    assert browser.get(link, timeout=30).status_code == 400  # used

    newcomer = {"Authorization": "Token " + _token(base, "newcomer", NEW_PASSWORD).json()["token"]}
    members = requests.get(f"{base}/api/v1/projects/{project.id}/members", headers=newcomer, timeout=30).json()
    assert {m["username"]: m["role"] for m in members["results"]} == {"lead": "admin", "newcomer": "tier1"}


def test_password_reset_mail_link_sets_a_new_password(factory, live_server, inbox):
    factory.user("forgetful")
    base = live_server.url
    browser = requests.Session()
    asked = browser.post(base + "/password/forgot", data={"login": "forgetful"}, allow_redirects=False, timeout=30)
    assert asked.status_code == 302

    mail = inbox.wait_for(1)
    assert mail["To"] == "forgetful@example.org" and "Reset your qcloop password" == mail["Subject"]
    link = _link(mail)
    assert link.startswith(base + "/password/reset/")
    assert browser.get(link, timeout=30).status_code == 200
    done = browser.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, allow_redirects=False,
                        timeout=30)
    assert done.status_code == 302 and done.headers["Location"].endswith("/login")

    assert _token(base, "forgetful", PASSWORD).status_code == 400
    assert _token(base, "forgetful", NEW_PASSWORD).status_code == 200
    assert browser.get(link, timeout=30).status_code == 400  # a reset link works once


def test_an_unreachable_smtp_server_is_a_clear_503(app, factory, client):
    factory.user("unlucky")
    project = factory.project("no-mail", creator=factory.user("owner"))
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=_free_port())  # nothing listens there
    headers = {"Authorization": "Token " + client.post(
        "/api-token-auth/", data={"username": "owner", "password": PASSWORD}).get_json()["token"]}
    answer = client.post(f"/api/v1/projects/{project.id}/invitations", headers=headers,
                         json={"email": "someone@example.org", "role": "tier1"})
    assert answer.status_code == 503 and "could not send" in answer.get_json()["detail"]
    listed = client.get(f"/api/v1/projects/{project.id}/invitations", headers=headers).get_json()
    assert listed["results"] == []  # the invitation is not kept when its mail could not go out
