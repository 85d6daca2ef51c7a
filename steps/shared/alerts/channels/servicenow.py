"""The `servicenow` channel: Table API incidents, one per open failure signature; `resolve`
closes a table's open incidents when it recovers (`steps.shared.alerts.recovery`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import structlog

from steps.shared.errors import ConfigError, InfrastructureError
from steps.shared.io import secrets

log = structlog.get_logger("refload.alerts")
# ServiceNow's incident states: 6 = Resolved. Close codes differ between releases.
RESOLVED_STATE = "6"
DEFAULT_CLOSE_CODE = "Solution provided"
PAGE_SIZE = 100  # incidents per Table API request
OPENER_WAIT_SECONDS = 10.0  # how long a repeat waits for a concurrent run's create


def _servicenow_auth() -> dict[str, str]:
    import base64

    arn = os.environ.get("REFLOAD_SERVICENOW_SECRET_ARN")
    if arn:
        try:
            secret = secrets.read_secret(arn)
        except Exception as error:
            raise InfrastructureError(
                f"cannot read the ServiceNow secret ({secrets.aws_reason(error)})", key=arn
            ) from None
    else:
        secret = {
            "user": os.environ.get("REFLOAD_SERVICENOW_USER"),
            "password": os.environ.get("REFLOAD_SERVICENOW_PASSWORD"),
        }
    for credential in ("token", "password"):
        secrets.remember(secret.get(credential))  # masked wherever an error may quote it
    if secret.get("token"):
        return {"Authorization": f"Bearer {secret['token']}"}
    user = secret.get("user") or secret.get("username")
    if not user:
        raise ConfigError(
            "ServiceNow needs REFLOAD_SERVICENOW_SECRET_ARN or "
            "REFLOAD_SERVICENOW_USER and REFLOAD_SERVICENOW_PASSWORD"
        )
    pair = f"{user}:{secret.get('password') or ''}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


RETRY_STATUSES = (429, 500, 502, 503, 504)


def _retries() -> int:
    return int(os.environ.get("REFLOAD_HTTP_RETRIES", "4"))


def _http() -> Any:
    import urllib3

    retry = urllib3.Retry(
        total=_retries(),
        backoff_factor=1.0,
        status_forcelist=RETRY_STATUSES,
        # Not POST: a create whose answer was lost may have created the incident
        # (see `send`). A repeated PATCH adds the same work note twice at worst.
        allowed_methods=frozenset({"GET", "PATCH"}),
        raise_on_status=False,
    )
    connect, read = secrets.timeouts()
    return urllib3.PoolManager(retries=retry, timeout=urllib3.Timeout(connect=connect, read=read))


class _NoAnswer(InfrastructureError):
    """ServiceNow was busy or the answer was lost: the request may or may not have run."""


ServiceNowCall = Callable[..., dict[str, Any]]


def servicenow_client() -> ServiceNowCall:
    """`call(method, path, body=None)` on the Table API: JSON in and out; a refused login
    is InfrastructureError, a busy server or a lost answer `_NoAnswer` (it may have run)."""
    import urllib3

    base = os.environ.get("REFLOAD_SERVICENOW_URL", "").rstrip("/")
    if not base:
        raise ConfigError("the servicenow channel needs REFLOAD_SERVICENOW_URL")
    headers = {
        **_servicenow_auth(),
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    http = _http()

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        where = f"{method} {path.split('?')[0]}"
        try:
            response = http.request(
                method,
                base + path,
                headers=headers,
                body=json.dumps(body) if body is not None else None,
            )
        except urllib3.exceptions.HTTPError as error:
            cause = getattr(error, "reason", None) or error  # MaxRetryError: the last failure
            raise _NoAnswer(f"ServiceNow did not answer {where} ({type(cause).__name__})") from None
        if response.status in (401, 403):
            raise InfrastructureError(
                f"ServiceNow refused the credentials (HTTP "
                f"{response.status}); check the user, password or token"
            )
        if response.status in RETRY_STATUSES:
            raise _NoAnswer(f"ServiceNow answered HTTP {response.status} to {where}")
        if response.status >= 300:
            raise InfrastructureError(f"ServiceNow answered HTTP {response.status} to {where}")
        return dict(json.loads(response.data or b"{}"))

    return call


def send(report: dict[str, Any], payload: dict[str, Any]) -> str:
    """Open an incident, or add a work note to the open one with the same signature."""
    import time

    call = servicenow_client()
    correlation = report["signature"]
    query = quote(f"correlation_id={correlation}^active=true", safe="=^")

    def open_incident() -> dict[str, Any] | None:
        found = call(
            "GET",
            f"/api/now/table/incident?sysparm_query={query}"
            "&sysparm_fields=sys_id,number&sysparm_limit=1",
        ).get("result", [])
        return dict(found[0]) if found else None

    incident = open_incident()
    # A repeat (etl_audit.incidents counted an earlier occurrence): the run that opened the
    # incident may be creating it right now; wait for it rather than open a second one.
    waited = 0.0
    while not incident and (report.get("occurrences") or 1) > 1 and waited < OPENER_WAIT_SECONDS:
        time.sleep(0.5)
        waited += 0.5
        incident = open_incident()
    if incident:
        count = report.get("occurrences")
        seen = f" (occurrence {count}, first seen {report.get('first_seen')})" if count else ""
        call(
            "PATCH",
            f"/api/now/table/incident/{incident['sys_id']}",
            {"work_notes": f"Failed again: run {report['run_id']}{seen}\n\n{report['text']}"},
        )
        return f"updated {incident.get('number', incident['sys_id'])}"
    fields = {
        "short_description": report["subject"],
        "description": report["text"],
        "urgency": os.environ.get("REFLOAD_SERVICENOW_URGENCY", "2"),
        "impact": os.environ.get("REFLOAD_SERVICENOW_IMPACT", "2"),
        "correlation_id": correlation,
        "correlation_display": "refload",
    }
    group = report.get("assignment_group") or os.environ.get("REFLOAD_SERVICENOW_ASSIGNMENT_GROUP")
    if group:  # the table owner's group (steps.shared.alerts.routing), else the default
        fields["assignment_group"] = group
    # A create is retried only after looking the incident up by its correlation id: a
    # 5xx or a lost answer does not mean that ServiceNow did not create it.
    attempt = 0
    while True:
        try:
            created = call("POST", "/api/now/table/incident", fields).get("result", {})
            return f"created {created.get('number', created.get('sys_id', '?'))}"
        except _NoAnswer as error:
            if attempt == _retries():
                raise
            log.warning("ServiceNow create unanswered; looking the incident up", error=str(error))
            time.sleep(min(2**attempt - 1, 30))  # 0 s, 1 s, 3 s, ... as urllib3 backs off
            attempt += 1
            incident = open_incident()
            if incident:
                return f"created {incident.get('number', incident['sys_id'])}"


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


def resolve(table: str, run_id: str, note: str | None = None) -> list[str]:
    """Resolve every open incident of the table (table "": the fleet's infrastructure
    incident); returns their numbers."""
    call = servicenow_client()
    found = open_incidents(call, table)
    note = note or f"Recovered: run {run_id} loaded {table} and passed its tests."
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
