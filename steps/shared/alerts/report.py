"""Alerts: one report built from any failure, sent through the configured channels.

Channels (REFLOAD_ALERT_CHANNELS): `outbox` (local folder), `ses` (Amazon SES v2),
`smtp`, `servicenow` (Table API incidents, one per open failure signature).
Light on purpose: notify runs on the cold path, so nothing here imports pandas,
pyarrow or a warehouse driver; boto3 and urllib3 are imported only when used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import os
import re
import shlex
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import structlog

from steps.shared.errors import (
    FULL_TEXT_BYTES,
    MESSAGE_BYTES,
    ConfigError,
    InfrastructureError,
    QualityCheckFailed,
    error_class,
    truncate_bytes,
)
from steps.shared.io import secrets
from steps.shared.io.secrets import URL_PASSWORD as _URL_PASSWORD
from steps.shared.io.secrets import redact
from steps.shared.names import unknown_name

log = structlog.get_logger("refload.alerts")
SAMPLE_ROWS_IN_ALERT = 3
# State keys that describe the failure itself; a re-run starts without them.
NOT_FOR_RERUN = {
    "failure",
    "checks",
    "checks_before_publish",
    "notified",
    "error",
    "alert",
    "rerun",
    "validation",
    "failed_step",
    "outbox",
    "notify_failure",
    "execution_id",  # a new execution has its own
    "start_at",
}


def error_of(payload: dict[str, Any]) -> dict[str, str] | None:
    """The error (its message at most MESSAGE_BYTES), from our own shape or from a Step
    Functions Catch (Error/Cause)."""
    error = _error_of(payload)
    if error:
        error["message"] = truncate_bytes(str(error.get("message", "")), MESSAGE_BYTES)
    return error


def _error_of(payload: dict[str, Any]) -> dict[str, str] | None:
    if payload.get("error"):
        return dict(payload["error"])
    failure = payload.get("failure")
    if not failure:
        return None
    error_type, cause = failure.get("Error", "Error"), failure.get("Cause", "")
    try:
        decoded = json.loads(cause)
        message = decoded.get("errorMessage", cause)
        error_type = decoded.get("errorType", error_type)
    except (TypeError, ValueError, AttributeError):
        message = cause
    return {"type": error_type, "message": str(message)}


def _status(error: dict[str, str] | None) -> str:
    """The summary status the error's class declares; a failed test without an error
    (validate) is `failed`, an error refload does not know (a Lambda or States error) is
    `error`."""
    if error is None:
        return QualityCheckFailed.status
    cls = error_class(error["type"])
    return cls.status if cls else "error"


def rerun_input(payload: dict[str, Any]) -> dict[str, Any]:
    """The input that re-runs the failed step and the ones after it (CLI or Step Functions)."""
    step = payload.get("failed_step") or "ingest"
    state = {k: v for k, v in payload.items() if k not in NOT_FOR_RERUN}
    if _URL_PASSWORD.search(str(state.get("warehouse", ""))):
        del state["warehouse"]  # never repeat a password; replay takes --warehouse or the env
    return {**state, "step": step, "start_at": step}


def signature(
    payload: dict[str, Any], error: dict[str, str] | None, failed: list[dict[str, Any]]
) -> str:
    """Same table + same kind of failure = same signature (one open incident)."""
    parts = [
        payload.get("table") or "",
        payload.get("failed_step") or "",
        error["type"] if error else "",
        *sorted(c["name"] for c in failed),
    ]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
    return f"refload:{payload.get('table')}:{digest}"


def _changes_line(changes: Any) -> str | None:
    """Keys the publish added, removed and changed (the ledger row has sample keys)."""
    if not isinstance(changes, dict):
        return None
    return ", ".join(f"{kind} {changes.get(kind, 0):,}" for kind in ("added", "removed", "changed"))


def _unlisted(payload: dict[str, Any], failed: list[dict[str, Any]]) -> str | None:
    """A line for the failing tests the state did not carry (it carries at most 20)."""
    more = int(payload.get("checks_failed") or 0) - len(failed)
    if more <= 0:
        return None
    return (
        f"{more} more failing test(s) are not listed here; etl_audit.data_quality_tests "
        f"has every result of run {payload.get('run_id')}."
    )


def published_lines(payload: dict[str, Any], rollback_to: str | None) -> list[str]:
    """For tests that failed after the publish: the rows ARE in the table (nothing rolled
    them back), and how to go back to the last run that passed (`rollback_to`: its run id,
    "" when there is none, None when it could not be looked up)."""
    if not (payload.get("published") and payload.get("failed_step") == "validate"):
        return []
    table = payload.get("table") or "the table"
    rows = payload.get("rows_loaded")
    lines = [
        f"The rows ARE published: {payload.get('target') or table} holds this run's "
        f"{f'{rows:,} ' if isinstance(rows, int) else ''}rows (after-publish tests do not "
        "stop a publish)."
    ]
    history = shlex.join(["python", "-m", "handler", "history", table])
    if payload.get("load_mode") not in (None, "truncate", "rollback"):
        lines.append(
            f"rollback takes only replace tables (load_mode truncate); this one is "
            f"{payload.get('load_mode')}: fix the data and run again ({history} lists the runs)."
        )
    elif rollback_to:
        command = shlex.join(["python", "-m", "handler", "rollback", table, "--to", rollback_to])
        lines += ["To go back to the last run that passed its tests:", f"  {command}"]
    elif rollback_to == "":
        lines.append(
            f"No earlier run of {table} published and passed its tests: there is no run to "
            "roll back to."
        )
    else:
        lines.append(f"To go back, find the last run that passed with: {history}")
    return lines


def build_report(
    payload: dict[str, Any], full_error: str | None = None, rollback_to: str | None = None
) -> dict[str, Any]:
    """The report; `full_error` is the error's full text (etl_audit.run_log) for the body,
    when the message the payload carries was cut; `rollback_to` as `published_lines`."""
    failed = [c for c in payload.get("checks") or [] if c["status"] != "pass"]
    failed_errors = [c for c in failed if c["severity"] == "error"]
    error = error_of(payload)
    table = payload.get("table") or "unknown table"
    status = _status(error)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    rerun = rerun_input(payload)
    facts = [
        ("Table", table),
        ("Run id", payload.get("run_id")),
        ("Failed step", payload.get("failed_step")),
        ("Execution", payload.get("execution_id")),
        ("Source", payload.get("source")),
        ("Curated", payload.get("curated_uri")),
        ("Rejected rows", payload.get("rejects_uri")),
        ("Changes", _changes_line(payload.get("changes"))),
    ]
    facts = [(k, v) for k, v in facts if v]
    lines = [f"{k + ':':<14} {v}" for k, v in facts]
    published = published_lines(payload, rollback_to)
    if published:  # first: what a paged engineer must know before reading the tests
        lines += ["", *published]
    body_error = error and {
        **error,
        "message": truncate_bytes(full_error or error["message"], FULL_TEXT_BYTES),
    }
    if body_error:
        lines += ["", f"Error: {body_error['type']}: {body_error['message']}"]
    for check in failed:
        lines += [
            "",
            f"Failed test: {check['name']} ({check['type']}, severity {check['severity']}): "
            f"{check['status']}",
            f"  observed: {check.get('observed')}   expected: {check.get('expected')}",
        ]
        if (check.get("details") or {}).get("error"):  # a test that could not run says why
            lines.append(f"  error: {check['details']['error']}")
        for row in (check.get("details") or {}).get("sample_rows", [])[:SAMPLE_ROWS_IN_ALERT]:
            lines.append(f"  sample: {json.dumps(row, default=str, ensure_ascii=False)}")
    unlisted = _unlisted(payload, failed)
    if unlisted:
        lines += ["", unlisted]
    rerun_json = json.dumps(rerun, default=str)
    lines += [
        "",
        "Re-run from the failed step (save the input below as rerun.json):",
        f"  {shlex.join(['python', '-m', 'handler', 'replay', 'rerun.json'])}",
        "Step Functions input for a new execution that starts at the failed step:",
        f"  {rerun_json}",
    ]
    report = {
        # The subject is also ServiceNow's short description: bounded like a message.
        "subject": truncate_bytes(f"[refload] {table} {status} on {today}", MESSAGE_BYTES),
        "table": table,
        "status": status,
        "run_id": payload.get("run_id"),
        "failed_step": payload.get("failed_step"),
        "error": error,
        "failed_checks": failed,
        "checks_total": payload.get("checks_total", len(payload.get("checks") or [])),
        "checks_failed": payload.get("checks_failed", len(failed)),
        "signature": signature(payload, error, failed_errors or failed),
        "rerun_command": "python -m handler replay rerun.json",
        "rerun_input": rerun,
        "text": "\n".join(lines) + "\n",
        "html": _html(facts, body_error, failed, rerun_json, unlisted, published),
    }
    return json.loads(redact(json.dumps(report, default=str)))


def _html(
    facts: list[tuple[str, Any]],
    error: dict[str, str] | None,
    failed: list[dict[str, Any]],
    rerun_json: str,
    unlisted: str | None = None,
    published: list[str] | None = None,
) -> str:
    e = html.escape
    rows = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts)
    parts = [f"<table>{rows}</table>"]
    if published:
        parts.append("<p><b>" + "<br>".join(e(line.strip()) for line in published) + "</b></p>")
    if error:
        parts.append(f"<p><b>Error:</b> {e(error['type'])}: {e(error['message'])}</p>")
    for check in failed:
        samples = (check.get("details") or {}).get("sample_rows", [])[:SAMPLE_ROWS_IN_ALERT]
        reason = (check.get("details") or {}).get("error")
        items = "".join(
            f"<li><code>{e(json.dumps(r, default=str, ensure_ascii=False))}</code></li>"
            for r in samples
        )
        parts.append(
            f"<p><b>Failed test:</b> {e(check['name'])} ({e(check['type'])}, severity "
            f"{e(check['severity'])}): {e(check['status'])}<br>observed "
            f"<b>{e(str(check.get('observed')))}</b>, expected {e(str(check.get('expected')))}"
            f"{'<br>' + e(str(reason)) if reason else ''}</p><ul>{items}</ul>"
        )
    if unlisted:
        parts.append(f"<p>{e(unlisted)}</p>")
    parts.append(
        "<p>Re-run from the failed step: save the input as <code>rerun.json</code> and "
        "run <code>python -m handler replay rerun.json</code>, or start a Step "
        f"Functions execution with it:</p><pre>{e(rerun_json)}</pre>"
    )
    return "<html><body>" + "".join(parts) + "</body></html>"


# --- email ----------------------------------------------------------------------------


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


def send_ses(report: dict[str, Any], payload: dict[str, Any]) -> str:
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


def send_smtp(report: dict[str, Any], payload: dict[str, Any]) -> str:
    import smtplib

    message = email_message(report, payload)
    host = os.environ.get("REFLOAD_SMTP_HOST", "localhost")
    port = int(os.environ.get("REFLOAD_SMTP_PORT", "25"))
    connect, read = secrets.timeouts()
    with smtplib.SMTP(timeout=connect) as smtp:
        smtp.connect(host, port)  # its greeting too is awaited for the connect timeout
        assert smtp.sock is not None
        smtp.sock.settimeout(read)
        smtp.timeout = read  # and the socket STARTTLS wraps
        if os.environ.get("REFLOAD_SMTP_STARTTLS", "").lower() == "true":
            smtp.starttls()
        if os.environ.get("REFLOAD_SMTP_USER"):
            smtp.login(os.environ["REFLOAD_SMTP_USER"], os.environ.get("REFLOAD_SMTP_PASSWORD", ""))
        smtp.send_message(message)
    return f"smtp://{host}:{port}"


# --- ServiceNow -----------------------------------------------------------------------


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
        # (see `send_servicenow`). A repeated PATCH adds the same work note twice at worst.
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


def send_servicenow(report: dict[str, Any], payload: dict[str, Any]) -> str:
    """Open an incident, or add a work note to the open one with the same signature."""
    import time
    from urllib.parse import quote

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
    if incident:
        call(
            "PATCH",
            f"/api/now/table/incident/{incident['sys_id']}",
            {"work_notes": f"Failed again: run {report['run_id']}\n\n{report['text']}"},
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
    if os.environ.get("REFLOAD_SERVICENOW_ASSIGNMENT_GROUP"):
        fields["assignment_group"] = os.environ["REFLOAD_SERVICENOW_ASSIGNMENT_GROUP"]
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


# --- outbox ---------------------------------------------------------------------------


def outbox_name(report: dict[str, Any]) -> str:
    """`<time>-<table>-<run>`: one word (no space, no '/'), so the printed re-run command
    can be pasted into a shell as it is."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    table = re.sub(r"[^\w.-]+", "-", str(report.get("table") or "unknown-table")).strip("-")
    return f"{stamp}-{table or 'unknown-table'}-{report['run_id']}"


