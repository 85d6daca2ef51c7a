"""The `ses` channel: the report as one email through Amazon SES v2."""

from __future__ import annotations

from typing import Any

from steps.shared.alerts.channels.mail import email_message
from steps.shared.io import secrets


def send(report: dict[str, Any], payload: dict[str, Any]) -> str:
    import boto3
    from botocore.config import Config

    message = email_message(report, payload)
    connect, read = secrets.timeouts()
    config = Config(
        connect_timeout=connect,
        read_timeout=read,
        retries={"mode": "standard", "max_attempts": 3},
    )
    client = boto3.client("sesv2", config=config)
    response = client.send_email(
        FromEmailAddress=message["From"],
        Destination={"ToAddresses": [a.strip() for a in message["To"].split(",")]},
        Content={"Raw": {"Data": message.as_bytes()}},
    )
    return str(response["MessageId"])
