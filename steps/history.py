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
            f"SELECT rows_loaded, load_mode FROM {warehouse.table(AUDIT_SCHEMA, 'load_ledger')} "
            "WHERE run_id = %s",
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
                "status": "failed" if failed or test_failed else "passed",
                "steps": [
                    {"step": s[0], "status": s[1], "error_type": s[2], "error": s[3]} for s in steps
                ],
                "rows_published": published[0][0] if published else None,
                "load_mode": published[0][1] if published else None,
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
