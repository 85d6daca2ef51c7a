"""DuckDB, the embedded default: a local file; staged as a view over the curated Parquet."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from steps.shared.errors import (
    ConfigError,
    InfrastructureError,
    RefloadError,
    WarehouseUnavailable,
)
from steps.shared.io import storage
from steps.shared.warehouse.base import (
    BeforePublish,
    Capabilities,
    Catalog,
    LedgerEntry,
    PublishResult,
    SqlClient,
    TargetTable,
    Warehouse,
    type_signature,
)

if TYPE_CHECKING:
    from steps.shared.mapping.sheet import Mapping
    from steps.shared.warehouse.publish import GroupGate, GroupMember


def database_path(url: str) -> str:
    """duckdb:///relative.duckdb, duckdb:////absolute.duckdb or duckdb:///:memory:"""
    path = url.removeprefix("duckdb://").removeprefix("/")
    return path or ":memory:"


class DuckDBClient(SqlClient):
    """DuckDB's driver: `?` parameters, one connection for everything."""

    placeholder = "?"

    def _connect(self) -> Any:
        import duckdb

        path = database_path(self.url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Rows in a table have no order in SQL, and keeping the file's order makes DuckDB
        # write a publish twice (again at the checkpoint on close), leaving the file a
        # third empty: 5M rows publish in 7.3 s instead of 8.1 s without it (ADR 10).
        return duckdb.connect(path, config={"preserve_insertion_order": False})

    def _run(self, sql: str, params: Sequence[Any], fetch: bool) -> tuple[list[str], list[Any]]:
        # A DuckDB cursor is a separate connection (own temp tables and transaction):
        # everything runs on the one connection instead.
        result = self.conn.execute(self._sql(sql), list(params) or None)
        if not fetch:
            return [], []
        return [d[0] for d in result.description or []], result.fetchall()

    def translate_error(self, error: Exception) -> RefloadError:
        import duckdb

        if isinstance(
            error, (duckdb.IOException, duckdb.TransactionException, duckdb.ConnectionException)
        ):
            return WarehouseUnavailable(f"duckdb: {error}")
        return InfrastructureError(f"duckdb error: {error}")


class DuckDBCatalog(Catalog):
    """DuckDB's catalog function, type names and functions; staging is a view."""

    TYPE_NAMES: ClassVar[dict[str, str]] = {**Catalog.TYPE_NAMES, "double": "DOUBLE"}

    # The curated file(s) (or downloaded copies) while `publish` runs; the view reads them.
    curated_paths: list[Path] | None = None
    group_paths: dict[str, list[Path]] | None = None  # a group's publish: by curated URI

    def read_catalog(self, tables: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        # The catalog function, in or out of a transaction (a failed statement aborts a
        # DuckDB transaction, so no "no such table" probing); this database's tables only,
        # not the session's temporary ones.
        rows = self.sql.query(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND ("
            + " OR ".join(["(schema_name = ? AND table_name = ?)"] * len(tables))
            + ") ORDER BY schema_name, table_name, column_index",
            [part for table in tables for part in table],
        )
        found: dict[tuple[str, str], dict[str, str]] = {}
        for schema, name, column, declared in rows:
            found.setdefault((schema, name), {})[column] = type_signature(declared)
        return found

    def byte_length(self, column_sql: str) -> str:
        return f"strlen({column_sql})"

    def regex_mismatch(self, column_sql: str) -> str:
        return f"NOT regexp_matches({column_sql}, ?)"

    def stage(self, staging: str, mapping: Mapping, curated_uri: str) -> None:
        # A view, not a copy: each statement scans the Parquet file in parallel, and the
        # copy would cost more than it saves (5M rows: 1.6 s against 2.2 s, with the insert).
        # A list of exactly the run's files (a Spark dataset's parts), never a glob.
        paths = self.curated_paths or (self.group_paths or {}).get(curated_uri) or []
        files = ", ".join(self.sql.literal(str(p)) for p in paths)
        cols = ", ".join(self.quote(c) for c in mapping.targets)
        self.sql.execute(
            f"CREATE TEMPORARY VIEW {self.quote(staging)} AS SELECT {cols} "
            f"FROM read_parquet([{files}])"
        )

    # The view names the run's curated files, which go when the publish is over.
    drops_staging = True

    def drop_staging_sql(self, staging: str) -> str:
        return f"DROP VIEW IF EXISTS {self.quote(staging)}"


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"
    # One process writes a DuckDB file at a time, and a conflicting transaction fails at
    # once: nothing waits for a lock. Custom SQL has neither a read-only transaction nor
    # a time limit here; it is still parsed and refused unless it is one SELECT
    # (steps.shared.checks.custom_sql).
    capabilities = Capabilities(
        max_identifier_bytes=65_536,  # no limit of its own; dlt states the same
        text_type="VARCHAR",
        read_only_transactions=False,
        statement_timeout=False,
        transaction_settings=False,
        lock_timeout=False,
        savepoints=False,
        publisher_lock=False,
        ddl_in_transactions=True,
        supports_merge=True,
        materialized_cte=True,
    )
    driver_modules = ("duckdb",)
    client_class = DuckDBClient
    catalog_class = DuckDBCatalog
    catalog: DuckDBCatalog

    def check_exists(self) -> None:
        # Connecting creates the file: a typo'd URL would read an empty warehouse and
        # report nothing wrong.
        path = database_path(self.url)
        if path != ":memory:" and not Path(path).is_file():
            raise ConfigError(
                f"no DuckDB database at {path} (a run creates it; check --warehouse or "
                "REFLOAD_WAREHOUSE_URL)"
            )

    def publish(
        self,
        entry: LedgerEntry,
        target: TargetTable,
        before_publish: BeforePublish | None = None,
        *,
        force: bool = False,
    ) -> PublishResult:
        # The staging view reads the curated file while the publish runs: keep the file
        # (or, from S3, its downloaded copy) until the publish is over.
        with storage.local_files(storage.curated_parts(entry.curated_uri)) as paths:
            self.catalog.curated_paths = paths
            try:
                return super().publish(entry, target, before_publish, force=force)
            finally:
                self.catalog.curated_paths = None

    def publish_group(
        self,
        members: list[GroupMember],
        group_gate: GroupGate | None = None,
        *,
        force: bool = False,
    ) -> list[PublishResult]:
        # As `publish`: every member's curated files kept until the group's publish is over.
        with ExitStack() as files:
            self.catalog.group_paths = {
                m.entry.curated_uri: files.enter_context(
                    storage.local_files(storage.curated_parts(m.entry.curated_uri))
                )
                for m in members
                if m.as_of is None
            }
            try:
                return super().publish_group(members, group_gate, force=force)
            finally:
                self.catalog.group_paths = None
