"""CloudWatch metrics as Embedded Metric Format (EMF) log lines: no API call, no client.

One JSON object per step run; CloudWatch Logs extracts the metrics from it. Where the line
goes (REFLOAD_METRICS): `auto` (default) prints it on stdout when Lambda invokes the handler
(AWS_LAMBDA_FUNCTION_NAME is set; Lambda sends stdout and stderr to CloudWatch Logs), on
stderr when the CLI runs in such an environment (its stdout is the `--json` summary), and
nowhere on a workstation; `stdout`, `stderr` or `off` choose explicitly. Light on purpose:
dispatch imports it on the cold path.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

from steps.shared.checks.status import passed
from steps.shared.names import unknown_name

log = structlog.get_logger("refload.metrics")

NAMESPACE = "refload"
# Per table and step, and per step across the fleet (what the ChecksFailed alarm watches).
DIMENSION_SETS = [["Table", "Step"], ["Step"]]
# Metric -> (unit, where its value comes from in a step's result).
METRICS: dict[str, tuple[str, str]] = {
    "RowsRead": ("Count", "rows_read"),
    "RowsLoaded": ("Count", "rows_loaded"),
    "RowsRejected": ("Count", "rows_rejected"),
    "DuplicatesDropped": ("Count", "duplicates_dropped"),
    "ChecksFailed": ("Count", "checks"),
    "DurationMs": ("Milliseconds", "duration_ms"),
    # What the step cost on AWS, in USD (steps.shared.cost): EMF has no currency unit.
    "CostUsd": ("None", "cost"),
}
DESTINATIONS = ("auto", "stdout", "stderr", "off")
# Set while handler.lambda_handler runs a step: stdout is then the function's log.
_lambda_invocation: ContextVar[bool] = ContextVar("refload_lambda_invocation", default=False)


@contextmanager
def lambda_invocation() -> Iterator[None]:
    token = _lambda_invocation.set(True)
    try:
        yield
    finally:
        _lambda_invocation.reset(token)


def checks_failed(checks: list[dict[str, Any]] | None) -> int | None:
    """Error-severity tests that did not pass (a warning is not a failure)."""
    if checks is None:
        return None
    return sum(not passed(c) and c.get("severity") == "error" for c in checks)


def _value(values: dict[str, Any], source: str) -> Any:
    if source == "checks":
        return checks_failed(values.get("checks"))
    if source == "cost":
        spent = values.get("cost")
        return spent.get("usd") if isinstance(spent, dict) else None
    return values[source]


def emf_record(
    table: str, step: str, values: dict[str, Any], timestamp_ms: int | None = None
) -> dict[str, Any]:
    """One EMF document: the metrics present in `values` (numbers), Table and Step."""
    found = {
        name: _value(values, source)
        for name, (_unit, source) in METRICS.items()
        if source in values
    }
    numbers = {k: v for k, v in found.items() if isinstance(v, int | float) and v is not None}
    return {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": DIMENSION_SETS,
                    "Metrics": [{"Name": n, "Unit": METRICS[n][0]} for n in numbers],
                }
            ],
        },
        "Table": table,
        "Step": step,
        **numbers,
    }


def destination() -> Any:
    """The stream for EMF lines, or None. A wrong setting is logged, never fails a step."""
    choice = os.environ.get("REFLOAD_METRICS", "auto").strip().lower() or "auto"
    if choice not in DESTINATIONS:
        log.warning(f"REFLOAD_METRICS: {unknown_name('destination', choice, DESTINATIONS)}")
        choice = "auto"
    if choice == "auto":
        if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            choice = "off"
        else:
            choice = "stdout" if _lambda_invocation.get() else "stderr"
    return {"stdout": sys.stdout, "stderr": sys.stderr, "off": None}[choice]


def emit(step: str, result: dict[str, Any], started: float) -> None:
    """Write one step's EMF line. `result` is the step's result (or, on failure, what is
    known: the table and the tests that failed); `started` is time.perf_counter()'s."""
    table = result.get("table")
    if not isinstance(table, str) or not table:
        return  # a dimension value must be a non-empty string; no table, no per-table metric
    stream = destination()
    if stream is None:
        return
    values = {**result, "duration_ms": round((time.perf_counter() - started) * 1000)}
    stream.write(json.dumps(emf_record(table, step, values), default=str) + "\n")
    stream.flush()


# A landed object that was not loaded and alerted nobody (handler.aws.events): kind -> metric.
NOT_LOADED_METRICS = {"unrouted": "ObjectsUnrouted", "empty": "ObjectsEmpty"}


def emit_not_loaded(kind: str, table: str | None = None) -> None:
    """One EMF line counting an object no config routes (`unrouted`) or an empty one
    (`empty`): per Step across the fleet, and per Table when a config routes it."""
    stream = destination()
    if stream is None:
        return
    name = NOT_LOADED_METRICS[kind]
    dimensions = [["Step"], ["Table", "Step"]] if table else [["Step"]]
    record = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": [{"Name": name, "Unit": "Count"}],
                }
            ],
        },
        "Step": "ingest",
        **({"Table": table} if table else {}),
        name: 1,
    }
    stream.write(json.dumps(record) + "\n")
    stream.flush()
