"""Source readers: CSV, Excel, JSON and Parquet in, a table of text columns out.

Every value is read as text (codes keep their leading zeros); the mapping
casts later. Each reader also knows how to turn a row position back into the
line or row a person would look at in the file.

Sizes are bounded on every path: CSV streams (and a compressed CSV stops at
`max_source_bytes()` once expanded); the formats read whole stop at
`max_whole_source_bytes()`, so a small compressed file cannot expand into GBs.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import hashlib
import io
import itertools
import json
import math
import os
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast
from xml.etree import ElementTree

import pyarrow as pa
import pyarrow.compute as pc
import structlog

from steps.shared import progress
from steps.shared.errors import ConfigError, RejectedInput, at
from steps.shared.names import did_you_mean

if TYPE_CHECKING:
    from steps.shared.config.model import TableConfig

log = structlog.get_logger("refload.sources")

# The largest integer a double holds exactly: beyond it, Excel's (and a float column's)
# digits are not the ones that were typed.
EXACT_DOUBLE_LIMIT = 2**53
# A CSV record must fit in one parse block: blocks grow up to this for a huge field.
MAX_BLOCK_BYTES = 256 << 20


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
    """A file's bytes as they are read, into sha256: the content hash costs no second pass.

    Not seekable, so pyarrow reads it front to back, once."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("rb")
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self.file.readinto(buffer)
        self.digest.update(memoryview(buffer)[:count])
        progress.advance(count)  # the stored bytes read: the share of the file, at a terminal
        return count

    def hexdigest(self) -> str:
        self.close()
        return self.digest.hexdigest()

    def close(self) -> None:
        """Whatever the parser left unread is hashed too (pyarrow closes a stream it has
        read to the end), so the hash is always the whole file's."""
        if not self.closed:
            while block := self.file.read(1 << 20):
                self.digest.update(block)
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


# source_format aliases -> the reader that reads them; tsv is csv split on tabs.
FORMAT_READERS = {
    "csv": "csv",
    "tsv": "csv",
    "excel": "excel",
    "xlsx": "excel",
    "xls": "excel",
    "json": "json",
    "jsonl": "json",
    "ndjson": "json",
    "parquet": "parquet",
}
EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xls",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "ndjson",
    ".parquet": "parquet",
}


def format_of(uri: str) -> str | None:
    """The source_format a file name implies (the extension under any .gz), if known."""
    name = uri.rsplit("/", 1)[-1].lower().removesuffix(".gz")
    return EXTENSION_FORMATS.get("." + name.rsplit(".", 1)[-1]) if "." in name else None


def reading_config(uri: str, config: TableConfig) -> TableConfig:
    """The config with the format its reader needs: an omitted source_format is the
    extension's (csv when unknown, as before the key was optional); tsv means tabs unless
    the config names a delimiter."""
    source_format = config.source_format or format_of(uri) or "csv"
    update: dict[str, Any] = {"source_format": FORMAT_READERS[source_format]}
    if source_format == "tsv" and "delimiter" not in config.model_fields_set:
        update["delimiter"] = "\t"
    return config.model_copy(update=update)


# First bytes of files that are not text, by what they are. Only signatures no vendor's
# text starts with (not 'BM' or 'ORC': a header may); gzip is read through instead.
BINARY_SIGNATURES = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"PAR1", "parquet"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "xls (or another OLE2 document)"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"Rar!\x1a\x07", "rar"),
    (b"SQLite format 3\x00", "sqlite"),
    (b"Obj\x01", "avro"),
    (b"ARROW1", "arrow"),
    (b"\x7fELF", "an executable"),
)
# Signatures a header could start with ('PAR1,PAR2'): binary only with control bytes after.
TEXT_LIKE_KINDS = ("parquet", "arrow")
# What a zip holds, told by the folder of its first members.
ZIP_KINDS = ((b"xl/", "xlsx"), (b"word/", "docx"), (b"ppt/", "pptx"))


def binary_kind(head: bytes) -> str | None:
    """What the file is when its first bytes say it is not text ('pdf', 'xlsx', ...)."""
    if wide_encoding(head):  # UTF-16/32 text is full of NUL bytes, and still text
        return None
    kind = next((k for magic, k in BINARY_SIGNATURES if head.startswith(magic)), None)
    if kind in TEXT_LIKE_KINDS and not re.search(rb"[\x00-\x08\x0e-\x1f]", head[:1024]):
        return None
    if kind is None and head[257:265] in (b"ustar\x0000", b"ustar  \x00"):
        return "tar"
    if kind == "zip":
        return next((k for folder, k in ZIP_KINDS if folder in head), kind)
    if kind is None and head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return "bzip2"
    return kind


