"""Source readers: CSV, Excel, JSON and Parquet in, a table of text columns out.

Every value is read as text (codes keep their leading zeros); the mapping
casts later. Each reader also knows how to turn a row position back into the
line or row a person would look at in the file.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from steps.errors import ConfigError, RejectedInput, at
from steps.names import did_you_mean

if TYPE_CHECKING:
    from steps.config import TableConfig


@dataclass
class BadRecord:
    """A record that could not even be split into the header's columns."""

    where: int
    reason: str
    text: str


@dataclass
class SourceTable:
    uri: str
    column_names: list[str]
    chunks: Iterator[pa.Table]  # text columns named by the header, in file order; read once
    unit: str  # what `locate` returns: "line" or "row"
    locate: Callable[[list[int]], list[int]]
    # Records that could not be split into the header's columns; complete once the
    # chunks have been read.
    bad_records: Callable[[], list[BadRecord]] = lambda: []


def _in_memory(
    uri: str, table: pa.Table, unit: str, locate: Callable[[list[int]], list[int]]
) -> SourceTable:
    return SourceTable(uri, table.column_names, iter([table]), unit, locate)


def chunk_bytes() -> int:
    """How much CSV is mapped at a time: memory is bounded by this, not by the file."""
    return int(os.environ.get("REFLOAD_CHUNK_BYTES", 64 << 20))


def parse_block_bytes(file_bytes: int | None) -> int:
    """pyarrow's CSV block: blocks are parsed in parallel, so one chunk is several blocks.

    Measured on ZIP-like files: one 64 MB block parses at half the speed of 1-8 MB ones.
    A record must fit in a block, hence no smaller than 1 MB (or the chunk).
    """
    size = file_bytes // 16 if file_bytes else 8 << 20
    return min(chunk_bytes(), max(1 << 20, min(8 << 20, size)))


def read_source(path: Path, uri: str, config: TableConfig) -> SourceTable:
    with path.open("rb") as probe:
        compression = "gzip" if probe.read(2) == b"\x1f\x8b" else None
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            head = stream.read(1 << 16)
    except (OSError, pa.ArrowInvalid, EOFError) as error:
        raise RejectedInput(f"gzip data is corrupt: {error}", file=uri) from None
    if len(head) < 1 << 16 and not head.strip():
        raise RejectedInput("file is empty", file=uri)
    if config.source_format == "csv":
        return read_csv(path, compression, uri, config)
    data = path.read_bytes()
    if compression:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise RejectedInput(f"gzip data is corrupt: {error}", file=uri) from None
    return READERS[config.source_format](data, uri, config)


# --- CSV ---------------------------------------------------------------------------


