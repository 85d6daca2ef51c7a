"""load: curated Parquet -> staging table -> target, in one transaction with the ledger.

`before_publish` quality tests run inside that transaction, on the table as it is about
to be published; an error-severity failure rolls the whole publish back.
"""

from __future__ import annotations

from typing import Any

from steps.checks import CheckContext, failed_checks, run_check
from steps.errors import QualityCheckFailed
from steps.table import load_table_config
from steps.warehouse import open_warehouse
from steps.warehouse.base import LedgerEntry, Warehouse


def run(payload: dict[str, Any]) -> dict[str, Any]:
    spec = load_table_config(payload["config"], mapping_override=payload.get("mapping"))
    config = spec.config
    curated_uri = payload["curated_uri"]
    entry = LedgerEntry(
        run_id=payload["run_id"],
        table_name=config.table_name,
        target=config.target,
        source_uri=payload.get("source", ""),
        source_version=payload.get("source_version", ""),
        content_hash=payload["content_hash"],
        config_hash=payload.get("config_hash") or spec.config_hash,
        curated_uri=curated_uri,
        load_mode=config.mode,
    )
    tests = [t for t in config.quality_tests if t.when == "before_publish"]
    checks: list[dict[str, Any]] = []

    def before_publish(warehouse: Warehouse, rows_before: int, rows_staged: int) -> None:
        ctx = CheckContext(
            warehouse=warehouse,
            target=warehouse.table(config.redshift_schema, config.target_table),
            rows_written=payload.get("rows_written", rows_staged),
            rows_loaded=rows_staged,
            rows_before=rows_before,
            load_mode=config.mode,
        )
        checks.extend(run_check(ctx, test) for test in tests)
        failed = failed_checks(checks)
        if failed:
            names = ", ".join(f"{c['name']} (observed {c['observed']})" for c in failed)
            raise QualityCheckFailed(
                f"before-publish test(s) failed, nothing was published: {names}",
                table=config.table_name,
                details={"checks": checks},
            )

    with open_warehouse(payload.get("warehouse")) as warehouse:
        warehouse.check_curated_uri(curated_uri)
        warehouse.ensure_audit_tables()
        created = warehouse.ensure_target(
            config.redshift_schema,
            config.target_table,
            spec.mapping,
            sort_key=config.redshift_sort_key,
            dist_key=config.redshift_dist_key,
            allow_new_columns=config.allow_new_columns,
        )
        try:
            result = warehouse.publish(
                entry,
                config.redshift_schema,
                config.target_table,
                spec.mapping,
                config.primary_key,
                before_publish=before_publish if tests else None,
            )
        finally:
            # After the publish transaction, so a rolled-back publish keeps its audit rows.
            warehouse.record_checks(payload["run_id"], config.table_name, checks)
    return {
        "table": config.table_name,
        "run_id": payload["run_id"],
        "target": config.target,
        "load_mode": config.mode,
        "target_created": created,
        "published": result.published,
        "skipped_reason": result.skipped_reason,
        "rows_loaded": result.rows_loaded,
        "rows_before": result.rows_before,
        "rows_after": result.rows_after,
        "checks_before_publish": checks,
    }
