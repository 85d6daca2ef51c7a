"""validate: run the table's after-publish tests, one audit row each; when they pass,
close what the table's earlier failures opened (steps.shared.alerts.recovery)."""

from __future__ import annotations

from typing import Any

from steps.shared.alerts.recovery import on_success
from steps.shared.checks import learned
from steps.shared.checks.registry import CheckContext, failed_checks, run_check, scan_target
from steps.shared.checks.status import passed
from steps.shared.config.table import load_table_config
from steps.shared.warehouse import open_warehouse


def run(payload: dict[str, Any]) -> dict[str, Any]:
    spec = load_table_config(payload["config"], mapping_override=payload.get("mapping"))
    config = spec.config
    tests = [t for t in config.quality_tests if t.when == "after_publish"]
    with open_warehouse(payload.get("warehouse")) as warehouse:
        warehouse.ensure_audit_tables()
        ctx = CheckContext(
            warehouse=warehouse,
            target=warehouse.checked_relation(
                config.redshift_schema, config.target_table, config.strategy.history
            ),
            table=warehouse.table(config.redshift_schema, config.target_table),
            rows_written=payload.get("rows_written"),
            rows_loaded=payload.get("rows_loaded"),
            rows_before=payload.get("rows_before"),
            load_mode=config.mode,
            published=payload.get("published"),
            # Known unique only for rows this run's ingest checked: not a rollback's file.
            primary_key=tuple(config.primary_key) if payload.get("load_mode") == "truncate" else (),
            # The samples in the ledger row: only a test of the change set reads them.
            changes=warehouse.published_changes(
                payload["run_id"], config.target, payload.get("changes")
            )
            if any(t.type == "changes_within" for t in tests)
            else None,
            # One ledger read, only when a test learns its bounds (`"auto": true`).
            history=learned.history(warehouse, config.target, payload["run_id"], tests),
        )
        scan_target(ctx, tests)  # one pass over the target for the tests that count rows
        checks = [run_check(ctx, test) for test in tests]
        warehouse.record_checks(payload["run_id"], config.table_name, checks)
        # The summary lists every test of the run: those load ran before publishing first
        # (at most 20 of them travel in the state; their counts beside them).
        before = list(payload.get("checks_before_publish") or [])
        totals = {
            "checks_total": (payload.get("checks_before_publish_total") or len(before))
            + len(checks),
            "checks_failed": (payload.get("checks_before_publish_failed") or _failing(before))
            + _failing(checks),
        }
        checks = before + checks
        validation = "failed" if failed_checks(checks) else "passed"
        recovered = None
        if validation == "passed":
            recovered = on_success(warehouse, {**payload, "table": config.table_name})
    return {
        "table": config.table_name,
        "run_id": payload["run_id"],
        "validation": validation,
        "checks": checks,
        **totals,
        "recovered": recovered,
    }


def _failing(checks: list[dict[str, Any]]) -> int:
    return sum(not passed(c) for c in checks)
