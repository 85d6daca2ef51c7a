"""Recent runs of a table, read back from the audit tables (`python -m handler history`)."""

from __future__ import annotations

from typing import Any

from steps.warehouse.base import AUDIT_SCHEMA, Warehouse


def recent_runs(warehouse: Warehouse, table_name: str, limit: int = 10) -> list[dict[str, Any]]:
    """Newest first: each run's steps, rows published and test results."""
    run_log = warehouse.table(AUDIT_SCHEMA, "run_log")
    runs = warehouse.query(
        f"SELECT run_id, MIN(logged_at) AS started, MAX(logged_at) AS finished FROM {run_log} "
        f"WHERE table_name = %s GROUP BY run_id ORDER BY MAX(logged_at) DESC LIMIT {int(limit)}",
        (table_name,),
    )
    history = []
    for run_id, started, finished in runs:
        steps = warehouse.query(
            f"SELECT step, status, error_type, error_message FROM {run_log} "
            "WHERE run_id = %s AND table_name = %s ORDER BY logged_at",
            (run_id, table_name),
        )
        published = warehouse.query(
            "SELECT rows_loaded, load_mode, keys_added, keys_removed, keys_changed FROM "
            f"{warehouse.table(AUDIT_SCHEMA, 'load_ledger')} WHERE run_id = %s",
            (run_id,),
        )
        tests = warehouse.query(
            "SELECT test_name, test_type, severity, status, observed_value, expected FROM "
            f"{warehouse.table(AUDIT_SCHEMA, 'data_quality_tests')} WHERE run_id = %s "
            "ORDER BY executed_at, test_name",
            (run_id,),
        )
        failed = [s for s in steps if s[1] == "failed"]
        test_failed = any(t[2] == "error" and t[3] != "pass" for t in tests)
        history.append(
            {
                "run_id": run_id,
                "started": str(started),
                "finished": str(finished),
                "status": "failed"
                if failed or test_failed
                else "stale"
                if any(s[1] == "stale" for s in steps)
                else "passed",
                "steps": [
                    {"step": s[0], "status": s[1], "error_type": s[2], "error": s[3]} for s in steps
                ],
                "rows_published": published[0][0] if published else None,
                "load_mode": published[0][1] if published else None,
                # Keys added/removed/changed by the publish (tables with a primary key).
                "changes": (
                    dict(zip(("added", "removed", "changed"), published[0][2:], strict=True))
                    if published and published[0][2] is not None
                    else None
                ),
                "checks": [
                    {
                        "name": t[0],
                        "type": t[1],
                        "severity": t[2],
                        "status": t[3],
                        "observed": t[4],
                        "expected": t[5],
                    }
                    for t in tests
                ],
            }
        )
    return history


def _changes(added: Any, removed: Any, changed: Any) -> dict[str, int] | None:
    """A ledger row's change set counts (None: a table without a primary key)."""
    if added is None:
        return None
    return {"added": int(added), "removed": int(removed), "changed": int(changed)}


def _run_status(failures: int, error_type: str | None, validated: int, stale: int = 0) -> str:
    """A run's outcome from its run_log rows, as `run --json` reports it."""
    if failures:
        if error_type in ("RejectedInput", "ConfigError"):
            return "rejected"
        # A failed validate row has no error type; a before-publish test raises this one.
        return "failed" if error_type in (None, "QualityCheckFailed") else "error"
    if stale:  # a file older than the table's: the run ends at load, nothing validated
        return "stale"
    return "passed" if validated else "running"


def fleet_history(
    warehouse: Warehouse, runs_per_table: int = 30
) -> dict[str, list[dict[str, Any]]]:
    """Every table's recent runs, oldest first: status, rows after publish, and how many
    tests passed, failed (error severity) and warned.

    Three queries for the whole fleet (not three per run): a window function keeps the
    newest runs of each table.
    """
    limit = int(runs_per_table)
    run_log = warehouse.table(AUDIT_SCHEMA, "run_log")
    runs = warehouse.query(
        "SELECT table_name, run_id, finished, failures, error_type, validated, stale FROM ("
        "SELECT table_name, run_id, MAX(logged_at) AS finished, "
        "SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failures, "
        "MAX(error_type) AS error_type, "
        "SUM(CASE WHEN step = 'validate' THEN 1 ELSE 0 END) AS validated, "
        "SUM(CASE WHEN status = 'stale' THEN 1 ELSE 0 END) AS stale, "
        "ROW_NUMBER() OVER (PARTITION BY table_name ORDER BY MAX(logged_at) DESC) AS newest "
        f"FROM {run_log} WHERE table_name IS NOT NULL GROUP BY table_name, run_id"
        f") recent WHERE newest <= {limit}"
    )
    published = {
        (table, run_id): (rows_after, loaded_at, _changes(added, removed, changed))
        for table, run_id, rows_after, loaded_at, added, removed, changed in warehouse.query(
            "SELECT table_name, run_id, rows_after, loaded_at, keys_added, keys_removed, "
            "keys_changed FROM ("
            "SELECT table_name, run_id, rows_after, loaded_at, keys_added, keys_removed, "
            "keys_changed, ROW_NUMBER() OVER "
            "(PARTITION BY table_name ORDER BY loaded_at DESC) AS newest "
            f"FROM {warehouse.table(AUDIT_SCHEMA, 'load_ledger')}"
            f") recent WHERE newest <= {limit}"
        )
    }
    tests = {
        (table, run_id): (int(passed), int(failed), int(warned))
        for table, run_id, passed, failed, warned in warehouse.query(
            "SELECT table_name, run_id, passed, failed, warned FROM ("
            "SELECT table_name, run_id, "
            "SUM(CASE WHEN status = 'pass' THEN 1 ELSE 0 END) AS passed, "
            "SUM(CASE WHEN status <> 'pass' AND severity = 'error' THEN 1 ELSE 0 END) AS failed, "
            "SUM(CASE WHEN status <> 'pass' AND severity <> 'error' THEN 1 ELSE 0 END) AS warned, "
            "ROW_NUMBER() OVER (PARTITION BY table_name ORDER BY MAX(executed_at) DESC) "
            f"AS newest FROM {warehouse.table(AUDIT_SCHEMA, 'data_quality_tests')} "
            f"GROUP BY table_name, run_id) recent WHERE newest <= {limit}"
        )
    }
    history: dict[str, list[dict[str, Any]]] = {}
    for table, run_id, finished, failures, error_type, validated, stale in sorted(
        runs, key=lambda r: (r[0], r[2])
    ):
        rows, _, changes = published.get((table, run_id), (None, None, None))
        passed, failed, warned = tests.get((table, run_id), (0, 0, 0))
        history.setdefault(table, []).append(
            {
                "run_id": run_id,
                "finished": finished,
                "status": _run_status(int(failures), error_type, int(validated), int(stale)),
                "published": rows is not None,
                "rows": None if rows is None else int(rows),
                "changes": changes,
                "tests_passed": passed,
                "tests_failed": failed,
                "tests_warned": warned,
            }
        )
    return history
