"""Recovery: when a table passes again, close what its failures opened.

Called by validate when a run passed. ServiceNow: every open incident of the table (its
correlation ids all start `refload:<table>:`, failures and freshness alike) is resolved
with a work note naming the successful run (REFLOAD_SERVICENOW_AUTO_RESOLVE, on by
default). Every other channel (ses, smtp, the outbox, and any channel added to
`steps.shared.alerts.channels.CHANNELS`): when the table's previous run failed, a short
"recovered" report (`status` "recovered") through the channel's own send, to the same
recipients as its alerts. A channel that fails is logged, never raised: the run passed,
and stays passed.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from typing import Any

import structlog

from steps.shared.alerts.channels import CHANNELS, channels_from_env, servicenow
from steps.shared.alerts.incidents import resolve_fleet
from steps.shared.errors import transient_error_names
from steps.shared.io.secrets import redact
from steps.shared.warehouse.base import Warehouse

log = structlog.get_logger("refload.recovery")
# Incident numbers named in the run's summary; the rest are counted (the payload stays small).
NAMED_INCIDENTS = 20


def auto_resolve() -> bool:
    return os.environ.get("REFLOAD_SERVICENOW_AUTO_RESOLVE", "true").strip().lower() not in (
        "false",
        "0",
        "no",
        "off",
    )


def previous_failure(warehouse: Warehouse, table: str, run_id: str) -> str | None:
    """The id of the table's failed run this one recovers from: this very run, when an
    earlier attempt of it failed (the alert's rerun.json replayed), else the run before it.

    One query: a failed step, or failed error-severity tests (validate's row is then
    `failed`, a before-publish test fails load), leave a `failed` run_log row.
    """
    # This run's own failures count when they were alerted: a transient one may have been
    # retried by Step Functions before anyone heard of it.
    rows = warehouse.recent_failures(table, run_id, transient_error_names())
    if rows and rows[0][0] == run_id and rows[0][2]:
        return run_id
    others = [row for row in rows if row[0] != run_id][:1]
    return str(others[0][0]) if others and others[0][1] else None


def recovered_report(payload: dict[str, Any], failed_run: str | None) -> dict[str, Any]:
    table, run_id = payload["table"], payload["run_id"]
    facts = [
        ("Table", table),
        ("Run id", run_id),
        ("Rows loaded", payload.get("rows_loaded")),
        ("Source", payload.get("source")),
        ("Failed run", failed_run),
    ]
    facts = [(k, v) for k, v in facts if v is not None]
    text = "\n".join(f"{k + ':':<14} {v}" for k, v in facts)
    text += f"\n\n{table} loaded and passed its tests again.\n"
    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts
    )
    today = dt.datetime.now(dt.UTC).date().isoformat()
    report = {
        "subject": f"[refload] {table} recovered on {today}",
        "status": "recovered",  # the outbox names its file by it
        "table": table,
        "run_id": run_id,
        "text": text,
        "html": f"<html><body><p>{html.escape(table)} loaded and passed its tests again.</p>"
        f"<table>{rows}</table></body></html>",
    }
    return dict(json.loads(redact(json.dumps(report, default=str))))


def on_success(warehouse: Warehouse, payload: dict[str, Any]) -> dict[str, Any]:
    """After a passed run: resolve open incidents, tell the recipients if it had failed."""
    sent: dict[str, Any] = {}
    try:
        channels = channels_from_env()
        failed_run = previous_failure(warehouse, payload["table"], payload["run_id"])
    except Exception as error:  # recovery must never turn a passed run into a failure
        log.error("recovery check failed", error=redact(f"{type(error).__name__}: {error}"))
        return {"error": redact(str(error))}
    if failed_run:  # only then can an incident be open: a passing run's path stays as it was
        try:
            from steps.shared.warehouse.audit_incidents import resolve_incidents

            resolve_incidents(warehouse, payload["table"], payload["run_id"])
        except Exception as error:
            log.error("could not resolve the incidents", error=redact(f"{error}"))
    resolve_fleet(payload)  # this run reached the warehouse
    report = recovered_report(payload, failed_run)
    for name in channels:
        try:
            # ServiceNow holds state, its open incidents: they close whether or not the run
            # just before failed (a freshness alert opens one too). The others send a message.
            if name == "servicenow":
                if not auto_resolve():
                    continue
                numbers = servicenow.resolve(payload["table"], payload["run_id"])
                if numbers:
                    more = len(numbers) - NAMED_INCIDENTS
                    ref = ", ".join(numbers[:NAMED_INCIDENTS]) + (
                        f" and {more} more" if more > 0 else ""
                    )
                    sent[name] = {"status": "resolved", "ref": ref}
            elif failed_run:
                sent[name] = {"status": "sent", "ref": CHANNELS[name](report, payload)}
        except Exception as error:
            reason = redact(f"{type(error).__name__}: {error}")
            log.error("recovery channel failed", channel=name, error=reason)
            sent[name] = {"status": "failed", "error": reason}
    if sent:
        log.info("table recovered", previous_failed_run=failed_run, **sent)
    return {"previous_failed_run": failed_run, "channels": sent}