# Byte-order marks of the wide Unicode encodings, UTF-32's first (FF FE 00 00 starts with
# UTF-16 LE's FF FE): Excel's "Unicode Text" is UTF-16 LE with a BOM.
WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def wide_encoding(head: bytes, declared: str = "utf-8") -> str | None:
    """The UTF-16/32 codec a text file is in: its byte-order mark's (whatever the config
    declares, as a UTF-8 BOM is always tolerated), else the declared one if it is wide;
    a plain utf-16/utf-32 without a BOM is little-endian, as Windows writes it."""
    bom = next((codec for mark, codec in WIDE_BOMS if head.startswith(mark)), None)
    if bom:
        return bom
    try:
        name = codecs.lookup(declared).name
    except LookupError:
        return None
    if name in ("utf-16", "utf-32"):
        return f"{name}-le"
    return name if name.startswith(("utf-16", "utf-32")) else None


def bomless_utf16(head: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' for text without a BOM whose every other byte is NUL
    (ASCII written as UTF-16), which read as UTF-8 would be NUL-riddled columns."""
    sample = head[: 1 << 12]
    sample = sample[: len(sample) // 2 * 2]
    if len(sample) < 4:
        return None
    for codec, nuls, chars in (
        ("utf-16-le", sample[1::2], sample[::2]),
        ("utf-16-be", sample[::2], sample[1::2]),
    ):
        if nuls.count(0) > 0.9 * len(nuls) and chars.count(0) < 0.1 * len(chars):
            return codec
    return None


def _wide_error(
    uri: str, encoding: str, data: bytes, error: UnicodeDecodeError, line: int, column: int
) -> RejectedInput:
    """`_undecodable` for UTF-16/32, where a line break is not the byte 0x0A: the line and
    character are counted in the text decoded before the bad bytes."""
    before = data[: error.start].decode(encoding, "replace")
    breaks = re.findall(r"\r\n|\r|\n", before)
    last = max(before.rfind("\n"), before.rfind("\r"))
    column = len(before) - last - 1 if breaks else column + len(before)
    return RejectedInput(
        f"cannot decode byte(s) {data[error.start : error.end]!r} as {encoding} at character "
        f"{column + 1}; set 'encoding' in the config",
        file=uri,
        line=line + len(breaks),
    )


def _decode_wide(data: bytes, uri: str, encoding: str) -> str:
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise _wide_error(uri, encoding, data, error, 1, 0) from None


class _Utf8Stream(io.RawIOBase):
    """A UTF-16/32 stream as UTF-8 bytes, transcoded as it is read: Arrow's reader and the
    csv module then read it as any UTF-8 file, streaming in the same bounded memory. Bytes
    that are not text name their line, counted in the text decoded so far."""

    def __init__(self, inner: Any, encoding: str, uri: str) -> None:
        self.inner, self.encoding, self.uri = inner, encoding, uri
        self.decoder = codecs.getincrementaldecoder(encoding)()
        self.pending = bytearray()
        self.ended = False
        self.line, self.column, self.after_cr = 1, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while len(self.pending) < len(buffer) and not self.ended:
            raw = self.inner.read(max(len(buffer), 1 << 16))
            self.ended = not raw
            self.pending += self._transcode(bytes(raw))
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        del self.pending[:count]
        return count

    def _transcode(self, raw: bytes) -> bytes:
        data = getattr(self.decoder, "buffer", b"") + raw  # with an unfinished character
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as error:
            raise _wide_error(
                self.uri, self.encoding, data, error, self.line, self.column
            ) from None
        breaks = text.count("\n") + text.count("\r") - text.count("\r\n")
        if self.after_cr and text.startswith("\n"):
            breaks -= 1  # a CRLF split between two reads is one line end
        if text:
            self.after_cr = text.endswith("\r")
            last = max(text.rfind("\n"), text.rfind("\r"))
            self.column = len(text) - last - 1 if last >= 0 else self.column + len(text)
        self.line += breaks
        return text.encode("utf-8")

    def close(self) -> None:
        self.inner.close()
        super().close()


def not_text(uri: str, kind: str, source_format: str | None) -> RejectedInput:
    """A file whose first bytes say it is `kind`, given to a text format (or to none)."""
    readable = kind.split()[0]  # 'xls (or another OLE2 document)' -> 'xls'
    said = f", but source_format is {source_format}" if source_format else ""
    hint = f"; set source_format to {readable}" if readable in FORMAT_READERS else ""
    return RejectedInput(f"not a text file (looks like: {kind}){said}{hint}", file=uri)


def read_source(path: Path, uri: str, config: TableConfig) -> SourceTable:
    declared = config.source_format or format_of(uri) or "csv"
    config = reading_config(uri, config)
    with path.open("rb") as probe:
        compression = "gzip" if probe.read(2) == b"\x1f\x8b" else None
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            head = stream.read(1 << 16)
    except (OSError, pa.ArrowInvalid, EOFError) as error:
        raise _corrupt_gzip(uri, error) from None
    text = config.source_format in ("csv", "json")
    wide = wide_encoding(head, config.encoding) if text else None
    shown = head.decode(wide, "replace").encode() if wide else head
    if len(head) < 1 << 16 and not shown.removeprefix(codecs.BOM_UTF8).strip():
        raise RejectedInput("file is empty", file=uri)
    kind = binary_kind(head)
    if kind and text:
        raise not_text(uri, kind, declared)
    unmarked = bomless_utf16(head) if text and not wide else None
    if unmarked:
        raise RejectedInput(
            f"looks like {unmarked.upper()} text without a byte-order mark (every other byte "
            f"is NUL), not {config.encoding}; set 'encoding' to {unmarked} in the config",
            file=uri,
        )
    if config.source_format == "csv":
        return CsvSource(path, compression, uri, config, wide).table()
    data, content_hash = _read_whole(path, compression, uri)
    source = READERS[config.source_format or "csv"](data, uri, config)
    return replace(source, content_hash=lambda: content_hash)


# --- CSV ---------------------------------------------------------------------------

DELIMITERS = (",", ";", "|", "\t")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "|": "pipe", "\t": "tab"}


@dataclass(frozen=True)
class CsvLayout:
    """How a text file's first lines look split: `init` proposes it, and a rejected run
    compares it with its config."""

    delimiter: str
    header_row: int
    width: int  # fields in the header (and in most lines)


def _filled_names(cells: list[str]) -> int:
    """How many names a header candidate has (0 for a comment). A trailing delimiter
    leaves an empty name, which init leaves out. A name twice still counts: the header
    is refused for it when read, rather than a data row taken for the header."""
    names = [c.strip() for c in cells if c.strip()]
    if not names or cells[0].startswith("#"):
        return 0
    return len(names)


def sniff_csv(
    text: str,
    uri: str,
    delimiters: tuple[str, ...] = DELIMITERS,
    header_row: int | None = None,
) -> CsvLayout | None:
    """The delimiter that splits the first 1,000 lines most evenly (two fields at least),
    and the header: the first line with a name in every field (lines above it are a
    preamble), unless `header_row` says. None when no delimiter splits them."""
    # A wide header split on the wrong delimiter is one long field: as large as run allows.
    csv.field_size_limit(min(max_source_bytes(), 2**31 - 1))
    # Lines as read_csv counts them for header_row: split on "\n" only.
    head = "\n".join(text.split("\n", 1000)[:1000])
    best: tuple[tuple[int, int], CsvLayout] | None = None
    for delimiter in delimiters:
        records: list[tuple[int, list[str]]] = []
        reader = csv.reader(io.StringIO(head), delimiter=delimiter)
        line = 1
        try:
            for record in reader:
                if record:
                    records.append((line, record))
                line = reader.line_num + 1
        except csv.Error as error:  # a NUL byte, a lone carriage return: not text
            raise RejectedInput(
                f"cannot read as text lines: {error}", file=uri, line=line
            ) from None
        widths = Counter(len(r) for _, r in records)
        if not widths:
            continue
        width = max(widths, key=lambda w: (widths[w], w))
        most = max(_filled_names(r) for _, r in records if len(r) == width)
        header = next(n for n, r in records if len(r) == width and _filled_names(r) == most)
        if width < 2 or most < 2:
            continue
        score = (widths[width], width)
        if best is None or score > best[0]:
            best = (score, CsvLayout(delimiter, header_row or header, width))
    return best[1] if best else None


def _decode(data: bytes, uri: str, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise _undecodable(uri, encoding, data, error, 1, 0) from None
    return text.removeprefix("\ufeff")


def _line_breaks(data: bytes) -> int:
    """Line ends in `data`, whichever style: LF, CRLF or a lone CR."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _undecodable(
    uri: str, encoding: str, data: bytes, error: UnicodeDecodeError, line: int, column: int
) -> RejectedInput:
    """`data` is what the decoder was given; `line`/`column` where `data` starts."""
    before = data[: error.start]
    line_start = max(before.rfind(b"\n"), before.rfind(b"\r")) + 1
    column = error.start - line_start + (column if line_start == 0 else 0)
    bad = data[error.start : error.end]
    return RejectedInput(
        f"cannot decode byte(s) {bad!r} as {encoding.removesuffix('-sig')} at character "
        f"{column + 1}; set 'encoding' in the config",
        file=uri,
        line=line + _line_breaks(before),
    )


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _name_blank_columns(header: list[str]) -> list[str]:
    """A column with no header (trailing delimiters) cannot be mapped, but must be parsed."""
    return [name or f"(unnamed {i})" for i, name in enumerate(header, start=1)]


