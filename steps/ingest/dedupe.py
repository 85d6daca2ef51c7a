"""Which staged rows repeat: exact duplicates, and keys that appear more than once.

Two finders with one interface, chosen by size (ADR 4). A file read in one chunk is
searched with Arrow's hash group-by: about 10 ms at 50k rows and 0.12 s at 1M, where an
in-memory DuckDB needs 60-80 ms just to start and plan. A streamed file is searched by DuckDB, which
reads the Arrow columns in place and groups on all cores: 1.0 s at 5M rows, where Arrow
took 2.0-4.7 s. Both see nulls as equal values and -0.0 as 0.0, and both report keys in
file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

POSITION = "__refload_position"  # each staged row's place in the source, from 0
# Rows in memory, or (DuckDBFinder only) a dataset over a streamed file's spilled rows.
Rows = Any


@dataclass(frozen=True)
class RepeatedKeys:
    count: int  # how many keys appear more than once
    first: tuple[Any, ...]  # the first of them in the file
    positions: list[int]  # its rows, in file order


class ArrowFinder:
    """For rows that fit in memory: Arrow's hash group-by, one pass over the columns."""

    def __enter__(self) -> ArrowFinder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def _groups(rows: pa.Table, columns: list[str], aggregate: str) -> pa.Table:
        # -0.0 and 0.0 are one value, as for DuckDB, Spark and SQL's `=`; Arrow's hash
        # group-by tells them apart by their bits, so -0.0 becomes 0.0 (x + 0.0) here.
        for name in columns:
            column = rows.column(name)
            if pa.types.is_floating(column.type):
                zero = pa.scalar(0.0, column.type)
                rows = rows.set_column(rows.column_names.index(name), name, pc.add(column, zero))
        # One thread: on 2 cores Arrow's threaded group-by is no faster for a key, and it
        # would return groups out of file order.
        return rows.group_by(columns, use_threads=False).aggregate([(POSITION, aggregate)])

    def exact_duplicates(self, rows: pa.Table) -> pa.Array:
        """Positions of rows that repeat an earlier row exactly."""
        columns = [c for c in rows.column_names if c != POSITION]
        firsts = self._groups(rows, columns, "min").column(f"{POSITION}_min")
        positions = rows.column(POSITION).combine_chunks()
        return positions.filter(pc.invert(pc.is_in(positions, value_set=firsts)))

    def first_null_key(self, rows: pa.Table, key: list[str]) -> tuple[str, int] | None:
        """The first key column (in key order) with a null, and that row's position."""
        for name in key:
            nulls = pc.indices_nonzero(pc.is_null(rows.column(name)))
            if len(nulls):
                return name, rows.column(POSITION)[nulls[0].as_py()].as_py()
        return None

    def _positions_by_repeated_key(self, rows: pa.Table, key: list[str]) -> pa.Table:
        """One row per key found more than once: the key and its rows' positions."""
        groups = self._groups(rows, key, "list")
        lists = groups.column(f"{POSITION}_list")
        return groups.filter(pc.greater(pc.list_value_length(lists), 1))

    def positions_of_repeated_keys(self, rows: pa.Table, key: list[str]) -> pa.Array:
        repeated = self._positions_by_repeated_key(rows, key).column(f"{POSITION}_list")
        return pc.list_flatten(repeated.combine_chunks())

    def repeated_keys(self, rows: pa.Table, key: list[str]) -> RepeatedKeys | None:
        repeated = self._positions_by_repeated_key(rows, key)
        if not repeated.num_rows:
            return None
        lists = repeated.column(f"{POSITION}_list")
        first = pc.index(pc.list_element(lists, 0), pc.min(pc.list_element(lists, 0))).as_py()
        found = repeated.slice(first, 1).to_pylist()[0]
        return RepeatedKeys(
            repeated.num_rows,
            tuple(found[k] for k in key),
            sorted(found[f"{POSITION}_list"]),
        )


class DuckDBFinder:
    """For streamed files: an in-memory DuckDB over the staged rows.

    The rows come as a dataset over the spill file, which DuckDB scans a batch at a time
    and reads only the columns a query names: no finder call holds every row in memory.

    Its memory is capped at 8 chunks (512 MB by default), past which it spills to
    `scratch`: without the cap, a 20M-row file peaked at 2.9 GB, with it at 1.6 GB (and
    ran faster). Scratch, because Lambda's task root, DuckDB's default, is read-only.
    """

    def __init__(self, scratch: Path) -> None:
        import duckdb

        from steps.ingest.sources import chunk_bytes

        limit = f"{max(8 * chunk_bytes(), 64 << 20) >> 20}MB"
        self.con = duckdb.connect(
            config={"temp_directory": str(scratch / "duckdb"), "memory_limit": limit}
        )

    def __enter__(self) -> DuckDBFinder:
        return self

    def __exit__(
        self, error_type: type[BaseException] | None, error: object, tb: TracebackType | None
    ) -> None:
        self.con.close()

    @staticmethod
    def _columns(names: list[str]) -> str:
        return ", ".join(f'"{name}"' for name in names)  # identifiers, checked with the config

    def _positions(self, sql: str) -> pa.Array:
        return self.con.sql(sql).to_arrow_table().column(0)

    def exact_duplicates(self, rows: Rows) -> pa.Array:
        columns = self._columns([c for c in rows.schema.names if c != POSITION])
        self.con.register("staged_rows", rows)
        return self._positions(
            f'SELECT "{POSITION}" FROM staged_rows ANTI JOIN (SELECT MIN("{POSITION}") AS '
            f'"{POSITION}" FROM staged_rows GROUP BY {columns}) USING ("{POSITION}") '
            f'ORDER BY "{POSITION}"'
        )

    def first_null_key(self, rows: Rows, key: list[str]) -> tuple[str, int] | None:
        self.con.register("staged_keys", rows)
        for name in key:
            [(position,)] = self.con.execute(
                f'SELECT MIN("{POSITION}") FROM staged_keys WHERE "{name}" IS NULL'
            ).fetchall()
            if position is not None:
                return name, position
        return None

    def positions_of_repeated_keys(self, rows: Rows, key: list[str]) -> pa.Array:
        columns = self._columns(key)
        same = " AND ".join(f'r."{k}" IS NOT DISTINCT FROM d."{k}"' for k in key)
        self.con.register("staged_keys", rows)
        return self._positions(
            f'SELECT "{POSITION}" FROM staged_keys r SEMI JOIN (SELECT {columns} FROM '
            f"staged_keys GROUP BY {columns} HAVING COUNT(*) > 1) d ON {same}"
        )

    def repeated_keys(self, rows: pa.Table, key: list[str]) -> RepeatedKeys | None:
        columns = self._columns(key)
        # A group of -0.0 and 0.0 shows whichever row a thread saw first: shown as 0.0, as
        # the in-memory path does, so the message does not change from run to run.
        shown = ", ".join(
            f'"{k}" + 0.0' if pa.types.is_floating(rows.schema.field(k).type) else f'"{k}"'
            for k in key
        )
        self.con.register("suspect_rows", rows)
        found = self.con.sql(
            f'SELECT {shown}, list("{POSITION}" ORDER BY "{POSITION}") FROM suspect_rows '
            f'GROUP BY {columns} HAVING COUNT(*) > 1 ORDER BY MIN("{POSITION}")'
        ).fetchall()
        if not found:
            return None
        *first, positions = found[0]
        return RepeatedKeys(len(found), tuple(first), list(positions))
