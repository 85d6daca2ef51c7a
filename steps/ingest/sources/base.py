"""What every source reader shares: the table a reader returns (`SourceTable`), the size
limits, the capped and hashing streams, a reader's entry in the registry (`FormatSpec`), and
the helpers that turn a cell into text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from steps.shared import progress
from steps.shared.errors import RejectedInput, at

if TYPE_CHECKING:
    from steps.shared.config.model import TableConfig

# The largest integer a double holds exactly: beyond it, Excel's (and a float column's)
# digits are not the ones that were typed.
EXACT_DOUBLE_LIMIT = 2**53


@dataclass
class BadRecord:
    """A record that could not even be split into the header's columns."""

    where: int
    reason: str
    text: str


@dataclass(frozen=True)
class BadCell:
    """A cell whose text cannot stand for its value: an Excel error, a formula never
    calculated, binary data, or a number a double could not hold exactly."""

    position: int  # the row's position in the source table
    column: str  # the source column (header name)
    value: str | None
    reason: str
    # True: a problem only where the exact digits matter (any target type but double).
    inexact_number: bool = False


@dataclass
class SourceTable:
    uri: str
    column_names: list[str]
    chunks: Iterator[pa.Table]  # text columns named by the header, in file order; read once
    unit: str  # what `locate` returns: "line" or "row"
    locate: Callable[[list[int]], list[int]]
    # Records that could not be split into the header's columns; complete once the
    # chunks have been read. Called with (limit, last_line): at most `limit` of them, on
    # lines up to `last_line`.
    bad_records: Callable[..., list[BadRecord]] = lambda *_: []
    # How many such records the chunks read so far held.
    unreadable: Callable[[], int] = lambda: 0
    bad_cells: list[BadCell] = field(default_factory=list)
    # sha256 of the file's bytes as stored (compressed or not), taken while they were
    # read for parsing: known once the chunks have been read.
    content_hash: Callable[[], str] = lambda: ""
    # All the chunks may be held in memory at once (a small file); else they are streamed.
    fits_in_memory: bool = True
    # Columns whose every value the file wrote as a string (JSON): `init` keeps their
    # fixed-width digits ('262') as text.
    quoted_columns: frozenset[str] = frozenset()
    # How the file looks laid out when that is not what the config says (a vendor moved
    # the header or changed the delimiter): said beside a rejection of its header.
    layout_hint: Callable[[], str | None] = lambda: None
    # Given the readable records read: the line of the first when every line after the
    # header is one record (a line is then first + position), else each record's line;
    # None when the source has no cheaper way than `locate`.
    record_lines: Callable[[int], int | Sequence[int] | None] = lambda rows: None


def _in_memory(
    uri: str,
    table: pa.Table,
    unit: str,
    locate: Callable[[list[int]], list[int]],
    bad_cells: list[BadCell] | None = None,
) -> SourceTable:
    return SourceTable(
        uri, table.column_names, iter([table]), unit, locate, bad_cells=bad_cells or []
    )


def chunk_bytes() -> int:
    """How much CSV is mapped at a time: memory is bounded by this, not by the file."""
    return int(os.environ.get("REFLOAD_CHUNK_BYTES", 64 << 20))


def whole_read_bytes() -> int:
    """Largest CSV read in one go rather than streamed: up to 1.5 chunks. One read parses
    on every core and keeps the rows in memory (no spill, Arrow's dedupe): 1.8 s instead of
    2.3 s for a 65 MB file, at a peak of 600 MB, below the 5M-row streamed file's 800-900."""
    return chunk_bytes() * 3 // 2


def max_source_bytes() -> int:
    """Largest source, once decompressed. CSV streams through scratch (its typed rows
    spill there at ~0.9x, beside the curated file), so 4 GiB fits Lambda's 6 GB /tmp."""
    return int(os.environ.get("REFLOAD_MAX_SOURCE_BYTES", 4 << 30))


def max_whole_source_bytes() -> int:
    """Largest JSON, Excel or Parquet source, once decompressed: these are read whole into
    memory, where they take 5-10x their size, so 128 MiB fits a 2 GB function."""
    return int(os.environ.get("REFLOAD_MAX_WHOLE_SOURCE_BYTES", 128 << 20))


def parse_block_bytes(file_bytes: int | None) -> int:
    """pyarrow's CSV block: blocks are parsed in parallel, so one chunk is several blocks.

    Measured on ZIP-like files: one 64 MB block parses at half the speed of 1-8 MB ones.
    A record must fit in a block, hence no smaller than 1 MB (or the chunk); a larger
    record makes the reader retry with larger blocks. A streamed file's block is a 32nd
    of a chunk: Arrow reads up to 32 blocks ahead of the parser, which held 256 MB of a
    large file (8 MB blocks) whatever the chunk size; so memory follows the chunk.
    """
    size = file_bytes // 16 if file_bytes else chunk_bytes() // 32
    return min(chunk_bytes(), max(1 << 20, min(8 << 20, size)))


def _too_large(uri: str, limit: int, variable: str) -> RejectedInput:
    return RejectedInput(
        f"is larger than {limit:,} bytes once decompressed ({variable}); refused so that "
        "a small compressed file cannot exhaust memory or disk. Raise the limit if the "
        "file is genuine",
        file=uri,
    )


