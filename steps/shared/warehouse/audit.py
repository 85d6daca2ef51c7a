"""The audit store: etl_audit's tables, the load ledger, test results and the run log."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from steps.shared.warehouse.audit_values import (
    LONG_TEXT_BYTES,
    SHORT_TEXT_BYTES,
    _naive,
    _samples_json,
    _text,
    audit_json,
)
from steps.shared.warehouse.catalog import Catalog
from steps.shared.warehouse.changes import ChangeSet
from steps.shared.warehouse.client import ADDED_CONCURRENTLY, SqlClient, utcnow
from steps.shared.warehouse.modes import MODES
from steps.shared.warehouse.modes.scd2 import VALID_TO

if TYPE_CHECKING:
    from steps.shared.config.model import LedgerMode

log = structlog.get_logger("refload")

AUDIT_SCHEMA = "etl_audit"


AUDIT_TABLES = {
    "load_ledger": """
        run_id VARCHAR(128) NOT NULL,
        table_name VARCHAR(256) NOT NULL,
        target VARCHAR(512) NOT NULL,
        source_uri VARCHAR(2048),
        source_version VARCHAR(1024),
        content_hash VARCHAR(64) NOT NULL,
        config_hash VARCHAR(64) NOT NULL,
        curated_uri VARCHAR(2048),
        load_mode VARCHAR(16) NOT NULL,
        rows_loaded BIGINT NOT NULL,
        rows_before BIGINT NOT NULL,
        rows_after BIGINT NOT NULL,
        loaded_at TIMESTAMP NOT NULL""",
    "data_quality_tests": """
        run_id VARCHAR(128) NOT NULL,
        table_name VARCHAR(256) NOT NULL,
        test_name VARCHAR(256) NOT NULL,
        test_type VARCHAR(64) NOT NULL,
        severity VARCHAR(16) NOT NULL,
        status VARCHAR(16) NOT NULL,
        observed_value VARCHAR(1024),
        expected VARCHAR(1024),
        details VARCHAR(65535),
        executed_at TIMESTAMP NOT NULL""",
    "run_log": """
        run_id VARCHAR(128) NOT NULL,
        table_name VARCHAR(256),
        step VARCHAR(16) NOT NULL,
        status VARCHAR(16) NOT NULL,
        error_type VARCHAR(128),
        error_message VARCHAR(65535),
        source_uri VARCHAR(2048),
        details VARCHAR(65535),
        logged_at TIMESTAMP NOT NULL""",
}


# Columns added to an audit table after its first release: created with the table, and
# added (ALTER TABLE ADD COLUMN) to one an earlier version made. Nullable: old rows have none.
AUDIT_COLUMNS_ADDED = {
    "load_ledger": {
        "keys_added": "BIGINT",
        "keys_removed": "BIGINT",
        "keys_changed": "BIGINT",
        "change_samples": "VARCHAR(65535)",
        # The published file's LastModified (a local file's mtime): a later, older file is
        # stale (see `Publisher._skipped`).
        "source_modified_at": "TIMESTAMP",
        # The group run that published this row with its group's other members, if any.
        "group_run_id": "VARCHAR(128)",
    },
}


@dataclass(frozen=True)
class LedgerEntry:
    run_id: str
    table_name: str
    target: str
    source_uri: str
    source_version: str
    content_hash: str
    config_hash: str
    curated_uri: str
    load_mode: LedgerMode
    source_modified_at: dt.datetime | None = None
    group_run_id: str | None = None


@dataclass(frozen=True)
class LedgerRow:
    run_id: str
    content_hash: str
    config_hash: str
    rows_after: int
    source_modified_at: dt.datetime | None = None


@dataclass(frozen=True)
class TargetState:
    """A target as a publish finds it under its lock."""

    rows: int  # its rows (a history table's current versions)
    latest: LedgerRow | None  # its last ledger row
    published_by: str | None  # the run that already published this file, if any


# Columns of `state_query`'s row.
STATE_COLUMNS = 7
# Audit rows per INSERT: a step's rows go in one statement (a run's checks are far fewer).
INSERT_BATCH_ROWS = 500


class AuditStore:
    """etl_audit: its tables, the load ledger, test results and the run log. With
    `AuditReads`, the only code that reads or writes etl_audit; it works through the
    session's SQL client and the catalog (which tables exist, creating them)."""

    def __init__(self, sql: SqlClient, catalog: Catalog) -> None:
        self.sql = sql
        self.catalog = catalog
        self._audit_tables_ready = False

    def ensure_audit_tables(self, *also: tuple[str, str]) -> None:
        """Create the audit schema and tables that are missing.

        `also`: tables whose columns the caller will need, read in the same catalog query.
        Two first runs may create them at the same moment: the one that loses the race
        finds them made and goes on (`create_missing`).
        """
        if self._audit_tables_ready:  # once per warehouse object, even when shared by steps
            return
        audit = [(AUDIT_SCHEMA, name) for name in AUDIT_TABLES]
        found = self.catalog.columns_of([*audit, *also])
        if not all(found[t] for t in audit) and not self.catalog.schema_exists(AUDIT_SCHEMA):
            schema = self.sql.quote(AUDIT_SCHEMA)
            self.catalog.create_missing(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name, columns in AUDIT_TABLES.items():
            existing = found[(AUDIT_SCHEMA, name)]
            added = AUDIT_COLUMNS_ADDED.get(name, {})
            if not existing or any(column not in existing for column in added):
                self.catalog.forget(AUDIT_SCHEMA, name)
            if not existing:
                columns += "".join(f",\n        {c} {kind}" for c, kind in added.items())
                self.catalog.create_missing(
                    f"CREATE TABLE IF NOT EXISTS {self.sql.table(AUDIT_SCHEMA, name)} ({columns})"
                )
                continue
            for column, kind in added.items():
                if column not in existing:  # a table an earlier version made
                    self.catalog.create_missing(
                        f"ALTER TABLE {self.sql.table(AUDIT_SCHEMA, name)} ADD COLUMN "
                        f"{self.sql.quote(column)} {kind}",
                        ADDED_CONCURRENTLY,
                    )
        self._audit_tables_ready = True

    def target_state(self, entry: LedgerEntry, ref: str, history: bool) -> TargetState:
        """ONE query: the target's rows, its latest ledger row, and the run that already
        published this content with this config: in a mode that replaces the rows only the
        latest publish counts (an older file again is a roll-back), in others any earlier one."""
        return self.read_state(entry, self.sql.query(*self.state_query(entry, ref, history))[0])

    def state_query(self, entry: LedgerEntry, ref: str, history: bool) -> tuple[str, list[Any]]:
        """The one-row query `target_state` runs (`read_state` reads its STATE_COLUMNS)."""
        q, ledger = self.sql.quote, self.sql.table(AUDIT_SCHEMA, "load_ledger")
        current = f" WHERE {q(VALID_TO)} IS NULL" if history else ""
        replaces = MODES[entry.load_mode].replaces
        sql = (
            f"SELECT c.n, l.run_id, l.content_hash, l.config_hash, l.rows_after, "
            f"l.source_modified_at, {'NULL' if replaces else 'p.run_id'} AS same_run "
            f"FROM (SELECT COUNT(*) AS n FROM {ref}{current}) c "
            "LEFT JOIN (SELECT run_id, content_hash, config_hash, rows_after, "
            f"source_modified_at FROM {ledger} WHERE target = %s "
            "ORDER BY loaded_at DESC LIMIT 1) l ON 1 = 1"
        )
        params: list[Any] = [entry.target]
        if not replaces:  # any earlier publish of the file counts
            sql += (
                f" LEFT JOIN (SELECT run_id FROM {ledger} WHERE target = %s AND content_hash = %s "
                "AND config_hash = %s ORDER BY loaded_at DESC LIMIT 1) p ON 1 = 1"
            )
            params += [entry.target, entry.content_hash, entry.config_hash]
        return sql, params

    def read_state(self, entry: LedgerEntry, row: Sequence[Any]) -> TargetState:
        rows, run_id, content_hash, config_hash, rows_after, modified, same = row[:STATE_COLUMNS]
        latest = None
        if run_id is not None:
            at = None if modified is None else _naive(modified)
            latest = LedgerRow(run_id, content_hash, config_hash, int(rows_after), at)
        if MODES[entry.load_mode].replaces:  # only the latest publish counts
            hashes = (entry.content_hash, entry.config_hash)
            same = latest.run_id if latest and (content_hash, config_hash) == hashes else None
        return TargetState(int(rows), latest, same)

    def published_changes(
        self, run_id: str, target: str, counts: dict[str, int] | None
    ) -> ChangeSet | None:
        """A run's change set of one target after its publish: the counts it reported, the
        samples its ledger row keeps. None when the run published none. By target too: one
        run id may publish several tables (`--run-id`, a replayed event)."""
        if not counts:
            return None
        text = self.sql.scalar(
            f"SELECT change_samples FROM {self.sql.table(AUDIT_SCHEMA, 'load_ledger')} "
            "WHERE run_id = %s AND target = %s ORDER BY loaded_at DESC LIMIT 1",
            (run_id, target),
        )
        samples = json.loads(text) if text else {}
        return ChangeSet(counts["added"], counts["removed"], counts["changed"], samples)

    def write_ledger(
        self,
        entry: LedgerEntry,
        rows_loaded: int,
        before: int,
        after: int,
        changes: ChangeSet | None = None,
        loaded_at: dt.datetime | None = None,
    ) -> None:
        ledger = self.sql.table(AUDIT_SCHEMA, "load_ledger")
        self.sql.execute(
            f"INSERT INTO {ledger} (run_id, table_name, target, "
            "source_uri, source_version, content_hash, config_hash, curated_uri, load_mode, "
            "rows_loaded, rows_before, rows_after, loaded_at, keys_added, keys_removed, "
            "keys_changed, change_samples, source_modified_at, group_run_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                entry.run_id,
                entry.table_name,
                entry.target,
                entry.source_uri,
                entry.source_version,
                entry.content_hash,
                entry.config_hash,
                entry.curated_uri,
                entry.load_mode,
                rows_loaded,
                before,
                after,
                loaded_at or utcnow(),
                changes and changes.added,
                changes and changes.removed,
                changes and changes.changed,
                changes and _samples_json(changes.samples),
                entry.source_modified_at,
                entry.group_run_id,
            ),
        )

    def insert_rows(self, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        """Audit rows into one etl_audit table: one multi-row INSERT per INSERT_BATCH_ROWS."""
        for start in range(0, len(rows), INSERT_BATCH_ROWS):
            batch = rows[start : start + INSERT_BATCH_ROWS]
            marks = "(" + ", ".join(["%s"] * len(batch[0])) + ")"
            self.sql.execute(
                f"INSERT INTO {self.sql.table(AUDIT_SCHEMA, table)} ({columns}) VALUES "
                + ", ".join([marks] * len(batch)),
                [value for row in batch for value in row],
            )

    def record_checks(self, run_id: str, table_name: str, results: list[dict[str, Any]]) -> None:
        """A step's test results: one statement, so all of them or none."""
        now = utcnow()
        rows = [
            (
                run_id,
                table_name,
                _text(r["name"], 256),  # the column's bytes: a long name is cut
                r["type"],
                r["severity"],
                r["status"],
                _text(r["observed"], SHORT_TEXT_BYTES),
                _text(r["expected"], SHORT_TEXT_BYTES),
                audit_json(r["details"]),
                now,
            )
            for r in results
        ]
        if rows:
            self.insert_rows(
                "data_quality_tests",
                "run_id, table_name, test_name, test_type, severity, status, observed_value, "
                "expected, details, executed_at",
                rows,
            )

    def record_step(
        self,
        run_id: str,
        table_name: str | None,
        step: str,
        status: str,
        error: dict[str, str] | None,
        source_uri: str | None,
        details: dict[str, Any],
    ) -> None:
        self.record_steps(
            [
                {
                    "run_id": run_id,
                    "table_name": table_name,
                    "step": step,
                    "status": status,
                    "error": error,
                    "source_uri": source_uri,
                    "details": details,
                }
            ]
        )

    def record_steps(self, steps: list[dict[str, Any]]) -> None:
        """run_log rows (each as `record_step` takes it), in one statement."""
        rows = []
        for row in steps:
            error = row["error"]
            rows.append(
                (
                    row["run_id"],
                    row["table_name"],
                    row["step"],
                    row["status"],
                    error and _text(error["type"], 128),
                    error and _text(error["message"], LONG_TEXT_BYTES),
                    row["source_uri"],
                    # A failed step's full error text (up to 64 KiB) also in details: payloads,
                    # logs and alert subjects carry 2 KiB of it (steps.shared.errors.MESSAGE_BYTES).
                    audit_json(
                        row["details"], long_text=("error", error["message"]) if error else None
                    ),
                    utcnow(),
                )
            )
        if rows:
            self.insert_rows(
                "run_log",
                "run_id, table_name, step, status, error_type, error_message, source_uri, "
                "details, logged_at",
                rows,
            )
