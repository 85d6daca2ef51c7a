"""Recovery: when a table passes again, close what its failures opened.

Called by validate when a run passed. ServiceNow: every open incident of the table (its
correlation ids all start `refload:<table>:`, failures and freshness alike) is resolved
with a work note naming the successful run (REFLOAD_SERVICENOW_AUTO_RESOLVE, on by
default). Email (ses, smtp) and the outbox: when the table's previous run failed, a short
"recovered" message to the same recipients as its alerts. A channel that fails is logged,
never raised: the run passed, and stays passed.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

from steps.shared.alerts.report import (
    channels_from_env,
    outbox_name,
    redact,
    send_ses,
    send_smtp,
    servicenow_client,
)
from steps.shared.errors import transient_error_names
from steps.shared.warehouse.base import Warehouse

log = structlog.get_logger("refload.recovery")
# ServiceNow's incident states: 6 = Resolved. Close codes differ between releases.
RESOLVED_STATE = "6"
DEFAULT_CLOSE_CODE = "Solution provided"
PAGE_SIZE = 100  # incidents per Table API request
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
        "table": table,
        "run_id": run_id,
        "text": text,
        "html": f"<html><body><p>{html.escape(table)} loaded and passed its tests again.</p>"
        f"<table>{rows}</table></body></html>",
    }
    return dict(json.loads(redact(json.dumps(report, default=str))))


def open_incidents(call: Any, table: str) -> list[dict[str, Any]]:
    """Every open incident of the table, page by page (ordered by sys_id, so pages neither
    overlap nor skip), all read before any is resolved: resolving shifts the pages."""
    query = quote(f"correlation_idSTARTSWITHrefload:{table}:^active=true^ORDERBYsys_id", safe="=^")
    found: dict[str, dict[str, Any]] = {}
    while True:
        page = call(
            "GET",
            f"/api/now/table/incident?sysparm_query={query}"
            f"&sysparm_fields=sys_id,number,correlation_id&sysparm_limit={PAGE_SIZE}"
            f"&sysparm_offset={len(found)}",
        ).get("result", [])
        new = {i["sys_id"]: i for i in page if i["sys_id"] not in found}
        found |= new
        if len(page) < PAGE_SIZE or not new:
            return list(found.values())


def resolve_servicenow(table: str, run_id: str) -> list[str]:
    """Resolve every open incident of the table; returns their numbers."""
    call = servicenow_client()
    found = open_incidents(call, table)
    note = f"Recovered: run {run_id} loaded {table} and passed its tests."
    resolved = []
    for incident in found:
        call(
            "PATCH",
            f"/api/now/table/incident/{incident['sys_id']}",
            {
                "state": os.environ.get("REFLOAD_SERVICENOW_RESOLVED_STATE", RESOLVED_STATE),
                "close_code": os.environ.get("REFLOAD_SERVICENOW_CLOSE_CODE", DEFAULT_CLOSE_CODE),
                "close_notes": note,
                "work_notes": f"{note} Resolved by refload.",
            },
        )
        resolved.append(str(incident.get("number", incident["sys_id"])))
    return resolved


def write_outbox(report: dict[str, Any], payload: dict[str, Any]) -> str:
    folder = Path(payload.get("outbox") or os.environ.get("REFLOAD_OUTBOX") or "outbox")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{outbox_name(report)}.recovered.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return str(path)


def on_success(warehouse: Warehouse, payload: dict[str, Any]) -> dict[str, Any]:
    """After a passed run: resolve open incidents, tell the recipients if it had failed."""
    sent: dict[str, Any] = {}
    try:
        channels = channels_from_env()
        failed_run = previous_failure(warehouse, payload["table"], payload["run_id"])
    except Exception as error:  # recovery must never turn a passed run into a failure
        log.error("recovery check failed", error=redact(f"{type(error).__name__}: {error}"))
        return {"error": redact(str(error))}
    report = recovered_report(payload, failed_run)
    senders = {"ses": send_ses, "smtp": send_smtp, "outbox": write_outbox}
    for name in channels:
        try:
            if name == "servicenow" and auto_resolve():
                numbers = resolve_servicenow(payload["table"], payload["run_id"])
                if numbers:
                    more = len(numbers) - NAMED_INCIDENTS
                    ref = ", ".join(numbers[:NAMED_INCIDENTS]) + (
                        f" and {more} more" if more > 0 else ""
                    )
                    sent[name] = {"status": "resolved", "ref": ref}
            elif name in senders and failed_run:
                sent[name] = {"status": "sent", "ref": senders[name](report, payload)}
        except Exception as error:
            reason = redact(f"{type(error).__name__}: {error}")
            log.error("recovery channel failed", channel=name, error=reason)
            sent[name] = {"status": "failed", "error": reason}
    if sent:
        log.info("table recovered", previous_failed_run=failed_run, **sent)
    return {"previous_failed_run": failed_run, "channels": sent}
