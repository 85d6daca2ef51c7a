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
    warehouse: Any, since: dt.datetime | None = None, table: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """(table, run id) -> `{"cost": the sum of its steps' costs, "month": "YYYY-MM",
    "logged_at"}` for the runs with a step logged since `since` (all runs without it)."""
    from steps.shared.cost import total

    where = ["table_name IS NOT NULL", "POSITION('\"cost\"' IN details) > 0"]
    params: list[Any] = []
    if since is not None:
        where.append("logged_at >= %s")
        params.append(since.replace(tzinfo=None))
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


def last_errors(warehouse: Any, since: dt.datetime) -> dict[str, dict[str, Any]]:
    """Per table, its newest failed step since `since`: `{"type", "message", "run_id"}`."""
    rows = warehouse.query(
        "SELECT table_name, run_id, error_type, error_message, logged_at "
        f"FROM {warehouse.table(AUDIT_SCHEMA, 'run_log')} "
        "WHERE status = 'failed' AND table_name IS NOT NULL AND logged_at >= %s "
        "ORDER BY logged_at",
        [since.replace(tzinfo=None)],
    )
    return {
        str(table): {"type": error_type, "message": message, "run_id": run_id}
        for table, run_id, error_type, message, _ in rows
    }
