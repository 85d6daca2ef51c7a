"""Excel (xlsx, xls): the sheet read whole by calamine, every cell as text; error cells,
formulas saved without a value and inexact numbers named; a used range too large for
calamine refused before it allocates it (`oversized_sheets`)."""

from __future__ import annotations

import io
import re
import zipfile
from typing import TYPE_CHECKING, Any
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
from steps.shared.io.workbook import (
    column_index,
    oversized_sheets,
    sheet_part,
)
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


def _unreadable_cells(data: bytes, sheet: str) -> dict[tuple[int, int], tuple[str | None, str]]:
    """(row, column) -> (value, reason) of cells calamine reads as empty but are not:
    error values (#N/A, #DIV/0!) and formulas saved without their calculated value."""
    try:
        book = zipfile.ZipFile(io.BytesIO(data))
        part = sheet_part(book, sheet)
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
        cell = (int(re.sub(r"^[A-Za-z]+", "", reference) or 0), column_index(reference))
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
    extensions={".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xls"},
    read=read_excel,
    sniff=lambda head, kind: WORKBOOK_KINDS.get(kind or ""),
    layout_keys=("header_row", "sheet_name"),
)
