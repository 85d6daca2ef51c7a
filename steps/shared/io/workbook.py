"""What an xlsx workbook's XML says before calamine reads it: where a sheet's part is, and
each sheet's used range, refused when calamine would allocate too much for it
(`oversized_sheets`). Both a source (steps.ingest.sources.excel) and a mapping sheet
(steps.shared.mapping.sheet) are held to the same limit.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from typing import IO
from xml.etree import ElementTree


def sheet_part(book: zipfile.ZipFile, sheet: str) -> str | None:
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


def column_index(reference: str) -> int:
    """0-based column of a cell reference such as 'AB12'."""
    index = 0
    for char in reference:
        if not char.isalpha():
            break
        index = index * 26 + ord(char.upper()) - 64
    return index - 1


def max_sheet_cells() -> int:
    """Largest used range (rows x columns, from A1) of a worksheet calamine is given: it
    allocates the whole range, so one stray cell at XFD1048576 would ask for 512 GiB."""
    return int(os.environ.get("REFLOAD_MAX_SHEET_CELLS", 20_000_000))


# A cell's or a row's reference in the sheet XML: <c r="XFD1048576" ...>, <row r="12" ...>.
_REFERENCE = re.compile(rb'<(?:[\w.-]+:)?(?:c|row)\s[^>]*?\br="([A-Za-z]*)([0-9]+)"')


def used_range(stream: IO[bytes]) -> tuple[int, int]:
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
                columns = max(columns, column_index(letters.decode()) + 1)
        carry = text[cut:]
    return rows, columns


def column_name(number: int) -> str:
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
            part = sheet_part(book, sheet)
            if not part:
                continue
            with book.open(part) as stream:
                rows, columns = used_range(stream)
            if rows * columns > limit:
                return (
                    f"sheet '{sheet}' spans A1:{column_name(columns)}{rows} ({rows:,} rows x "
                    f"{columns:,} columns), more than the {limit:,} cells refload reads "
                    "(REFLOAD_MAX_SHEET_CELLS); a stray cell far from the data is the usual "
                    "cause: delete the empty rows and columns after the data"
                )
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError):
        return None
    return None