class CsvSource:
    """A CSV file read in chunks of text columns by pyarrow.

    The file is only ever streamed: the data in chunks of `chunk_bytes()`, and, on the
    error path, the records again with the csv module to name their lines.
    """

    def __init__(
        self,
        path: Path,
        compression: str | None,
        uri: str,
        config: TableConfig,
        wide: str | None = None,
    ):
        self.path, self.compression, self.uri, self.config = path, compression, uri, config
        # A UTF-16/32 file is read as UTF-8, transcoded as it streams (_Utf8Stream).
        self.wide = wide
        utf8 = wide or _is_utf8(config.encoding)
        self.encoding = "utf-8-sig" if utf8 else config.encoding
        self.header = self._read_header()
        self.size = path.stat().st_size
        self.whole = not compression and self.size <= whole_read_bytes()
        self.unreadable_rows = 0
        self._hashing: _HashingFile | None = None

    def table(self) -> SourceTable:
        return SourceTable(
            self.uri,
            self.header,
            self.chunks(),
            "line",
            self.locate,
            self.bad_records,
            lambda: self.unreadable_rows,
            content_hash=self.content_hash,
            fits_in_memory=self.whole,
            layout_hint=self.layout_hint,
        )

    def layout_hint(self) -> str | None:
        """'this file's header looks to be on line 1, delimiter ','; the config says line
        2, tab', from the file's first MB sniffed as `init` does; None when they agree."""
        config = self.config
        try:
            with pa.input_stream(str(self.path), compression=self.compression) as stream:
                raw = stream.read(1 << 16)
            if self.wide and not wide_encoding(raw) and b"\x00" not in raw:
                return (
                    "this file looks to be 8-bit text such as UTF-8 (no byte-order mark, no "
                    f"NUL byte); the config says {config.encoding}"
                )
            with self._open() as opened:
                head = opened.read(1 << 20)
            text = head.decode(self.encoding, "replace").removeprefix("\ufeff")
            sniffed = sniff_csv(text, self.uri)
        except (RejectedInput, OSError, EOFError, LookupError, pa.ArrowInvalid):
            return None
        if sniffed is None or (sniffed.header_row, sniffed.delimiter) == (
            config.header_row,
            config.delimiter,
        ):
            return None

        def shown(delimiter: str) -> str:
            return "tab" if delimiter == "\t" else repr(delimiter)

        return (
            f"this file's header looks to be on line {sniffed.header_row}, delimiter "
            f"{shown(sniffed.delimiter)}; the config says line {config.header_row}, "
            f"{shown(config.delimiter)}"
        )

    def content_hash(self) -> str:
        """sha256 of the stored bytes, taken by the read that gave the chunks."""
        if self._hashing is None:
            raise RuntimeError("the chunks have not been read")
        return self._hashing.hexdigest()

    def _open(self, hashing: bool = False) -> Any:
        """The decompressed bytes; a compressed file stops at its size limit. With
        `hashing`, the stored bytes also go through sha256 as they are read."""
        if hashing:
            if self._hashing is not None:  # a read before this one stopped (a huge record)
                self._hashing.close()
            self._hashing = _HashingFile(self.path)
            raw: Any = pa.PythonFile(self._hashing, mode="r")
            stream = pa.CompressedInputStream(raw, self.compression) if self.compression else raw
        else:
            stream = pa.input_stream(str(self.path), compression=self.compression)
        if self.compression:
            limit = max_source_bytes()
            stream = _CappedStream(stream, limit, self.uri, "REFLOAD_MAX_SOURCE_BYTES")
        return _Utf8Stream(stream, self.wide, self.uri) if self.wide else stream

    def _open_text(self) -> IO[str]:
        """The decoded text, every line ending (LF, CRLF, CR) kept for the csv module."""
        return io.TextIOWrapper(self._open_binary(), encoding=self.encoding, newline="")

    def _open_binary(self) -> BinaryIO:
        """The decompressed bytes as a Python file (for the csv module and codecs)."""
        if self.wide:  # `_open` transcodes it to UTF-8
            return cast(BinaryIO, io.BufferedReader(self._open()))
        if self.compression:
            return cast(BinaryIO, gzip.open(self.path, "rb"))
        return self.path.open("rb")

    def _read_header(self) -> list[str]:
        config = self.config
        header_index = config.header_row - 1
        try:
            with self._open() as opened:
                head = opened.read(1 << 20)
        except (OSError, EOFError) as error:
            raise _corrupt_gzip(self.uri, error) from None
        lines = re.split(rb"\r\n|\r|\n", head, maxsplit=config.header_row)[: config.header_row]
        if len(lines) <= header_index or (len(lines) == config.header_row == 1 and not lines[0]):
            hint = self.layout_hint()
            raise RejectedInput(
                f"file has fewer than {config.header_row} line(s); header_row is "
                f"{config.header_row}" + (f"; {hint}" if hint else ""),
                file=self.uri,
            )
        header_text = _decode(b"\n".join(lines), self.uri, self.encoding).split("\n")[header_index]
        # A wide header split on another delimiter is one field, beyond the csv module's 128 KB.
        csv.field_size_limit(min(max_source_bytes(), 2**31 - 1))
        fields = next(
            csv.reader([header_text], delimiter=config.delimiter, quotechar=config.quote_char)
        )
        header = _name_blank_columns([name.strip() for name in fields])
        _check_header(header, self.uri, config.header_row, "line")
        return header

    def _options(self, block_bytes: int) -> dict[str, Any]:
        import pyarrow.csv as pacsv

        def on_invalid(row: Any) -> str:
            self.unreadable_rows += 1
            return "skip"

        return {
            "read_options": pacsv.ReadOptions(
                skip_rows=self.config.header_row,
                column_names=self.header,
                block_size=block_bytes,
                encoding="utf8" if _is_utf8(self.encoding) else self.encoding,
            ),
            "parse_options": pacsv.ParseOptions(
                delimiter=self.config.delimiter,
                quote_char=self.config.quote_char,
                newlines_in_values=True,
                invalid_row_handler=on_invalid,
            ),
            "convert_options": pacsv.ConvertOptions(
                column_types=dict.fromkeys(self.header, pa.string()),
                null_values=self.config.null_values,
                strings_can_be_null=True,
            ),
        }

    def _read(self, block_bytes: int, skip: int) -> Iterator[pa.Table]:
        """Chunks of the file, less the first `skip` rows (already read by a try before)."""
        import pyarrow.csv as pacsv

        options = self._options(block_bytes)
        # A small file comes in quarters: each is mapped while the next one is parsed.
        limit = chunk_bytes() // 4 if self.whole else chunk_bytes()
        batches: list[pa.RecordBatch] = []
        held, first_try = 0, not skip
        reader = pacsv.open_csv(self._open(hashing=True), **options)
        for batch in reader:
            if skip:
                dropped = min(skip, batch.num_rows)
                batch, skip = batch.slice(dropped), skip - dropped
            batches.append(batch)
            held += batch.nbytes
            if held >= limit:
                yield pa.Table.from_batches(batches)
                batches, held, first_try = [], 0, False
        if batches or first_try:  # a file with no data rows is one empty table
            yield pa.Table.from_batches(batches, schema=reader.schema)

    def chunks(self) -> Iterator[pa.Table]:
        block = parse_block_bytes(self.size if self.whole else None)
        done = 0
        while True:
            self.unreadable_rows = 0
            try:
                for table in self._read(block, done):
                    done += table.num_rows
                    yield table
                return
            except pa.ArrowInvalid as error:
                # A record longer than a block: read again with larger blocks.
                if "straddl" in str(error) and block < MAX_BLOCK_BYTES:
                    block = min(block * 8, MAX_BLOCK_BYTES)
                    continue
                raise self._parse_error(error) from None
            except UnicodeDecodeError as error:
                raise self._parse_error(error) from None
            except (OSError, EOFError) as error:
                raise _corrupt_gzip(self.uri, error) from None

    def _parse_error(self, error: Exception) -> RejectedInput:
        undecodable = self._first_undecodable()
        if undecodable:
            return undecodable
        if "straddl" in str(error):
            return RejectedInput(
                f"a record is larger than {MAX_BLOCK_BYTES >> 20} MB, the largest refload "
                "parses (or a quote is never closed)",
                file=self.uri,
            )
        return RejectedInput(f"cannot parse as CSV: {error}", file=self.uri)

    def _first_undecodable(self) -> RejectedInput | None:
        """The first bytes that are not text in the encoding, found by streaming."""
        decoder = codecs.getincrementaldecoder(self.encoding)()
        line, column = 1, 0  # where the bytes handed to the decoder next start
        with self._open_binary() as stream:
            while True:
                try:
                    block = stream.read(1 << 20)
                except (OSError, EOFError):
                    return None
                if not block:
                    return None
                data = getattr(decoder, "buffer", b"") + block  # an unfinished character
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as error:
                    return _undecodable(self.uri, self.encoding, data, error, line, column)
                done = data[: len(data) - len(getattr(decoder, "buffer", b""))]
                line += _line_breaks(done)
                last_break = max(done.rfind(b"\n"), done.rfind(b"\r"))
                column = len(done) - last_break - 1 if last_break >= 0 else column + len(done)

    def _records(self) -> Iterator[tuple[int, int, list[str]]]:
        """Each data record: its first line, its number of fields and its raw lines."""
        config = self.config
        csv.field_size_limit(min(max_source_bytes(), 2**31 - 1))  # one field may be huge
        raw: list[str] = []
        with self._open_text() as text:

            def lines() -> Iterator[str]:
                for line in text:
                    raw.append(line)
                    yield line

            reader = csv.reader(lines(), delimiter=config.delimiter, quotechar=config.quote_char)
            previous_end = 0
            for number, record in enumerate(reader, start=1):
                start = previous_end + 1
                previous_end = reader.line_num
                if number > config.header_row and record:
                    yield start, len(record), raw
                raw.clear()

    def locate(self, positions: list[int]) -> list[int]:
        """Line of each position among the readable records, by streaming the file."""
        if not positions:
            return []
        wanted = set(positions)
        found: dict[int, int] = {}
        good = 0
        for line, width, _ in self._records():
            if width != len(self.header):
                continue
            if good in wanted:
                found[good] = line
                if len(found) == len(wanted):
                    break
            good += 1
        return [found.get(p, self.config.header_row + 1 + p) for p in positions]

    def bad_records(
        self, limit: int | None = None, last_line: int | None = None
    ) -> list[BadRecord]:
        """The unreadable records, found by streaming the file again: the first `limit`
        of them (memory follows the limit, not the file), up to `last_line`."""
        if not self.unreadable_rows:
            return []
        records = itertools.takewhile(
            lambda record: last_line is None or record[0] <= last_line, self._records()
        )
        found = (
            BadRecord(
                line,
                f"has {width} field(s), the header has {len(self.header)}",
                "".join(raw).rstrip("\r\n"),
            )
            for line, width, raw in records
            if width != len(self.header)
        )
        return list(itertools.islice(found, limit))


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


