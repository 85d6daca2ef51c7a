"""etl_audit.run_log read over a time window: what runs cost, and their last errors.

Read by `status` (cost over 30 days), `history` (per run and per month) and `digest`.
Functions over any warehouse, not methods: nothing here is on a run's path, so a normal
run sends no statement more.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from steps.shared.warehouse.audit import AUDIT_SCHEMA


def run_costs(
    warehouse: Any,
    since: dt.datetime | None = None,
    table: str | None = None,
    until: dt.datetime | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """(table, run id) -> `{"cost": the sum of its steps' costs, "month": "YYYY-MM",
    "logged_at"}` for the runs with a step logged from `since` to `until` (all without)."""
    from steps.shared.cost import total

    where = ["table_name IS NOT NULL", "POSITION('\"cost\"' IN details) > 0"]
    params: list[Any] = []
    if since is not None:
        where.append("logged_at >= %s")
        params.append(since.replace(tzinfo=None))
    if until is not None:
        where.append("logged_at <= %s")
        params.append(until.replace(tzinfo=None))
    if table is not None:
        where.append("table_name = %s")
        params.append(table)
    rows = warehouse.query(
        f"SELECT table_name, run_id, logged_at, details "
        f"FROM {warehouse.table(AUDIT_SCHEMA, 'run_log')} WHERE {' AND '.join(where)} "
        "ORDER BY logged_at",
        params,
    )
    steps: dict[tuple[str, str], list[dict[str, Any]]] = {}
    first: dict[tuple[str, str], Any] = {}
    for table_name, run_id, logged_at, details in rows:
        try:
            spent = json.loads(details).get("cost")
        except (TypeError, ValueError, AttributeError):
            continue  # a details text cut short: that step's cost is unknown
        key = (str(table_name), str(run_id))
        first.setdefault(key, logged_at)
        steps.setdefault(key, []).append(spent)
    runs = {}
    for key, costs in steps.items():
        summed = total(costs)
        if summed is not None:
            runs[key] = {
                "cost": summed,
                "logged_at": first[key],
                "month": str(first[key])[:7],
            }
    return runs


def cost_by_table(warehouse: Any, since: dt.datetime) -> dict[str, float]:
    """Per table, the USD its runs since `since` cost."""
    summed: dict[str, float] = {}
    for (table, _run), run in run_costs(warehouse, since).items():
        summed[table] = summed.get(table, 0.0) + float(run["cost"]["usd"])
    return {table: round(usd, 8) for table, usd in summed.items()}


def cost_by_month(runs: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """`[{"month", "runs", "usd"}]`, oldest month first."""
    months: dict[str, dict[str, Any]] = {}
    for run in runs.values():
        month = months.setdefault(run["month"], {"month": run["month"], "runs": 0, "usd": 0.0})
        month["runs"] += 1
        month["usd"] += float(run["cost"]["usd"])
    return [{**m, "usd": round(m["usd"], 8)} for _, m in sorted(months.items())]


def window_steps(warehouse: Any, since: dt.datetime, until: dt.datetime) -> list[tuple[Any, ...]]:
    """run_log rows logged in the window, oldest first: (table, run id, step, status,
    error type, error message, logged_at)."""
    return list(
        warehouse.query(
            "SELECT table_name, run_id, step, status, error_type, error_message, logged_at "
            f"FROM {warehouse.table(AUDIT_SCHEMA, 'run_log')} WHERE table_name IS NOT NULL "
            "AND logged_at >= %s AND logged_at <= %s ORDER BY logged_at",
            [since.replace(tzinfo=None), until.replace(tzinfo=None)],
        )
    )


def window_tests(warehouse: Any, since: dt.datetime, until: dt.datetime) -> list[tuple[Any, ...]]:
    """Tests that did not pass in the window: (table, run id, test name, severity, status)."""
    return list(
        warehouse.query(
            "SELECT table_name, run_id, test_name, severity, status "
            f"FROM {warehouse.table(AUDIT_SCHEMA, 'data_quality_tests')} "
            "WHERE executed_at >= %s AND executed_at <= %s AND status <> 'pass' "
            "ORDER BY executed_at",
            [since.replace(tzinfo=None), until.replace(tzinfo=None)],
        )
    )