def _decode(data: bytes, uri: str, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        line_start = data.rfind(b"\n", 0, error.start) + 1
        bad = data[error.start : error.end]
        raise RejectedInput(
            f"cannot decode byte(s) {bad!r} as {encoding.removesuffix('-sig')} at character "
            f"{error.start - line_start + 1}; set 'encoding' in the config",
            file=uri,
            line=line,
        ) from None
    return text.removeprefix("\ufeff")


def _record_lines(text: str, config: TableConfig) -> tuple[list[int], list[int]]:
    """Physical line of every data record, and the number of fields in each.

    Slow (the csv module), so only used to report errors.
    """
    reader = csv.reader(io.StringIO(text), delimiter=config.delimiter, quotechar=config.quote_char)
    starts: list[int] = []
    widths: list[int] = []
    previous_end = 0
    for number, record in enumerate(reader, start=1):
        start = previous_end + 1
        previous_end = reader.line_num
        if number <= config.header_row or not record:
            continue
        starts.append(start)
        widths.append(len(record))
    return starts, widths


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def read_csv(path: Path, compression: str | None, uri: str, config: TableConfig) -> SourceTable:
    import pyarrow.csv as pacsv

    def stream() -> Any:
        return pa.input_stream(str(path), compression=compression)

    encoding = "utf-8-sig" if _is_utf8(config.encoding) else config.encoding
    header_index = config.header_row - 1
    with stream() as opened:
        head = opened.read(1 << 20).split(b"\n", config.header_row)[: config.header_row]
    if len(head) <= header_index or (len(head) == config.header_row == 1 and not head[0]):
        raise RejectedInput(
            f"file has fewer than {config.header_row} line(s); header_row is {config.header_row}",
            file=uri,
        )
    header_text = _decode(b"\n".join(head), uri, encoding).split("\n")[header_index]
    header = next(
        csv.reader(
            [header_text.rstrip("\r")], delimiter=config.delimiter, quotechar=config.quote_char
        )
    )
    header = [h.strip() for h in header]
    _check_header(header, uri, config.header_row, "line")
    bad: list[int] = []
    cache: dict[str, Any] = {}

    def on_invalid(row: Any) -> str:
        bad.append(row.actual_columns)
        return "skip"

    def text() -> str:
        # Error path only: the whole file, decoded, to name lines and bytes.
        if "text" not in cache:
            with stream() as opened:
                cache["text"] = _decode(opened.read(), uri, encoding)
        return cache["text"]

    def chunks() -> Iterator[pa.Table]:
        size = path.stat().st_size
        whole = not compression and size <= chunk_bytes()
        options: dict[str, Any] = {
            "read_options": pacsv.ReadOptions(
                skip_rows=header_index + 1,
                column_names=header,
                block_size=parse_block_bytes(size if whole else None),
                encoding="utf8" if _is_utf8(encoding) else encoding,
            ),
            "parse_options": pacsv.ParseOptions(
                delimiter=config.delimiter,
                quote_char=config.quote_char,
                newlines_in_values=True,
                invalid_row_handler=on_invalid,
            ),
            "convert_options": pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                null_values=config.null_values,
                strings_can_be_null=True,
            ),
        }
        try:
            if whole:  # it fits in one chunk: the multi-threaded reader is faster
                yield pacsv.read_csv(stream(), **options)
                return
            batches: list[pa.RecordBatch] = []
            held = 0
            for batch in pacsv.open_csv(stream(), **options):
                batches.append(batch)
                held += batch.nbytes
                if held >= chunk_bytes():
                    yield pa.Table.from_batches(batches)
                    batches, held = [], 0
            if batches:
                yield pa.Table.from_batches(batches)
        except (pa.ArrowInvalid, UnicodeDecodeError) as error:
            text()  # raises with the line and byte when it is the encoding
            raise RejectedInput(f"cannot parse as CSV: {error}", file=uri) from None

    def record_lines() -> tuple[list[int], list[int]]:
        if "lines" not in cache:
            cache["lines"] = _record_lines(text(), config)
        return cache["lines"]

    def locate(positions: list[int]) -> list[int]:
        if not positions:
            return []
        starts, widths = record_lines()
        good = [s for s, w in zip(starts, widths, strict=True) if w == len(header)]
        return [good[p] if p < len(good) else config.header_row + 1 + p for p in positions]

    def bad_records() -> list[BadRecord]:
        if not bad:
            return []
        starts, widths = record_lines()
        lines = text().splitlines()
        return [
            BadRecord(
                line,
                f"has {width} field(s), the header has {len(header)}",
                lines[line - 1] if line - 1 < len(lines) else "",
            )
            for line, width in zip(starts, widths, strict=True)
            if width != len(header)
        ]

    return SourceTable(uri, header, chunks(), "line", locate, bad_records)


def _check_header(header: list[str], uri: str, line: int, unit: str) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise RejectedInput(f"header names column '{name}' twice", file=uri, **at(unit, line))
        seen.add(name)


# --- Excel -------------------------------------------------------------------------


