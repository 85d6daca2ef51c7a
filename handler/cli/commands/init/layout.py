"""How `init` reads a sample before it has a config: the format, encoding, delimiter,
header row or sheet (`Layout`, from the same `FORMATS` registry `run` reads with), and
the layout keys given with init's options (`Given`). Only `init` imports this."""

from __future__ import annotations

import codecs
import io
import re
from dataclasses import dataclass, field
from typing import Any

from handler.cli.commands.init.infer_columns import Locate
from steps.ingest.sources import (
    DELIMITER_NAMES,
    DELIMITERS,
    FORMAT_READERS,
    FORMATS,
    binary_kind,
    bomless_utf16,
    format_of,
    not_text,
    oversized_sheets,
    sniff_csv,
    sniff_format,
    wide_encoding,
)
from steps.shared.errors import ConfigError, RejectedInput
from steps.shared.formats import source_formats
from steps.shared.names import unknown_name


@dataclass
class Layout:
    """How the file is read: what a config says before its mapping."""

    source_format: str
    encoding: str = "utf-8"
    delimiter: str | None = None
    header_row: int = 1
    sheet_name: str | int | None = None
    null_values: list[str] = field(default_factory=lambda: [""])
    notes: list[str] = field(default_factory=list)
    # Where the sample's rows are in the file (`_read_all`): a refused key names its lines.
    locate: Locate | None = field(default=None, repr=False, compare=False)

    def config_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"source_format": self.source_format}
        # The layout keys the format's reader reads (its FormatSpec), in the config's order.
        for key in FORMATS[FORMAT_READERS[self.source_format]].layout_keys:
            keys[key] = getattr(self, key)
        if self.null_values != [""]:
            keys["null_values"] = self.null_values
        return keys


# --delimiter takes a character or its name (a tab is awkward to type).
DELIMITER_WORDS = {name: char for char, name in DELIMITER_NAMES.items()} | {"\\t": "\t"}


@dataclass(frozen=True)
class Given:
    """Layout keys stated with init's options (--encoding, --delimiter, --header-row):
    they win over what init infers, for a file whose layout the sniffing gets wrong."""

    encoding: str | None = None
    delimiter: str | None = None
    header_row: int | None = None

    @classmethod
    def parse(cls, encoding: str | None, delimiter: str | None, header_row: int | None) -> Given:
        if encoding is not None:
            try:
                codecs.lookup(encoding)
            except LookupError:
                raise ConfigError(f"--encoding: unknown encoding '{encoding}'") from None
        if delimiter is not None:
            delimiter = DELIMITER_WORDS.get(delimiter.lower(), delimiter)
            if len(delimiter) != 1:
                words = ", ".join(DELIMITER_WORDS)
                raise ConfigError(f"--delimiter: one character or one of {words}")
        if header_row is not None and header_row < 1:
            raise ConfigError("--header-row: lines count from 1")
        return cls(encoding, delimiter, header_row)

    def check_applies(self, reader: str) -> None:
        """A text option given for a workbook (or a header row for JSON) is a mistake."""
        keys = FORMATS[reader].layout_keys
        unused = [
            option
            for option, value, key in (
                ("--encoding", self.encoding, "encoding"),
                ("--delimiter", self.delimiter, "delimiter"),
                ("--header-row", self.header_row, "header_row"),
            )
            if value is not None and key not in keys
        ]
        if unused:
            raise ConfigError(f"{', '.join(unused)}: not used by {reader} files")


def _encoding(data: bytes, uri: str) -> tuple[str, str]:
    wide = wide_encoding(data)
    if wide:
        form = wide.upper().replace("-LE", " LE").replace("-BE", " BE")
        why = f"{form} with a byte-order mark"
        return wide, why + (' (Excel\'s "Unicode Text")' if wide == "utf-16-le" else "")
    unmarked = bomless_utf16(data)
    if unmarked:
        return unmarked, "every other byte is NUL: UTF-16 without a byte-order mark"
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8", "UTF-8 with a byte-order mark"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start : error.start + 1]
        _refuse_mixed(data, uri, byte, line)
        why = f"not UTF-8 (byte {byte!r} on line {line})"
        try:
            data.decode("cp1252")
        except UnicodeDecodeError:
            return "latin-1", f"{why}, not cp1252 either: latin-1"
        return "cp1252", f"{why}; cp1252 reads every byte"
    return "utf-8", "UTF-8"


