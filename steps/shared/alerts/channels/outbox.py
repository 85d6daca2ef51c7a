"""The `outbox` channel: each report as one JSON file in a local folder."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any


def outbox_name(report: dict[str, Any]) -> str:
    """`<time>-<table>-<run>`: one word (no space, no '/'), so the printed re-run command
    can be pasted into a shell as it is."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    table = re.sub(r"[^\w.-]+", "-", str(report.get("table") or "unknown-table")).strip("-")
    return f"{stamp}-{table or 'unknown-table'}-{report['run_id']}"


def send(report: dict[str, Any], payload: dict[str, Any]) -> str:
    """Write the alert as one JSON file (`.alert.json`, or `.recovered.json` for recovery's
    report), and its re-run input (if any) beside it."""
    folder = Path(payload.get("outbox") or os.environ.get("REFLOAD_OUTBOX") or "outbox")
    folder.mkdir(parents=True, exist_ok=True)
    name = outbox_name(report)
    # `.digest.json` for the fleet digest (steps.digest)
    kind = report.get("kind") or ("recovered" if report.get("status") == "recovered" else "alert")
    path, rerun = folder / f"{name}.{kind}.json", folder / f"{name}.rerun.json"
    local = report
    if report.get("rerun_input"):  # a freshness alert has none: no file came, nothing to re-run
        rerun.write_text(json.dumps(report["rerun_input"], indent=2) + "\n", encoding="utf-8")
        command = shlex.join(["python", "-m", "handler", "replay", str(rerun)])
        local = {**report, "rerun_command": command}
    path.write_text(json.dumps(local, indent=2, default=str) + "\n", encoding="utf-8")
    return str(path)
