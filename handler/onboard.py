"""`python -m handler init`: a table config and mapping sheet inferred from a sample file.

The file is read by refload's own readers (`steps.sources`) once its layout is known, and
every type is proposed only when `steps.mapping.cast_values`, the cast `run` uses, accepts
every value of the column: what init writes is what run loads. Only the CLI imports this.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import pyarrow as pa
import pyarrow.compute as pc

from steps import storage
from steps.config import SourceFormat, TableConfig, parse_config
from steps.errors import ConfigError, RejectedInput, at
from steps.mapping import (
    FALSE_WORDS,
    INTEGER_RANGES,
    SHEET_COLUMNS,
    TRUE_WORDS,
    ColumnSpec,
    DataType,
    Mapping,
    Transform,
    apply_mapping,
    cast_values,
)
from steps.names import identifier_problem, unknown_name
from steps.sources import FORMAT_READERS, format_of, read_source

DELIMITERS = (",", ";", "|", "\t")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "|": "pipe", "\t": "tab"}
# Identifiers are cut to PostgreSQL's 63 bytes, the smallest limit of the warehouses.
MAX_NAME_BYTES = 63
VARCHAR_SIZES = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65535)
DATE_FORMATS = (
    "%Y-%m-%d",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%d.%m.%Y",
    "%Y/%m/%d",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%m/%d/%y",
    "%d/%m/%y",
    "%d.%m.%y",
    "%d %b %Y",
    "%b %d %Y",
)
TIME_PARTS = (" %H:%M:%S", "T%H:%M:%S", " %H:%M")
# The same dates read month-first or day-first: which one is right, the values decide.
SWAPPED = {"%m": "%d", "%d": "%m"}
KEY_NAME = re.compile(r"(^|_)(id|code|key|iso|alpha_\d|abbrev|symbol)(_|$)")
INTEGER = r"^[+-]?\d+$"
DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)$"
FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


@dataclass
class Layout:
    """How the file is read: what a config says before its mapping."""

    source_format: str
    encoding: str = "utf-8"
    delimiter: str | None = None
    header_row: int = 1
    sheet_name: str | int | None = None
    notes: list[str] = field(default_factory=list)

    def config_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"source_format": self.source_format}
        reader = FORMAT_READERS[self.source_format]
        if reader in ("csv", "json"):
            keys["encoding"] = self.encoding
        if reader == "csv":
            keys["delimiter"] = self.delimiter
        if reader in ("csv", "excel"):
            keys["header_row"] = self.header_row
        if reader == "excel":
            keys["sheet_name"] = self.sheet_name
        return keys


@dataclass
class ColumnGuess:
    source: str
    target: str
    data_type: DataType
    nullable: bool
    strip: bool
    format: str | None
    reason: str

    def spec(self) -> ColumnSpec:
        transforms = (Transform("strip"),) if self.strip else ()
        return ColumnSpec(
            self.target, self.data_type, self.source, transforms, None, self.nullable, self.format
        )

    def sheet_row(self) -> list[str]:
        return [
            self.source,
            self.target,
            str(self.data_type),
            "strip" if self.strip else "",
            "",
            "true" if self.nullable else "false",
            self.format or "",
        ]


@dataclass
class Proposal:
    table: str
    source: str
    layout: Layout
    columns: list[ColumnGuess]
    rows: int
    primary_key: list[str]
    key_reason: str
    source_prefix: str
    prefix_reason: str
    warnings: list[str] = field(default_factory=list)

    def config(self, mapping_file: str) -> dict[str, Any]:
        required = [c.target for c in self.columns if not c.nullable]
        tests: list[dict[str, Any]] = [{"type": "row_count_match", "tolerance_pct": 0}]
        if self.primary_key:
            tests.append({"type": "uniqueness", "columns": self.primary_key})
        if required:
            tests.append({"type": "not_null", "columns": required})
        return {
            "table_name": self.table,
            "redshift_schema": "public",
            "redshift_table": self.table,
            **self.layout.config_keys(),
            "mapping_file": mapping_file,
            "load_mode": "truncate",
            "primary_key": self.primary_key,
            "source_prefix": self.source_prefix,
            "quality_tests": tests,
        }


# --- layout --------------------------------------------------------------------------


def _sniff(data: bytes) -> str:
    if data.startswith(b"PK\x03\x04"):
        return "xlsx"
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return "xls"
    if data.startswith(b"PAR1"):
        return "parquet"
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "json" if head in (b"{", b"[") else "csv"


def _encoding(data: bytes) -> tuple[str, str]:
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8", "UTF-8 with a byte-order mark"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        byte = data[error.start : error.start + 1]
        why = f"not UTF-8 (byte {byte!r} on line {line})"
        try:
            data.decode("cp1252")
        except UnicodeDecodeError:
            return "latin-1", f"{why}, not cp1252 either: latin-1"
        return "cp1252", f"{why}; cp1252 reads every byte"
    return "utf-8", "UTF-8"


def _filled_names(cells: list[str]) -> int:
    """How many names a header candidate has (0 when it cannot be a header: a comment,
    or a name twice). A trailing delimiter leaves an empty name, which init leaves out."""
    names = [c.strip() for c in cells if c.strip()]
    if not names or cells[0].startswith("#") or len(set(names)) < len(names):
        return 0
    return len(names)


def _text_layout(data: bytes, uri: str, source_format: str) -> Layout:
    encoding, why = _encoding(data)
    text = data.decode(encoding).removeprefix("\ufeff")
    # Lines as read_csv counts them for header_row: split on "\n" only.
    lines = text.split("\n")
    head = "\n".join(lines[:1000])
    candidates = ("\t",) if source_format == "tsv" else DELIMITERS
    best: tuple[tuple[int, int], str, int] | None = None
    for delimiter in candidates:
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
            best = (score, delimiter, header)
    notes = [f"encoding {encoding}: {why}"]
    if best is None:
        notes.append("one column: no , ; | or tab splits the lines evenly")
        first = next((i for i, x in enumerate(lines, 1) if x.strip()), 1)
        return Layout(source_format, encoding, ",", first, notes=notes)
    (_, width), delimiter, header = best
    notes.append(f"delimiter {DELIMITER_NAMES[delimiter]}: splits the lines into {width} fields")
    if header > 1:
        preamble = lines[0].strip()
        notes.append(
            f"header on line {header}: line(s) above are preamble (line 1: {preamble[:40]!r})"
        )
    else:
        notes.append("header on line 1")
    return Layout(source_format, encoding, delimiter, header, notes=notes)


def _excel_layout(
    data: bytes, uri: str, source_format: str, sheet_name: str | int | None
) -> Layout:
    from python_calamine import CalamineWorkbook

    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as error:
        raise RejectedInput(f"cannot open as an Excel workbook: {error}", file=uri) from None
    names = list(book.sheet_names)
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
    if header > 1:
        notes.append(f"header on row {header}: row(s) above are a title ({filled(rows[0])[:1]!r})")
    else:
        notes.append("header on row 1")
    return Layout(source_format, header_row=header, sheet_name=sheet_name, notes=notes)


def _layout(data: bytes, uri: str, source_format: str | None, sheet_name: str | None) -> Layout:
    if source_format is not None and source_format not in get_args(SourceFormat):
        raise ConfigError(unknown_name("--format", source_format, get_args(SourceFormat)))
    by_extension = format_of(uri)
    chosen = source_format or by_extension or _sniff(data)
    why = (
        "--format"
        if source_format
        else ("the file's extension" if by_extension else "the file's first bytes")
    )
    reader = FORMAT_READERS[chosen]
    if reader == "excel":
        index: str | int | None = sheet_name
        if sheet_name is not None and sheet_name.isdigit():
            index = int(sheet_name)
        layout = _excel_layout(data, uri, chosen, index)
    elif reader == "csv":
        layout = _text_layout(data, uri, chosen)
    else:
        layout = Layout(chosen)
        if reader == "json":
            layout.encoding, encoding_why = _encoding(data)
            layout.notes.append(f"encoding {layout.encoding}: {encoding_why}")
    layout.notes.insert(0, f"format {chosen}: from {why}")
    return layout


# --- columns -------------------------------------------------------------------------


def snake_case(header: str, position: int) -> str:
    """A header as a lower-case identifier: 'Alphabetic code' -> alphabetic_code."""
    text = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode()
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or f"column_{position}"
    if text[0].isdigit():
        text = f"c_{text}"
    return text[:MAX_NAME_BYTES].rstrip("_")


def _unique_names(headers: list[str]) -> list[str]:
    names: list[str] = []
    for position, header in enumerate(headers, 1):
        name = snake_case(header, position)
        base, n = name, 2
        while name in names:
            name = f"{base[: MAX_NAME_BYTES - len(str(n)) - 1]}_{n}"
            n += 1
        names.append(name)
    return names


def _fits(values: pa.Array, data_type: DataType, format: str | None = None) -> bool:
    return not cast_values(values, ColumnSpec("c", data_type, "c", format=format))[1]


def _varchar(longest: int) -> DataType:
    wanted = longest + (longest + 3) // 4  # a quarter more, at least one byte
    return DataType("varchar", length=next((s for s in VARCHAR_SIZES if s >= wanted), 65535))


def _all_match(values: pa.Array, pattern: str) -> bool:
    return bool(pc.all(pc.match_substring_regex(values, pattern)).as_py())


def _example(values: pa.Array, mask: pa.Array) -> str:
    return str(values.filter(mask)[0].as_py())


FORMAT_PARTS = {"%Y": r"\d{4}", "%y": r"\d{2}", "%b": "[A-Za-z]{3}"}


def _format_regex(fmt: str) -> str:
    """The whole value a strptime format reads: Arrow's strptime ignores trailing text,
    so '2024-01-05 10:00' would otherwise fit '%Y-%m-%d' and lose its time."""
    parts = re.split(r"(%[A-Za-z])", fmt)
    return (
        "^"
        + "".join(
            FORMAT_PARTS.get(p, r"\d{1,2}") if p.startswith("%") and len(p) == 2 else re.escape(p)
            for p in parts
        )
        + "$"
    )


def _date_type(
    values: pa.Array, warnings: list[str], target: str
) -> tuple[DataType, str | None, str] | None:
    """date or timestamp with the format every value has, if one fits them all."""
    if not _all_match(values, r"^\d{1,4}[-/. ]|^[A-Za-z]{3} \d"):
        return None
    # Excel writes dates as midnight timestamps: still dates.
    midnight = _all_match(values, r"[ T]00:00(:00)?$")
    tried = [(DataType("date"), f) for f in DATE_FORMATS] + [
        (DataType("date" if midnight else "timestamp"), f + t)
        for f in DATE_FORMATS
        for t in TIME_PARTS
    ]
    fitting = [f for t, f in tried if _all_match(values, _format_regex(f)) and _fits(values, t, f)]
    kinds = dict((f, t) for t, f in tried)
    if not fitting:
        if _fits(values, DataType("timestamp")):
            return DataType("timestamp"), None, "ISO 8601 timestamps"
        return None
    fmt = fitting[0]
    midnight_note = " (times are all midnight)" if "%H" in fmt and midnight else ""
    swapped = re.sub(r"%[md]", lambda m: SWAPPED[m.group()], fmt)
    if swapped in kinds and swapped != fmt:
        wrong = pc.is_null(pc.strptime(values, format=swapped, unit="us", error_is_null=True))
        if pc.any(wrong).as_py():
            why = f"every value fits {fmt}, not {swapped} ({_example(values, wrong)!r})"
            return kinds[fmt], fmt, why + midnight_note
        warnings.append(
            f"{target}: ambiguous dates: every value fits {fmt} and {swapped} (no day above "
            f"12); chose {fmt}, edit 'format' in the mapping sheet if the days come first"
        )
        return kinds[fmt], fmt, f"every value fits {fmt} and {swapped}: ambiguous, chose {fmt}"
    return kinds[fmt], fmt, f"every value fits {fmt}{midnight_note}"


def _number_type(values: pa.Array, longest: int) -> tuple[DataType, str | None, str] | None:
    if _all_match(values, INTEGER):
        zeros = pc.match_substring_regex(values, r"^[+-]?0\d")
        if pc.any(zeros).as_py():
            example = _example(values, zeros)
            return _varchar(longest), None, f"code with leading zeros ({example!r})"
        try:
            bounds = pc.min_max(pc.cast(values, pa.int64()))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # '+5', or beyond int64
            numbers = [int(v) for v in pc.unique(values).to_pylist()]
            low, high = min(numbers), max(numbers)
        for kind, bound in INTEGER_RANGES.items():
            if -bound <= low and high < bound:
                return DataType(kind), None, f"whole numbers from {low} to {high}"  # type: ignore[arg-type]
        return _varchar(longest), None, "digits, too many for bigint"
    if _all_match(values, DECIMAL):
        texts = [str(v).lstrip("+-") for v in pc.unique(values).to_pylist()]
        digits = max(len(t.partition(".")[0].lstrip("0")) for t in texts) or 1
        scale = max(len(t.partition(".")[2]) for t in texts)
        data_type = DataType("decimal", precision=digits + scale, scale=scale)
        if digits + scale <= 38 and _fits(values, data_type):
            why = f"decimals, up to {digits} digit(s) before the point and {scale} after"
            return data_type, None, why
    if _all_match(values, FLOAT) and _fits(values, DataType("double")):
        return DataType("double"), None, "numbers with exponents or over 38 digits"
    return None


def _guess_type(
    values: pa.Array, warnings: list[str], target: str
) -> tuple[DataType, str | None, str]:
    """(type, format, why) for non-null stripped text values."""
    longest = int(pc.max(pc.binary_length(values)).as_py())
    distinct = pc.unique(values)
    words = {str(v).lower() for v in distinct.to_pylist()} if len(distinct) <= 10 else set()
    if words and words <= {*TRUE_WORDS, *FALSE_WORDS} and not words <= {"0", "1"}:
        return DataType("boolean"), None, f"only {', '.join(sorted(words))}"
    guessed = _number_type(values, longest) or _date_type(values, warnings, target)
    if guessed:
        data_type, fmt, why = guessed
    else:
        mixed = _all_match(values, r"^[0-9A-Za-z]+$") and _all_match(values, r"\d")
        data_type, fmt, why = _varchar(longest), None, "digits and letters" if mixed else "text"
    if data_type.kind == "varchar":
        why += f", longest {longest} byte(s)"
    return data_type, fmt, why


def _guess_column(
    source: str, target: str, raw: pa.Array, warnings: list[str]
) -> tuple[ColumnGuess, pa.Array]:
    raw = raw.cast(pa.string())
    trimmed = pc.utf8_trim_whitespace(raw)
    # What the pipeline's blank_to_null leaves after `strip`, computed once on trimmed text.
    values = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    strip = bool(pc.any(pc.and_(pc.is_valid(values), pc.not_equal(trimmed, raw))).as_py())
    present = values.drop_null()
    nulls = len(values) - len(present)
    notes = ["padded values: strip"] if strip else []
    notes.append(f"{nulls:,} empty" if nulls else "never empty")
    if not len(present):
        data_type, fmt, why = _varchar(0), None, "every value is empty"
    else:
        data_type, fmt, why = _guess_type(present, warnings, target)
    guess = ColumnGuess(
        source, target, data_type, bool(nulls), strip, fmt or None, "; ".join([why, *notes])
    )
    return guess, values


# --- primary key ---------------------------------------------------------------------


def _width(guess: ColumnGuess, column: pa.ChunkedArray) -> int:
    if guess.data_type.kind in ("string", "varchar"):
        return int(pc.max(pc.binary_length(column)).as_py() or 0)
    try:
        return max(1, column.type.bit_width // 8)
    except ValueError:  # not fixed width
        return 16


def _rank(names: list[str], guesses: dict[str, ColumnGuess], typed: pa.Table) -> tuple[int, int]:
    keyish = any(KEY_NAME.search(n) for n in names)
    return (0 if keyish else 1, sum(_width(guesses[n], typed.column(n)) for n in names))


def _unique(typed: pa.Table, names: list[str]) -> bool:
    if any(typed.column(n).null_count for n in names):
        return False
    return typed.select(names).group_by(names).aggregate([]).num_rows == typed.num_rows


def _propose_key(
    typed: pa.Table, guesses: list[ColumnGuess], wanted: list[str] | None
) -> tuple[list[str], str]:
    by_name = {g.target: g for g in guesses}
    if wanted is not None:
        by_source = {g.source: g.target for g in guesses}
        key = []
        for name in wanted:
            if name not in by_name and name not in by_source:
                raise ConfigError(f"--primary-key: {unknown_name('column', name, by_name)}")
            key.append(by_name[name].target if name in by_name else by_source[name])
        if not _unique(typed, key):
            raise ConfigError(
                f"--primary-key {','.join(key)}: the sample has an empty or repeated key, so "
                "run would reject it; choose other columns"
            )
        return key, "given with --primary-key"
    candidates = [g.target for g in guesses if not g.nullable]
    singles = [[n] for n in candidates if _unique(typed, [n])]
    narrow = sorted(candidates, key=lambda n: _rank([n], by_name, typed))[:12]
    pairs = [[a, b] for i, a in enumerate(narrow) for b in narrow[i + 1 :]]
    found = singles or [p for p in pairs if _unique(typed, p)]
    if not found:
        return [], "no column or pair of columns is unique and never empty"
    key = min(found, key=lambda names: _rank(names, by_name, typed))
    others = [", ".join(k) for k in found if k != key][:3]
    why = "unique and never empty" + (
        ", named like a key" if _rank(key, by_name, typed)[0] == 0 else ""
    )
    why += f", narrowest ({_rank(key, by_name, typed)[1]} byte(s))"
    return key, why + (f"; also unique: {'; '.join(others)}" if others else "")


def _source_prefix(uri: str, table: str) -> tuple[str, str]:
    """Landed files sit at <prefix>/<yyyy-mm-dd>/<file>: the prefix, when the sample does."""
    path = storage.split_s3(uri)[1] if storage.is_s3(uri) else uri
    parts = path.split("/")
    if len(parts) >= 3 and re.fullmatch(r"\d{4}-\d{2}-\d{2}", parts[-2]):
        # The whole key above the date in a bucket; only the folder above it on disk.
        prefix = "/".join(parts[:-2]) if storage.is_s3(uri) else parts[-3]
        return f"{prefix}/", f"the file sits in {prefix}/<date>/, as landed files do"
    return f"{table}/", "the default, '<table_name>/'"


# --- the whole proposal ---------------------------------------------------------------


def infer(
    source: str,
    table: str,
    *,
    source_format: str | None = None,
    sheet_name: str | None = None,
    primary_key: list[str] | None = None,
) -> Proposal:
    problem = identifier_problem(table)
    if problem:
        raise ConfigError(f"--table: {problem}")
    with storage.local_file(source) as path:
        data = path.read_bytes()
        if data.startswith(b"\x1f\x8b"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as error:
                raise RejectedInput(f"gzip data is corrupt: {error}", file=source) from None
        if not data.strip():
            raise RejectedInput("file is empty", file=source)
        layout = _layout(data, source, source_format, sheet_name)
        config = parse_config(
            {"table_name": table, "mapping_file": "-", **layout.config_keys()}, source="init"
        )
        text = _read_all(path, source, config)
    warnings: list[str] = []
    targets = _unique_names(text.column_names)
    guesses, columns = [], []
    for name, target in zip(text.column_names, targets, strict=True):
        if not name:
            warnings.append(f"a column has no name in the header: left out ({target})")
            continue
        guess, values = _guess_column(name, target, text.column(name).combine_chunks(), warnings)
        guesses.append(guess)
        columns.append(values)
    mapping = Mapping("init", tuple(g.spec() for g in guesses))
    typed, rejections = apply_mapping(
        text, mapping, {"load_date": "", "run_id": "", "source_key": ""}
    )
    if rejections:  # every type was checked with the same cast, so this is refload's bug
        first = rejections[0]
        raise RejectedInput(
            f"column {first.column}: {first.reason}", file=source, value=first.value
        )
    distinct = typed.group_by(typed.column_names).aggregate([])
    if distinct.num_rows < typed.num_rows:
        warnings.append(
            f"{typed.num_rows - distinct.num_rows:,} exact duplicate row(s): run drops them "
            "(dedupe)"
        )
    key, key_reason = _propose_key(distinct, guesses, primary_key)
    for guess in guesses:
        if guess.target in key:
            guess.nullable = False
    prefix, prefix_reason = _source_prefix(source, table)
    return Proposal(
        table,
        source,
        layout,
        guesses,
        text.num_rows,
        key,
        key_reason,
        prefix,
        prefix_reason,
        warnings,
    )


def _read_all(path: Path, uri: str, config: TableConfig) -> pa.Table:
    """Every row, as text, by the reader run uses."""
    table = read_source(path, uri, config)
    rows = pa.concat_tables(list(table.chunks)) if table.column_names else pa.table({})
    bad = table.bad_records()
    if bad:
        raise RejectedInput(bad[0].reason, file=uri, **at(table.unit, bad[0].where))
    if not rows.num_rows:
        raise RejectedInput("file has a header but no data rows", file=uri)
    return rows


# --- writing -------------------------------------------------------------------------


def _sheet_bytes(proposal: Proposal, kind: str) -> bytes:
    rows = [list(SHEET_COLUMNS), *(c.sheet_row() for c in proposal.columns)]
    if kind == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        return out.getvalue().encode()
    import openpyxl

    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def write(proposal: Proposal, out: str, sheet: str, force: bool) -> tuple[Path, Path]:
    """Write DIR/NAME.json and DIR/mappings/NAME_mapping.csv|xlsx; refuse to overwrite."""
    config_path = Path(out) / f"{proposal.table}.json"
    mapping_path = Path(out) / "mappings" / f"{proposal.table}_mapping.{sheet}"
    existing = [str(p) for p in (config_path, mapping_path) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{' and '.join(existing)} already exist(s); --force overwrites")
    config = proposal.config(f"mappings/{mapping_path.name}")
    mapping_path.parent.mkdir(parents=True, exist_ok=True)
    mapping_path.write_bytes(_sheet_bytes(proposal, sheet))
    config_path.write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    # What run will read: the config and sheet as written, validated as run validates them.
    from steps.table import load_table_config

    load_table_config(str(config_path))
    return config_path, mapping_path


def next_commands(config_path: Path, source: str) -> list[str]:
    import shlex

    config, source = shlex.quote(str(config_path)), shlex.quote(source)
    return [
        f"python -m handler preview --config {config} --source {source}",
        f"python -m handler run --config {config} --source {source}",
    ]


def print_proposal(
    proposal: Proposal, config_path: Path, mapping_path: Path, *, as_json: bool
) -> None:
    commands = next_commands(config_path, proposal.source)
    if as_json:
        print(
            json.dumps(
                {
                    "table": proposal.table,
                    "config": str(config_path),
                    "mapping": str(mapping_path),
                    "rows": proposal.rows,
                    **proposal.layout.config_keys(),
                    "layout": proposal.layout.notes,
                    "columns": [
                        {
                            **dict(zip(SHEET_COLUMNS, c.sheet_row(), strict=True)),
                            "reason": c.reason,
                        }
                        for c in proposal.columns
                    ],
                    "primary_key": proposal.primary_key,
                    "primary_key_reason": proposal.key_reason,
                    "source_prefix": proposal.source_prefix,
                    "warnings": proposal.warnings,
                    "next": commands,
                }
            )
        )
        return
    print(f"{proposal.source}: {proposal.rows:,} row(s), {len(proposal.columns)} column(s)")
    for note in proposal.layout.notes:
        print(f"  {note}")
    print("columns:")
    width = max(len(c.target) for c in proposal.columns)
    for c in proposal.columns:
        kind = str(c.data_type) + (f" {c.format}" if c.format else "")
        null = "null" if c.nullable else "not null"
        print(f"  {c.target:<{width}}  {kind:<22} {null:<8}  {c.source!r}: {c.reason}")
    key = ", ".join(proposal.primary_key) or "none"
    print(f"primary key: {key} ({proposal.key_reason})")
    print(f"source_prefix: {proposal.source_prefix} ({proposal.prefix_reason})")
    for warning in proposal.warnings:
        print(f"warning: {warning}")
    print(f"wrote {config_path}\nwrote {mapping_path}\nnext:")
    for command in commands:
        print(f"  {command}")
