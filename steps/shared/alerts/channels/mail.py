"""The email both mail channels (ses, smtp) send: recipients and the message."""

from __future__ import annotations

import os
from email.message import EmailMessage
from typing import Any

from steps.shared.errors import ConfigError


def recipients(payload: dict[str, Any]) -> list[str]:
    """The table owner's emails (`owner.emails`, alias `alert_emails`), else
    REFLOAD_ALERT_EMAIL_TO."""
    from steps.shared.alerts.routing import route

    return list(route(payload)["to"])


def email_message(report: dict[str, Any], payload: dict[str, Any]) -> EmailMessage:
    sender = os.environ.get("REFLOAD_ALERT_EMAIL_FROM")
    to = report.get("to") or recipients(payload)
    if not sender or not to:
        raise ConfigError(
            "email alerts need REFLOAD_ALERT_EMAIL_FROM and REFLOAD_ALERT_EMAIL_TO "
            "(or owner.emails in the table config)"
        )
    message = EmailMessage()
    message["Subject"] = report["subject"]
    message["From"] = sender
    message["To"] = ", ".join(to)
    message.set_content(report["text"])
    message.add_alternative(report["html"], subtype="html")
    return message
