"""notify: turn any failure into one report and send it through every configured channel
(outbox, SES, SMTP, ServiceNow: steps.shared.alerts.channels.CHANNELS).

Succeeds when at least one channel delivered (the result lists the ones that failed);
raises AlertNotDelivered when none did, so that Step Functions retries and the
execution fails visibly instead of ending as if someone had been told.
"""

from __future__ import annotations

from typing import Any

import structlog

from steps.shared.alerts import incidents
from steps.shared.alerts.channels import channels_from_env, send
from steps.shared.alerts.report import build_report, error_of
from steps.shared.errors import TRUNCATED, AlertNotDelivered

log = structlog.get_logger("refload.notify")
SENT_OR_SUPPRESSED = ("sent", "suppressed")


def run(payload: dict[str, Any]) -> dict[str, Any]:
    report = build_report(
        payload, full_error=_full_error(payload), rollback_to=_last_passing_run(payload)
    )
    log.error(
        "refload run failed",
        subject=report["subject"],
        error=report["error"],
        failed_checks=[c["name"] for c in report["failed_checks"]],
    )
    incident = incidents.occurrence(report, payload)
    report = incidents.with_incident(report, incident, payload)
    if incident["notify"]:
        channels = send(report, payload)
    else:  # a repeat while open: a work note and the count, no new email or outbox file
        channels = send(report, payload, only=("servicenow",))
        ref = f"{report['incident_key']}, occurrence {report['occurrences']}"
        suppressed = {"status": "suppressed", "ref": ref}
        channels |= {name: suppressed for name in channels_from_env() if name not in channels}
    failed = [
        name for name, outcome in channels.items() if outcome["status"] not in SENT_OR_SUPPRESSED
    ]
    if incident["notify"] and channels and len(failed) == len(channels):
        incidents.forget(payload, incident)
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


def _full_error(payload: dict[str, Any]) -> str | None:
    """The full text of an error whose message was cut to travel (2 KiB): the failed step
    wrote it to etl_audit.run_log. Best effort, and only then: the warehouse (and its
    driver) is not needed to send an alert."""
    error = error_of(payload)
    step, run_id = payload.get("failed_step"), payload.get("run_id")
    if not (error and TRUNCATED in error["message"] and step and run_id):
        return None
    head = error["message"].split(TRUNCATED)[0]
    try:
        from steps.shared.warehouse import open_warehouse

        with open_warehouse(payload.get("warehouse")) as warehouse:
            full = warehouse.step_error(run_id, step)
    except Exception as failure:  # the alert goes out with the cut message
        log.warning("could not read the full error from etl_audit.run_log", error=str(failure))
        return None
    return full if full and head in full else None


def _last_passing_run(payload: dict[str, Any]) -> str | None:
    """For tests that failed after the publish (the rows are in the table): the newest
    earlier run of the table that published and passed its tests, "" when there is none,
    None when it is not that failure or the warehouse cannot say (best effort, as above)."""
    if not (payload.get("published") and payload.get("failed_step") == "validate"):
        return None
    try:
        from steps.shared.warehouse import open_warehouse

        with open_warehouse(payload.get("warehouse")) as warehouse:
            run = warehouse.last_passing_run(payload.get("table") or "", payload.get("run_id", ""))
    except Exception as failure:  # the alert goes out, pointing at `history` instead
        log.warning("could not look up the last passing run", error=str(failure))
        return None
    return run or ""