def _cell_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def read_excel(data: bytes, uri: str, config: TableConfig) -> SourceTable:
    from python_calamine import CalamineWorkbook

    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as error:
        raise RejectedInput(f"cannot open as an Excel workbook: {error}", file=uri) from None
    names = list(book.sheet_names)
    wanted = config.sheet_name if config.sheet_name is not None else 0
    if isinstance(wanted, int):
        if not 0 <= wanted < len(names):
            raise ConfigError(
                f"sheet_name index {wanted} is out of range; sheets: {names}", file=uri
            )
        wanted = names[wanted]
    if wanted not in names:
        raise ConfigError(
            f"workbook has no sheet '{wanted}'{did_you_mean(wanted, names)}; sheets: {names}",
            file=uri,
        )
    rows = book.get_sheet_by_name(wanted).to_python(skip_empty_area=False)
    header_index = config.header_row - 1
    if header_index >= len(rows):
        raise RejectedInput(
            f"sheet '{wanted}' has {len(rows)} row(s); header_row is {config.header_row}", file=uri
        )
    header = [(_cell_text(v) or "").strip() for v in rows[header_index]]
    while header and not header[-1]:
        header.pop()
    _check_header(header, uri, config.header_row, "row")
    body: list[list[str | None]] = []
    sheet_rows: list[int] = []
    for number, row in enumerate(rows[header_index + 1 :], start=config.header_row + 1):
        cells = [_cell_text(v) for v in row[: len(header)]]
        if any(c is not None for c in cells):
            body.append(cells + [None] * (len(header) - len(cells)))
            sheet_rows.append(number)
    columns = {name: pa.array([r[i] for r in body], pa.string()) for i, name in enumerate(header)}
    table = _apply_null_values(pa.table(columns), config.null_values)
    return _in_memory(uri, table, "row", lambda ps: [sheet_rows[p] for p in ps])


def _apply_null_values(table: pa.Table, null_values: list[str]) -> pa.Table:
    nulls = pa.array(null_values, pa.string())
    return pa.table(
        {
            name: pc.if_else(pc.is_in(col, nulls), pa.scalar(None, pa.string()), col)
            for name, col in zip(table.column_names, table.columns, strict=True)
        }
    )


# --- JSON --------------------------------------------------------------------------


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def read_json(data: bytes, uri: str, config: TableConfig) -> SourceTable:
    text = _decode(data, uri, "utf-8-sig" if _is_utf8(config.encoding) else config.encoding)
    stripped = text.lstrip()
    records: list[Any]
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise RejectedInput(
                f"not valid JSON: {error.msg}", file=uri, line=error.lineno
            ) from None
        labels = list(range(1, len(records) + 1))
        unit = "row"
    else:
        records, labels = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise RejectedInput(f"not valid JSON: {error.msg}", file=uri, line=number) from None
            labels.append(number)
        unit = "line"
    columns: dict[str, None] = {}
    for label, record in zip(labels, records, strict=True):
        if not isinstance(record, dict):
            raise RejectedInput(
                f"expected a JSON object, found {type(record).__name__}",
                file=uri,
                **at(unit, label),
            )
        columns.update(dict.fromkeys(record))
    table = pa.table(
        {
            name: pa.array([_json_text(r.get(name)) for r in records], pa.string())
            for name in columns
        }
    )
    table = _apply_null_values(table, config.null_values)
    return _in_memory(uri, table, unit, lambda ps: [labels[p] for p in ps])


# --- Parquet -----------------------------------------------------------------------


def read_parquet(data: bytes, uri: str, config: TableConfig) -> SourceTable:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as error:
        raise RejectedInput(f"cannot read as Parquet: {error}", file=uri) from None
    as_text = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            as_text[name] = pc.cast(column, pa.string())
        elif pa.types.is_nested(column.type):
            as_text[name] = pa.array([_json_text(v) for v in column.to_pylist()], pa.string())
        else:
            as_text[name] = pa.array([_cell_text(v) for v in column.to_pylist()], pa.string())
    table = _apply_null_values(pa.table(as_text), config.null_values)
    return _in_memory(uri, table, "row", lambda ps: [p + 1 for p in ps])


# Formats small enough to read whole (CSV streams, see read_source).
READERS: dict[str, Callable[[bytes, str, TableConfig], SourceTable]] = {
    "excel": read_excel,
    "json": read_json,
    "parquet": read_parquet,
}
