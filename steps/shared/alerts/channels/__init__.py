"""The alert channels: name -> send(report, payload) -> a reference to what was sent.

A new channel is one module here (or anywhere) plus one line below. REFLOAD_ALERT_CHANNELS
picks them; notify and freshness send a failure report through each, and recovery sends
its "recovered" report (`status` "recovered") through the same functions. Light on
purpose (notify's cold path): boto3 and urllib3 are imported only when a channel sends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import structlog

from steps.shared.alerts.channels import outbox, servicenow, ses, smtp
from steps.shared.errors import MESSAGE_BYTES, ConfigError, truncate_bytes
from steps.shared.io.secrets import redact
from steps.shared.names import unknown_name

log = structlog.get_logger("refload.alerts")
Send = Callable[[dict[str, Any], dict[str, Any]], str]

CHANNELS: dict[str, Send] = {
    "outbox": outbox.send,
    "ses": ses.send,
    "smtp": smtp.send,
    "servicenow": servicenow.send,
}


def channels_from_env() -> list[str]:
    names = [c.strip() for c in os.environ.get("REFLOAD_ALERT_CHANNELS", "outbox").split(",")]
    for name in names:
        if name and name not in CHANNELS:
            raise ConfigError(f"REFLOAD_ALERT_CHANNELS: {unknown_name('channel', name, CHANNELS)}")
    return [n for n in names if n]


def send(
    report: dict[str, Any], payload: dict[str, Any], only: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Send through every channel (or those of them in `only`); a channel that fails is
    logged, never raised."""
    sent: dict[str, Any] = {}
    for name in channels_from_env():
        if only is not None and name not in only:
            continue
        try:
            sent[name] = {"status": "sent", "ref": CHANNELS[name](report, payload)}
        except Exception as error:  # a broken channel must not hide the original failure
            reason = truncate_bytes(redact(f"{type(error).__name__}: {error}"), MESSAGE_BYTES)
            log.error("alert channel failed", channel=name, error=reason)
            sent[name] = {"status": "failed", "error": reason}
    return sent