# --- Excel -------------------------------------------------------------------------


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
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _check_workbook(data: bytes, uri: str) -> None:
    """Refuse what calamine cannot say clearly: a password, or a zip that expands too far."""
    if data.startswith(OLE_MAGIC) and "EncryptedPackage".encode("utf-16-le") in data:
        raise RejectedInput(
            "workbook is encrypted (password-protected); save a copy without a password",
            file=uri,
        )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return
    limit = max_whole_source_bytes()
    try:
        expanded = sum(m.file_size for m in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except zipfile.BadZipFile as error:
        raise RejectedInput(f"cannot open as an Excel workbook: {error}", file=uri) from None
    if expanded > limit:
        raise _too_large(uri, limit, "REFLOAD_MAX_WHOLE_SOURCE_BYTES")


def _pick_sheet(book: Any, uri: str, config: TableConfig) -> str:
    from python_calamine import SheetTypeEnum, SheetVisibleEnum

    names = list(book.sheet_names)
    wanted = config.sheet_name
    if wanted is None:  # the first visible worksheet: a hidden one is usually scratch
        visible = [
            s.name
            for s in book.sheets_metadata
            if s.visible == SheetVisibleEnum.Visible and s.typ == SheetTypeEnum.WorkSheet
        ]
        if not visible:
            raise RejectedInput(f"workbook has no visible worksheet; sheets: {names}", file=uri)
        skipped = names[: names.index(visible[0])]
        if skipped:
            log.warning(
                "hidden sheets skipped; set sheet_name to read one",
                file=uri,
                skipped=skipped,
                sheet=visible[0],
            )
        return visible[0]
    if isinstance(wanted, int):
        if not 0 <= wanted < len(names):
            raise ConfigError(
                f"sheet_name index {wanted} is out of range; sheets: {names}", file=uri
            )
        return str(names[wanted])
    if wanted not in names:
        raise ConfigError(
            f"workbook has no sheet '{wanted}'{did_you_mean(wanted, names)}; sheets: {names}",
            file=uri,
        )
    return wanted


def _sheet_part(book: zipfile.ZipFile, sheet: str) -> str | None:
    """The zip member holding a sheet's XML, from the workbook and its relationships."""

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    workbook = ElementTree.fromstring(book.read("xl/workbook.xml"))
    rel_id = next(
        (
            value
            for element in workbook.iter()
            if local(element.tag) == "sheet" and element.get("name") == sheet
            for name, value in element.attrib.items()
            if local(name) == "id"
        ),
        None,
    )
    rels = ElementTree.fromstring(book.read("xl/_rels/workbook.xml.rels"))
    target = next((r.get("Target") for r in rels.iter() if r.get("Id") == rel_id), None)
    if not target:
        return None
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


def _column_index(reference: str) -> int:
    """0-based column of a cell reference such as 'AB12'."""
    index = 0
    for char in reference:
        if not char.isalpha():
            break
        index = index * 26 + ord(char.upper()) - 64
    return index - 1


def _unreadable_cells(data: bytes, sheet: str) -> dict[tuple[int, int], tuple[str | None, str]]:
    """(row, column) -> (value, reason) of cells calamine reads as empty but are not:
    error values (#N/A, #DIV/0!) and formulas saved without their calculated value."""
    try:
        book = zipfile.ZipFile(io.BytesIO(data))
        part = _sheet_part(book, sheet)
        xml = book.read(part) if part else b""
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError):
        return {}  # not an xlsx (xls, ods): calamine alone decides
    if b"<f" not in xml and b't="e"' not in xml:
        return {}
    found: dict[tuple[int, int], tuple[str | None, str]] = {}
    for _, element in ElementTree.iterparse(io.BytesIO(xml)):
        if element.tag.rsplit("}", 1)[-1] != "c":
            continue
        reference = element.get("r", "")
        children = {child.tag.rsplit("}", 1)[-1]: child for child in element}
        value = children["v"].text if "v" in children else None
        where = f"sheet '{sheet}' cell {reference}"
        cell = (int(re.sub(r"^[A-Za-z]+", "", reference) or 0), _column_index(reference))
        if element.get("t") == "e":
            found[cell] = (value, f"{where} holds the Excel error {value}")
        elif "f" in children and not value and element.get("t") not in ("str", "inlineStr"):
            formula = children["f"].text
            found[cell] = (
                f"={formula}" if formula else None,
                f"{where} has a formula saved without its value; open the workbook in "
                "Excel, let it calculate, and save it",
            )
        element.clear()
    return found