def send_outbox(report: dict[str, Any], payload: dict[str, Any]) -> str:
    """Write the alert as one JSON file, and its re-run input (if any) beside it."""
    folder = Path(payload.get("outbox") or os.environ.get("REFLOAD_OUTBOX") or "outbox")
    folder.mkdir(parents=True, exist_ok=True)
    name = outbox_name(report)
    path, rerun = folder / f"{name}.alert.json", folder / f"{name}.rerun.json"
    local = report
    if report.get("rerun_input"):  # a freshness alert has none: no file came, nothing to re-run
        rerun.write_text(json.dumps(report["rerun_input"], indent=2) + "\n", encoding="utf-8")
        command = shlex.join(["python", "-m", "handler", "replay", str(rerun)])
        local = {**report, "rerun_command": command}
    path.write_text(json.dumps(local, indent=2, default=str) + "\n", encoding="utf-8")
    return str(path)


CHANNELS: dict[str, Callable[[dict[str, Any], dict[str, Any]], str]] = {
    "outbox": send_outbox,
    "ses": send_ses,
    "smtp": send_smtp,
    "servicenow": send_servicenow,
}


def channels_from_env() -> list[str]:
    names = [c.strip() for c in os.environ.get("REFLOAD_ALERT_CHANNELS", "outbox").split(",")]
    for name in names:
        if name and name not in CHANNELS:
            raise ConfigError(f"REFLOAD_ALERT_CHANNELS: {unknown_name('channel', name, CHANNELS)}")
    return [n for n in names if n]


def send(report: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Send through every channel; a channel that fails is logged, never raised."""
    sent: dict[str, Any] = {}
    for name in channels_from_env():
        try:
            sent[name] = {"status": "sent", "ref": CHANNELS[name](report, payload)}
        except Exception as error:  # a broken channel must not hide the original failure
            reason = truncate_bytes(redact(f"{type(error).__name__}: {error}"), MESSAGE_BYTES)
            log.error("alert channel failed", channel=name, error=reason)
            sent[name] = {"status": "failed", "error": reason}
    return sent
