"""The one loader every warehouse shares; dialects override only what differs.

Statements are written once here in the SQL that DuckDB, PostgreSQL and
Redshift all accept. Publishing is DELETE + INSERT ... SELECT (never TRUNCATE,
which commits implicitly on Redshift) inside one explicit transaction that
also writes the load ledger row.
"""

from __future__ import annotations

from steps.shared.warehouse.audit import (
    AUDIT_COLUMNS_ADDED,
    AUDIT_SCHEMA,
    AUDIT_TABLES,
    AuditStore,
    LedgerEntry,
    LedgerRow,
)
from steps.shared.warehouse.audit_reads import AuditReads
from steps.shared.warehouse.audit_values import (
    LONG_TEXT_BYTES,
    SHORT_TEXT_BYTES,
    _naive,
    _samples_json,
    _shorten_strings,
    _text,
    audit_json,
)
from steps.shared.warehouse.catalog import (
    _TYPE_FAMILIES,
    HISTORY_COLUMNS,
    VALID_FROM,
    VALID_TO,
    Catalog,
    TargetTable,
    _CreatedConcurrently,
    _same_type,
    column_count_problem,
    type_signature,
)
from steps.shared.warehouse.changes import (
    CHANGE_COLUMN,
    CHANGE_KINDS,
    SAMPLE_COLUMNS,
    SAMPLE_KEYS,
    SAMPLE_VALUE_CHARS,
    ChangeDetection,
    ChangeSet,
    _row_dict,
    _sample_value,
)
from steps.shared.warehouse.client import (
    ADDED_CONCURRENTLY,
    CREATED_CONCURRENTLY,
    DEFAULT_LOCK_TIMEOUT_SECONDS,
    DEFAULT_STATEMENT_TIMEOUT_SECONDS,
    LOCK_TIMEOUT_ENV,
    LOCK_WAIT_GAVE_UP,
    QUERY_CANCELED,
    STATEMENT_TIMEOUT_ENV,
    TRANSIENT_SQLSTATE_CLASSES,
    TRANSIENT_SQLSTATES,
    Capabilities,
    SqlClient,
    UserSqlAbortedPublish,
    _seconds_setting,
    _setting_literal,
    is_transient_sqlstate,
    lock_timeout_seconds,
    sqlstate,
    statement_timeout_seconds,
    utcnow,
)
from steps.shared.warehouse.publish import BeforePublish, Publisher, PublishResult


class Warehouse(Publisher):
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


# Everything the load layer's modules define, importable from here as before the split.
__all__ = [
    "ADDED_CONCURRENTLY",
    "AUDIT_COLUMNS_ADDED",
    "AUDIT_SCHEMA",
    "AUDIT_TABLES",
    "CHANGE_COLUMN",
    "CHANGE_KINDS",
    "CREATED_CONCURRENTLY",
    "DEFAULT_LOCK_TIMEOUT_SECONDS",
    "DEFAULT_STATEMENT_TIMEOUT_SECONDS",
    "HISTORY_COLUMNS",
    "LOCK_TIMEOUT_ENV",
    "LOCK_WAIT_GAVE_UP",
    "LONG_TEXT_BYTES",
    "QUERY_CANCELED",
    "SAMPLE_COLUMNS",
    "SAMPLE_KEYS",
    "SAMPLE_VALUE_CHARS",
    "SHORT_TEXT_BYTES",
    "STATEMENT_TIMEOUT_ENV",
    "TRANSIENT_SQLSTATES",
    "TRANSIENT_SQLSTATE_CLASSES",
    "VALID_FROM",
    "VALID_TO",
    "_TYPE_FAMILIES",
    "AuditReads",
    "AuditStore",
    "BeforePublish",
    "Capabilities",
    "Catalog",
    "ChangeDetection",
    "ChangeSet",
    "LedgerEntry",
    "LedgerRow",
    "PublishResult",
    "Publisher",
    "SqlClient",
    "TargetTable",
    "UserSqlAbortedPublish",
    "Warehouse",
    "_CreatedConcurrently",
    "_naive",
    "_row_dict",
    "_same_type",
    "_sample_value",
    "_samples_json",
    "_seconds_setting",
    "_setting_literal",
    "_shorten_strings",
    "_text",
    "audit_json",
    "column_count_problem",
    "is_transient_sqlstate",
    "lock_timeout_seconds",
    "sqlstate",
    "statement_timeout_seconds",
    "type_signature",
    "utcnow",
]