def max_sheet_cells() -> int:
    """Largest used range (rows x columns, from A1) of a worksheet calamine is given: it
    allocates the whole range, so one stray cell at XFD1048576 would ask for 512 GiB."""
    return int(os.environ.get("REFLOAD_MAX_SHEET_CELLS", 20_000_000))


# A cell's or a row's reference in the sheet XML: <c r="XFD1048576" ...>, <row r="12" ...>.
_REFERENCE = re.compile(rb'<(?:[\w.-]+:)?(?:c|row)\s[^>]*?\br="([A-Za-z]*)([0-9]+)"')


def _used_range(stream: IO[bytes]) -> tuple[int, int]:
    """The largest row and column (1-based) any cell or row names, read a block at a time.
    The sheet's own <dimension> is not trusted: writers leave it stale, and calamine sizes
    the range by the cells."""
    rows = columns = 0
    carry = b""
    while block := stream.read(1 << 20):
        text = carry + block
        cut = text.rfind(b">") + 1  # a tag cut by the block boundary is scanned with the next
        for letters, digits in _REFERENCE.findall(text, 0, cut):
            rows = max(rows, int(digits))
            if letters:
                columns = max(columns, _column_index(letters.decode()) + 1)
        carry = text[cut:]
    return rows, columns


def _column_name(number: int) -> str:
    """1-based column number as Excel's letters (16384 -> 'XFD')."""
    name = ""
    while number:
        number, rest = divmod(number - 1, 26)
        name = chr(65 + rest) + name
    return name


