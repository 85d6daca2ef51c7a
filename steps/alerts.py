"""Alerts: one report built from any failure, sent through the configured channels.

Light on purpose: notify runs on the cold path, so nothing here imports
pandas, pyarrow or a warehouse driver.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from steps.names import unknown_name

log = structlog.get_logger("refload.alerts")
SAMPLE_ROWS_IN_ALERT = 3


def _error_of(payload: dict[str, Any]) -> dict[str, str] | None:
    """The error, from our own shape or from a Step Functions Catch (Error/Cause)."""
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


def build_report(payload: dict[str, Any]) -> dict[str, Any]:
    failed = [c for c in payload.get("checks") or [] if c["status"] != "pass"]
    error = _error_of(payload)
    table = payload.get("table") or "unknown table"
    status = "rejected" if error and error["type"] in ("RejectedInput", "ConfigError") else "failed"
    today = dt.datetime.now(dt.UTC).date().isoformat()
    lines = [
        f"Table:       {table}",
        f"Run id:      {payload.get('run_id')}",
        f"Failed step: {payload.get('failed_step')}",
    ]
    if payload.get("execution_id"):
        lines.append(f"Execution:   {payload['execution_id']}")
    if payload.get("source"):
        lines.append(f"Source:      {payload['source']}")
    if payload.get("curated_uri"):
        lines.append(f"Curated:     {payload['curated_uri']}")
    if error:
        lines += ["", f"Error: {error['type']}: {error['message']}"]
    for check in failed:
        lines += [
            "",
            f"Failed test: {check['name']} ({check['type']}, severity {check['severity']}): "
            f"{check['status']}",
            f"  observed: {check.get('observed')}   expected: {check.get('expected')}",
        ]
        for row in (check.get("details") or {}).get("sample_rows", [])[:SAMPLE_ROWS_IN_ALERT]:
            lines.append(f"  sample: {json.dumps(row, default=str)}")
    if payload.get("rerun"):
        lines += ["", f"Re-run: {payload['rerun']}"]
    return {
        "subject": f"[refload] {table} {status} on {today}",
        "table": table,
        "status": status,
        "run_id": payload.get("run_id"),
        "failed_step": payload.get("failed_step"),
        "error": error,
        "failed_checks": failed,
        "text": "\n".join(lines) + "\n",
    }


def send_outbox(report: dict[str, Any], payload: dict[str, Any]) -> str:
    """Write the alert as one JSON file in the outbox folder."""
    folder = Path(payload.get("outbox") or os.environ.get("REFLOAD_OUTBOX") or "outbox")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{stamp}-{report['table']}-{report['run_id']}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return str(path)


CHANNELS: dict[str, Callable[[dict[str, Any], dict[str, Any]], str]] = {
    "outbox": send_outbox,
}


def channels_from_env() -> list[str]:
    names = [c.strip() for c in os.environ.get("REFLOAD_ALERT_CHANNELS", "outbox").split(",")]
    for name in names:
        if name and name not in CHANNELS:
            from steps.errors import ConfigError

            raise ConfigError(f"REFLOAD_ALERT_CHANNELS: {unknown_name('channel', name, CHANNELS)}")
    return [n for n in names if n]


def send(report: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Send through every channel; a channel that fails is logged, never raised."""
    sent: dict[str, Any] = {}
    for name in channels_from_env():
        try:
            sent[name] = {"status": "sent", "ref": CHANNELS[name](report, payload)}
        except Exception as error:  # a broken channel must not hide the original failure
            log.error("alert channel failed", channel=name, error=str(error))
            sent[name] = {"status": "failed", "error": str(error)}
    return sent
