"""Mapping sheets: one row per target column, parsed once into typed specs (`Mapping`,
`ColumnSpec`). Parsing is light. What a type and a transform mean is in `casts` and
`transforms`; applying them to data uses pyarrow, imported only by ingest.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

from steps.shared.errors import ConfigError
from steps.shared.mapping.casts import (
    ALLOW_NAN_INF,
    FALSE_WORDS,
    TRUE_WORDS,
    DataType,
    cast_values,
    parse_data_type,
)
from steps.shared.mapping.transforms import Transform, parse_transforms
from steps.shared.names import identifier_problem, unknown_name

PLACEHOLDERS = ("{load_date}", "{run_id}", "{source_key}")
SHEET_COLUMNS = (
    "source_column",
    "target_column",
    "data_type",
    "transform",
    "default",
    "nullable",
    "format",
)
REQUIRED_SHEET_COLUMNS = ("target_column", "data_type")


@dataclass(frozen=True)
class ColumnSpec:
    target: str
    data_type: DataType
    source: str | None = None
    transforms: tuple[Transform, ...] = ()
    default: str | None = None
    nullable: bool = True
    format: str | None = None
    sheet_row: int = 0

    @property
    def derived(self) -> bool:
        return self.source is None


@dataclass(frozen=True)
class Mapping:
    uri: str
    columns: tuple[ColumnSpec, ...] = field(default_factory=tuple)

    @property
    def targets(self) -> list[str]:
        return [c.target for c in self.columns]

    @property
    def sources(self) -> list[str]:
        return [c.source for c in self.columns if c.source is not None]

    def typed_as_mapped(self, schema: Any) -> bool:
        """Whether an Arrow `schema` holds every column in exactly its mapped Arrow type (as
        ingest writes them). COPY's binary format carries a value's bytes, which PostgreSQL
        reads as the column's type without a check: only such rows may go that way."""
        return all(
            c.target in schema.names and schema.field(c.target).type == c.data_type.arrow()
            for c in self.columns
        )


def _sheet_cell(value: Any) -> str:
    """A mapping-sheet cell as the text it means ("" for empty; 5.0 -> "5"). Source cells
    are read differently (steps.ingest.sources keeps None for empty and rejects error cells)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _sheet_rows(data: bytes, uri: str) -> list[list[str]]:
    if uri.lower().endswith((".xlsx", ".xlsm", ".xls", ".ods")):
        from python_calamine import CalamineWorkbook

        from steps.shared.io.workbook import oversized_sheets

        try:
            book = CalamineWorkbook.from_filelike(io.BytesIO(data))
        except Exception as error:
            raise ConfigError(f"cannot read the mapping workbook: {error}", file=uri) from None
        too_large = oversized_sheets(data, list(book.sheet_names)[:1])
        if too_large:
            raise ConfigError(too_large, file=uri)
        try:
            sheet = book.get_sheet_by_index(0)
            rows = sheet.to_python(skip_empty_area=False)
        except Exception as error:
            raise ConfigError(f"cannot read the mapping workbook: {error}", file=uri) from None
        return [[_sheet_cell(v) for v in row] for row in rows]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"mapping sheet is not UTF-8: {error}", file=uri) from None
    return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))]


def parse_sheet(data: bytes, uri: str) -> Mapping:
    """Parse a mapping sheet; every error names the sheet, its row and column."""
    rows = _sheet_rows(data, uri)
    if not rows or not any(rows[0]):
        raise ConfigError("mapping sheet is empty", file=uri)
    header = [h.strip().lower() for h in rows[0]]
    for name in header:
        if name and name not in SHEET_COLUMNS:
            # Quote only what reads as a column name: the file may be anything at all.
            reason = (
                unknown_name("mapping sheet column", name, SHEET_COLUMNS)
                if re.fullmatch(r"[a-z0-9_ ]{1,64}", name)
                else "row 1 is not a mapping sheet header; the columns are: "
                + ", ".join(SHEET_COLUMNS)
            )
            raise ConfigError(reason, file=uri, row=1)
    for name in REQUIRED_SHEET_COLUMNS:
        if name not in header:
            raise ConfigError(f"mapping sheet has no '{name}' column", file=uri, row=1)
    columns: list[ColumnSpec] = []
    for number, row in enumerate(rows[1:], start=2):
        cells = {name: (row[i] if i < len(row) else "") for i, name in enumerate(header) if name}
        if not any(cells.values()):
            continue
        columns.append(_parse_sheet_row(cells, uri, number))
    if not columns:
        raise ConfigError("mapping sheet has no column rows", file=uri)
    seen: dict[str, int] = {}
    for spec in columns:
        if spec.target in seen:
            raise ConfigError(
                f"target_column '{spec.target}' appears twice (also row {seen[spec.target]})",
                file=uri,
                row=spec.sheet_row,
                column="target_column",
            )
        seen[spec.target] = spec.sheet_row
    return Mapping(uri, tuple(columns))


def _parse_sheet_row(cells: dict[str, str], uri: str, number: int) -> ColumnSpec:
    def fail(column: str, reason: str) -> ConfigError:
        return ConfigError(reason, file=uri, row=number, column=column, value=cells.get(column))

    target = cells.get("target_column", "")
    if not target:
        raise fail("target_column", "target_column is empty")
    problem = identifier_problem(target)
    if problem:
        raise fail("target_column", problem)
    try:
        data_type = parse_data_type(cells.get("data_type", ""))
    except ValueError as error:
        raise fail("data_type", str(error)) from None
    try:
        transforms = parse_transforms(cells.get("transform", ""))
    except ValueError as error:
        raise fail("transform", str(error)) from None
    nullable_text = cells.get("nullable", "").lower()
    if nullable_text not in ("", *TRUE_WORDS, *FALSE_WORDS):
        raise fail("nullable", "nullable must be true or false")
    spec = ColumnSpec(
        target=target,
        data_type=data_type,
        source=cells.get("source_column") or None,
        transforms=transforms,
        default=cells.get("default") or None,
        nullable=nullable_text not in FALSE_WORDS,
        format=cells.get("format") or None,
        sheet_row=number,
    )
    if spec.derived and spec.default is None:
        raise fail("default", "a derived column (no source_column) needs a default")
    if spec.format and data_type.kind == "double" and spec.format != ALLOW_NAN_INF:
        raise fail("format", f"the only format of a double column is '{ALLOW_NAN_INF}'")
    if spec.format and data_type.kind not in ("date", "timestamp", "double"):
        raise fail(
            "format", f"format applies to date, timestamp and double columns, not {data_type}"
        )
    if spec.default is not None and not any(p in spec.default for p in PLACEHOLDERS):
        rejected = cast_values([spec.default], spec)[1]
        if rejected:
            raise fail("default", f"default does not fit {data_type}: {rejected[0][1]}")
    return spec


# --- what a type and a transform do to values (pyarrow) ---------------------------
