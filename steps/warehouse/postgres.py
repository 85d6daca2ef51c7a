"""PostgreSQL through psycopg 3: staging filled with COPY FROM STDIN."""

from __future__ import annotations

from typing import Any

from steps import storage
from steps.errors import InfrastructureError, RefloadError, WarehouseUnavailable
from steps.warehouse.base import Capabilities, Warehouse

COPY_BATCH_ROWS = 50_000


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
    )

    def _connect(self) -> Any:
        import psycopg

        url = self.url.replace("postgresql+psycopg://", "postgresql://", 1)
        return psycopg.connect(url, autocommit=True, connect_timeout=10)

    def translate_error(self, error: Exception) -> RefloadError:
        import psycopg
        from psycopg import errors

        transient = (
            psycopg.OperationalError,
            errors.SerializationFailure,
            errors.DeadlockDetected,
            errors.QueryCanceled,
            errors.LockNotAvailable,
        )
        if "authentication failed" in str(error):  # retrying will not help
            return InfrastructureError(f"postgresql: {error}".strip())
        if isinstance(error, transient):
            return WarehouseUnavailable(f"postgresql: {error}".strip())
        return InfrastructureError(f"postgresql error: {error}".strip())

    def stage(self, staging: str, like: str, columns: list[str], curated_uri: str) -> None:
        import pyarrow.parquet as pq

        self.execute(self.create_staging_sql(staging, like))
        cols = ", ".join(self.quote(c) for c in columns)
        try:
            with (
                storage.local_file(curated_uri) as path,
                self.conn.cursor() as cursor,
                cursor.copy(f"COPY {self.quote(staging)} ({cols}) FROM STDIN") as copy,
            ):
                for batch in pq.ParquetFile(path).iter_batches(COPY_BATCH_ROWS, columns=columns):
                    for row in zip(*(c.to_pylist() for c in batch.columns), strict=True):
                        copy.write_row(row)
        except RefloadError:
            raise
        except Exception as error:
            raise self.translate_error(error) from error