def oversized_sheets(data: bytes, sheets: list[str] | None = None) -> str | None:
    """Why calamine must not be given this workbook: a worksheet (of `sheets`, or any)
    whose used range is over `max_sheet_cells()`, named with its range. None when every
    sheet fits, or the file is not an xlsx zip (calamine alone decides then)."""
    limit = max_sheet_cells()
    try:
        book = zipfile.ZipFile(io.BytesIO(data))
        if sheets is None:
            sheets = [
                element.get("name", "")
                for element in ElementTree.fromstring(book.read("xl/workbook.xml")).iter()
                if element.tag.rsplit("}", 1)[-1] == "sheet"
            ]
        for sheet in sheets:
            part = _sheet_part(book, sheet)
            if not part:
                continue
            with book.open(part) as stream:
                rows, columns = _used_range(stream)
            if rows * columns > limit:
                return (
                    f"sheet '{sheet}' spans A1:{_column_name(columns)}{rows} ({rows:,} rows x "
                    f"{columns:,} columns), more than the {limit:,} cells refload reads "
                    "(REFLOAD_MAX_SHEET_CELLS); a stray cell far from the data is the usual "
                    "cause: delete the empty rows and columns after the data"
                )
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError):
        return None
    return None


def read_excel(data: bytes, uri: str, config: TableConfig) -> SourceTable:
    from python_calamine import CalamineWorkbook

    _check_workbook(data, uri)
    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as error:
        raise RejectedInput(f"cannot open as an Excel workbook: {error}", file=uri) from None
    wanted = _pick_sheet(book, uri, config)
    too_large = oversized_sheets(data, [wanted])
    if too_large:
        raise RejectedInput(too_large, file=uri)
    try:
        rows = book.get_sheet_by_name(wanted).to_python(skip_empty_area=False)
    except Exception as error:  # calamine's XML, zip and format errors share no base class
        raise RejectedInput(f"cannot read sheet '{wanted}': {error}", file=uri) from None
    unreadable = _unreadable_cells(data, wanted)
    header_index = config.header_row - 1
    if header_index >= len(rows):
        raise RejectedInput(
            f"sheet '{wanted}' has {len(rows)} row(s); header_row is {config.header_row}", file=uri
        )
    header = [(_cell_text(v) or "").strip() for v in rows[header_index]]
    while header and not header[-1]:
        header.pop()
    header = _name_blank_columns(header)
    _check_header(header, uri, config.header_row, "row")
    body: list[list[str | None]] = []
    sheet_rows: list[int] = []
    bad_cells: list[BadCell] = []
    for number, row in enumerate(rows[header_index + 1 :], start=config.header_row + 1):
        cells = [_cell_text(v) for v in row[: len(header)]]
        problems = [
            BadCell(len(body), header[i], repr(v), INEXACT_REASON, inexact_number=True)
            for i, v in enumerate(row[: len(header)])
            if _inexact(v)
        ]
        problems += [
            BadCell(len(body), header[i], *unreadable[number, i])
            for i in range(len(header))
            if (number, i) in unreadable
        ]
        if problems or any(c is not None for c in cells):
            body.append(cells + [None] * (len(header) - len(cells)))
            sheet_rows.append(number)
            bad_cells += problems
    columns = {name: pa.array([r[i] for r in body], pa.string()) for i, name in enumerate(header)}
    table = _apply_null_values(pa.table(columns), config.null_values)
    return _in_memory(uri, table, "row", lambda ps: [sheet_rows[p] for p in ps], bad_cells)


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


