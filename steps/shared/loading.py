"""What the load step and a table group's publish (steps.group) share: a config's ledger
entry, its target table, its before-publish tests as a gate, and the load's result."""

from __future__ import annotations

import datetime as dt
from typing import Any

from steps.shared.checks import learned
from steps.shared.checks.registry import CheckContext, errored, failed_checks, run_check
from steps.shared.config.table import TableSpec
from steps.shared.errors import QualityCheckFailed
from steps.shared.warehouse.base import (
    VALID_TO,
    BeforePublish,
    ChangeSet,
    LedgerEntry,
    PublishResult,
    TargetTable,
    UserSqlAbortedPublish,
    Warehouse,
)


def ledger_entry(spec: TableSpec, payload: dict[str, Any]) -> LedgerEntry:
    """What the ledger row of this publish says: which file, which content, which config."""
    config = spec.config
    return LedgerEntry(
        run_id=payload["run_id"],
        table_name=config.table_name,
        target=config.target,
        source_uri=payload.get("source", ""),
        source_version=payload.get("source_version", ""),
        content_hash=payload["content_hash"],
        config_hash=payload.get("config_hash") or spec.config_hash,
        curated_uri=payload["curated_uri"],
        # `handler rollback` re-publishes an earlier run's curated file (replace tables).
        load_mode="rollback" if payload.get("rollback_to") else config.mode,
        source_modified_at=_timestamp(payload.get("source_modified_at")),
    )


def _timestamp(text: str | None) -> dt.datetime | None:
    """An ISO time from the payload as the ledger keeps it: UTC, without a zone."""
    if not text:
        return None
    value = dt.datetime.fromisoformat(text)
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def target_table(spec: TableSpec) -> TargetTable:
    config = spec.config
    return TargetTable(
        schema=config.redshift_schema,
        name=config.target_table,
        mapping=spec.mapping,
        key=config.primary_key,
        # scd2 on Redshift: most queries ask for the current rows (valid_to IS NULL), then
        # by key; sorted so, their zone maps skip the closed versions.
        sort_key=config.redshift_sort_key
        or ([VALID_TO, *config.primary_key] if config.strategy.history else []),
        dist_key=config.redshift_dist_key,
        allow_new_columns=config.allow_new_columns,
        history=config.strategy.history,
    )


def before_publish_gate(
    spec: TableSpec, payload: dict[str, Any], checks: list[dict[str, Any]]
) -> BeforePublish | None:
    """The config's before_publish tests as a gate for the publish transaction, or None.

    Each result is appended to `checks`; an error-severity failure raises, which rolls
    the publish back.
    """
    config = spec.config
    tests = [t for t in config.quality_tests if t.when == "before_publish"]
    if not tests:
        return None
    # Tests whose SQL failed inside an earlier attempt of this publish, where the failure
    # aborted the transaction (`UserSqlAbortedPublish`): their result, not run again.
    aborted: dict[str, dict[str, Any]] = {}

    def gate(
        warehouse: Warehouse, rows_before: int, rows_staged: int, changes: ChangeSet | None
    ) -> None:
        ctx = CheckContext(
            warehouse=warehouse,
            target=warehouse.checked_relation(
                config.redshift_schema, config.target_table, config.strategy.history
            ),
            table=warehouse.table(config.redshift_schema, config.target_table),
            rows_written=payload.get("rows_written", rows_staged),
            rows_loaded=rows_staged,
            rows_before=rows_before,
            load_mode=config.mode,
            changes=changes,
            history=learned.history(warehouse, config.target, payload["run_id"], tests),
        )
        checks.clear()  # a publish again after an aborted one runs every test again
        for test in tests:
            if test.test_name in aborted:
                checks.append(aborted[test.test_name])
                continue
            try:
                checks.append(run_check(ctx, test))
            except UserSqlAbortedPublish as error:
                aborted[test.test_name] = errored(test, error.error.message)
                raise
        failed = failed_checks(checks)
        if failed:
            names = ", ".join(f"{c['name']} (observed {c['observed']})" for c in failed)
            raise QualityCheckFailed(
                f"before-publish test(s) failed, nothing was published: {names}",
                table=config.table_name,
                details={"checks": checks},
            )

    return gate


def summary(
    spec: TableSpec, entry: LedgerEntry, result: PublishResult, checks: list[dict[str, Any]]
) -> dict[str, Any]:
    """The step's result: counts and pointers only (it travels in the state machine)."""
    return {
        "table": spec.config.table_name,
        "run_id": entry.run_id,
        "target": entry.target,
        "load_mode": entry.load_mode,
        "target_created": result.target_created,
        "published": result.published,
        "skipped_reason": result.skipped_reason,
        "stale": result.stale,
        # A skipped replay loaded nothing; rows_in_target says what is there.
        "rows_loaded": result.rows_loaded,
        "rows_before": result.rows_before,
        "rows_after": result.rows_after,
        "rows_in_target": result.rows_after,
        # Counts only: the sample keys are in the ledger row (change_samples).
        "changes": result.changes.counts() if result.changes else None,
        "checks_before_publish": checks,
    }
