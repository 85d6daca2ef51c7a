"""The `Warehouse` facade: composes the SQL client, catalog, change sets, audit store
and publisher (each given what it needs) and keeps the methods callers use
(`warehouse.publish(...)`), each a call on one part. Statements are written once in the
parts, in SQL that DuckDB, PostgreSQL and Redshift all accept (ADR 21)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Self

from steps.shared.errors import RefloadError
from steps.shared.warehouse.audit import AUDIT_SCHEMA, AuditStore, LedgerEntry
from steps.shared.warehouse.audit_reads import AuditReads
from steps.shared.warehouse.catalog import (
    HISTORY_COLUMNS,
    VALID_TO,
    Catalog,
    TargetTable,
    _same_type,
    column_count_problem,
    type_signature,
)
from steps.shared.warehouse.changes import CHANGE_KINDS, ChangeDetection, ChangeSet
from steps.shared.warehouse.client import (
    Capabilities,
    SqlClient,
    UserSqlAbortedPublish,
    is_transient_sqlstate,
    sqlstate,
)
from steps.shared.warehouse.publish import (
    BeforePublish,
    GroupGate,
    GroupMember,
    Publisher,
    PublishResult,
    RowsBeforePublish,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa

    from steps.shared.config.model import LedgerMode
    from steps.shared.mapping.sheet import ColumnSpec, DataType, Mapping
    from steps.shared.warehouse.audit import TargetState


class Warehouse:
    """A connection to one warehouse, with refload's statements: a facade over its parts.

    A dialect is a small subclass that states data and picks its parts:
      - `dialect` (its name) and `capabilities` (a `Capabilities`);
      - `client_class`: a `SqlClient` subclass with its driver's habits (`_connect()`,
        `placeholder`, `_run()`, `translate_error()`; `sqlstate()` reads the code);
      - `catalog_class`: a `Catalog` subclass where its SQL differs: `stage()` (the
        curated Parquet rows readable as the staging table), `TYPE_NAMES`,
        `create_table_sql()`, `read_catalog()`, `schema_exists()`,
        `missing_privileges()`, `check_curated_uri()`, `drop_staging_sql()`,
        `byte_length()`, `regex_mismatch()`.

    Everything else (transactions, timeouts, locks, text casts) follows `capabilities`.
    """

    dialect: ClassVar[str] = "base"
    capabilities: ClassVar[Capabilities]
    # The driver's modules, imported only when used (`import_driver_early` loads them).
    driver_modules: ClassVar[tuple[str, ...]] = ()
    client_class: ClassVar[type[SqlClient]] = SqlClient
    catalog_class: ClassVar[type[Catalog]] = Catalog

    def __init__(self, url: str) -> None:
        self.url = url
        # Set while steps in one process share this warehouse (`shared_connections`).
        self.shared = False
        self.client = self.client_class(url, self.dialect, self.capabilities)
        self.catalog = self.catalog_class(self.client)
        self.change_sets = ChangeDetection(self.client)
        self.audit = AuditStore(self.client, self.catalog)
        self.audit_reads = AuditReads(self.client)
        self.publisher = Publisher(self.client, self.catalog, self.change_sets, self.audit)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *exc: object) -> None:
        # A shared connection stays open for the next step, unless this one failed:
        # its session state is then unknown, so the next step reconnects.
        if error_type is not None or not self.shared:
            self.close()

    def publish(
        self,
        entry: LedgerEntry,
        target: TargetTable,
        before_publish: BeforePublish | None = None,
        *,
        force: bool = False,
    ) -> PublishResult:
        """Stage, then publish the rows and write the ledger row in ONE transaction
        (`Publisher.publish`); `before_publish(warehouse, rows_before, rows_staged,
        changes)` runs inside it and gets this warehouse."""
        rows_before_publish: RowsBeforePublish | None = None
        if before_publish is not None:
            check = before_publish

            def rows_before_publish(before: int, loaded: int, changes: ChangeSet | None) -> None:
                check(self, before, loaded, changes)

        return self.publisher.publish(entry, target, rows_before_publish, force=force)

    def publish_group(
        self,
        members: list[GroupMember],
        group_gate: GroupGate | None = None,
        *,
        force: bool = False,
    ) -> list[PublishResult]:
        """Several staged tables in ONE transaction (`Publisher.publish_group`): each
        member's before_publish and the `group_gate` get this warehouse, as in `publish`."""
        bound = [
            replace(m, before_publish=partial(m.before_publish, self))
            if m.before_publish is not None
            else m
            for m in members
        ]
        gate = partial(group_gate, self) if group_gate is not None else None
        return self.publisher.publish_group(bound, gate, force=force)

    @property
    def conn(self) -> Any:
        return self.client.conn

    @property
    def in_transaction(self) -> bool:
        return self.client.in_transaction

    @property
    def placeholder(self) -> str:
        return self.client.placeholder

    @property
    def TYPE_NAMES(self) -> dict[str, str]:
        return self.catalog.TYPE_NAMES

    @property
    def drops_staging(self) -> bool:
        return self.catalog.drops_staging

    def transaction(self) -> AbstractContextManager[None]:
        return self.client.transaction()

    def read_only(self, timeout_seconds: int) -> AbstractContextManager[None]:
        return self.client.read_only(timeout_seconds)

    # The SQL client.

    def translate_error(self, error: Exception) -> RefloadError:
        return self.client.translate_error(error)

    def statement_timeout_ms(self) -> int:
        return self.client.statement_timeout_ms()

    def close(self) -> None:
        return self.client.close()

    def check_exists(self) -> None:
        """For a command that only reads: refuse a database that is not there. A server's
        connection says so itself; an embedded file is overridden (DuckDB)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        return self.client.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.client.query(sql, params)

    def query_with_names(
        self, sql: str, params: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        return self.client.query_with_names(sql, params)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.client.scalar(sql, params)

    @property
    def user_sql_in_publish(self) -> bool:
        return self.client.user_sql_in_publish

    def set_statement_timeout(self, seconds: int) -> None:
        return self.client.set_statement_timeout(seconds)

    def rollback(self) -> None:
        return self.client.rollback()

    def quote(self, identifier: str) -> str:
        return self.client.quote(identifier)

    def literal(self, text: str) -> str:
        return self.client.literal(text)

    def table(self, schema: str, name: str) -> str:
        return self.client.table(schema, name)

    # The catalog.

    def current_rows(self, schema: str, name: str) -> str:
        return self.catalog.current_rows(schema, name)

    def checked_relation(self, schema: str, name: str, history: bool) -> str:
        return self.catalog.checked_relation(schema, name, history)

    def table_ref(self, dotted: str) -> str:
        return self.catalog.table_ref(dotted)

    def column_type(self, data_type: DataType) -> str:
        return self.catalog.column_type(data_type)

    def byte_length(self, column_sql: str) -> str:
        return self.catalog.byte_length(column_sql)

    def regex_mismatch(self, column_sql: str) -> str:
        return self.catalog.regex_mismatch(column_sql)

    def as_text(self, column_sql: str) -> str:
        return self.catalog.as_text(column_sql)

    def schema_exists(self, schema: str) -> bool:
        return self.catalog.schema_exists(schema)

    def table_columns(self, schema: str, name: str) -> dict[str, str]:
        return self.catalog.table_columns(schema, name)

    def columns_of(self, tables: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        return self.catalog.columns_of(tables)

    def forget(self, schema: str, name: str) -> None:
        return self.catalog.forget(schema, name)

    def read_catalog(self, tables: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        return self.catalog.read_catalog(tables)

    def missing_privileges(self, schema: str, name: str) -> list[str]:
        return self.catalog.missing_privileges(schema, name)

    def check_names(self, target: TargetTable) -> None:
        return self.catalog.check_names(target)

    def check_column_count(self, target: TargetTable) -> None:
        return self.catalog.check_column_count(target)

    def create_table_sql(
        self,
        schema: str,
        name: str,
        mapping: Mapping,
        sort_key: list[str] | None = None,
        dist_key: str | None = None,
        history: bool = False,
    ) -> str:
        return self.catalog.create_table_sql(schema, name, mapping, sort_key, dist_key, history)

    def timestamp_literal(self, value: dt.datetime) -> str:
        return self.catalog.timestamp_literal(value)

    def check_drift(self, target: TargetTable, existing: dict[str, str]) -> list[ColumnSpec]:
        return self.catalog.check_drift(target, existing)

    def check_target(self, target: TargetTable) -> dict[str, str]:
        return self.catalog.check_target(target)

    def check_curated_uri(self, curated_uri: str) -> None:
        return self.catalog.check_curated_uri(curated_uri)

    def stage(self, staging: str, mapping: Mapping, curated_uri: str) -> None:
        return self.catalog.stage(staging, mapping, curated_uri)

    def stage_rows(self, staging: str, mapping: Mapping, batches: Iterator[pa.RecordBatch]) -> int:
        return self.catalog.stage_rows(staging, mapping, batches)

    def discard_staging(self, staging: str) -> None:
        self.catalog.discard_staging(staging)

    def fills_new_target(self, target: TargetTable, mode: LedgerMode) -> bool:
        """Whether a publish to `target` now would fill it from the curated file, with no
        staging table: it does not exist yet (`Staging.fills_new`)."""
        existing = self.catalog.table_columns(target.schema, target.name)
        # Asked during ingest: not kept, so the publish reads the target's catalog entry as
        # it is then (a target dropped or altered meanwhile), as when ingest did not ask.
        self.catalog.forget(target.schema, target.name)
        return self.publisher.staging.fills_new(target, mode, existing)

    def offer_staging(self, curated_uri: str, staging: str) -> None:
        """Publish takes `staging` as the rows of `curated_uri` (early staging)."""
        self.catalog.staged_early[curated_uri] = staging

    def staging_name(self, run_id: str) -> str:
        return self.catalog.staging_name(run_id)

    def drop_staging_sql(self, staging: str) -> str:
        return self.catalog.drop_staging_sql(staging)

    def create_staging_sql(self, staging: str, mapping: Mapping) -> str:
        return self.catalog.create_staging_sql(staging, mapping)

    # Change sets.

    def change_set(
        self,
        replaces: bool,
        target: TargetTable,
        ref: str,
        staging: str,
        head: tuple[str, list[Any]] = ("SELECT 1 AS refload_one", []),
    ) -> tuple[ChangeSet, int, tuple[Any, ...]]:
        return self.change_sets.change_set(replaces, target, ref, staging, head)

    def changes_into_new(
        self,
        target: TargetTable,
        rows: str,
        head: tuple[str, list[Any]],
        staged_rows: int | None = None,
    ) -> tuple[ChangeSet, int, tuple[Any, ...]]:
        return self.change_sets.changes_into_new(target, rows, head, staged_rows)

    def compute_changes(
        self, replaces: bool, target: TargetTable, ref: str, staging: str, delta: str
    ) -> ChangeSet:
        return self.change_sets.compute_changes(replaces, target, ref, staging, delta)

    # The audit store.

    def ensure_audit_tables(self, *also: tuple[str, str]) -> None:
        return self.audit.ensure_audit_tables(*also)

    def target_state(self, entry: LedgerEntry, ref: str, history: bool) -> TargetState:
        return self.audit.target_state(entry, ref, history)

    def state_query(self, entry: LedgerEntry, ref: str, history: bool) -> tuple[str, list[Any]]:
        return self.audit.state_query(entry, ref, history)

    def read_state(self, entry: LedgerEntry, row: Sequence[Any]) -> TargetState:
        return self.audit.read_state(entry, row)

    def published_changes(
        self, run_id: str, target: str, counts: dict[str, int] | None
    ) -> ChangeSet | None:
        return self.audit.published_changes(run_id, target, counts)

    def write_ledger(
        self,
        entry: LedgerEntry,
        rows_loaded: int,
        before: int,
        after: int,
        changes: ChangeSet | None = None,
        loaded_at: dt.datetime | None = None,
    ) -> None:
        return self.audit.write_ledger(entry, rows_loaded, before, after, changes, loaded_at)

    def insert_rows(self, table: str, columns: str, rows: Sequence[Sequence[Any]]) -> None:
        return self.audit.insert_rows(table, columns, rows)

    def record_checks(self, run_id: str, table_name: str, results: list[dict[str, Any]]) -> None:
        return self.audit.record_checks(run_id, table_name, results)

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
        return self.audit.record_step(run_id, table_name, step, status, error, source_uri, details)

    def record_steps(self, steps: list[dict[str, Any]]) -> None:
        return self.audit.record_steps(steps)

    # etl_audit read back.

    def recent_failures(
        self, table: str, run_id: str, ignored_errors: Sequence[str]
    ) -> list[tuple[str, int, int]]:
        return self.audit_reads.recent_failures(table, run_id, ignored_errors)

    def last_received(self) -> dict[str, dt.datetime]:
        return self.audit_reads.last_received()

    def published_file(self, run_id: str, target: str) -> tuple[Any, ...] | None:
        return self.audit_reads.published_file(run_id, target)

    def step_error(self, run_id: str, step: str) -> str | None:
        return self.audit_reads.step_error(run_id, step)

    def last_passing_run(self, table_name: str, other_than: str) -> str | None:
        return self.audit_reads.last_passing_run(table_name, other_than)

    def table_runs(self, table_name: str, limit: int) -> list[tuple[Any, ...]]:
        return self.audit_reads.table_runs(table_name, limit)

    def run_steps(self, run_id: str, table_name: str) -> list[tuple[Any, ...]]:
        return self.audit_reads.run_steps(run_id, table_name)

    def run_publishes(self, run_id: str) -> list[tuple[Any, ...]]:
        return self.audit_reads.run_publishes(run_id)

    def run_tests(self, run_id: str) -> list[tuple[Any, ...]]:
        return self.audit_reads.run_tests(run_id)

    def first_publish_of(self, target: str, curated_uri: str) -> str | None:
        return self.audit_reads.first_publish_of(target, curated_uri)

    def fleet_steps(self, limit: int) -> list[tuple[Any, ...]]:
        return self.audit_reads.fleet_steps(limit)

    def fleet_publishes(self, limit: int) -> list[tuple[Any, ...]]:
        return self.audit_reads.fleet_publishes(limit)

    def fleet_tests(self, limit: int) -> list[tuple[Any, ...]]:
        return self.audit_reads.fleet_tests(limit)

    # The publisher.

    def duplicate_key_in(self, staging: str, key: list[str]) -> tuple[Any, ...] | None:
        return self.publisher.staging.duplicate_key_in(staging, key)

    def publish_statements(
        self,
        mode: LedgerMode,
        target: str,
        staging: str,
        columns: list[str],
        key: list[str],
        delta: str | None = None,
        loaded_at: dt.datetime | None = None,
    ) -> list[str]:
        return self.publisher.publish_statements(
            mode, target, staging, columns, key, delta, loaded_at
        )

    def count(self, target: str, *, current: bool = False) -> int:
        return self.publisher.count(target, current=current)


# What callers import from here (each part's module has the rest).
__all__ = [
    "AUDIT_SCHEMA",
    "CHANGE_KINDS",
    "HISTORY_COLUMNS",
    "VALID_TO",
    "AuditReads",
    "AuditStore",
    "BeforePublish",
    "Capabilities",
    "Catalog",
    "ChangeDetection",
    "ChangeSet",
    "LedgerEntry",
    "PublishResult",
    "Publisher",
    "SqlClient",
    "TargetTable",
    "UserSqlAbortedPublish",
    "Warehouse",
    "_same_type",
    "column_count_problem",
    "is_transient_sqlstate",
    "sqlstate",
    "type_signature",
]
