"""Alerts: one report built from any failure; `steps.shared.alerts.channels` sends it.

Light on purpose: notify runs on the cold path, so nothing here imports pandas,
pyarrow or a warehouse driver.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import shlex
from typing import Any

from steps.shared.checks.status import passed
from steps.shared.errors import (
    FULL_TEXT_BYTES,
    MESSAGE_BYTES,
    QualityCheckFailed,
    error_class,
    truncate_bytes,
)
from steps.shared.io.secrets import URL_PASSWORD as _URL_PASSWORD
from steps.shared.io.secrets import redact

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


def diff_command(payload: dict[str, Any]) -> str:
    """The `diff` that lists every key a changes_within failure counted (this run's file
    against the table's last publish, whether or not this run published)."""
    table = payload.get("table") or "TABLE"
    return shlex.join(
        ["python", "-m", "handler", "diff", table, "--run", str(payload.get("run_id"))]
    )


def build_report(
    payload: dict[str, Any], full_error: str | None = None, rollback_to: str | None = None
) -> dict[str, Any]:
    """The report; `full_error` is the error's full text (etl_audit.run_log) for the body,
    when the message the payload carries was cut; `rollback_to` as `published_lines`."""
    failed = [c for c in payload.get("checks") or [] if not passed(c)]
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
        if check.get("type") == "changes_within":
            lines.append(f"  every change: {diff_command(payload)}")
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
        "html": _html(
            facts, body_error, failed, rerun_json, unlisted, published, diff_command(payload)
        ),
    }
    return json.loads(redact(json.dumps(report, default=str)))


def _html(
    facts: list[tuple[str, Any]],
    error: dict[str, str] | None,
    failed: list[dict[str, Any]],
    rerun_json: str,
    unlisted: str | None = None,
    published: list[str] | None = None,
    diff: str | None = None,
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
        if check.get("type") == "changes_within" and diff:
            parts.append(f"<p>Every change: <code>{e(diff)}</code></p>")
    if unlisted:
        parts.append(f"<p>{e(unlisted)}</p>")
    parts.append(
        "<p>Re-run from the failed step: save the input as <code>rerun.json</code> and "
        "run <code>python -m handler replay rerun.json</code>, or start a Step "
        f"Functions execution with it:</p><pre>{e(rerun_json)}</pre>"
    )
    return "<html><body>" + "".join(parts) + "</body></html>"