def _refuse_mixed(data: bytes, uri: str, byte: bytes, line: int) -> None:
    """A UTF-8 file with a stray byte of another encoding: as cp1252, every other accent
    would load as mojibake ('Zoë' as 'ZoÃ«'), and as UTF-8 `run` rejects the line, so
    the sample is refused, naming the line. A file whose accents are mostly not UTF-8
    is cp1252 (a UTF-8 pair in it is a coincidence)."""
    text = data.decode("utf-8", "replace")
    bad = text.count("\ufffd")
    good = len(text) - len(text.encode("ascii", "ignore")) - bad
    found = re.search(r"[^\x00-\x7f\ufffd]", text)
    if good <= bad or found is None:
        return
    example = found.group()
    count = f" ({bad:,} such in all)" if bad > 1 else ""
    raise RejectedInput(
        f"byte {byte!r} is not UTF-8{count}, but the file's other {good:,} non-ASCII "
        f"character(s) are (read as cp1252, {example!r} would load as "
        f"{example.encode().decode('cp1252', 'replace')!r}): the file mixes encodings; "
        "write this line as UTF-8 and run init again",
        file=uri,
        line=line,
    )


def _decoded(data: bytes, encoding: str, uri: str) -> str:
    """The sample as text in `encoding` (a given one may not fit: the line is named)."""
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise RejectedInput(
            f"byte(s) {data[error.start : error.end]!r} are not {encoding} (--encoding)",
            file=uri,
            line=data.count(b"\n", 0, error.start) + 1,
        ) from None


def _text_layout(data: bytes, uri: str, source_format: str, given: Given) -> Layout:
    if given.encoding:
        encoding, why = wide_encoding(data, given.encoding) or given.encoding, "--encoding"
    else:
        encoding, why = _encoding(data, uri)
    text = _decoded(data, encoding, uri)
    lines = text.split("\n", 1)
    if given.delimiter:
        candidates: tuple[str, ...] = (given.delimiter,)
    else:
        candidates = ("\t",) if source_format == "tsv" else DELIMITERS
    sniffed = sniff_csv(text, uri, candidates, given.header_row)
    notes = [f"encoding {encoding}: {why}"]
    delimiter = given.delimiter or (sniffed.delimiter if sniffed else ",")
    shown = DELIMITER_NAMES.get(delimiter, repr(delimiter))
    if given.delimiter:
        notes.append(f"delimiter {shown}: --delimiter")
    elif sniffed:
        notes.append(f"delimiter {shown}: splits the lines into {sniffed.width} fields")
    else:
        notes.append("one column: no , ; | or tab splits the lines evenly")
    if given.header_row:
        header = given.header_row
        notes.append(f"header on line {header}: --header-row")
    elif sniffed:
        header = sniffed.header_row
        if header > 1:
            preamble = lines[0].strip()
            notes.append(
                f"header on line {header}: line(s) above are preamble (line 1: {preamble[:40]!r})"
            )
        else:
            notes.append("header on line 1")
    else:
        header = next((i for i, x in enumerate(text.split("\n"), 1) if x.strip()), 1)
    return Layout(source_format, encoding, delimiter, header, notes=notes)


