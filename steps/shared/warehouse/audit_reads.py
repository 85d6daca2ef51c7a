"""What the handlers read back from etl_audit: failures, freshness, rollbacks, history.

With `audit`, the only code that reads or writes etl_audit's tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from steps.shared.warehouse.audit import AUDIT_SCHEMA
from steps.shared.warehouse.client import SqlClient
from steps.shared.warehouse.modes import MODES


class AuditReads:
    """etl_audit read back: by recovery, freshness, rollback, history and status, through
    the session's SQL client."""

    def __init__(self, sql: SqlClient) -> None:
        self.sql = sql

    def recent_failures(
        self, table: str, run_id: str, ignored_errors: Sequence[str]
    ) -> list[tuple[str, int, int]]:
        """This run and the table's run before it (run_log): (run id, failed rows, failed
        rows whose error is not one of `ignored_errors`), this run first."""
        ignored = ", ".join(self.sql.literal(name) for name in ignored_errors) or "''"
        rows = self.sql.query(
            "SELECT run_id, SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN status = 'failed' AND COALESCE(error_type, '') NOT IN "
            f"({ignored}) THEN 1 ELSE 0 END) "
            f"FROM {self.sql.table(AUDIT_SCHEMA, 'run_log')} WHERE table_name = %s "
            "GROUP BY run_id "
            "ORDER BY CASE WHEN run_id = %s THEN 0 ELSE 1 END, MAX(logged_at) DESC LIMIT 2",
            (table, run_id),
        )
        return [(str(r[0]), int(r[1] or 0), int(r[2] or 0)) for r in rows]

    def last_received(self) -> dict[str, dt.datetime]:
        """Per table, the last time it received a file: published (a mode that takes no
        new file, a rollback, does not count) or skipped as unchanged."""
        fresh = ", ".join(self.sql.literal(m) for m, mode in MODES.items() if mode.configurable)
        rows = self.sql.query(
            f"SELECT table_name, MAX(loaded_at) FROM {self.sql.table(AUDIT_SCHEMA, 'load_ledger')} "
            f"WHERE load_mode IN ({fresh}) GROUP BY table_name UNION ALL "
            f"SELECT table_name, MAX(logged_at) FROM {self.sql.table(AUDIT_SCHEMA, 'run_log')} "
            "WHERE status = 'skipped' AND table_name IS NOT NULL GROUP BY table_name"
        )
        latest: dict[str, dt.datetime] = {}
        for table, moment in rows:
            if moment is not None and (table not in latest or moment > latest[table]):
                latest[table] = moment
        return latest

    def published_file(self, run_id: str, target: str) -> tuple[Any, ...] | None:
        """What a run published into a target (its latest ledger row): curated URI, content
        hash, source URI and version, rows loaded, source_modified_at."""
        rows = self.sql.query(
            "SELECT curated_uri, content_hash, source_uri, source_version, rows_loaded, "
            f"source_modified_at FROM {self.sql.table(AUDIT_SCHEMA, 'load_ledger')} "
            "WHERE run_id = %s AND target = %s ORDER BY loaded_at DESC LIMIT 1",
            (run_id, target),
        )
        return rows[0] if rows else None

    def step_error(self, run_id: str, step: str) -> str | None:
        """The full error text a failed step of this run left in etl_audit.run_log."""
        rows = self.sql.query(
            f"SELECT error_message FROM {self.sql.table(AUDIT_SCHEMA, 'run_log')} "
            "WHERE run_id = %s AND step = %s AND status = 'failed' "
            "ORDER BY logged_at DESC LIMIT 1",
            (run_id, step),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def last_passing_run(self, table_name: str, other_than: str) -> str | None:
        """The newest run of the table, other than `other_than`, that published and passed
        its tests: where an alert points `rollback --to`."""
        rows = self.sql.query(
            f"SELECT l.run_id FROM {self.sql.table(AUDIT_SCHEMA, 'load_ledger')} l "
            "WHERE l.table_name = %s AND l.run_id <> %s AND EXISTS (SELECT 1 FROM "
            f"{self.sql.table(AUDIT_SCHEMA, 'run_log')} r WHERE r.run_id = l.run_id "
            "AND r.step = 'validate' AND r.status = 'passed') "
            "ORDER BY l.loaded_at DESC LIMIT 1",
            (table_name, other_than),
        )
        return str(rows[0][0]) if rows else None

    # --- history ---------------------------------------------------------------------

    def table_runs(self, table_name: str, limit: int) -> list[tuple[Any, ...]]:
        """A table's newest runs: run id, first and last run_log time."""
        return self.sql.query(
            f"SELECT run_id, MIN(logged_at) AS started, MAX(logged_at) AS finished FROM "
            f"{self.sql.table(AUDIT_SCHEMA, 'run_log')} WHERE table_name = %s GROUP BY run_id "
            f"ORDER BY MAX(logged_at) DESC LIMIT {int(limit)}",
            (table_name,),
        )

    def run_steps(self, run_id: str, table_name: str) -> list[tuple[Any, ...]]:
        return self.sql.query(
            "SELECT step, status, error_type, error_message, logged_at FROM "
            f"{self.sql.table(AUDIT_SCHEMA, 'run_log')} "
            "WHERE run_id = %s AND table_name = %s ORDER BY logged_at",
            (run_id, table_name),
        )

    def run_publishes(self, run_id: str) -> list[tuple[Any, ...]]:
        return self.sql.query(
            "SELECT rows_loaded, load_mode, keys_added, keys_removed, keys_changed, "
            "change_samples, target, curated_uri "
            f"FROM {self.sql.table(AUDIT_SCHEMA, 'load_ledger')} "
            "WHERE run_id = %s ORDER BY loaded_at DESC",
            (run_id,),
        )

    def run_tests(self, run_id: str) -> list[tuple[Any, ...]]:
        return self.sql.query(
            "SELECT test_name, test_type, severity, status, observed_value, expected, "
            f"executed_at FROM {self.sql.table(AUDIT_SCHEMA, 'data_quality_tests')} "
            "WHERE run_id = %s ORDER BY executed_at, test_name",
            (run_id,),
        )

    def first_publish_of(self, target: str, curated_uri: str) -> str | None:
        """The run that first published a curated file (not a rollback to it)."""
        rows = self.sql.query(
            f"SELECT run_id FROM {self.sql.table(AUDIT_SCHEMA, 'load_ledger')} WHERE target = %s "
            "AND curated_uri = %s AND load_mode <> 'rollback' ORDER BY loaded_at LIMIT 1",
            (target, curated_uri),
        )
        return str(rows[0][0]) if rows else None

    def fleet_steps(self, limit: int) -> list[tuple[Any, ...]]:
        """Every run_log row of each table's newest `limit` runs, oldest first."""
        run_log = self.sql.table(AUDIT_SCHEMA, "run_log")
        return self.sql.query(
            "SELECT r.table_name, r.run_id, r.step, r.status, r.error_type, r.logged_at "
            f"FROM {run_log} r JOIN ("
            "SELECT table_name, run_id, "
            "ROW_NUMBER() OVER (PARTITION BY table_name ORDER BY MAX(logged_at) DESC) AS newest "
            f"FROM {run_log} WHERE table_name IS NOT NULL GROUP BY table_name, run_id"
            ") recent ON r.table_name = recent.table_name AND r.run_id = recent.run_id "
            f"WHERE recent.newest <= {int(limit)} ORDER BY r.logged_at"
        )

    def fleet_publishes(self, limit: int) -> list[tuple[Any, ...]]:
        """Each table's newest `limit` ledger rows, oldest first."""
        return self.sql.query(
            "SELECT table_name, run_id, rows_after, loaded_at, keys_added, keys_removed, "
            "keys_changed FROM ("
            "SELECT table_name, run_id, rows_after, loaded_at, keys_added, keys_removed, "
            "keys_changed, ROW_NUMBER() OVER "
            "(PARTITION BY table_name ORDER BY loaded_at DESC) AS newest "
            f"FROM {self.sql.table(AUDIT_SCHEMA, 'load_ledger')}"
            f") recent WHERE newest <= {int(limit)} ORDER BY loaded_at"
        )

    def fleet_tests(self, limit: int) -> list[tuple[Any, ...]]:
        """Per table and run of the newest `limit`, its tests counted per write: passed,
        failed (error severity), warned."""
        dq_tests = self.sql.table(AUDIT_SCHEMA, "data_quality_tests")
        passing = "t.status IN ('pass', 'learning')"  # steps.shared.checks.status.PASSING
        return self.sql.query(
            "SELECT t.table_name, t.run_id, t.executed_at, "
            f"SUM(CASE WHEN {passing} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN NOT {passing} AND t.severity = 'error' THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN NOT {passing} AND t.severity <> 'error' THEN 1 ELSE 0 END) "
            f"FROM {dq_tests} t JOIN ("
            "SELECT table_name, run_id, "
            "ROW_NUMBER() OVER (PARTITION BY table_name ORDER BY MAX(executed_at) DESC) AS newest "
            f"FROM {dq_tests} GROUP BY table_name, run_id"
            ") recent ON t.table_name = recent.table_name AND t.run_id = recent.run_id "
            f"WHERE recent.newest <= {int(limit)} GROUP BY t.table_name, t.run_id, t.executed_at"
        )
