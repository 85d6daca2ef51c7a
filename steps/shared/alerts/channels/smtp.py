"""The `smtp` channel: the report as one email through an SMTP server."""

from __future__ import annotations

import os
from typing import Any

from steps.shared.alerts.channels.mail import email_message
from steps.shared.io import secrets


def send(report: dict[str, Any], payload: dict[str, Any]) -> str:
    import smtplib

    message = email_message(report, payload)
    host = os.environ.get("REFLOAD_SMTP_HOST", "localhost")
    port = int(os.environ.get("REFLOAD_SMTP_PORT", "25"))
    connect, read = secrets.timeouts()
    with smtplib.SMTP(timeout=connect) as smtp:
        smtp.connect(host, port)  # its greeting too is awaited for the connect timeout
        assert smtp.sock is not None
        smtp.sock.settimeout(read)
        smtp.timeout = read  # and the socket STARTTLS wraps
        if os.environ.get("REFLOAD_SMTP_STARTTLS", "").lower() == "true":
            smtp.starttls()
        if os.environ.get("REFLOAD_SMTP_USER"):
            smtp.login(os.environ["REFLOAD_SMTP_USER"], os.environ.get("REFLOAD_SMTP_PASSWORD", ""))
        smtp.send_message(message)
    return f"smtp://{host}:{port}"