class _HashingFile(io.RawIOBase):
    """A file's bytes as they are read, into sha256, and its line feeds counted: the
    content hash and a plain CSV's line count cost no second pass.

    Not seekable, so pyarrow reads it front to back, once."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("rb")
        self.digest = hashlib.sha256()
        self.line_feeds = 0
        self.carriage_returns = False  # any b"\r": lines are then counted another way
        self.last = b""  # the last byte read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self.file.readinto(buffer)
        self._saw(buffer, count)
        progress.advance(count)  # the stored bytes read: the share of the file, at a terminal
        return count

    def _saw(self, block: Any, count: int) -> None:
        """`block[:count]`: pyarrow reads into a bytearray, counted where it lies."""
        if not count:
            return
        self.digest.update(memoryview(block)[:count])
        if not isinstance(block, bytes | bytearray):
            block = memoryview(block)[:count].tobytes()
        self.line_feeds += block.count(b"\n", 0, count)
        self.carriage_returns = self.carriage_returns or block.find(b"\r", 0, count) >= 0
        self.last = bytes(block[count - 1 : count])

    def hexdigest(self) -> str:
        self.close()
        return self.digest.hexdigest()

    def close(self) -> None:
        """Whatever the parser left unread is hashed too (pyarrow closes a stream it has
        read to the end), so the hash is always the whole file's."""
        if not self.closed:
            while block := self.file.read(1 << 20):
                self._saw(block, len(block))
            self.file.close()
        super().close()


class _CappedStream(io.RawIOBase):
    """Reads a (decompressing) stream and refuses to go past `limit` bytes."""

    def __init__(self, inner: Any, limit: int, uri: str, variable: str) -> None:
        self.inner, self.limit, self.uri, self.variable = inner, limit, uri, variable
        self.seen = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.inner.read(size)
        self.seen += len(data)
        if self.seen > self.limit:
            raise _too_large(self.uri, self.limit, self.variable)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


def _corrupt_gzip(uri: str, error: Exception) -> RejectedInput:
    return RejectedInput(f"gzip data is corrupt: {error}", file=uri)


def _read_whole(path: Path, compression: str | None, uri: str) -> tuple[bytes, str]:
    """The file's bytes, decompressed, for the formats read whole (capped while reading),
    and the sha256 of the bytes as stored."""
    limit = max_whole_source_bytes()
    variable = "REFLOAD_MAX_WHOLE_SOURCE_BYTES"
    if not compression:
        if path.stat().st_size > limit:
            raise _too_large(uri, limit, variable)
        data = path.read_bytes()
        progress.advance(len(data))
        return data, hashlib.sha256(data).hexdigest()
    stored = path.read_bytes()  # compressed: small beside what it expands to
    progress.advance(len(stored))
    try:
        with (
            pa.CompressedInputStream(pa.BufferReader(stored), compression) as stream,
            _CappedStream(stream, limit, uri, variable) as capped,
        ):
            blocks = []
            while block := capped.read(1 << 20):
                blocks.append(block)
            return b"".join(blocks), hashlib.sha256(stored).hexdigest()
    except (OSError, EOFError) as error:
        raise _corrupt_gzip(uri, error) from None


# A whole-file reader: the decompressed bytes (at most `max_whole_source_bytes()`) in, a table out.
WholeReader = Callable[[bytes, str, "TableConfig"], SourceTable]
# A streaming reader: (path, compression, uri, config, wide encoding or None) in.
StreamReader = Callable[[Path, str | None, str, "TableConfig", str | None], SourceTable]


@dataclass(frozen=True)
class FormatSpec:
    """A source format as the registry (`steps.shared.formats.FORMATS`) names it: how it
    reads, the file extensions it answers to, and what `init` needs to know of its layout.
    Its name and aliases (the `source_format` values it reads) are the registry's."""

    extensions: dict[str, str]  # '.ext' -> the alias a file so named implies
    read: WholeReader | None = None  # read whole (bounded by max_whole_source_bytes)
    stream: StreamReader | None = None  # or streamed (CSV)
    # Text: an encoding applies and a binary file is refused before it is parsed.
    text: bool = False
    # The alias a file's first bytes imply (`binary_kind` already applied), else None.
    sniff: Callable[[bytes, str | None], str | None] = lambda head, kind: None
    # The layout keys a config of this format sets (init writes them, its options check them).
    layout_keys: tuple[str, ...] = ()
    # Keys an alias implies unless the config sets them (tsv: tab-delimited).
    alias_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)


def _name_blank_columns(header: list[str]) -> list[str]:
    """A column with no header (trailing delimiters) cannot be mapped, but must be parsed."""
    return [name or f"(unnamed {i})" for i, name in enumerate(header, start=1)]


def _check_header(header: list[str], uri: str, line: int, unit: str) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            first, second = [i for i, n in enumerate(header, 1) if n == name][:2]
            raise RejectedInput(
                f"header names column '{name}' twice (columns {first} and {second}): a "
                "repeated column name; rename one",
                file=uri,
                **at(unit, line),
            )
        seen.add(name)


def _cell_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _inexact(value: Any) -> bool:
    """A whole number beyond 2**53 in a double: its last digits are the double's, not
    the ones that were typed (1234567890123456789 reads as ...768)."""
    return (
        isinstance(value, float)
        and math.isfinite(value)
        and value.is_integer()
        and abs(value) > EXACT_DOUBLE_LIMIT
    )


INEXACT_REASON = (
    "is a whole number larger than 2**53, which a double (Excel's number, a float "
    "column) cannot hold exactly; store it as text"
)


def _apply_null_values(table: pa.Table, null_values: list[str]) -> pa.Table:
    nulls = pa.array(null_values, pa.string())
    return pa.table(
        {
            name: pc.if_else(pc.is_in(col, nulls), pa.scalar(None, pa.string()), col)
            for name, col in zip(table.column_names, table.columns, strict=True)
        }
    )


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