def _excel_layout(
    data: bytes, uri: str, source_format: str, sheet_name: str | int | None, given: Given
) -> Layout:
    from python_calamine import CalamineWorkbook

    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as error:
        raise RejectedInput(f"cannot open as an Excel workbook: {error}", file=uri) from None
    names = list(book.sheet_names)
    too_large = oversized_sheets(data, names)  # every sheet is read to choose one
    if too_large:
        raise RejectedInput(too_large, file=uri)
    sheets = {n: book.get_sheet_by_name(n).to_python(skip_empty_area=False) for n in names}

    def filled(row: list[Any]) -> list[Any]:
        return [v for v in row if v not in (None, "")]

    notes = []
    if sheet_name is None:
        sizes = {n: sum(len(filled(r)) for r in rows) for n, rows in sheets.items()}
        chosen = max(names, key=lambda n: sizes[n])
        if len(names) > 1:
            notes.append(f"sheet '{chosen}': the one with most cells of {names}")
        sheet_name = chosen
    elif isinstance(sheet_name, int) and not 0 <= sheet_name < len(names):
        raise ConfigError(f"--sheet-name {sheet_name} is out of range; sheets: {names}")
    elif isinstance(sheet_name, str) and sheet_name not in names:
        raise ConfigError(unknown_name("sheet", sheet_name, names))
    rows = sheets[names[sheet_name] if isinstance(sheet_name, int) else sheet_name]
    width = max((len(filled(r)) for r in rows), default=0)
    header = next(
        (
            i
            for i, r in enumerate(rows, 1)
            if len(filled(r)) == width and all(isinstance(v, str) for v in filled(r))
        ),
        1,
    )
    if given.header_row:
        header = given.header_row
        notes.append(f"header on row {header}: --header-row")
    elif header > 1:
        notes.append(f"header on row {header}: row(s) above are a title ({filled(rows[0])[:1]!r})")
    else:
        notes.append("header on row 1")
    return Layout(source_format, header_row=header, sheet_name=sheet_name, notes=notes)


def read_layout(
    data: bytes, uri: str, source_format: str | None, sheet_name: str | None, given: Given
) -> Layout:
    if source_format is not None and source_format not in source_formats():
        raise ConfigError(unknown_name("--format", source_format, source_formats()))
    by_extension = format_of(uri)
    kind = binary_kind(data)
    sniffed = sniff_format(data)  # each format's own sniff (steps.ingest.sources.FORMATS)
    # Vendors name CSV exports .xls; a workbook or Parquet file says so in its first bytes,
    # whatever its name says.
    claimed = FORMAT_READERS[by_extension] if by_extension else None
    overrides = kind or (claimed and not FORMATS[claimed].text)
    if sniffed and claimed and FORMAT_READERS[sniffed] != claimed and overrides:
        by_extension = None
    chosen = source_format or by_extension or sniffed
    if chosen is None or (kind and FORMATS[FORMAT_READERS[chosen]].text):
        raise not_text(uri, kind or "", source_format)  # chosen is None only for a kind
    why = (
        "--format"
        if source_format
        else ("the file's extension" if by_extension else "the file's first bytes")
    )
    if not source_format and not by_extension and format_of(uri) not in (None, chosen):
        why += f" (the name says {format_of(uri)})"
    reader = FORMAT_READERS[chosen]
    given.check_applies(reader)
    # Laid out by the keys its config takes (its FormatSpec): a sheet, delimited text, or
    # a file that needs at most an encoding.
    keys = FORMATS[reader].layout_keys
    if "sheet_name" in keys:
        index: str | int | None = sheet_name
        if sheet_name is not None and sheet_name.isdigit():
            index = int(sheet_name)
        layout = _excel_layout(data, uri, chosen, index, given)
    elif "delimiter" in keys:
        layout = _text_layout(data, uri, chosen, given)
    else:
        layout = Layout(chosen)
        if "encoding" in keys and given.encoding:
            layout.encoding = wide_encoding(data, given.encoding) or given.encoding
            _decoded(data, layout.encoding, uri)
            layout.notes.append(f"encoding {layout.encoding}: --encoding")
        elif "encoding" in keys:
            layout.encoding, encoding_why = _encoding(data, uri)
            layout.notes.append(f"encoding {layout.encoding}: {encoding_why}")
    layout.notes.insert(0, f"format {chosen}: from {why}")
    return layout
