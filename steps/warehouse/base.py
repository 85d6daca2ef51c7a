"""The one loader every warehouse shares; dialects override only what differs.

Statements are written once here in the SQL that DuckDB, PostgreSQL and
Redshift all accept. Publishing is DELETE + INSERT ... SELECT (never TRUNCATE,
which commits implicitly on Redshift) inside one explicit transaction that
also writes the load ledger row.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from steps.errors import (
    ConfigError,
    InfrastructureError,
    RefloadError,
    RejectedInput,
    WarehouseUnavailable,
    truncate_bytes,
)
from steps.secrets import redact, redact_value

if TYPE_CHECKING:
    from steps.config import LedgerMode
    from steps.mapping import ColumnSpec, DataType, Mapping

log = structlog.get_logger("refload")

AUDIT_SCHEMA = "etl_audit"
# What an audit column holds, in bytes: Redshift's VARCHAR(n) counts bytes, PostgreSQL's
# characters, so a byte bound fits both.
SHORT_TEXT_BYTES = 1024
LONG_TEXT_BYTES = 65535

# How long a publish waits for a lock another transaction holds on its target before
# it gives up as retryable (WarehouseUnavailable): an open transaction left in a SQL
# client must not make a load hang until the function times out.
LOCK_TIMEOUT_ENV = "REFLOAD_LOCK_TIMEOUT_SECONDS"
DEFAULT_LOCK_TIMEOUT_SECONDS = 180.0
# How long one warehouse statement may run before the server cancels it: well below
# Lambda's 15 minutes, so that a runaway query never holds the target's lock until the
# function is killed (and on, server-side, after that), and the failure is recorded.
# Where the server has no such limit (DuckDB, in-process) the process's end stops it.
STATEMENT_TIMEOUT_ENV = "REFLOAD_STATEMENT_TIMEOUT_SECONDS"
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 600.0
QUERY_CANCELED = "57014"  # statement_timeout, or a cancel request

# SQLSTATEs (PostgreSQL's codes, which Redshift shares) that a retry can clear:
# connection exceptions (class 08), serialization failure, deadlock, lock not
# available, statement cancelled (a timeout), server shutting down or starting,
# too many connections.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08"})
TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "53400"}
)
# Waiting for a lock gave up: lock_timeout (PostgreSQL) or statement_timeout (Redshift).
LOCK_WAIT_GAVE_UP = frozenset({"55P03", "57014"})
# Another session created the same schema or table at the same moment: unique
# violation on the catalog, duplicate table, duplicate schema, or duplicate object
# ("type ... already exists": the row type of a table created at the same moment).
CREATED_CONCURRENTLY = frozenset({"23505", "42P07", "42P06", "42710"})
# Another session added the same column at the same moment (duplicate column).
ADDED_CONCURRENTLY = frozenset({"23505", "42701"})

# scd2: the two columns a history target has besides the mapping's (valid_to NULL: current).
VALID_FROM, VALID_TO = "valid_from", "valid_to"
HISTORY_COLUMNS = (VALID_FROM, VALID_TO)
# Ledger modes whose publish replaces the set of rows: keys missing from the file go.
REPLACING_MODES = frozenset({"truncate", "scd2", "rollback"})
CHANGE_KINDS = ("added", "removed", "changed")
# Sample keys of each kind kept in the audit (the step result carries counts only).
# Bounded whatever the table: keys x differing columns shown x characters of a value.
SAMPLE_KEYS = 10
SAMPLE_COLUMNS = 10
SAMPLE_VALUE_CHARS = 100
# The delta table's column that says what happened to a key.
CHANGE_COLUMN = "refload_change"


def sqlstate(error: BaseException | None) -> str | None:
    """The SQLSTATE of a driver error: psycopg's `sqlstate`, or the 'C' field that
    redshift-connector puts in the dict of the error's first argument."""
    if error is None:
        return None
    code = getattr(error, "sqlstate", None)
    if isinstance(code, str):
        return code
    fields = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    code = fields.get("C")
    return code if isinstance(code, str) else None


def is_transient_sqlstate(code: str | None) -> bool:
    if not code:
        return False
    return code in TRANSIENT_SQLSTATES or code[:2] in TRANSIENT_SQLSTATE_CLASSES


def lock_timeout_seconds() -> float:
    return _seconds_setting(LOCK_TIMEOUT_ENV, DEFAULT_LOCK_TIMEOUT_SECONDS)


def statement_timeout_seconds() -> float:
    return _seconds_setting(STATEMENT_TIMEOUT_ENV, DEFAULT_STATEMENT_TIMEOUT_SECONDS)


