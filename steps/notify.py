"""notify: turn any failure into one report and send it through the configured channels
(outbox, SES, SMTP, ServiceNow: steps.alerts.CHANNELS)."""

from __future__ import annotations

from typing import Any

import structlog

from steps.alerts import build_report, send

log = structlog.get_logger("refload.notify")


def run(payload: dict[str, Any]) -> dict[str, Any]:
    report = build_report(payload)
    log.error(
        "refload run failed",
        subject=report["subject"],
        error=report["error"],
        failed_checks=[c["name"] for c in report["failed_checks"]],
    )
    channels = send(report, payload)
    return {
        "table": report["table"],
        "run_id": report["run_id"],
        "notified": channels,
        "subject": report["subject"],
    }