JSON_SHAPES = (
    "expected JSON Lines (one object per line), an array of objects, or one object whose "
    "only key holds that array"
)


class _RepeatedKeys:
    """json's object_pairs_hook: builds each object as json would, and notes the objects
    given a key twice (json silently keeps the last value)."""

    def __init__(self) -> None:
        self.found: list[tuple[dict[str, Any], str]] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        built = dict(pairs)
        if len(built) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.found.append((built, key))
                    break
                seen.add(key)
        return built


def _holds(value: Any, wanted: dict[str, Any]) -> bool:
    """`wanted` is `value` or nested in it (the same object, not an equal one)."""
    if value is wanted:
        return True
    if isinstance(value, dict):
        return any(_holds(child, wanted) for child in value.values())
    return isinstance(value, list) and any(_holds(child, wanted) for child in value)


def _refuse_repeated_key(
    repeated: _RepeatedKeys, records: list[Any], labels: list[int], uri: str, unit: str
) -> None:
    """The first record holding an object with a key twice, named with that key."""
    if not repeated.found:
        return
    inner, key = repeated.found[0]  # objects complete in file order, so this is the first
    for label, record in zip(labels, records, strict=True):
        if _holds(record, inner):
            top = record is inner
            raise RejectedInput(
                f"{'record' if top else 'an object in the record'} has the key '{key}' twice; "
                "refused rather than keep only the last value",
                file=uri,
                column=key if top else None,
                **at(unit, label),
            )
    raise RejectedInput(f"the document has the key '{key}' twice", file=uri)


