"""CSV and TSV: streamed in chunks of text columns by pyarrow, the delimiter and header
sniffed as `init` does (`sniff_csv`), UTF-16/32 transcoded as it streams."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import re
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

import pyarrow as pa

from steps.ingest.sources.base import (
    BadRecord,
    FormatSpec,
    SourceTable,
    _CappedStream,
    _check_header,
    _corrupt_gzip,
    _HashingFile,
    _name_blank_columns,
    chunk_bytes,
    max_source_bytes,
    parse_block_bytes,
    whole_read_bytes,
)
from steps.ingest.sources.encodings import (
    _decode,
    _is_utf8,
    _line_breaks,
    _undecodable,
    _Utf8Stream,
    wide_encoding,
)
from steps.shared.errors import RejectedInput

if TYPE_CHECKING:
    from steps.shared.config.model import TableConfig

# A CSV record must fit in one parse block: blocks grow up to this for a huge field.
MAX_BLOCK_BYTES = 256 << 20

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
            record_lines=self.record_lines,
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

    def record_lines(self, rows: int) -> int | Sequence[int]:
        """header_row + 1 when every line after the header is one of the `rows` records;
        else each readable record's first line, found by the csv module (as compact
        integers: 8 bytes a row)."""
        first = self._first_data_line(rows)
        if first is not None:
            return first
        width = len(self.header)
        return array("q", (line for line, fields, _ in self._records() if fields == width))

    def _first_data_line(self, rows: int) -> int | None:
        """header_row + 1 when the file has exactly header_row + `rows` lines (no blank
        line, no record over two lines, no unreadable record): one pass counting line
        breaks in C, instead of the csv module's record by record."""
        if self.unreadable_rows:
            return None
        counted = self._line_feeds_read()
        if counted is not None:
            breaks, last = counted
        else:
            breaks, last = 0, b""
            with self._open() as stream:
                while block := stream.read(1 << 20):
                    # A CRLF split between two blocks counts twice: then the count is off
                    # and the lines are found record by record instead.
                    breaks += block.count(b"\n") if b"\r" not in block else _line_breaks(block)
                    last = block[-1:]
        lines = breaks + (1 if last not in (b"\n", b"\r", b"") else 0)
        header = self.config.header_row
        return header + 1 if lines == header + rows else None

    def _line_feeds_read(self) -> tuple[int, bytes] | None:
        """(line feeds, last byte) as the chunks' read counted them, where what it read
        is the text (no compression, no transcoding) and every line ends in LF alone."""
        read = self._hashing
        if read is None or not read.closed or self.compression or self.wide:
            return None
        return None if read.carriage_returns else (read.line_feeds, read.last)

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


# tsv is csv split on tabs (unless the config names a delimiter).
FORMAT = FormatSpec(
    extensions={".csv": "csv", ".tsv": "tsv", ".tab": "tsv"},
    stream=lambda path, compression, uri, config, wide: CsvSource(
        path, compression, uri, config, wide
    ).table(),
    text=True,
    layout_keys=("encoding", "delimiter", "header_row"),
    alias_defaults={"tsv": {"delimiter": "\t"}},
)
