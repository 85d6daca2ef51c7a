"""The SQL client: one driver session, its transactions, timeouts and lock waits, the
read-only sandbox for user SQL, and quoting. A dialect supplies its own subclass for its
driver's habits (connecting, running a statement, which errors are transient)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ClassVar

import structlog

from steps.shared.errors import ConfigError, InfrastructureError, RefloadError, WarehouseUnavailable
from steps.shared.warehouse.capabilities import (
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
    UserSqlAbortedPublish,
    _seconds_setting,
    is_transient_sqlstate,
    lock_timeout_seconds,
    sqlstate,
    statement_timeout_seconds,
    utcnow,
)

log = structlog.get_logger("refload")


class SqlClient:
    """A driver session: statements, transactions (BEGIN ... COMMIT), timeouts, lock
    waits, the read-only sandbox for user SQL, and quoting.

    The dialect's `Warehouse` makes it with its name and `Capabilities`; a dialect whose
    driver differs subclasses it (`_connect`, `_run`, `translate_error`, `placeholder`).
    """

    placeholder: ClassVar[str] = "%s"

    def __init__(self, url: str, dialect: str, capabilities: Capabilities) -> None:
        self.url = url
        self.dialect = dialect
        self.capabilities = capabilities
        self._conn: Any = None
        self.in_transaction = False
        # Called on every rollback, before it: what others cached of this session (the
        # catalog's columns) may be untrue after DDL the transaction ran is undone.
        self.on_rollback: list[Callable[[], None]] = []
        # Called when the session ends (closed, or found ended by the server): what lived
        # only in it (temporary staging tables) is gone with it.
        self.on_close: list[Callable[[], None]] = []
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
        stays retryable (`bounded_lock_wait`)."""
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

    def close_if_lost(self) -> None:
        """A step takes up the session steps share (`shared_connections`), which may have
        sat idle a while (a group's members ingested one after another): one the server
        ended meanwhile is closed, as a failed step's is, and the next statement opens a
        new one. Only between steps: within one, a session-bound table may be in use."""
        if self._conn is not None and not self.in_transaction and self._session_lost():
            self.close()

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

    def _session_lost(self) -> bool:
        """Whether the server ended this idle session, found without a round trip;
        a dialect that cannot tell says no."""
        return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                for forget in self.on_close:
                    forget()

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
        for forget in self.on_rollback:
            forget()
        # The connection may be gone; the server rolls back on its own then.
        with suppress(RefloadError):
            self.execute("ROLLBACK")

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def literal(self, text: str) -> str:
        """A string as a SQL literal, where a statement takes no parameter (COPY's source)."""
        return "'" + text.replace("'", "''") + "'"

    def table(self, schema: str, name: str) -> str:
        return f"{self.quote(schema)}.{self.quote(name)}"

    @contextmanager
    def bounded_lock_wait(self, target: str, *, announce: bool = False) -> Iterator[None]:
        """Statements in this block wait a bounded time for a lock that another
        transaction holds, then fail as retryable.

        PostgreSQL: `lock_timeout` of `lock_timeout_seconds()`. Redshift has no
        lock_timeout and no SET LOCAL: there the session's statement_timeout bounds the
        wait, as every statement's, since a shorter bound would cost a SET before the lock
        and another after it, two of a warm run's 15 statements (docs/operations.md).
        DuckDB: nothing waits (one writer per file; a conflict fails at once).
        """
        caps = self.capabilities
        lock_seconds = lock_timeout_seconds()  # a bad setting is refused on every dialect
        if caps.lock_timeout:
            setting, seconds = LOCK_TIMEOUT_ENV, lock_seconds
        else:
            setting, seconds = self._statement_limit
        # Outside a transaction the setting is the session's: put back when the block ends,
        # so later statements on this connection (the next step's) keep their own.
        session_lock_timeout = caps.lock_timeout and not (
            self.in_transaction and caps.transaction_settings
        )
        if caps.lock_timeout:
            scope = "" if session_lock_timeout else "LOCAL "
            self.execute(f"SET {scope}lock_timeout = {max(1, int(seconds * 1000))}")
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
                f"({setting}); a retry may succeed ({error.reason})",
                table=target,
            ) from error
        finally:
            self._waiting_for_lock = waiting
            if session_lock_timeout:
                with suppress(RefloadError):
                    self.execute("RESET lock_timeout")


def _setting_literal(value: str) -> str:
    return value if value.isdigit() else "'" + value.replace("'", "''") + "'"


__all__ = [
    "ADDED_CONCURRENTLY",
    "CREATED_CONCURRENTLY",
    "DEFAULT_LOCK_TIMEOUT_SECONDS",
    "DEFAULT_STATEMENT_TIMEOUT_SECONDS",
    "LOCK_TIMEOUT_ENV",
    "LOCK_WAIT_GAVE_UP",
    "QUERY_CANCELED",
    "STATEMENT_TIMEOUT_ENV",
    "TRANSIENT_SQLSTATES",
    "TRANSIENT_SQLSTATE_CLASSES",
    "Capabilities",
    "SqlClient",
    "UserSqlAbortedPublish",
    "_seconds_setting",
    "_setting_literal",
    "is_transient_sqlstate",
    "lock_timeout_seconds",
    "sqlstate",
    "statement_timeout_seconds",
    "utcnow",
]
