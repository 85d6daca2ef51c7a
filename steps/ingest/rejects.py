"""Rejected rows, on either engine: the source's unreadable cells as rejections, the
rejects file (one record per problem, by line), and the refusal of a file whose rejected
share is above `max_reject_pct`."""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from steps.ingest.transform import Rejection
from steps.shared.errors import RejectedInput, at
from steps.shared.io import storage

if TYPE_CHECKING:
    from steps.ingest.sources import BadCell, BadRecord, SourceTable
    from steps.shared.mapping.sheet import Mapping


def cell_rejections(cells: list[BadCell], mapping: Mapping) -> list[Rejection]:
    """The source's unreadable cells, as rejections of the target columns they feed."""
    return [
        Rejection(cell.position, column.target, cell.value, cell.reason)
        for cell in cells
        for column in mapping.columns
        if column.source == cell.column
        and not (cell.inexact_number and column.data_type.kind == "double")
    ]


def max_rejects_kept() -> int:
    """Problems kept for the rejects file and the message; past it they are only counted,
    so memory follows the chunk size even when every row of a large file is bad."""
    return max(1, int(os.environ.get("REFLOAD_MAX_REJECTS_KEPT", 10_000)))  # the message quotes one


def reject_rows(
    source: SourceTable, rejections: list[Rejection], bad_records: list[BadRecord]
) -> list[dict[str, Any]]:
    """One record per problem for the rejects file, the first `max_rejects_kept()` by line."""
    positions = sorted({r.position for r in rejections})
    where = dict(zip(positions, source.locate(positions), strict=True))
    records: list[dict[str, Any]] = [
        {source.unit: b.where, "column": None, "value": b.text, "reason": b.reason}
        for b in bad_records
    ]
    records += [
        {source.unit: where[r.position], "column": r.column, "value": r.value, "reason": r.reason}
        for r in sorted(rejections, key=lambda r: r.position)
    ]
    records.sort(key=lambda r: int(r[source.unit]))
    return records[: max_rejects_kept()]


def write_rejects(uri: str, unit: str, records: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(
        records,
        schema=pa.schema(
            [
                (unit, pa.int64()),
                ("column", pa.string()),
                ("value", pa.string()),
                ("reason", pa.string()),
            ]
        ),
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(uri, sink.getvalue())


def rejected_error(source: SourceTable, record: dict[str, Any], **extra: Any) -> RejectedInput:
    return RejectedInput(
        record["reason"],
        file=source.uri,
        column=record["column"],
        value=record["value"],
        **at(source.unit, record[source.unit]),
        **extra,
    )


def keep_rejects(
    source: SourceTable,
    records: list[dict[str, Any]],
    rows_rejected: int,
    rows_read: int,
    out_uri: str,
    max_reject_pct: float,
    problems: int | None = None,
    stopped: bool = False,
) -> str | None:
    """Write the rejects file beside `out_uri` and refuse the file above the allowed share
    (the Spark engine calls it with the records it collected). Returns the file's URI.

    `records` may be the first of `problems`; `stopped`: reading stopped at the first
    chunk with a rejected row, so `rows_read` counts the rows read until then."""
    if not rows_rejected:
        return None
    rejects_uri = out_uri.removesuffix(".parquet") + ".rejects.parquet"
    write_rejects(rejects_uri, source.unit, records)
    problems = len(records) if problems is None else problems
    share = rows_rejected * 100 / rows_read
    if share > max_reject_pct:
        so_far = " found so far" if stopped else ""
        listed = (
            f"all problems{so_far} are listed"
            if len(records) == problems
            else f"the first {len(records):,} of {problems:,} problems{so_far} are listed"
        )
        counted = (
            f"{rows_rejected} of the first {rows_read} row(s) rejected; max_reject_pct 0, so "
            "reading stopped at the first chunk with a rejected row"
            if stopped
            else f"{rows_rejected} of {rows_read} row(s) rejected ({share:.2f}% > "
            f"max_reject_pct {max_reject_pct:g})"
        )
        raise rejected_error(
            source,
            records[0],
            details={
                "rows_rejected": rows_rejected,
                "rows_read": rows_read,
                "rejects_uri": rejects_uri,
                "problems": problems,
                "problems_listed": len(records),
                "stopped_early": stopped,
            },
            note=f"{counted}; {listed} in {rejects_uri}",
        )
    return rejects_uri
