"""Each curated row's line in its source file (`steps.shared.provenance.LINE_COLUMN`).

1-based, the header counting: a CSV's real line (a preamble and blank lines counted, a
record over several lines at its first), an Excel sheet's row, a Parquet file's row, a
JSON file's record as its rejections name it. The typed rows carry their position among
the file's readable records (`dedupe.POSITION`) through the mapping, the team's hook and
the dedupe; here a position becomes a line as the curated file is written.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from steps.ingest.dedupe import POSITION
from steps.ingest.sources import SourceTable
from steps.shared.provenance import LINE_COLUMN

Lines = Callable[[pa.Array], pa.Array]


def line_finder(source: SourceTable, rows: int) -> Lines:
    """positions -> lines, for a source whose `rows` readable records have all been read.

    A CSV whose every line after the header is one record (the common case) is a sum; any
    other (blank lines, quoted line breaks, unreadable records) is streamed once more to
    find each record's first line. The other formats know their rows already.
    """
    found = source.record_lines(rows)
    if isinstance(found, int):
        offset = pa.scalar(found, pa.int64())
        return lambda positions: pc.add(positions, offset)
    if found is None:
        found = source.locate(list(range(rows)))
    table = pa.array(found, type=pa.int64())  # numpy is not in the Lambda image
    return lambda positions: pc.take(table, positions)


def with_lines(rows: pa.Table, lines: Lines) -> pa.Table:
    """The rows with their line in place of their position."""
    line = lines(rows.column(POSITION).combine_chunks())
    return rows.drop_columns([POSITION]).append_column(LINE_COLUMN, line)


def with_line_field(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(LINE_COLUMN, pa.int64(), nullable=False))
