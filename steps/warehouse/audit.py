"""The audit store: etl_audit's tables, the load ledger, test results and the run log."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from steps.errors import (
    truncate_bytes,
)
from steps.secrets import redact, redact_value
from steps.warehouse.changes import (
    ChangeDetection,
    ChangeSet,
)
from steps.warehouse.client import (
    ADDED_CONCURRENTLY,
    utcnow,
)
from steps.warehouse.modes import MODES
from steps.warehouse.modes.scd2 import VALID_TO

if TYPE_CHECKING:
    from steps.config import LedgerMode

log = structlog.get_logger("refload")

AUDIT_SCHEMA = "etl_audit"
# What an audit column holds, in bytes: Redshift's VARCHAR(n) counts bytes, PostgreSQL's
# characters, so a byte bound fits both.
SHORT_TEXT_BYTES = 1024
LONG_TEXT_BYTES = 65535


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
        # stale (see `Warehouse._stale`).
        "source_modified_at": "TIMESTAMP",
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


class AuditStore(ChangeDetection):
    """etl_audit: its tables, the load ledger, test results and the run log."""

    def ensure_audit_tables(self, *also: tuple[str, str]) -> None:
        """Create the audit schema and tables that are missing.

        `also`: tables whose columns the caller will need, read in the same catalog query.
        Two first runs may create them at the same moment: the one that loses the race
        finds them made and goes on (`_create_missing`).
        """
        if self._audit_tables_ready:  # once per warehouse object, even when shared by steps
            return
        audit = [(AUDIT_SCHEMA, name) for name in AUDIT_TABLES]
        found = self.columns_of([*audit, *also])
        if not all(found[t] for t in audit) and not self.schema_exists(AUDIT_SCHEMA):
            self._create_missing(f"CREATE SCHEMA IF NOT EXISTS {self.quote(AUDIT_SCHEMA)}")
        for name, columns in AUDIT_TABLES.items():
            existing = found[(AUDIT_SCHEMA, name)]
            added = AUDIT_COLUMNS_ADDED.get(name, {})
            if not existing or any(column not in existing for column in added):
                self.forget(AUDIT_SCHEMA, name)
            if not existing:
                columns += "".join(f",\n        {c} {kind}" for c, kind in added.items())
                self._create_missing(
                    f"CREATE TABLE IF NOT EXISTS {self.table(AUDIT_SCHEMA, name)} ({columns})"
                )
                continue
            for column, kind in added.items():
                if column not in existing:  # a table an earlier version made
                    self._create_missing(
                        f"ALTER TABLE {self.table(AUDIT_SCHEMA, name)} ADD COLUMN "
                        f"{self.quote(column)} {kind}",
                        ADDED_CONCURRENTLY,
                    )
        self._audit_tables_ready = True

    def last_publish(self, target: str) -> LedgerRow | None:
        """The latest ledger row of a target."""
        rows = self.query(
            f"SELECT run_id, content_hash, config_hash, rows_after, source_modified_at FROM "
            f"{self.table(AUDIT_SCHEMA, 'load_ledger')} WHERE target = %s "
            "ORDER BY loaded_at DESC LIMIT 1",
            (target,),
        )
        if not rows:
            return None
        run_id, content_hash, config_hash, rows_after, modified_at = rows[0]
        modified = None if modified_at is None else _naive(modified_at)
        return LedgerRow(run_id, content_hash, config_hash, int(rows_after), modified)

    def target_state(self, entry: LedgerEntry, ref: str, history: bool) -> TargetState:
        """ONE query: the target's rows, its latest ledger row, and the run that already
        published this content with this config (`already_published`'s rule)."""
        return self.read_state(entry, self.query(*self.state_query(entry, ref, history))[0])

    def state_query(self, entry: LedgerEntry, ref: str, history: bool) -> tuple[str, list[Any]]:
        """The one-row query `target_state` runs (`read_state` reads its STATE_COLUMNS)."""
        q, ledger = self.quote, self.table(AUDIT_SCHEMA, "load_ledger")
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
        text = self.scalar(
            f"SELECT change_samples FROM {self.table(AUDIT_SCHEMA, 'load_ledger')} "
            "WHERE run_id = %s AND target = %s ORDER BY loaded_at DESC LIMIT 1",
            (run_id, target),
        )
        samples = json.loads(text) if text else {}
        return ChangeSet(counts["added"], counts["removed"], counts["changed"], samples)

    def already_published(self, entry: LedgerEntry) -> str | None:
        """The run that already published this content with this config, if any.

        Replace and scd2: only the latest publish counts (loading an older file again is a
        legitimate roll-back, or new versions). Append and upsert: any earlier publish counts.
        """
        if MODES[entry.load_mode].replaces:
            latest = self.last_publish(entry.target)
            same = latest and (latest.content_hash, latest.config_hash) == (
                entry.content_hash,
                entry.config_hash,
            )
            return latest.run_id if latest and same else None
        rows = self.query(
            f"SELECT run_id FROM {self.table(AUDIT_SCHEMA, 'load_ledger')} WHERE target = %s "
            "AND content_hash = %s AND config_hash = %s ORDER BY loaded_at DESC LIMIT 1",
            (entry.target, entry.content_hash, entry.config_hash),
        )
        return rows[0][0] if rows else None

    def write_ledger(
        self,
        entry: LedgerEntry,
        rows_loaded: int,
        before: int,
        after: int,
        changes: ChangeSet | None = None,
        loaded_at: dt.datetime | None = None,
    ) -> None:
        self.execute(
            f"INSERT INTO {self.table(AUDIT_SCHEMA, 'load_ledger')} (run_id, table_name, target, "
            "source_uri, source_version, content_hash, config_hash, curated_uri, load_mode, "
            "rows_loaded, rows_before, rows_after, loaded_at, keys_added, keys_removed, "
            "keys_changed, change_samples, source_modified_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
            ),
        )

    def insert_rows(self, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        """Audit rows into one etl_audit table: one multi-row INSERT per INSERT_BATCH_ROWS."""
        for start in range(0, len(rows), INSERT_BATCH_ROWS):
            batch = rows[start : start + INSERT_BATCH_ROWS]
            marks = "(" + ", ".join(["%s"] * len(batch[0])) + ")"
            self.execute(
                f"INSERT INTO {self.table(AUDIT_SCHEMA, table)} ({columns}) VALUES "
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
                    # logs and alert subjects carry 2 KiB of it (steps.errors.MESSAGE_BYTES).
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

    def step_error(self, run_id: str, step: str) -> str | None:
        """The full error text a failed step of this run left in etl_audit.run_log."""
        rows = self.query(
            f"SELECT error_message FROM {self.table(AUDIT_SCHEMA, 'run_log')} "
            "WHERE run_id = %s AND step = %s AND status = 'failed' "
            "ORDER BY logged_at DESC LIMIT 1",
            (run_id, step),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None


def _naive(value: Any) -> dt.datetime:
    """A timestamp as the ledger's TIMESTAMP columns hold it: UTC without a zone (drivers
    may hand back an ISO string or an aware value)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    assert isinstance(value, dt.datetime)
    return value


def _samples_json(samples: dict[str, list[dict[str, Any]]]) -> str:
    text = json.dumps(samples, default=str)
    if len(text) > 65_000:  # the column's limit: keys only
        text = json.dumps({k: [{"key": s["key"]} for s in v] for k, v in samples.items()})
    if len(text) > 65_000:
        # Keys too wide even alone: no samples rather than JSON cut mid-document, which
        # every reader of the ledger row (validate's changes_within) would fail to parse.
        text = json.dumps({k: [] for k in samples})
    return text


def _text(value: Any, max_bytes: int) -> str | None:
    return None if value is None else truncate_bytes(redact(str(value)), max_bytes)


def _shorten_strings(value: Any, max_bytes: int) -> Any:
    if isinstance(value, str):
        return truncate_bytes(value, max_bytes)
    if isinstance(value, dict):
        return {k: _shorten_strings(v, max_bytes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shorten_strings(v, max_bytes) for v in value]
    return value


def audit_json(details: Any, long_text: tuple[str, str] | None = None) -> str:
    """JSON for an audit `details` column: credentials masked, long values cut, and at most
    LONG_TEXT_BYTES, still valid JSON (with a visible marker where anything was cut).

    `long_text` (key, text): one top-level value kept in the room the others leave."""
    value = _shorten_strings(redact_value(json.loads(json.dumps(details, default=str))), 1024)
    if long_text and isinstance(value, dict):
        key, full = long_text[0], redact(long_text[1])
        value.pop(key, None)
        room = LONG_TEXT_BYTES - len(json.dumps(value, ensure_ascii=False).encode()) - 16
        room -= len(json.dumps(key, ensure_ascii=False).encode())
        kept, limit = truncate_bytes(full, room), room
        while len(json.dumps(kept, ensure_ascii=False).encode()) > room:
            # JSON escapes (quotes, control characters) make the text longer: cut more.
            encoded = len(json.dumps(kept, ensure_ascii=False).encode())
            limit = limit * room // encoded - 64
            kept = truncate_bytes(full, max(limit, 0))
            if limit <= 0:
                break
        value[key] = kept
    text = json.dumps(value, ensure_ascii=False)
    size = len(text.encode())
    head_bytes = LONG_TEXT_BYTES // 2  # the head is a JSON string: escaping may double it
    while size > LONG_TEXT_BYTES:
        cut = {"truncated": f"…(truncated, {size} bytes)", "head": text[:head_bytes]}
        text = json.dumps(cut, ensure_ascii=False)
        size, head_bytes = len(text.encode()), head_bytes // 2
    return text