def _seconds_setting(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{name} must be a number of seconds above 0", value=raw)
    return seconds


class _CreatedConcurrently(Exception):
    """The publish transaction lost a race to create the target; it was rolled back."""


class UserSqlAbortedPublish(Exception):
    """User SQL failed inside the publish transaction where no savepoint can undo the
    failure (DuckDB): the transaction is aborted and rolls back. Not a RefloadError, so
    that it passes the per-test error handling up to the load step, which publishes
    again with the test's error as its result (`steps.load`)."""

    def __init__(self, error: RefloadError) -> None:
        super().__init__(error.message)
        self.error = error


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
# Ledger modes in which a file older than the target's last published file is stale:
# all but append (each appended file adds its own rows, whatever its age).
ORDERED_MODES = frozenset({"truncate", "upsert", "scd2"})


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
class TargetTable:
    """The table a config publishes into, as the mapping sheet defines it."""

    schema: str
    name: str
    mapping: Mapping
    key: list[str] = field(default_factory=list)
    sort_key: list[str] | None = None
    dist_key: str | None = None
    allow_new_columns: bool = False
    # scd2: the table keeps every version, with `valid_from` / `valid_to` (HISTORY_COLUMNS).
    history: bool = False

    @property
    def compared_columns(self) -> list[str]:
        """The columns whose change makes a changed key: all but the key and the derived
        columns whose default is a placeholder (load date, run id, source key), which
        differ on every load without the data changing."""
        from steps.mapping import PLACEHOLDERS

        return [
            c.target
            for c in self.mapping.columns
            if c.target not in self.key
            and not (c.derived and c.default and any(p in c.default for p in PLACEHOLDERS))
        ]


@dataclass(frozen=True)
class ChangeSet:
    """Keys a publish added, removed and changed, against the rows before it."""

    added: int
    removed: int
    changed: int
    # Per kind, up to SAMPLE_KEYS entries: {"key": {...}}, and for a changed key also
    # "before" and "after" with the values that differ.
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


# before_publish(warehouse, rows_before, rows_staged, changes): see `Warehouse.publish`.
BeforePublish = Callable[["Warehouse", int, int, ChangeSet | None], None]


@dataclass(frozen=True)
class PublishResult:
    published: bool
    rows_loaded: int
    rows_before: int
    rows_after: int
    skipped_reason: str | None = None
    target_created: bool = False
    changes: ChangeSet | None = None
    # Not published because the target holds a newer file (`Warehouse._stale`).
    stale: bool = False


_TYPE_FAMILIES = {
    "character varying": "varchar",
    "varchar": "varchar",
    "text": "varchar",
    "character": "varchar",
    "smallint": "smallint",
    "int2": "smallint",
    "integer": "integer",
    "int": "integer",
    "int4": "integer",
    "bigint": "bigint",
    "int8": "bigint",
    "numeric": "decimal",
    "decimal": "decimal",
    "double precision": "double",
    "double": "double",
    "float8": "double",
    "boolean": "boolean",
    "bool": "boolean",
    "date": "date",
    "timestamp without time zone": "timestamp",
    "timestamp": "timestamp",
}


def type_signature(
    data_type: str, length: Any = None, precision: Any = None, scale: Any = None
) -> str:
    """A declared type as one comparable string across dialects: varchar(5), decimal(9,4)."""
    text = data_type.strip().lower()
    base, _, args = text.partition("(")
    family = _TYPE_FAMILIES.get(base.strip(), base.strip())
    numbers = [a.strip() for a in args.rstrip(")").split(",") if a.strip()]
    if family == "varchar":
        size = length or (numbers[0] if numbers else None)
        return f"varchar({size})" if size else "varchar"
    if family == "decimal":
        if numbers:
            precision, scale = numbers[0], numbers[1] if len(numbers) > 1 else 0
        return f"decimal({precision},{scale})" if precision is not None else "decimal"
    return family


def _same_type(declared: str, wanted: str) -> bool:
    # DuckDB does not keep VARCHAR lengths; an unbounded side matches any length.
    if declared.startswith("varchar") and wanted.startswith("varchar"):
        return "(" not in declared or "(" not in wanted or declared == wanted
    return declared == wanted


@dataclass(frozen=True)
class Capabilities:
    """What a warehouse can do, stated as data (as dlt's destination capabilities).

    The shared loader branches on these fields; a dialect states them and never
    spells a missing feature as SQL that does nothing.
    """

    # Longest table, schema or column name, in bytes (PostgreSQL cuts longer ones).
    max_identifier_bytes: int
    # The unbounded text type: `string` columns and casts to text.
    text_type: str
    # BEGIN READ ONLY: the server refuses writes in the transaction.
    read_only_transactions: bool
    # SET statement_timeout: the server cancels a statement that runs too long.
    statement_timeout: bool
    # SET LOCAL: a setting that ends with its transaction.
    transaction_settings: bool
    # SET LOCAL lock_timeout: a statement waiting for a lock fails instead of hanging.
    lock_timeout: bool
    # SAVEPOINT / ROLLBACK TO SAVEPOINT inside a transaction.
    savepoints: bool
    # LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE: serialises publishers of a table
    # while its readers go on.
    publisher_lock: bool
    # CREATE TABLE / ALTER TABLE ADD COLUMN roll back with the transaction. The publish
    # creates the target inside its transaction and needs this (docs/adr/0008).
    ddl_in_transactions: bool
    # MERGE INTO.
    supports_merge: bool
    # Most columns a table may have (PostgreSQL's and Redshift's 1,600), history columns
    # included; None: no limit of its own.
    max_columns: int | None = None


def column_count_problem(count: int, history: bool, dialect: str, limit: int) -> str:
    """The message for a mapping with more columns than a warehouse allows in a table."""
    extra = f" (with {', '.join(HISTORY_COLUMNS)} of load_mode scd2)" if history else ""
    return (
        f"the table would have {count:,} columns{extra}; {dialect} allows at most {limit:,}: "
        "split the table or leave columns out of the mapping sheet"
    )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Warehouse:
    """A connection to one warehouse, with refload's statements.

    The statements are written once here; a dialect is a small subclass.

    A dialect must set or override:
      - `dialect` (its name) and `capabilities` (a `Capabilities`);
      - `_connect()`: a DB-API connection in autocommit mode;
      - `stage()`: make the curated Parquet rows readable as the staging table.

    It may override, where its SQL or driver differs:
      - `placeholder` and `_run()` (driver habits), `translate_error()` (which
        driver errors are transient; `sqlstate()` reads the code);
      - `TYPE_NAMES`, `create_table_sql()` (table attributes);
      - `table_columns()`, `schema_exists()` (where the catalog is),
        `missing_privileges()` (a warehouse with grants);
      - `check_curated_uri()` (where it can stage from), `drop_staging_sql()`;
      - `byte_length()`, `regex_mismatch()` (functions spelt differently).

    Everything else (transactions, timeouts, locks, text casts) follows `capabilities`.
    """

    dialect: ClassVar[str] = "base"
    capabilities: ClassVar[Capabilities]
    placeholder: ClassVar[str] = "%s"
    TYPE_NAMES: ClassVar[dict[str, str]] = {
        "smallint": "SMALLINT",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "double": "DOUBLE PRECISION",
        "boolean": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
    }

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self.in_transaction = False
        # Set while steps in one process share this warehouse (`shared_connections`).
        self.shared = False
        self._audit_tables_ready = False
        # What a cancelled statement ran under (see `_error`): the setting and its seconds.
        self._statement_limit = (STATEMENT_TIMEOUT_ENV, statement_timeout_seconds())
        self._waiting_for_lock = False

    # --- connection ------------------------------------------------------------------

    def _connect(self) -> Any:
        raise NotImplementedError

    def translate_error(self, error: Exception) -> RefloadError:
        """Driver error -> refload error (transient when a retry may help)."""
        return InfrastructureError(f"{self.dialect} error: {error}")

    def _error(self, error: Exception) -> RefloadError:
        """`translate_error`, except for a statement the server cancelled for running too
        long. That one is terminal: a retry would run the same statement on the same rows
        for as long again, holding the target's lock each time. A lock wait that gave up
        stays retryable (`_bounded_lock_wait`)."""
        if sqlstate(error) != QUERY_CANCELED or self._waiting_for_lock:
            return self.translate_error(error)
        setting, seconds = self._statement_limit
        return InfrastructureError(
            f"a {self.dialect} statement ran longer than {seconds:g} s ({setting}) and was "
            f"cancelled; its transaction was rolled back, the target is unchanged: find what "
            f"made it slow, or raise {setting} ({self.translate_error(error).reason})"
        )

    def statement_timeout_ms(self) -> int:
        return max(1, int(self._statement_limit[1] * 1000))

    @property
    def conn(self) -> Any:
        if self._conn is None:
            try:
                self._conn = self._connect()
            except RefloadError:
                raise
            except Exception as error:
                raise self.translate_error(error) from error
            try:
                self._bound_statements()
            except RefloadError:
                self.close()
                raise
        return self._conn

    def _bound_statements(self) -> None:
        """Every statement of a new session under `statement_timeout_seconds()`, where the
        server has such a limit; a dialect that sets it at connect overrides this."""
        if self.capabilities.statement_timeout:
            self.execute(f"SET statement_timeout = {self.statement_timeout_ms()}")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *exc: object) -> None:
        # A shared connection stays open for the next step, unless this one failed:
        # its session state is then unknown, so the next step reconnects.
        if error_type is not None or not self.shared:
            self.close()

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "%s" else sql.replace("%s", self.placeholder)

    def _run(self, sql: str, params: Sequence[Any], fetch: bool) -> tuple[list[str], list[Any]]:
        """Run one statement on a fresh cursor; dialects whose cursors are not shared override."""
        cursor = self.conn.cursor()
        try:
            cursor.execute(self._sql(sql), tuple(params) or None)
            if not fetch:
                return [], []
            return [d[0] for d in cursor.description or []], list(cursor.fetchall())
        finally:
            cursor.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self._run(sql, params, fetch=False)
        except RefloadError:
            raise
        except Exception as error:
            raise self._error(error) from error

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.query_with_names(sql, params)[1]

    def query_with_names(
        self, sql: str, params: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            names, rows = self._run(sql, params, fetch=True)
        except RefloadError:
            raise
        except Exception as error:
            raise self._error(error) from error
        return names, [tuple(r) for r in rows]

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT; any failure, COMMIT's own included, rolls back and raises."""
        self.execute("BEGIN")
        self.in_transaction = True
        try:
            yield
            self._commit()
        except BaseException:
            self.rollback()
            raise
        finally:
            self.in_transaction = False

    def _commit(self) -> None:
        try:
            self.execute("COMMIT")
        except RefloadError as error:
            # Redshift, for one, reports a serializable isolation conflict at COMMIT.
            raise type(error)(
                f"COMMIT failed, the transaction was rolled back: {error.reason}"
            ) from error

    @property
    def user_sql_in_publish(self) -> bool:
        """Whether user SQL can run inside the publish transaction as safely as outside it.

        Where the server enforces read-only, that takes a savepoint to switch to read-only
        and back; without savepoints (Redshift) it cannot. Where it never enforces it
        (DuckDB), only the parse guard applies, inside the publish as outside.
        """
        return self.capabilities.savepoints or not self.capabilities.read_only_transactions

    @contextmanager
    def read_only(self, timeout_seconds: int) -> Iterator[None]:
        """Run user SQL that may only read, with a time limit; whatever it did is undone.

        Outside a transaction: a read-only transaction, rolled back. Inside one (before-
        publish checks): a savepoint, read-only from there on, rolled back to, so that the
        publish goes on as if the SQL had never run. The statement timeout is put back as
        it was, also where it can only be set for the whole session.
        """
        previous_timeout = self._session_timeout()
        limit = self._statement_limit
        self._statement_limit = ("the custom_sql time limit", float(timeout_seconds))
        try:
            if self.in_transaction:
                with self._read_only_savepoint(timeout_seconds):
                    yield
                return
            self.execute("BEGIN READ ONLY" if self.capabilities.read_only_transactions else "BEGIN")
            self.in_transaction = True
            try:
                self.set_statement_timeout(timeout_seconds)
                yield
            finally:
                self.in_transaction = False
                self.rollback()
        finally:
            self._statement_limit = limit
            if previous_timeout is not None:
                self.execute(f"SET statement_timeout TO {_setting_literal(previous_timeout)}")

    @contextmanager
    def _read_only_savepoint(self, timeout_seconds: int) -> Iterator[None]:
        if not self.user_sql_in_publish:
            raise ConfigError(
                f"custom_sql cannot run before_publish on {self.dialect}: it has no "
                "savepoints to make the publish transaction read-only for the query and "
                "undo it; run the test after_publish"
            )
        if not self.capabilities.savepoints:  # nothing to enforce: the parse guard applies
            try:
                yield
            except RefloadError as error:
                raise UserSqlAbortedPublish(error) from error
            return
        self.execute("SAVEPOINT refload_user_sql")
        try:
            self.execute("SET LOCAL transaction_read_only = on")
            self.set_statement_timeout(timeout_seconds)
            yield
        finally:
            # Also undoes the two settings, and clears an error the query raised.
            self.execute("ROLLBACK TO SAVEPOINT refload_user_sql")
            self.execute("RELEASE SAVEPOINT refload_user_sql")

    def _session_timeout(self) -> str | None:
        """The session's statement timeout, when setting it for a check outlives the check."""
        if not self.capabilities.statement_timeout or self.capabilities.transaction_settings:
            return None
        return str(self.scalar("SHOW statement_timeout"))

    def set_statement_timeout(self, seconds: int) -> None:
        """Limit each statement from here on: for the transaction where settings can be
        local to it, else for the session; nothing where the server has no such limit."""
        if not self.capabilities.statement_timeout:
            return
        scope = "LOCAL " if self.capabilities.transaction_settings else ""
        self.execute(f"SET {scope}statement_timeout = {int(seconds) * 1000}")

    def rollback(self) -> None:
        # The connection may be gone; the server rolls back on its own then.
        with suppress(RefloadError):
            self.execute("ROLLBACK")

    # --- names and types -------------------------------------------------------------

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def literal(self, text: str) -> str:
        """A string as a SQL literal, where a statement takes no parameter (COPY's source)."""
        return "'" + text.replace("'", "''") + "'"

    def table(self, schema: str, name: str) -> str:
        return f"{self.quote(schema)}.{self.quote(name)}"

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

    # --- tables ----------------------------------------------------------------------

    def ensure_audit_tables(self) -> None:
        """Create the audit schema and tables that are missing.

        Two first runs may create them at the same moment: the one that loses the race
        finds them made and goes on (`_create_missing`).
        """
        if self._audit_tables_ready:  # once per warehouse object, even when shared by steps
            return
        if not self.schema_exists(AUDIT_SCHEMA):
            self._create_missing(f"CREATE SCHEMA IF NOT EXISTS {self.quote(AUDIT_SCHEMA)}")
        for name, columns in AUDIT_TABLES.items():
            existing = self.table_columns(AUDIT_SCHEMA, name)
            added = AUDIT_COLUMNS_ADDED.get(name, {})
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

    def _create_missing(self, ddl: str, raced: frozenset[str] = CREATED_CONCURRENTLY) -> None:
        # IF NOT EXISTS does not make concurrent creators safe on PostgreSQL: the loser
        # waits for the winner and then fails on the catalog's unique index. The object
        # exists either way, which is all this statement wants (it runs in autocommit).
        try:
            self.execute(ddl)
        except RefloadError as error:
            if sqlstate(error.__cause__) not in raced:
                raise

    def schema_exists(self, schema: str) -> bool:
        return bool(
            self.query(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
            )
        )

    def table_columns(self, schema: str, name: str) -> dict[str, str]:
        """Column name -> declared type, normalised (see `type_signature`)."""
        rows = self.query(
            "SELECT column_name, data_type, character_maximum_length, numeric_precision, "
            "numeric_scale FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, name),
        )
        return {r[0]: type_signature(*r[1:]) for r in rows}

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

    def _ensure_target(self, target: TargetTable, existed: dict[str, str]) -> bool:
        """Inside the publish transaction: create the target when missing, or add the
        columns the config allows. `existed` is what `check_target` found before staging.

        The DDL commits or rolls back with the rows, so a failed first load leaves no
        empty table behind. True if this run created the table.
        """
        # A table that was missing before staging may have been created since by a
        # concurrent run: look again, and check that one for drift too.
        existing = existed or self.table_columns(target.schema, target.name)
        if existing:
            for c in self.check_drift(target, existing):
                self.execute(
                    f"ALTER TABLE {self.table(target.schema, target.name)} ADD COLUMN "
                    f"{self.quote(c.target)} {self.column_type(c.data_type)}"
                )
            return False
        try:
            if not self.schema_exists(target.schema):
                self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.quote(target.schema)}")
            self.execute(
                self.create_table_sql(
                    target.schema,
                    target.name,
                    target.mapping,
                    target.sort_key,
                    target.dist_key,
                    history=target.history,
                )
            )
        except RefloadError as error:
            if sqlstate(error.__cause__) in CREATED_CONCURRENTLY:
                raise _CreatedConcurrently(str(error)) from error
            raise
        return True

    # --- staging (dialects override) -------------------------------------------------

    def check_curated_uri(self, curated_uri: str) -> None:
        """Refuse, before anything is touched, a curated file this warehouse cannot stage."""

    def stage(self, staging: str, mapping: Mapping, curated_uri: str) -> None:
        """Make the curated Parquet rows readable as `staging`, typed as the mapping says:
        a new temporary table (DuckDB: a view over the file)."""
        raise NotImplementedError

    def staging_name(self, run_id: str) -> str:
        # Unique per attempt, not only per run id: two runs of one file at once, or one
        # run id given twice, never share a staging table.
        safe = "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in run_id.lower())
        name = f"refload_stage_{secrets.token_hex(4)}_{safe}"
        return name[: self.capabilities.max_identifier_bytes]

    def drop_staging_sql(self, staging: str) -> str:
        return f"DROP TABLE IF EXISTS {self.quote(staging)}"

    def create_staging_sql(self, staging: str, mapping: Mapping) -> str:
        # From the mapping, not LIKE the target: the target may not exist before the
        # publish transaction creates it.
        return f"CREATE TEMPORARY TABLE {self.quote(staging)} (\n  {self._columns_sql(mapping)}\n)"

    # --- publish ---------------------------------------------------------------------

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
        if entry.load_mode in REPLACING_MODES:
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

    def _skip_if_published(self, entry: LedgerEntry, target: TargetTable) -> PublishResult | None:
        """A result that publishes nothing, when this file is already in the target.

        The ledger alone is not enough: a target dropped or emptied out of band, then
        the same file replayed, must be published again. Replace and upsert publish
        again whenever the target's row count differs from what the last publish left
        (both are safe to repeat); append only when the target is gone or empty (a
        second append of the same rows would double them).
        """
        run_id = self.already_published(entry)
        if run_id is None:
            return None
        where = f"{target.schema}.{target.name}"
        if not self.table_columns(target.schema, target.name):
            log.warning("target is gone; publishing the file again", target=where, run=run_id)
            return None
        count = self.count(self.table(target.schema, target.name), current=target.history)
        latest = self.last_publish(entry.target)
        left = latest.rows_after if latest else count
        changed = count == 0 < left if entry.load_mode == "append" else count != left
        if changed:
            log.warning(
                "target changed since the last publish; publishing the file again",
                target=where,
                rows_in_target=count,
                rows_after_last_publish=left,
                run=run_id,
            )
            return None
        return PublishResult(
            False,
            0,
            count,
            count,
            f"already published by run {run_id} (same content and config)",
        )

    def _stale(self, entry: LedgerEntry, ref: str, history: bool) -> PublishResult | None:
        """A result that publishes nothing, when the target's last published file was
        written after this one (S3 delivers out of order; two files may run at once).

        Runs under the publish lock, so the ledger it reads is the one this publish would
        follow. A target's first file, a file or ledger row without a time (published by
        an earlier version), and append tables are never stale.
        """
        if entry.load_mode not in ORDERED_MODES or entry.source_modified_at is None:
            return None
        latest = self.last_publish(entry.target)
        newest = latest.source_modified_at if latest else None
        if latest is None or newest is None or entry.source_modified_at >= newest:
            return None
        run_id = latest.run_id
        count = self.count(ref, current=history)
        return PublishResult(
            False,
            0,
            count,
            count,
            f"stale: the file was written at {entry.source_modified_at.isoformat()}, before "
            f"the file run {run_id} published ({newest.isoformat()}); --force publishes it",
            stale=True,
        )

    @contextmanager
    def _bounded_lock_wait(self, target: str, *, announce: bool = False) -> Iterator[None]:
        """Statements in this block wait at most `lock_timeout_seconds()` for a lock that
        another transaction holds, then fail as retryable.

        PostgreSQL: lock_timeout. Redshift has none: a statement waits for a lock as
        long as it runs, so the block runs under a statement_timeout of that length
        (it holds only the short statements that take the locks). DuckDB: nothing
        waits (one writer per file; a conflict fails at once).
        """
        seconds = lock_timeout_seconds()
        milliseconds = max(1, int(seconds * 1000))
        caps = self.capabilities
        # Outside a transaction the setting is the session's: put back when the block ends,
        # so later statements on this connection (the next step's) keep their own.
        session_lock_timeout = caps.lock_timeout and not (
            self.in_transaction and caps.transaction_settings
        )
        if caps.lock_timeout:
            scope = "" if session_lock_timeout else "LOCAL "
            self.execute(f"SET {scope}lock_timeout = {milliseconds}")
        elif caps.statement_timeout:
            self.execute(f"SET statement_timeout = {milliseconds}")
        if announce:
            log.info("waiting for the target's lock", target=target, at_most_seconds=seconds)
        waiting, self._waiting_for_lock = self._waiting_for_lock, True
        try:
            yield
        except WarehouseUnavailable as error:
            if sqlstate(error.__cause__) not in LOCK_WAIT_GAVE_UP:
                raise
            raise WarehouseUnavailable(
                f"{target} is locked by another transaction; gave up after {seconds:g} s "
                f"({LOCK_TIMEOUT_ENV}); a retry may succeed ({error.reason})",
                table=target,
            ) from error
        finally:
            self._waiting_for_lock = waiting
            if session_lock_timeout:
                with suppress(RefloadError):
                    self.execute("RESET lock_timeout")
            if caps.statement_timeout and not caps.lock_timeout:
                # The session's own limit again (`_bound_statements`); in a failed
                # transaction this fails, and the rollback restores it instead.
                with suppress(RefloadError):
                    self.execute(f"SET statement_timeout = {self.statement_timeout_ms()}")

    def _take_publish_lock(self, target: str, where: str) -> None:
        """Serialise publishers of the target, waiting a bounded time for other writers."""
        caps = self.capabilities
        if caps.publisher_lock:
            statement = f"LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE"
        elif caps.statement_timeout:
            # Takes the table's write lock now (Redshift: ShareRowExclusiveLock), so that
            # waiting for another writer happens here, under the statement_timeout bound.
            statement = f"DELETE FROM {target} WHERE 1 = 0"
        else:
            return  # DuckDB: nothing to wait for
        with self._bounded_lock_wait(where, announce=True):
            self.execute(statement)

    def duplicate_key_in(self, staging: str, key: list[str]) -> tuple[Any, ...] | None:
        cols = ", ".join(self.quote(k) for k in key)
        rows = self.query(
            f"SELECT {cols} FROM {self.quote(staging)} GROUP BY {cols} HAVING COUNT(*) > 1 LIMIT 1"
        )
        return rows[0] if rows else None

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
        """The statements that publish staged rows; scd2 needs `delta` (see `compute_changes`)."""
        cols = ", ".join(self.quote(c) for c in columns)
        insert = f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {self.quote(staging)}"
        if mode == "scd2":
            assert delta is not None and loaded_at is not None
            return self.history_statements(target, staging, columns, key, delta, loaded_at)
        if mode in REPLACING_MODES:
            return [f"DELETE FROM {target}", insert]
        if mode == "upsert":
            match = " AND ".join(
                f"{target}.{self.quote(k)} = {self.quote(staging)}.{self.quote(k)}" for k in key
            )
            return [f"DELETE FROM {target} USING {self.quote(staging)} WHERE {match}", insert]
        return [insert]

    def history_statements(
        self,
        target: str,
        staging: str,
        columns: list[str],
        key: list[str],
        delta: str,
        loaded_at: dt.datetime,
    ) -> list[str]:
        """scd2: close the current versions of removed and changed keys, insert a version
        for each added and changed key; unchanged rows are not touched. UPDATE ... FROM and
        INSERT ... SELECT, which DuckDB, PostgreSQL and Redshift all run (no MERGE)."""
        q = self.quote
        at = self.timestamp_literal(loaded_at)
        closes = " AND ".join(f"{target}.{q(k)} = d.{q(k)}" for k in key)
        picks = " AND ".join(f"s.{q(k)} = d.{q(k)}" for k in key)
        cols = ", ".join(q(c) for c in columns)
        values = ", ".join(f"s.{q(c)}" for c in columns)
        return [
            f"UPDATE {target} SET {q(VALID_TO)} = {at} FROM {q(delta)} d "
            f"WHERE {target}.{q(VALID_TO)} IS NULL "
            f"AND d.{q(CHANGE_COLUMN)} IN ('removed', 'changed') AND {closes}",
            f"INSERT INTO {target} ({cols}, {q(VALID_FROM)}) SELECT {values}, {at} "
            f"FROM {q(staging)} s JOIN {q(delta)} d ON {picks} "
            f"WHERE d.{q(CHANGE_COLUMN)} IN ('added', 'changed')",
        ]

    def changes_into_empty(self, target: TargetTable, staging: str) -> ChangeSet:
        """A target with no rows before this publish (a first load): every staged key is
        added, which needs no join of staging with the target (0.16 s at 1M rows)."""
        q = self.quote
        keys = ", ".join(q(k) for k in target.key)
        added = int(self.scalar(f"SELECT COUNT(*) FROM {q(staging)}"))
        rows = self.query(f"SELECT {keys} FROM {q(staging)} ORDER BY {keys} LIMIT {SAMPLE_KEYS}")
        samples = {"added": [{"key": _row_dict(target.key, row)} for row in rows]}
        return ChangeSet(added, 0, 0, {**samples, "removed": [], "changed": []})

    def compute_changes(
        self, mode: LedgerMode, target: TargetTable, ref: str, staging: str, delta: str
    ) -> ChangeSet:
        """Inside the publish transaction, before the target changes: the keys this publish
        adds, removes (replacing modes only) and changes, kept in the temporary table `delta`
        (key columns and CHANGE_COLUMN) for the publish statements."""
        q = self.quote
        key = target.key
        current = f"(SELECT * FROM {ref} WHERE {q(VALID_TO)} IS NULL)" if target.history else ref
        join = "FULL OUTER JOIN" if mode in REPLACING_MODES else "LEFT JOIN"
        on = " AND ".join(f"s.{q(k)} = t.{q(k)}" for k in key)
        first = q(key[0])  # never null in the staged rows (ingest rejects an empty key)
        differs = [self._differs(f"s.{q(c)}", f"t.{q(c)}") for c in target.compared_columns]
        kind = (
            f"CASE WHEN s.{first} IS NULL THEN 'removed' "
            f"WHEN t.{first} IS NULL THEN 'added' ELSE 'changed' END"
        )
        keys = ", ".join(f"COALESCE(s.{q(k)}, t.{q(k)}) AS {q(k)}" for k in key)
        self.execute(
            f"CREATE TEMPORARY TABLE {q(delta)} AS SELECT {keys}, {kind} AS {q(CHANGE_COLUMN)} "
            f"FROM {q(staging)} s {join} {current} t ON {on} "
            f"WHERE {' OR '.join([f's.{first} IS NULL', f't.{first} IS NULL', *differs])}"
        )
        counts = dict.fromkeys(CHANGE_KINDS, 0)
        for change, number in self.query(
            f"SELECT {q(CHANGE_COLUMN)}, COUNT(*) FROM {q(delta)} GROUP BY {q(CHANGE_COLUMN)}"
        ):
            counts[change] = int(number)
        key_cols = ", ".join(f"d.{q(k)}" for k in key)
        samples: dict[str, list[dict[str, Any]]] = {}
        for change in ("added", "removed"):
            rows = (
                self.query(
                    f"SELECT {key_cols} FROM {q(delta)} d WHERE d.{q(CHANGE_COLUMN)} = %s "
                    f"ORDER BY {key_cols} LIMIT {SAMPLE_KEYS}",
                    (change,),
                )
                if counts[change]
                else []
            )
            samples[change] = [{"key": _row_dict(key, row)} for row in rows]
        samples["changed"] = (
            self._changed_samples(target, current, staging, delta) if counts["changed"] else []
        )
        return ChangeSet(counts["added"], counts["removed"], counts["changed"], samples)

    def _changed_samples(
        self, target: TargetTable, current: str, staging: str, delta: str
    ) -> list[dict[str, Any]]:
        q = self.quote
        key, compared = target.key, target.compared_columns
        key_cols = ", ".join(f"d.{q(k)}" for k in key)
        keys = ", ".join(q(k) for k in key)
        # The sample keys first, then the join: with ORDER BY ... LIMIT over the whole
        # join, PostgreSQL, which has no statistics on the temporary tables, walks the
        # target in key order in a nested loop against the delta (2x10^10 comparisons at
        # 100,000 changed keys of 200,000 rows), holding the target's lock meanwhile.
        sampled = (
            f"(SELECT {keys} FROM {q(delta)} WHERE {q(CHANGE_COLUMN)} = 'changed' "
            f"ORDER BY {keys} LIMIT {SAMPLE_KEYS}) d"
        )
        rows = self.query(
            f"SELECT {key_cols}, "
            + ", ".join([*(f"t.{q(c)}" for c in compared), *(f"s.{q(c)}" for c in compared)])
            + f" FROM {sampled} "
            f"JOIN {q(staging)} s ON {' AND '.join(f's.{q(k)} = d.{q(k)}' for k in key)} "
            f"JOIN {current} t ON {' AND '.join(f't.{q(k)} = d.{q(k)}' for k in key)} "
            f"ORDER BY {key_cols}"
        )
        samples = []
        for row in rows:
            before = row[len(key) : len(key) + len(compared)]
            after = row[len(key) + len(compared) :]
            differing = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a]
            differing = differing[:SAMPLE_COLUMNS]
            samples.append(
                {
                    "key": _row_dict(key, row[: len(key)]),
                    "before": {compared[i]: _sample_value(before[i]) for i in differing},
                    "after": {compared[i]: _sample_value(after[i]) for i in differing},
                }
            )
        return samples

    @staticmethod
    def _differs(left: str, right: str) -> str:
        # IS DISTINCT FROM spelt out: Redshift has no such operator.
        return (
            f"({left} <> {right} OR ({left} IS NULL AND {right} IS NOT NULL) "
            f"OR ({left} IS NOT NULL AND {right} IS NULL))"
        )

    def count(self, target: str, *, current: bool = False) -> int:
        """Rows of a table; `current`: of a history table, the current versions only."""
        where = f" WHERE {self.quote(VALID_TO)} IS NULL" if current else ""
        return int(self.scalar(f"SELECT COUNT(*) FROM {target}{where}"))

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

    def publish(
        self,
        entry: LedgerEntry,
        target: TargetTable,
        before_publish: BeforePublish | None = None,
        *,
        force: bool = False,
    ) -> PublishResult:
        """Stage, then create/replace/upsert/append/scd2 plus the ledger row in ONE transaction.

        `before_publish(warehouse, rows_before, rows_staged, changes)` runs inside that
        transaction after the rows are in place and before the ledger row; raising there
        rolls everything back, the target's creation included. `changes` is the change set
        (tables with a primary key), else None. `force` publishes even when the ledger says
        this file is already in the target.
        """
        existed = self.check_target(target)
        if force:
            log.info("force: publishing whatever the ledger says", target=entry.target)
        else:
            with self._bounded_lock_wait(f"{target.schema}.{target.name}"):
                skipped = self._skip_if_published(entry, target)
            if skipped:
                return skipped
        staging = self.staging_name(entry.run_id)
        self.execute(self.drop_staging_sql(staging))
        self.stage(staging, target.mapping, entry.curated_uri)
        try:
            if entry.load_mode == "upsert":
                doubled = self.duplicate_key_in(staging, target.key)
                if doubled:
                    value = ", ".join(
                        f"{k}={v!r}" for k, v in zip(target.key, doubled, strict=True)
                    )
                    raise RejectedInput(
                        f"duplicate primary key ({value}) in the incoming rows",
                        file=entry.curated_uri,
                    )
            try:
                return self._publish_staged(entry, target, existed, staging, before_publish, force)
            except _CreatedConcurrently:
                # Another run created the schema or table a moment ago and this
                # transaction is rolled back: again, now that it exists.
                log.info(
                    "target created by a concurrent run; publishing again", target=entry.target
                )
                try:
                    return self._publish_staged(entry, target, {}, staging, before_publish, force)
                except _CreatedConcurrently as again:
                    raise WarehouseUnavailable(
                        f"{entry.target} was being created by another run twice in a row; "
                        "a retry may succeed",
                        table=entry.target,
                    ) from again
        finally:
            # Best effort: a temporary table also goes with the session, and a failed
            # cleanup must not hide why the publish failed.
            with suppress(RefloadError):
                self.execute(self.drop_staging_sql(staging))

    def _publish_staged(
        self,
        entry: LedgerEntry,
        target: TargetTable,
        existed: dict[str, str],
        staging: str,
        before_publish: BeforePublish | None,
        force: bool,
    ) -> PublishResult:
        ref = self.table(target.schema, target.name)
        where = f"{target.schema}.{target.name}"
        with self.transaction():
            with self._bounded_lock_wait(where):
                created = self._ensure_target(target, existed)
            self._take_publish_lock(ref, where)
            # Again under the lock: a concurrent run may have published this file meanwhile,
            # or a newer one (which wins, whichever run commits first).
            skipped = None if force else self._skip_if_published(entry, target)
            skipped = skipped or (None if force else self._stale(entry, ref, target.history))
            if skipped:
                return skipped
            before = self.count(ref, current=target.history)
            loaded_at = utcnow()
            changes, delta = None, None
            if target.key and before == 0 and not target.history:
                changes = self.changes_into_empty(target, staging)
            elif target.key:
                delta = f"refload_delta_{secrets.token_hex(4)}"
                changes = self.compute_changes(entry.load_mode, target, ref, staging, delta)
            for statement in self.publish_statements(
                entry.load_mode, ref, staging, target.mapping.targets, target.key, delta, loaded_at
            ):
                self.execute(statement)
            if delta:  # temporary; inside the transaction, so a rollback removes it too
                self.execute(f"DROP TABLE {self.quote(delta)}")
            if changes is not None and delta is None:  # a first load: every staged row
                loaded = changes.added
            else:
                loaded = int(self.scalar(f"SELECT COUNT(*) FROM {self.quote(staging)}"))
            if before_publish is not None:
                before_publish(self, before, loaded, changes)
            after = self.count(ref, current=target.history)
            self.write_ledger(entry, loaded, before, after, changes, loaded_at)
        return PublishResult(True, loaded, before, after, target_created=created, changes=changes)

    # --- audit -----------------------------------------------------------------------

    def record_checks(self, run_id: str, table_name: str, results: list[dict[str, Any]]) -> None:
        if not results:
            return
        now = utcnow()
        with self.transaction():
            for r in results:
                self.execute(
                    f"INSERT INTO {self.table(AUDIT_SCHEMA, 'data_quality_tests')} (run_id, "
                    "table_name, test_name, test_type, severity, status, observed_value, expected, "
                    "details, executed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
                    ),
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
        self.execute(
            f"INSERT INTO {self.table(AUDIT_SCHEMA, 'run_log')} (run_id, table_name, step, "
            "status, error_type, error_message, source_uri, details, logged_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                run_id,
                table_name,
                step,
                status,
                error and _text(error["type"], 128),
                error and _text(error["message"], LONG_TEXT_BYTES),
                source_uri,
                # A failed step's full error text (up to 64 KiB) also in details: payloads,
                # logs and alert subjects carry 2 KiB of it (steps.errors.MESSAGE_BYTES).
                audit_json(details, long_text=("error", error["message"]) if error else None),
                utcnow(),
            ),
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


def _sample_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return str(value)[:SAMPLE_VALUE_CHARS]


def _row_dict(names: list[str], row: Sequence[Any]) -> dict[str, Any]:
    return {n: _sample_value(v) for n, v in zip(names, row, strict=True)}


def _samples_json(samples: dict[str, list[dict[str, Any]]]) -> str:
    text = json.dumps(samples, default=str)
    if len(text) > 65_000:  # the column's limit: keys only
        text = json.dumps({k: [{"key": s["key"]} for s in v] for k, v in samples.items()})
    if len(text) > 65_000:
        # Keys too wide even alone: no samples rather than JSON cut mid-document, which
        # every reader of the ledger row (validate's changes_within) would fail to parse.
        text = json.dumps({k: [] for k in samples})
    return text


def _setting_literal(value: str) -> str:
    return value if value.isdigit() else "'" + value.replace("'", "''") + "'"


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
