"""notify: turn any failure into one report and send it through every configured channel
(outbox, SES, SMTP, ServiceNow: steps.alerts.CHANNELS).

Succeeds when at least one channel delivered (the result lists the ones that failed);
raises AlertNotDelivered when none did, so that Step Functions retries and the
execution fails visibly instead of ending as if someone had been told.
"""

from __future__ import annotations

from typing import Any

import structlog

from steps.alerts import build_report, send
from steps.errors import AlertNotDelivered

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
    failed = [name for name, outcome in channels.items() if outcome["status"] != "sent"]
    if channels and len(failed) == len(channels):
        reasons = "; ".join(f"{name}: {channels[name]['error']}" for name in failed)
        raise AlertNotDelivered(
            f"no alert channel delivered the report ({reasons})",
            table=report["table"],
            details={"notified": channels},
        )
    return {
        "table": report["table"],
        "run_id": report["run_id"],
        "notified": channels,
        "failed_channels": failed,
        "subject": report["subject"],
    }
