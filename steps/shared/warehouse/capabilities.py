"""What a warehouse can do, stated as data, and the settings and error codes the SQL
client reads (statement and lock bounds, SQLSTATEs)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from steps.shared.errors import ConfigError, RefloadError

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


class UserSqlAbortedPublish(Exception):
    """User SQL failed inside the publish transaction where no savepoint can undo the
    failure (DuckDB): the transaction is aborted and rolls back. Not a RefloadError, so
    that it passes the per-test error handling up to the load step, which publishes
    again with the test's error as its result (`steps.load`)."""

    def __init__(self, error: RefloadError) -> None:
        super().__init__(error.message)
        self.error = error


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
    # COPY ... FROM STDIN of rows the client holds: the local pipeline stages a large
    # file while ingest is still writing it (`steps.ingest.early`).
    stages_from_memory: bool = False
    # A target the publish creates is filled by COPY from the curated file, in the same
    # transaction, with no staging table and no INSERT ... SELECT from it: a first load
    # does the warehouse's bulk work once (docs/adr/0023-new-targets-filled-directly.md).
    fills_new_target: bool = False
    # WITH ... AS MATERIALIZED: the change set's join of staging with the target is
    # computed once, not once per kind and count (`ChangeDetection.change_set`).
    materialized_cte: bool = False
    # Most columns a table may have (PostgreSQL's and Redshift's 1,600), history columns
    # included; None: no limit of its own.
    max_columns: int | None = None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
