"""The catalog: names and types, DDL, drift against the mapping, staging tables."""

from __future__ import annotations

import datetime as dt
import secrets
from contextlib import suppress
from typing import TYPE_CHECKING, ClassVar

from steps.shared.errors import ConfigError, InfrastructureError, RefloadError
from steps.shared.warehouse.client import CREATED_CONCURRENTLY, Capabilities, SqlClient, sqlstate
from steps.shared.warehouse.modes.scd2 import HISTORY_COLUMNS, VALID_FROM, VALID_TO
from steps.shared.warehouse.tables import (
    _TYPE_FAMILIES,
    TargetTable,
    _CreatedConcurrently,
    _same_type,
    column_count_problem,
    type_signature,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa

    from steps.shared.mapping.casts import DataType
    from steps.shared.mapping.sheet import ColumnSpec, Mapping


class Catalog:
    """Names, types and DDL: what a table looks like, drift, creating it, staging.

    Works through the session's SQL client; a dialect subclasses it where its catalog,
    type names, DDL or staging differ."""

    TYPE_NAMES: ClassVar[dict[str, str]] = {
        "smallint": "SMALLINT",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "double": "DOUBLE PRECISION",
        "boolean": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
    }

    def __init__(self, sql: SqlClient) -> None:
        self.sql = sql
        # (schema, table) -> its columns ({}: no such table), as this session last read
        # them (`columns_of`); and, where the dialect has grants, the privileges it lacks.
        self._catalog: dict[tuple[str, str], dict[str, str]] = {}
        self._lacking: dict[tuple[str, str], list[str]] = {}
        # staging table -> the rows its load reported (PostgreSQL's COPY): not counted again.
        self.staged_rows: dict[str, int] = {}
        # curated URI -> the staging table the local pipeline filled with its rows while
        # ingest was still writing them (`steps.ingest.early`): publish takes it as staged.
        self.staged_early: dict[str, str] = {}

        # DDL a rolled-back transaction ran is undone: what the catalog said since may be untrue.
        sql.on_rollback.append(self._forget_all)
        # Temporary tables end with their session.
        sql.on_close.append(self._forget_session)

    def _forget_all(self) -> None:
        self._catalog.clear()
        self._lacking.clear()

    def _forget_session(self) -> None:
        self.staged_rows.clear()
        self.staged_early.clear()

    @property
    def dialect(self) -> str:
        return self.sql.dialect

    @property
    def capabilities(self) -> Capabilities:
        return self.sql.capabilities

    def quote(self, identifier: str) -> str:
        return self.sql.quote(identifier)

    def table(self, schema: str, name: str) -> str:
        return self.sql.table(schema, name)

    def current_rows(self, schema: str, name: str) -> str:
        """A history (scd2) table's current versions, as a FROM item that checks read."""
        return (
            f"(SELECT * FROM {self.table(schema, name)} "
            f"WHERE {self.quote(VALID_TO)} IS NULL) current_rows"
        )

    def checked_relation(self, schema: str, name: str, history: bool) -> str:
        """What quality tests read: the table, or the current rows of a history table."""
        return self.current_rows(schema, name) if history else self.table(schema, name)

    def table_ref(self, dotted: str) -> str:
        schema, _, name = dotted.rpartition(".")
        return self.table(schema or "public", name)

    def column_type(self, data_type: DataType) -> str:
        if data_type.kind == "string":
            return self.capabilities.text_type
        if data_type.kind == "varchar":
            return f"VARCHAR({data_type.length})"
        if data_type.kind == "decimal":
            return f"DECIMAL({data_type.precision},{data_type.scale})"
        return self.TYPE_NAMES[data_type.kind]

    def byte_length(self, column_sql: str) -> str:
        return f"OCTET_LENGTH({column_sql})"

    def regex_mismatch(self, column_sql: str) -> str:
        """SQL true where the column does not match the pattern parameter."""
        return f"{column_sql} !~ %s"

    def as_text(self, column_sql: str) -> str:
        return f"CAST({column_sql} AS {self.capabilities.text_type})"

    def create_missing(self, ddl: str, raced: frozenset[str] = CREATED_CONCURRENTLY) -> None:
        # IF NOT EXISTS does not make concurrent creators safe on PostgreSQL: the loser
        # waits for the winner and then fails on the catalog's unique index. The object
        # exists either way, which is all this statement wants (it runs in autocommit).
        try:
            self.sql.execute(ddl)
        except RefloadError as error:
            if sqlstate(error.__cause__) not in raced:
                raise

    def schema_exists(self, schema: str) -> bool:
        return bool(
            self.sql.query(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
            )
        )

    def table_columns(self, schema: str, name: str) -> dict[str, str]:
        """Column name -> declared type, normalised (see `type_signature`); {}: no table."""
        return self.columns_of([(schema, name)])[(schema, name)]

    def columns_of(self, tables: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        """The columns of each (schema, table), from ONE catalog query for those this
        session has not read yet. Kept: refload's own DDL and a rollback forget them
        (`forget`, `rollback`), so a run looks up its tables once."""
        missing = [t for t in dict.fromkeys(tables) if t not in self._catalog]
        if missing:
            found = self.read_catalog(missing)
            for table in missing:
                self._catalog[table] = found.get(table, {})
        return {t: self._catalog[t] for t in tables}

    def forget(self, schema: str, name: str) -> None:
        """The table changed (DDL) or may have: read its catalog entry again when asked."""
        self._catalog.pop((schema, name), None)
        self._lacking.pop((schema, name), None)

    def read_catalog(self, tables: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        """One query: the columns of these tables (a dialect whose catalog differs
        overrides it, and may note the privileges it lacks in `_lacking`)."""
        rows = self.sql.query(
            "SELECT table_schema, table_name, column_name, data_type, character_maximum_length, "
            "numeric_precision, numeric_scale FROM information_schema.columns WHERE "
            + " OR ".join(["(table_schema = %s AND table_name = %s)"] * len(tables))
            + " ORDER BY table_schema, table_name, ordinal_position",
            [part for table in tables for part in table],
        )
        found: dict[tuple[str, str], dict[str, str]] = {}
        for schema, name, column, *declared in rows:
            found.setdefault((schema, name), {})[column] = type_signature(*declared)
        return found

    def missing_privileges(self, schema: str, name: str) -> list[str]:
        """Privileges publishing into an existing table needs and the user lacks."""
        return []

    def check_names(self, target: TargetTable) -> None:
        """Refuse names this warehouse would cut short (exit 2), before anything is staged.

        PostgreSQL keeps the first 63 bytes of a longer name without a word: the table
        would load once and every later load would be refused as drift.
        """
        self.check_column_count(target)
        limit = self.capabilities.max_identifier_bytes
        names = [("schema", target.schema), ("table", target.name)]
        names += [("column", c.target) for c in target.mapping.columns]
        for kind, name in names:
            size = len(name.encode())
            if size > limit:
                raise ConfigError(
                    f"{kind} name is {size} bytes; {self.dialect} keeps at most {limit} "
                    "bytes of a name: shorten it in the "
                    + ("mapping sheet" if kind == "column" else "table config"),
                    file=target.mapping.uri if kind == "column" else None,
                    column=name if kind == "column" else None,
                    value=None if kind == "column" else name,
                )

    def check_column_count(self, target: TargetTable) -> None:
        """Refuse a table wider than this warehouse allows (exit 2), before anything is staged:
        CREATE TABLE would fail only after the ingest, as an infrastructure error."""
        limit = self.capabilities.max_columns
        count = len(target.mapping.columns) + (len(HISTORY_COLUMNS) if target.history else 0)
        if limit is not None and count > limit:
            raise ConfigError(
                column_count_problem(count, target.history, self.dialect, limit),
                file=target.mapping.uri,
            )

    def create_table_sql(
        self,
        schema: str,
        name: str,
        mapping: Mapping,
        sort_key: list[str] | None = None,
        dist_key: str | None = None,
        history: bool = False,
    ) -> str:
        columns = self._columns_sql(mapping)
        if history:
            timestamp = self.TYPE_NAMES["timestamp"]
            columns += (
                f",\n  {self.quote(VALID_FROM)} {timestamp} NOT NULL"
                f",\n  {self.quote(VALID_TO)} {timestamp}"
            )
        return f"CREATE TABLE IF NOT EXISTS {self.table(schema, name)} (\n  {columns}\n)"

    def _columns_sql(self, mapping: Mapping) -> str:
        return ",\n  ".join(
            f"{self.quote(c.target)} {self.column_type(c.data_type)}"
            + ("" if c.nullable else " NOT NULL")
            for c in mapping.columns
        )

    def timestamp_literal(self, value: dt.datetime) -> str:
        # A value refload made (the load time), never user text.
        return f"CAST('{value.isoformat(sep=' ')}' AS {self.TYPE_NAMES['timestamp']})"

    def check_drift(self, target: TargetTable, existing: dict[str, str]) -> list[ColumnSpec]:
        """Refuse a table that differs from the mapping; the columns to add, if allowed."""
        mapping = target.mapping
        missing = [c for c in mapping.columns if c.target not in existing]
        addable = [c for c in missing if c.nullable] if target.allow_new_columns else []
        problems = []
        if len(addable) < len(missing):
            names = ", ".join(c.target for c in missing if c not in addable)
            problems.append(f"mapping columns missing from the table: {names}")
        history = HISTORY_COLUMNS if target.history else ()
        extra = [c for c in existing if c not in mapping.targets and c not in history]
        if extra:
            problems.append(f"table columns not in the mapping: {', '.join(extra)}")
        lacking = [c for c in history if c not in existing]
        if lacking:
            problems.append(
                f"history columns missing from the table (load_mode scd2): {', '.join(lacking)}"
            )
        for c in mapping.columns:
            declared = existing.get(c.target)
            wanted = type_signature(self.column_type(c.data_type))
            if declared and not _same_type(declared, wanted):
                problems.append(
                    f"column {c.target} is {declared} in the table, {wanted} in the mapping"
                )
        if problems:
            raise ConfigError(
                f"target {target.schema}.{target.name} does not match the mapping "
                f"({'; '.join(problems)}); alter the table or the sheet",
                file=mapping.uri,
            )
        return addable

    def check_target(self, target: TargetTable) -> dict[str, str]:
        """Everything that can be refused before staging: names, drift, privileges.

        Returns the table's columns as they are (empty when it does not exist yet).
        """
        self.check_names(target)
        existing = self.table_columns(target.schema, target.name)
        if existing:
            self.check_drift(target, existing)
            lacking = self.missing_privileges(target.schema, target.name)
            if lacking:
                raise InfrastructureError(
                    f"permission denied on {target.schema}.{target.name}: the warehouse "
                    f"user lacks {', '.join(lacking)} on it; grant them or load as a user "
                    "that has them",
                    table=target.schema + "." + target.name,
                )
        return existing

    def ensure_target(self, target: TargetTable, existed: dict[str, str]) -> bool:
        """Inside the publish transaction: create the target when missing, or add the
        columns the config allows. `existed` is what `check_target` found before staging.

        The DDL commits or rolls back with the rows, so a failed first load leaves no
        empty table behind. True if this run created the table.
        """
        # A table that was missing before staging may have been created since by a
        # concurrent run: look again, and check that one for drift too.
        if not existed:
            self.forget(target.schema, target.name)
        existing = existed or self.table_columns(target.schema, target.name)
        where = f"{target.schema}.{target.name}"
        if existing:
            added = self.check_drift(target, existing)
            if added:  # DDL waits for the table's lock: a bounded time
                with self.sql.bounded_lock_wait(where):
                    for c in added:
                        self.sql.execute(
                            f"ALTER TABLE {self.table(target.schema, target.name)} ADD COLUMN "
                            f"{self.quote(c.target)} {self.column_type(c.data_type)}"
                        )
                self.forget(target.schema, target.name)
            return False
        self.forget(target.schema, target.name)
        try:
            with self.sql.bounded_lock_wait(where):
                self._create_table(target)
        except RefloadError as error:
            if sqlstate(error.__cause__) in CREATED_CONCURRENTLY:
                raise _CreatedConcurrently(str(error)) from error
            raise
        return True

    def _create_table(self, target: TargetTable) -> None:
        if not self.schema_exists(target.schema):
            self.sql.execute(f"CREATE SCHEMA IF NOT EXISTS {self.quote(target.schema)}")
        self.sql.execute(
            self.create_table_sql(
                target.schema,
                target.name,
                target.mapping,
                target.sort_key,
                target.dist_key,
                history=target.history,
            )
        )

    # --- staging (dialects override) -------------------------------------------------

    def check_curated_uri(self, curated_uri: str) -> None:
        """Refuse, before anything is touched, a curated file this warehouse cannot stage."""

    def stage(self, staging: str, mapping: Mapping, curated_uri: str) -> None:
        """Make the curated Parquet rows readable as `staging`, typed as the mapping says:
        a new temporary table (DuckDB: a view over the file)."""
        raise NotImplementedError

    def fill(self, relation: str, mapping: Mapping, curated_uri: str) -> int:
        """Where `capabilities.fills_new_target`: the curated Parquet rows COPYed into
        `relation`, the target the publish transaction created; returns the rows loaded."""
        raise NotImplementedError

    def stage_rows(self, staging: str, mapping: Mapping, batches: Iterator[pa.RecordBatch]) -> int:
        """Early staging (where `capabilities.stages_from_memory`): a new temporary table
        from rows this process holds; returns the rows copied."""
        raise NotImplementedError

    def discard_staging(self, staging: str) -> None:
        """Drop a staging table now, a temporary one too. Where even that fails, the
        session is gone or unknown (a COPY cut off with its connection): it is closed, so
        the next step opens a new one, and the tables offered early on it are forgotten
        (`_forget_session`: load stages their files)."""
        self.staged_rows.pop(staging, None)
        try:
            self.sql.execute(self.drop_staging_sql(staging))
        except RefloadError:
            with suppress(Exception):
                self.sql.close()

    def staging_name(self, run_id: str) -> str:
        # Unique per attempt, not only per run id: two runs of one file at once, or one
        # run id given twice, never share a staging table.
        safe = "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in run_id.lower())
        name = f"refload_stage_{secrets.token_hex(4)}_{safe}"
        return name[: self.capabilities.max_identifier_bytes]

    # Whether publish drops staging when done; else it is a temporary table that goes
    # with the session (the step's, or the local run's), and dropping it costs a statement.
    drops_staging: ClassVar[bool] = False

    def drop_staging_sql(self, staging: str) -> str:
        return f"DROP TABLE IF EXISTS {self.quote(staging)}"

    def create_staging_sql(self, staging: str, mapping: Mapping) -> str:
        # From the mapping, not LIKE the target: the target may not exist before the
        # publish transaction creates it.
        return f"CREATE TEMPORARY TABLE {self.quote(staging)} (\n  {self._columns_sql(mapping)}\n)"


__all__ = [
    "HISTORY_COLUMNS",
    "VALID_FROM",
    "VALID_TO",
    "_TYPE_FAMILIES",
    "Catalog",
    "TargetTable",
    "_CreatedConcurrently",
    "_same_type",
    "column_count_problem",
    "type_signature",
]
