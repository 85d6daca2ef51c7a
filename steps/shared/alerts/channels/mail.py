"""The email both mail channels (ses, smtp) send: recipients and the message."""

from __future__ import annotations

import os
from email.message import EmailMessage
from typing import Any

import structlog

from steps.shared.errors import ConfigError

log = structlog.get_logger("refload.alerts")


def recipients(payload: dict[str, Any]) -> list[str]:
    """Per-table `alert_emails` from the config, else REFLOAD_ALERT_EMAIL_TO."""
    if payload.get("config"):
        try:
            from steps.shared.config.model import read_config

            table_emails = read_config(payload["config"])[1].alert_emails
            if table_emails:
                return table_emails
        except Exception as error:  # the config may be what failed; fall back to the default
            log.warning("could not read alert_emails from the config", error=str(error))
    to = [a.strip() for a in os.environ.get("REFLOAD_ALERT_EMAIL_TO", "").split(",")]
    return [a for a in to if a]


def email_message(report: dict[str, Any], payload: dict[str, Any]) -> EmailMessage:
    sender = os.environ.get("REFLOAD_ALERT_EMAIL_FROM")
    to = recipients(payload)
    if not sender or not to:
        raise ConfigError(
            "email alerts need REFLOAD_ALERT_EMAIL_FROM and REFLOAD_ALERT_EMAIL_TO "
            "(or alert_emails in the table config)"
        )
    message = EmailMessage()
    message["Subject"] = report["subject"]
    message["From"] = sender
    message["To"] = ", ".join(to)
    message.set_content(report["text"])
    message.add_alternative(report["html"], subtype="html")
    return message
