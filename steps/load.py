"""load: curated Parquet -> staging table -> target, in one transaction with the ledger.

`before_publish` quality tests run inside that transaction, on the table as it is about
to be published; an error-severity failure rolls the whole publish back (the target's
creation included, on a first load).
"""

from __future__ import annotations

from typing import Any

import structlog

from steps.shared.checks.custom_sql import refuse_unsafe_gates
from steps.shared.config.table import load_table_config
from steps.shared.loading import before_publish_gate, ledger_entry, summary, target_table
from steps.shared.warehouse import open_warehouse
from steps.shared.warehouse.base import UserSqlAbortedPublish

log = structlog.get_logger("refload")


def run(payload: dict[str, Any]) -> dict[str, Any]:
    spec = load_table_config(payload["config"], mapping_override=payload.get("mapping"))
    if payload.get("execution_id") and not payload.get("rollback_to"):
        # On AWS a group member's file arrives alone: held for its group (steps.group).
        from steps.group import arrival

        grouped = arrival(spec, payload)
        if grouped is not None:
            return grouped
    entry = ledger_entry(spec, payload)
    target = target_table(spec)
    checks: list[dict[str, Any]] = []
    gate = before_publish_gate(spec, payload, checks)
    with open_warehouse(payload.get("warehouse")) as warehouse:
        warehouse.check_curated_uri(entry.curated_uri)
        refuse_unsafe_gates(spec.config, warehouse, spec.config_uri)
        warehouse.check_names(target)  # before the audit tables are touched
        # The target's catalog entry in the same lookup as the audit tables'.
        warehouse.ensure_audit_tables((target.schema, target.name))
        try:
            while True:
                try:
                    result = warehouse.publish(
                        entry, target, gate, force=bool(payload.get("force"))
                    )
                    break
                except UserSqlAbortedPublish as aborted:
                    # Rolled back; the gate keeps the test's error and does not run it again.
                    log.info(
                        "custom SQL failed inside the publish; publishing again",
                        table=spec.config.table_name,
                        error=aborted.error.reason,
                    )
        finally:
            # After the publish transaction, so a rolled-back publish keeps its audit rows.
            warehouse.record_checks(entry.run_id, spec.config.table_name, checks)
    if result.stale:  # the run's one line about it: no alert, the state machine ends here
        log.warning("stale file not published", target=entry.target, reason=result.skipped_reason)
    return summary(spec, entry, result, checks)
