"""Early staging: in the local pipeline, a large file's rows go to the warehouse while
ingest writes the curated file.

Once the duplicates to drop are known, the rows ingest keeps are the curated file's rows:
the warehouse can COPY them from memory while the file is written. The COPY is the
server's work, the Parquet this process's, so on two cores they overlap, where load would
only start its COPY after ingest has ended (a 1M-row run on PostgreSQL: see
`scripts/benchmark.py --postgres` and docs/performance.md).

Only where the steps share the warehouse's connection (`shared_connections`: on AWS each
step is an invocation of its own), its dialect stages from memory
(`capabilities.stages_from_memory`), the target exists (a new one is filled from the
curated file in the publish, with no staging: ADR 23), the rows are of exactly the
mapping's types, and from EARLY_FROM_ROWS rows (below that, the file's own COPY is
quick). Publish takes the staging table only if COPY loaded as many rows as the curated
file holds; anything else (a failed COPY, another count) and load stages the curated
file itself, as on AWS: early staging makes a run faster, never different.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import structlog

from steps.ingest.curated import kept_rows
from steps.shared.errors import RefloadError

if TYPE_CHECKING:
    import pyarrow as pa

    from steps.shared.config.table import TableSpec
    from steps.shared.warehouse.base import Warehouse

log = structlog.get_logger("refload")

EARLY_FROM_ROWS = 100_000


class _Abandoned(Exception):
    """Raised in the COPY's stream of rows when ingest fails: the COPY is cancelled."""


class EarlyStaging:
    """A COPY of the rows ingest keeps into a new staging table, on a thread of its own."""

    def __init__(
        self, warehouse: Warehouse, spec: TableSpec, staged: Any, drop: pa.Array, run_id: str
    ) -> None:
        self.warehouse = warehouse
        self.staging = warehouse.staging_name(run_id)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refload-stage")
        columns = spec.mapping.targets

        def rows() -> Iterator[pa.RecordBatch]:
            for kept in kept_rows(staged, drop):
                if self._stop.is_set():
                    raise _Abandoned
                yield from kept.select(columns).to_batches()

        self._copied = self._pool.submit(warehouse.stage_rows, self.staging, spec.mapping, rows())

    def offer(self, curated_uri: str, rows_written: int) -> None:
        """Once the curated file is written: the COPY's end, and the table offered to
        publish as the rows of `curated_uri` if it holds as many."""
        try:
            copied = self._copied.result()
        except Exception as error:  # load stages the file, and says why if that fails too
            log.info("early staging failed; load stages the curated file", error=str(error))
            self._discard()
            return
        finally:
            self._pool.shutdown()
        if copied != rows_written:
            log.warning(
                "early staging holds other rows than the curated file; load stages the file",
                staged=copied,
                curated=rows_written,
            )
            self._discard()
            return
        self.warehouse.offer_staging(curated_uri, self.staging)

    def abandon(self) -> None:
        """Ingest failed: the COPY stops at its next batch, and the table goes."""
        self._stop.set()
        with suppress(Exception):
            self._copied.result()
        self._pool.shutdown()
        self._discard()

    def _discard(self) -> None:
        self.warehouse.discard_staging(self.staging)


@contextmanager
def early_staging(
    spec: TableSpec, payload: dict[str, Any], staged: Any, drop: pa.Array, rows: int
) -> Iterator[EarlyStaging | None]:
    """An EarlyStaging of the `rows` rows of `staged` less `drop`, where it applies, else
    None; abandoned if the block raises."""
    from steps.shared.loading import target_table
    from steps.shared.warehouse import shared_warehouse_that

    early = None
    if rows >= EARLY_FROM_ROWS and spec.mapping.typed_as_mapped(staged.rows().schema):
        with suppress(RefloadError):  # a URL that does not resolve: load says so
            warehouse = shared_warehouse_that("stages_from_memory", payload.get("warehouse"))
            # A new target is filled from the curated file in the publish: nothing to stage.
            if warehouse is not None and not warehouse.fills_new_target(
                target_table(spec), spec.config.mode
            ):
                early = EarlyStaging(warehouse, spec, staged, drop, payload["run_id"])
    try:
        yield early
    except BaseException:
        if early is not None:
            early.abandon()
        raise
