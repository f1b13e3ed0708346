"""Outgoing mail: the configured SMTP server, or .eml files in instance/outbox when none is set.

The outbox keeps a one-machine qcloop usable (invite and reset links can be read from the
files) without an SMTP server; any real deployment sets QCLOOP_SMTP_HOST.
"""
from __future__ import annotations

import logging
import smtplib
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from flask import current_app

from app.services.errors import Unavailable

log = logging.getLogger(__name__)

SMTP_TIMEOUT_S = 15


def outbox_dir() -> Path:
    return Path(current_app.config["INSTANCE_PATH"]) / "outbox"


def build(to: list[str], subject: str, body: str, reply_to: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="qcloop")
    if reply_to:
        message["Reply-To"] = reply_to
    message.set_content(body)
    return message


def configured() -> bool:
    """Whether mail leaves this machine; without an SMTP host it only lands in the outbox folder."""
    return bool(current_app.config.get("SMTP_HOST"))


def send(to: str | list[str], subject: str, body: str, reply_to: str | None = None) -> EmailMessage:
    """Send a plain-text mail; Unavailable (503) when the SMTP server refuses or cannot be reached."""
    recipients = [to] if isinstance(to, str) else list(to)
    message = build(recipients, subject, body, reply_to)
    config = current_app.config
    host = config.get("SMTP_HOST") or ""
    if not configured():
        folder = outbox_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(bytes(message))
        log.info("no SMTP host configured: mail %r to %s written to %s", subject, ", ".join(recipients), path)
        return message
    try:
        with smtplib.SMTP(host, int(config.get("SMTP_PORT") or 25), timeout=SMTP_TIMEOUT_S) as smtp:
            if config.get("SMTP_STARTTLS"):
                smtp.starttls()
            if config.get("SMTP_USER"):
                smtp.login(config["SMTP_USER"], config.get("SMTP_PASSWORD") or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as err:
        log.error("sending mail %r via %s failed: %s", subject, host, err)
        raise Unavailable(f"the mail server {host} could not send the message: {err}") from err
    log.info("mail %r sent to %s via %s", subject, ", ".join(recipients), host)
    return message
