"""Parquet: read whole, every column as text (binary as UTF-8, nested as JSON)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from steps.ingest.sources.base import (
    INEXACT_REASON,
    BadCell,
    FormatSpec,
    SourceTable,
    _apply_null_values,
    _cell_text,
    _in_memory,
    _inexact,
    _json_text,
)
from steps.shared.errors import RejectedInput
from steps.shared.mapping.casts import OUTSIDE_CALENDAR, shown

if TYPE_CHECKING:
    from steps.shared.config.model import TableConfig


def _binary_as_text(
    name: str,
    column: pa.ChunkedArray,
    bad: list[BadCell],
    reason: str = "is binary data, not UTF-8 text",
) -> pa.Array:
    """Binary values as UTF-8 text (writers without the string annotation store text so);
    a value that is not UTF-8 is a bad cell, never the text "b'...'"."""
    try:
        return pc.cast(column, pa.string())
    except pa.ArrowInvalid:
        pass
    texts: list[str | None] = []
    for position, value in enumerate(column.to_pylist()):
        try:
            texts.append(None if value is None else value.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append(BadCell(position, name, repr(value[:40]), reason))
            texts.append(None)
    return pa.array(texts, pa.string())


def _python_values(name: str, column: pa.ChunkedArray, bad: list[BadCell]) -> list[Any]:
    """The column's values as Python's; a date or time Python cannot hold (Parquet's
    reach years before 1 and after 9999) is a bad cell, shown as Arrow writes it."""
    try:
        return column.to_pylist()
    except (OverflowError, ValueError):
        pass
    values: list[Any] = []
    for position, value in enumerate(column):
        try:
            values.append(value.as_py())
        except (OverflowError, ValueError):
            bad.append(BadCell(position, name, shown(value), OUTSIDE_CALENDAR))
            values.append(None)
    return values


def read_parquet(data: bytes, uri: str, config: TableConfig) -> SourceTable:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as error:
        raise RejectedInput(f"cannot read as Parquet: {error}", file=uri) from None
    as_text = {}
    bad: list[BadCell] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            # A writer may put bytes that are not UTF-8 under the string annotation (Arrow
            # reads them unchecked): checked as binary is, each such value a bad cell.
            raw = pc.cast(
                column, pa.large_binary() if pa.types.is_large_string(kind) else pa.binary()
            )
            as_text[name] = _binary_as_text(
                name, raw, bad, "is not UTF-8 text, though the file marks it as text"
            )
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            as_text[name] = _binary_as_text(name, column, bad)
        elif pa.types.is_nested(kind):
            as_text[name] = pa.array([_json_text(v) for v in column.to_pylist()], pa.string())
        else:
            values = _python_values(name, column, bad)
            if pa.types.is_floating(kind):
                bad += [
                    BadCell(p, name, repr(v), INEXACT_REASON, inexact_number=True)
                    for p, v in enumerate(values)
                    if _inexact(v)
                ]
            as_text[name] = pa.array([_cell_text(v) for v in values], pa.string())
    table = _apply_null_values(pa.table(as_text), config.null_values)
    return _in_memory(uri, table, "row", lambda ps: [p + 1 for p in ps], bad)


FORMAT = FormatSpec(
    extensions={".parquet": "parquet"},
    read=read_parquet,
    sniff=lambda head, kind: "parquet" if kind == "parquet" else None,
)
