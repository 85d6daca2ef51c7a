"""Excel (xlsx, xls): the sheet read whole by calamine, every cell as text; error cells,
formulas saved without a value and inexact numbers named; a used range too large for
calamine refused before it allocates it (`oversized_sheets`)."""

from __future__ import annotations

import io
import os
import re
import zipfile
from typing import IO, TYPE_CHECKING, Any
from xml.etree import ElementTree

import pyarrow as pa
import structlog

from steps.ingest.sources.base import (
    INEXACT_REASON,
    BadCell,
    FormatSpec,
    SourceTable,
    _apply_null_values,
    _cell_text,
    _check_header,
    _in_memory,
    _inexact,
    _name_blank_columns,
    _too_large,
    max_whole_source_bytes,
)
from steps.shared.errors import ConfigError, RejectedInput
from steps.shared.names import did_you_mean

if TYPE_CHECKING:
    from steps.shared.config.model import TableConfig

log = structlog.get_logger("refload.sources")


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


# What `binary_kind` calls a workbook -> the source_format that reads it.
WORKBOOK_KINDS = {"xlsx": "xlsx", "xls (or another OLE2 document)": "xls"}

FORMAT = FormatSpec(
    aliases=("excel", "xlsx", "xls"),
    extensions={".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xls"},
    read=read_excel,
    sniff=lambda head, kind: WORKBOOK_KINDS.get(kind or ""),
    layout_keys=("header_row", "sheet_name"),
)
