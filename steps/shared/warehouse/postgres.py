"""PostgreSQL through psycopg 3: staging filled with COPY FROM STDIN."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from steps.shared.errors import InfrastructureError, RefloadError, WarehouseUnavailable
from steps.shared.io import storage
from steps.shared.warehouse.base import (
    Capabilities,
    Catalog,
    SqlClient,
    Warehouse,
    is_transient_sqlstate,
    sqlstate,
    type_signature,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from steps.shared.mapping.sheet import Mapping

COPY_BATCH_ROWS = 50_000
# What publishing into an existing table needs on it.
PUBLISH_PRIVILEGES = ("SELECT", "INSERT", "DELETE")


# Staging is a temporary table, held in the session's own buffers: at the default 8 MB a
# 1M-row staging table goes to disk as it is copied and read again by the publish (at
# 1M rows, publish and change set 0.3 s shorter). Taken only as used: no cost to a small one.
TEMP_BUFFERS = "256MB"


class PostgresClient(SqlClient):
    """psycopg 3: the statement bound as a startup option; errors by SQLSTATE."""

    def _connect(self) -> Any:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        url = self.url.replace("postgresql+psycopg://", "postgresql://", 1)
        # Settings as startup options: no round trip of their own. A later option of the
        # same name wins: the URL's may lower temp_buffers, never the statement bound.
        given = str(conninfo_to_dict(url).get("options") or "")
        options = (
            f"-c temp_buffers={TEMP_BUFFERS} {given} "
            f"-c statement_timeout={self.statement_timeout_ms()}"
        )
        return psycopg.connect(url, autocommit=True, connect_timeout=10, options=options)

    def _bound_statements(self) -> None:
        """Set at connect (`_connect`)."""

    def _session_lost(self) -> bool:
        """A session the server ended while idle (idle_session_timeout, a restart,
        pg_terminate_backend) sent its last message and closed the socket: readable with
        no statement under way, and libpq then finds the connection bad."""
        import select

        from psycopg.pq import ConnStatus

        pgconn = getattr(self._conn, "pgconn", None)
        if pgconn is None:  # another driver (redshift_connector)
            return False
        try:
            for _ in range(3):  # its last message, then the end of the stream
                if not select.select([pgconn.socket], [], [], 0)[0]:
                    return bool(pgconn.status != ConnStatus.OK)
                pgconn.consume_input()
        except Exception:  # closed, or the end of the stream read
            return True
        return True  # an idle session that keeps talking is not one to trust

    def translate_error(self, error: Exception) -> RefloadError:
        import psycopg

        code = sqlstate(error)
        if code is None and "authentication failed" in str(error):
            # A refused login has no SQLSTATE (libpq fails before any result); it is
            # the one error told by its text. Retrying will not help.
            return InfrastructureError(f"postgresql: {error}".strip())
        if is_transient_sqlstate(code) or (
            code is None and isinstance(error, psycopg.OperationalError)
        ):
            return WarehouseUnavailable(f"postgresql: {error}".strip())
        return InfrastructureError(f"postgresql error: {error}".strip())


class PostgresCatalog(Catalog):
    """pg_catalog (with the privileges publishing needs); staging filled by COPY."""

    # The catalog, not information_schema: information_schema hides the tables the
    # user has no privilege on, and a table that exists would look missing.
    def schema_exists(self, schema: str) -> bool:
        return bool(
            self.sql.query("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,))
        )

    def read_catalog(self, tables: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        # The privileges publishing needs, in the same query (`missing_privileges`).
        table = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
        rows = self.sql.query(
            "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
            "has_schema_privilege(n.nspname, 'USAGE'), "
            + ", ".join(f"has_table_privilege({table}, '{p}')" for p in PUBLISH_PRIVILEGES)
            + " FROM pg_catalog.pg_attribute a "
            "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND ("
            + " OR ".join(["(n.nspname = %s AND c.relname = %s)"] * len(tables))
            + ") ORDER BY n.nspname, c.relname, a.attnum",
            [part for table in tables for part in table],
        )
        found: dict[tuple[str, str], dict[str, str]] = {}
        for schema, name, column, declared, usage, *granted in rows:
            found.setdefault((schema, name), {})[column] = type_signature(declared)
            self._lacking[(schema, name)] = (
                [f"USAGE on schema {schema}"]
                if not usage
                else [p for p, ok in zip(PUBLISH_PRIVILEGES, granted, strict=True) if not ok]
            )
        return found

    def missing_privileges(self, schema: str, name: str) -> list[str]:
        if (schema, name) in self._lacking:  # read with the table's columns
            return self._lacking[(schema, name)]
        table = self.table(schema, name)
        row = self.sql.query(
            "SELECT has_schema_privilege(%s, 'USAGE'), "
            + ", ".join(f"has_table_privilege(%s, '{p}')" for p in PUBLISH_PRIVILEGES),
            (schema, *[table] * len(PUBLISH_PRIVILEGES)),
        )[0]
        if not row[0]:
            return [f"USAGE on schema {schema}"]
        return [p for p, granted in zip(PUBLISH_PRIVILEGES, row[1:], strict=True) if not granted]

    def stage(self, staging: str, mapping: Mapping, curated_uri: str) -> None:
        self.sql.execute(self.create_staging_sql(staging, mapping))
        rows = self.fill(self.quote(staging), mapping, curated_uri)
        if rows >= 0:  # COPY's command tag: the rows it loaded
            self.staged_rows[staging] = rows

    def fill(self, relation: str, mapping: Mapping, curated_uri: str) -> int:
        import pyarrow.parquet as pq

        columns = mapping.targets
        try:
            # One file, or each part a manifest lists (the Spark engine's), in batches.
            with storage.local_files(storage.curated_parts(curated_uri)) as paths:
                parts = [pq.ParquetFile(path) for path in paths]
                batches = (
                    batch
                    for part in parts
                    for batch in part.iter_batches(COPY_BATCH_ROWS, columns=columns)
                )
                if all(mapping.typed_as_mapped(part.schema_arrow) for part in parts):
                    return self._copy(relation, mapping, "binary", _binary_copy(mapping, batches))
                return self._copy(relation, mapping, "csv", _csv_copy(batches))
        except RefloadError:
            raise
        except Exception as error:
            raise self.sql.translate_error(error) from error

    def stage_rows(self, staging: str, mapping: Mapping, batches: Iterator[pa.RecordBatch]) -> int:
        """Staging from rows this process holds, each column of exactly the mapping's Arrow
        type (early staging, `steps.ingest.early`); returns the rows COPY loaded."""
        self.sql.execute(self.create_staging_sql(staging, mapping))
        try:
            rows = self._copy(
                self.quote(staging), mapping, "binary", _binary_copy(mapping, batches)
            )
        except RefloadError:
            raise
        except Exception as error:
            raise self.sql.translate_error(error) from error
        if rows >= 0:  # COPY's command tag: the rows it loaded
            self.staged_rows[staging] = rows
        return rows

    def _copy(self, relation: str, mapping: Mapping, fmt: str, chunks: Iterator[Any]) -> int:
        cols = ", ".join(self.quote(c) for c in mapping.targets)
        statement = f"COPY {relation} ({cols}) FROM STDIN (FORMAT {fmt})"
        with self.sql.conn.cursor() as cursor:
            with cursor.copy(statement) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            return int(cursor.rowcount)


def _mapping_schema(mapping: Mapping) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(c.target, c.data_type.arrow()) for c in mapping.columns])


def _binary_copy(mapping: Mapping, batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """COPY's binary format, encoded from the Arrow columns in native code (pgpq): at 1M rows
    the server reads it in about half the time of CSV, with no text to parse as numbers and
    dates, and the client renders none. The header and trailer come even with no rows."""
    from pgpq import ArrowToPostgresBinaryEncoder

    encoder = ArrowToPostgresBinaryEncoder(_mapping_schema(mapping))
    yield encoder.write_header()
    for batch in batches:
        yield encoder.write_batch(batch)
    yield encoder.finish()


def _csv_copy(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Buffer]:
    """COPY's CSV format: Arrow writes each batch as CSV text and PostgreSQL parses it (5-10x
    faster than a Python row each): every string is quoted, so "" is an empty string and an
    unquoted empty field is NULL, as COPY's CSV format reads them."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    for batch in batches:
        text = pa.BufferOutputStream()
        pacsv.write_csv(pa.Table.from_batches([batch]), text, options)
        yield text.getvalue()


class PostgresWarehouse(Warehouse):
    dialect = "postgresql"
    capabilities = Capabilities(
        max_identifier_bytes=63,  # NAMEDATALEN - 1: longer names are cut, not refused
        text_type="TEXT",
        read_only_transactions=True,
        statement_timeout=True,
        transaction_settings=True,
        lock_timeout=True,
        savepoints=True,
        publisher_lock=True,  # blocks other publishers of the table, never its readers
        ddl_in_transactions=True,
        supports_merge=True,  # PostgreSQL 15
        max_columns=1600,  # MaxHeapAttributeNumber
        stages_from_memory=True,
        fills_new_target=True,
        materialized_cte=True,
    )

    driver_modules: ClassVar[tuple[str, ...]] = ("psycopg", "pgpq")
    client_class = PostgresClient
    catalog_class = PostgresCatalog
