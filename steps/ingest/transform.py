"""Applying a mapping sheet to a table of text: a thread per column, typed columns out,
every bad cell set aside as a Rejection (file position, column, value, reason).

What each transform and type means is steps.shared.mapping's (`transforms`, `casts`; the
sheet parser checks defaults with the same casts); this module is what only ingest (and
`init`, which checks its proposal the way ingest will read it) runs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steps.shared.errors import ConfigError
from steps.shared.mapping.casts import blank_to_null, cast_values
from steps.shared.mapping.sheet import PLACEHOLDERS
from steps.shared.mapping.transforms import apply_transforms

if TYPE_CHECKING:
    import pyarrow as pa

    from steps.shared.mapping.sheet import ColumnSpec, Mapping


THREADED_FROM_ROWS = 100_000  # a table this long is mapped a thread per column


@dataclass(frozen=True)
class Rejection:
    """One bad cell: the row's position in the source frame, column, value, reason."""

    position: int
    column: str
    value: str | None
    reason: str


def derived_value(spec: ColumnSpec, context: dict[str, str]) -> str:
    text = spec.default or ""
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, context[placeholder.strip("{}")])
    return text


def _map_column(
    table: pa.Table, spec: ColumnSpec, context: dict[str, str], mapping_uri: str
) -> tuple[pa.Array | pa.ChunkedArray, list[Rejection]]:
    import pyarrow as pa

    if spec.derived:
        text = derived_value(spec, context)
        cast, failures = cast_values(pa.array([text], pa.string()), spec)
        if failures:
            raise ConfigError(
                f"derived value {text!r} does not fit {spec.data_type}",
                file=mapping_uri,
                row=spec.sheet_row,
                column="default",
            )
        return pa.repeat(cast[0], table.num_rows), []
    column = table.column(spec.source)
    # Chunk by chunk, as the reader parsed them: combining first would copy every value.
    if column.num_chunks <= 1:
        return _map_array(column.combine_chunks(), spec, context, 0)
    arrays, rejections, start = [], [], 0
    for chunk in column.chunks:
        array, found = _map_array(chunk, spec, context, start)
        arrays.append(array)
        rejections += found
        start += len(chunk)
    return pa.chunked_array(arrays, arrays[0].type), rejections


def _map_array(
    raw: pa.Array, spec: ColumnSpec, context: dict[str, str], start: int
) -> tuple[pa.Array, list[Rejection]]:
    """One array of a column's text, the first at position `start`."""
    import pyarrow.compute as pc

    values = blank_to_null(apply_transforms(raw, spec.transforms))
    if spec.default is not None:
        default = derived_value(spec, context)
        values = pc.fill_null(values, default)
    cast, failures = cast_values(values, spec)
    rejections = [Rejection(start + i, spec.target, raw[i].as_py(), r) for i, r in failures]
    if not spec.nullable:
        nulls = pc.and_(pc.is_null(cast), pc.is_null(values))
        rejections += [
            Rejection(
                start + i, spec.target, raw[i].as_py(), "is empty, and the column is not nullable"
            )
            for i in pc.indices_nonzero(nulls).to_pylist()
        ]
    return cast, rejections


def apply_mapping(
    table: pa.Table, mapping: Mapping, context: dict[str, str]
) -> tuple[pa.Table, list[Rejection]]:
    """Text table in, typed table out (target columns in sheet order), plus rejections.

    Columns are mapped on a thread each: Arrow's kernels release the GIL, so on two
    cores a 5M-row file maps in about half the time. A small table is mapped on this
    thread: starting the threads costs more than they save (50k rows: 37 ms against 56).
    """
    import pyarrow as pa

    def one(spec: ColumnSpec) -> tuple[pa.Array | pa.ChunkedArray, list[Rejection]]:
        return _map_column(table, spec, context, mapping.uri)

    if table.num_rows < THREADED_FROM_ROWS:
        mapped = [one(spec) for spec in mapping.columns]
    else:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            mapped = list(pool.map(one, mapping.columns))
    arrays = [array for array, _ in mapped]
    rejections = [r for _, found in mapped for r in found]
    schema = pa.schema(
        [pa.field(c.target, c.data_type.arrow(), nullable=c.nullable) for c in mapping.columns]
    )
    # Rejected rows are dropped later; until then nulls are allowed everywhere.
    loose = pa.schema([f.with_nullable(True) for f in schema])
    return pa.Table.from_arrays(arrays, schema=loose), rejections
