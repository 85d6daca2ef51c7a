"""One open incident per problem: a table and its cause (the error type, or the failing
tests' names), or, for an infrastructure cause, one incident for the whole fleet.

The run that opens an incident tells its owner (every channel); a repeat while it is open
only counts (etl_audit.incidents) and adds a ServiceNow work note, and at most one
reminder goes out per REFLOAD_ALERT_REMIND_HOURS (default 24). A passing run resolves the
table's incidents (steps.shared.alerts.recovery); a run that reaches the warehouse again
resolves the fleet's (steps.shared.alerts.fleet_incident keeps that state out of the
warehouse it is about).
"""

from __future__ import annotations

import datetime as dt
import html
import os
from typing import Any

import structlog

from steps.shared.alerts import fleet_incident
from steps.shared.alerts.routing import route
from steps.shared.errors import (
    InfrastructureError,
    StorageUnavailable,
    WarehouseUnavailable,
    error_class,
)
from steps.shared.io.secrets import redact

log = structlog.get_logger("refload.incidents")
INFRASTRUCTURE = (InfrastructureError, StorageUnavailable, WarehouseUnavailable)


def remind_after() -> dt.timedelta:
    return dt.timedelta(hours=float(os.environ.get("REFLOAD_ALERT_REMIND_HOURS") or 24))


def is_infrastructure(report: dict[str, Any]) -> bool:
    """Warehouse or storage unreachable (exit 3, after the retries)."""
    error = report.get("error")
    cls = error_class(error["type"]) if error else None
    return cls is not None and issubclass(cls, INFRASTRUCTURE)


def cause_of(report: dict[str, Any]) -> str:
    if report.get("error"):
        return str(report["error"]["type"])
    names = sorted({c["name"] for c in report.get("failed_checks") or []})
    return ", ".join(names) or "failed"


def occurrence(report: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Count this failure in its incident: `{"incident_key", "occurrences", "first_seen",
    "notify", "tables"?}`. When the state cannot be read, the alert goes out (a duplicate
    beats silence)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    cause = cause_of(report)
    if is_infrastructure(report):
        try:
            return fleet_incident.record_hit(payload, report.get("table"), cause, remind_after())
        except Exception as error:
            log.warning("could not record the infrastructure incident", error=_reason(error))
            return _unrecorded(fleet_incident.KEY, now)
    key = report["signature"]
    try:
        from steps.shared.warehouse import open_warehouse
        from steps.shared.warehouse.audit_incidents import record_occurrence

        with open_warehouse(payload.get("warehouse")) as warehouse:
            found = record_occurrence(
                warehouse, key, report.get("table"), cause, report.get("run_id"), remind_after()
            )
    except Exception as error:
        log.warning("could not record the incident in etl_audit", error=_reason(error))
        return _unrecorded(key, now)
    resolve_fleet(payload)  # the warehouse answered: the fleet's outage, if any, is over
    return {
        "incident_key": key,
        "occurrences": found.occurrences,
        "first_seen": found.first_seen,
        "notify": found.notify,
        "noticed_at": found.noticed_at,
    }


def _unrecorded(key: str, now: dt.datetime) -> dict[str, Any]:
    return {"incident_key": key, "occurrences": 1, "first_seen": now, "notify": True}


def _reason(error: Exception) -> str:
    return redact(f"{type(error).__name__}: {error}")


def forget(payload: dict[str, Any], incident: dict[str, Any]) -> None:
    """The notice reached nobody: the next failure of the problem notifies again."""
    try:
        if incident["incident_key"] == fleet_incident.KEY:
            fleet_incident.resolve(payload)
        elif incident.get("noticed_at"):
            from steps.shared.warehouse import open_warehouse
            from steps.shared.warehouse.audit_incidents import forget_notice

            with open_warehouse(payload.get("warehouse")) as warehouse:
                forget_notice(warehouse, incident["incident_key"], incident["noticed_at"])
    except Exception as error:  # the next repeat stays quiet until the reminder
        log.warning("could not forget the undelivered notice", error=_reason(error))


def with_incident(
    report: dict[str, Any], incident: dict[str, Any], payload: dict[str, Any]
) -> dict[str, Any]:
    """The report routed to its owner (the fleet's to the defaults: a warehouse outage is
    the platform's) and carrying its incident: key, occurrences, first seen."""
    fleet = incident["incident_key"] == fleet_incident.KEY
    where = route({} if fleet else payload)
    first = incident["first_seen"].replace(microsecond=0).isoformat(sep=" ")
    count = incident["occurrences"]
    facts = [("Occurrences", f"{count} since {first} UTC (first seen)")]
    extra: dict[str, Any] = {}
    if fleet:
        tables = incident.get("tables") or []
        facts.append(("Tables hit", f"{len(tables)}: {', '.join(tables)}"))
        extra = {"signature": fleet_incident.KEY, "tables": tables}
    text = "".join(f"{name + ':':<14}{value}\n" for name, value in facts)
    e = html.escape
    head = "".join(f"<p><b>{e(name)}:</b> {e(value)}</p>" for name, value in facts)
    return {
        **report,
        **extra,
        "owner": where["owner"],
        "to": where["to"],
        "assignment_group": where["assignment_group"],
        "incident_key": incident["incident_key"],
        "occurrences": count,
        "first_seen": incident["first_seen"].isoformat(),
        "text": text + report["text"],
        "html": report["html"].replace("<html><body>", "<html><body>" + head, 1),
    }


def resolve_fleet(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A run reached the warehouse: close the fleet's infrastructure incident, if open, and
    say so through every channel. Never raises."""
    from steps.shared.alerts.channels import CHANNELS, channels_from_env, servicenow

    try:
        closed = fleet_incident.resolve(payload)
    except Exception as error:
        log.warning("could not read the infrastructure incident", error=_reason(error))
        return None
    if closed is None:
        return None
    run_id = payload.get("run_id")
    tables = ", ".join(closed["tables"])
    note = f"Recovered: run {run_id} reached the warehouse again. Tables hit: {tables}."
    report = {
        "subject": "[refload] warehouse and storage reachable again",
        "status": "recovered",
        "table": "fleet",
        "run_id": run_id,
        "incident_key": fleet_incident.KEY,
        "occurrences": closed["occurrences"],
        "tables": closed["tables"],
        "to": route({})["to"],
        "text": note + "\n",
        "html": f"<html><body><p>{html.escape(note)}</p></body></html>",
    }
    sent: dict[str, Any] = {}
    for name in channels_from_env():
        try:
            if name == "servicenow":
                sent[name] = servicenow.resolve("", str(run_id), note=note)
            else:
                sent[name] = CHANNELS[name](report, payload)
        except Exception as error:
            log.error("recovery channel failed", channel=name, error=_reason(error))
    log.info("infrastructure incident resolved", tables=closed["tables"], **sent)
    return {**closed, "channels": sent}