def _json_document(text: str, uri: str) -> list[Any] | None:
    """The records of a file that is one JSON document: an array, or an array wrapped in
    an object with one key ({"data": [...]}). None for JSON Lines."""
    stripped = text.lstrip()
    repeated = _RepeatedKeys()
    if stripped.startswith("["):
        try:
            records: list[Any] = json.loads(text, object_pairs_hook=repeated)
        except json.JSONDecodeError as error:
            raise RejectedInput(
                f"not valid JSON: {error.msg}", file=uri, line=error.lineno
            ) from None
        if isinstance(records, list):
            _refuse_repeated_key(repeated, records, list(range(1, len(records) + 1)), uri, "row")
        return records
    if not stripped.startswith("{"):
        return None
    try:
        document = json.loads(text, object_pairs_hook=repeated)
    except json.JSONDecodeError:
        return None  # JSON Lines (or broken: the line-by-line read names the line)
    if len(document) == 1:
        [(_, inner)] = document.items()
        if isinstance(inner, list) and all(isinstance(r, dict) for r in inner):
            _refuse_repeated_key(repeated, inner, list(range(1, len(inner) + 1)), uri, "row")
            return inner
    if len(stripped.rstrip().splitlines()) == 1:
        return None  # a single JSON Lines record
    keys = ", ".join(f"'{k}'" for k in list(document)[:10])
    raise RejectedInput(f"is one JSON object with keys {keys}; {JSON_SHAPES}", file=uri)


def read_json(data: bytes, uri: str, config: TableConfig) -> SourceTable:
    wide = wide_encoding(data[:4], config.encoding)
    if wide:
        text = _decode_wide(data, uri, wide)
    else:
        text = _decode(data, uri, "utf-8-sig" if _is_utf8(config.encoding) else config.encoding)
    document = _json_document(text, uri)
    records: list[Any]
    if document is not None:
        records = document
        labels = list(range(1, len(records) + 1))
        unit = "row"
    else:
        records, labels = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            repeated = _RepeatedKeys()
            try:
                record = json.loads(line, object_pairs_hook=repeated)
            except json.JSONDecodeError as error:
                raise RejectedInput(
                    f"not valid JSON: {error.msg}; {JSON_SHAPES}", file=uri, line=number
                ) from None
            _refuse_repeated_key(repeated, [record], [number], uri, "line")
            records.append(record)
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
    source = _in_memory(uri, table, unit, lambda ps: [labels[p] for p in ps])
    source.quoted_columns = frozenset(
        name
        for name in columns
        if all(isinstance(r[name], str) for r in records if r.get(name) is not None)
    )
    return source


# --- Parquet -----------------------------------------------------------------------


def _binary_as_text(name: str, column: pa.ChunkedArray, bad: list[BadCell]) -> pa.Array:
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
            bad.append(BadCell(position, name, repr(value[:40]), "is binary data, not UTF-8 text"))
            texts.append(None)
    return pa.array(texts, pa.string())


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
            as_text[name] = pc.cast(column, pa.string())
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            as_text[name] = _binary_as_text(name, column, bad)
        elif pa.types.is_nested(kind):
            as_text[name] = pa.array([_json_text(v) for v in column.to_pylist()], pa.string())
        else:
            values = column.to_pylist()
            if pa.types.is_floating(kind):
                bad += [
                    BadCell(p, name, repr(v), INEXACT_REASON, inexact_number=True)
                    for p, v in enumerate(values)
                    if _inexact(v)
                ]
            as_text[name] = pa.array([_cell_text(v) for v in values], pa.string())
    table = _apply_null_values(pa.table(as_text), config.null_values)
    return _in_memory(uri, table, "row", lambda ps: [p + 1 for p in ps], bad)


# Formats small enough to read whole (CSV streams, see read_source).
READERS: dict[str, Callable[[bytes, str, TableConfig], SourceTable]] = {
    "excel": read_excel,
    "json": read_json,
    "parquet": read_parquet,
}
