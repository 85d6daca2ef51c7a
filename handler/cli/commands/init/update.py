"""`init SOURCE --update CONFIG`: the config's mapping sheet rewritten for a vendor's new header.

Renamed columns are re-pointed (the candidates `run` names when it refuses the file, from
the same values: steps.ingest.renames), new columns are added with the types `init` infers,
removed ones are reported and their rows deleted. Only the rows that change are rewritten:
a CSV sheet keeps every other line byte for byte, an xlsx sheet (openpyxl) its other rows,
order and formatting. The change is printed as a unified diff; the files are validated as
`run` reads them, and put back as they were when they do not validate.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handler.cli.commands.init.infer_columns import ColumnGuess, guess_column, snake_case
from steps.ingest.renames import BLANK_HEADER, Candidate, curated_values, match_renames
from steps.shared.errors import ConfigError, RejectedInput
from steps.shared.io import storage
from steps.shared.mapping.sheet import SHEET_COLUMNS, ColumnSpec

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class SheetUpdate:
    config: str
    source: str
    sheet: str
    renamed: list[Candidate] = field(default_factory=list)
    added: list[ColumnGuess] = field(default_factory=list)
    removed: list[ColumnSpec] = field(default_factory=list)
    diff: str = ""
    warnings: list[str] = field(default_factory=list)
    config_written: bool = False  # allow_new_columns set, for the added columns

    @property
    def written(self) -> bool:
        return bool(self.diff)


@dataclass
class _Edit:
    """What changes in the sheet: sheet row -> new source_column; rows to delete; rows to
    append (cells by sheet column name)."""

    renames: dict[int, str]
    deletes: set[int]
    appends: list[dict[str, str]]


def update_mapping(source: str, config_path: str, curated_root: str) -> SheetUpdate:
    """Read `source` with the config's layout, match its header against the sheet, and
    rewrite the sheet (see the module's docstring); refuse when nothing matches."""
    from handler.cli.commands.init.onboard import _read_all
    from steps.shared.config.model import read_config
    from steps.shared.config.table import load_table_config

    if storage.is_s3(config_path):
        raise ConfigError("--update: give a config file on this machine, then upload it")
    if not Path(config_path).is_file():
        raise ConfigError("--update: the config file does not exist", file=config_path)
    spec = load_table_config(config_path)
    raw, config = read_config(config_path)
    sheet_path = Path(spec.mapping.uri)
    update = SheetUpdate(config_path, source, str(sheet_path))
    with storage.local_file(source) as path:
        text, quoted = _read_all(path, source, config)
    header = text.column_names
    mapped = set(spec.mapping.sources)
    missing = [c for c in spec.mapping.columns if c.source is not None and c.source not in header]
    unmapped = [n for n in header if n not in mapped and not BLANK_HEADER.fullmatch(n)]
    if not missing and not unmapped:
        return update  # the header is the one the sheet maps: nothing to write
    values = {n: text.column(n).combine_chunks() for n in unmapped}
    known = curated_values(curated_root, config.table_name, [c.target for c in missing])
    update.renamed = match_renames(missing, values, known) if missing else []
    if not any(s in header for s in mapped) and not update.renamed:
        raise RejectedInput(
            f"nothing matches: no column the mapping sheet maps is in the header and no new "
            f"column matches their values (header: {', '.join(header)}); {config_path} is "
            "unchanged: is this the right config for the file?",
            file=source,
        )
    renamed = {c.missing: c.new for c in update.renamed}
    update.removed = [c for c in missing if c.source not in renamed]
    keyed = [c.target for c in update.removed if c.target in config.primary_key]
    if keyed:
        raise RejectedInput(
            f"the primary key's column(s) {', '.join(keyed)} (source "
            f"{', '.join(repr(c.source) for c in update.removed if c.target in keyed)}) are "
            "not in the header and no new column matches their values; "
            f"{config_path} is unchanged",
            file=source,
        )
    added = [n for n in unmapped if n not in renamed.values()]
    update.added = _added_columns(header, added, values, quoted, spec.mapping.targets, update)
    for candidate in update.renamed:
        if candidate.known and candidate.matched < candidate.compared:
            update.warnings.append(
                f"'{candidate.new}': {candidate.compared - candidate.matched:,} value(s) are "
                f"not among '{candidate.missing}''s earlier ones"
            )
    by_source = {c.source: c.sheet_row for c in spec.mapping.columns}
    edit = _Edit(
        {by_source[c.missing]: c.new for c in update.renamed},
        {c.sheet_row for c in update.removed},
        [
            {**dict(zip(SHEET_COLUMNS, g.sheet_row(), strict=True)), "nullable": "true"}
            for g in update.added
        ],
    )
    _write_checked(update, edit, raw, sheet_path)
    return update


def _added_columns(
    header: list[str],
    added: list[str],
    values: dict[str, pa.Array],
    quoted: frozenset[str],
    taken: list[str],
    update: SheetUpdate,
) -> list[ColumnGuess]:
    """The new columns as init infers them, named apart from the sheet's targets."""
    targets, guesses = set(taken), []
    for position, name in enumerate(header, 1):
        if name not in added:
            continue
        target, n = snake_case(name, position), 2
        base = target
        while target in targets:
            target, n = f"{base}_{n}", n + 1
        targets.add(target)
        guess = guess_column(name, target, values[name], update.warnings, name in quoted)
        # The table's earlier rows have no value for it: nullable, as run adds it.
        guess.nullable = True
        guesses.append(guess)
    return guesses


def _write_checked(update: SheetUpdate, edit: _Edit, raw: dict[str, Any], sheet_path: Path) -> None:
    """Write the sheet (and the config, when it needs allow_new_columns), the diff of both
    in `update`; validated as run reads them, and put back as they were if they do not."""
    from steps.shared.config.table import load_table_config

    config_path = Path(update.config)
    before_sheet = sheet_path.read_bytes()
    edited = _edit_xlsx if sheet_path.suffix.lower() == ".xlsx" else _edit_csv
    after_sheet = edited(before_sheet, edit)
    updated_raw = dict(raw)
    if update.added and not raw.get("allow_new_columns"):
        updated_raw["allow_new_columns"] = True  # an existing target gets the new columns
    before_config = config_path.read_bytes()
    after_config = (json.dumps(updated_raw, indent=2, ensure_ascii=False) + "\n").encode()
    update.diff = _diff(
        str(sheet_path), _as_text(before_sheet, sheet_path), _as_text(after_sheet, sheet_path)
    )
    if updated_raw != raw:
        update.diff += _diff(
            update.config, before_config.decode("utf-8-sig"), after_config.decode()
        )
    try:
        if updated_raw != raw:
            config_path.write_bytes(after_config)
            update.config_written = True
        sheet_path.write_bytes(after_sheet)
    except OSError as error:  # a read-only sheet or folder: both files as they were
        if update.config_written:
            config_path.write_bytes(before_config)
        where = str(error.filename or sheet_path)
        raise ConfigError(
            f"--update: cannot write: {error.strerror or error}; nothing changed", file=where
        ) from None
    try:
        load_table_config(update.config)  # what run will read
    except Exception:
        sheet_path.write_bytes(before_sheet)
        config_path.write_bytes(before_config)
        raise


# --- the sheet, edited in place --------------------------------------------------------


def _edit_csv(data: bytes, edit: _Edit) -> bytes:
    """Only the changed records are written anew; every other line stays as it was."""
    bom = data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    lines = text.splitlines(keepends=True)
    records = list(csv.reader(io.StringIO(text)))
    if len(records) != len(lines):  # a quoted cell spans lines: rewrite every record
        lines = [_csv_line(r, "\n") for r in records]
    ending = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    header = [h.strip().lower() for h in records[0]]
    source_index = header.index("source_column") if "source_column" in header else None
    out = []
    for number, line in enumerate(lines, 1):
        if number in edit.deletes:
            continue
        if number in edit.renames and source_index is not None:
            cells = records[number - 1]
            cells += [""] * (source_index + 1 - len(cells))
            cells[source_index] = edit.renames[number]
            line = _csv_line(cells, ending)
        out.append(line)
    if out and not out[-1].endswith(("\n", "\r")):
        out[-1] += ending
    out += [_csv_line([row.get(h, "") for h in header], ending) for row in edit.appends]
    return (b"\xef\xbb\xbf" if bom else b"") + "".join(out).encode()


def _csv_line(cells: list[str], ending: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=ending).writerow(cells)
    return buffer.getvalue()


def _edit_xlsx(data: bytes, edit: _Edit) -> bytes:
    """The first sheet (the one run reads), edited cell by cell: other rows, their order
    and formatting stay; an appended row takes the style of the last row above it."""
    from copy import copy

    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data))
    sheet = book.worksheets[0]
    header = [str(c.value or "").strip().lower() for c in sheet[1]]
    if "source_column" in header:
        column = header.index("source_column") + 1
        for number, name in edit.renames.items():
            sheet.cell(row=number, column=column).value = name
    last = max(
        (r[0].row for r in sheet.iter_rows() if any(c.value not in (None, "") for c in r)),
        default=1,
    )
    for number in sorted(edit.deletes, reverse=True):
        sheet.delete_rows(number)
        last -= 1
    for row in edit.appends:
        last += 1
        for index, name in enumerate(header, 1):
            cell = sheet.cell(row=last, column=index)
            cell.value = row.get(name) or None
            above = sheet.cell(row=last - 1, column=index)
            if last > 2 and above.has_style:
                cell._style = copy(above._style)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _as_text(data: bytes, path: Path) -> str:
    """A sheet as CSV text, for the diff (an xlsx sheet's rows as CSV lines)."""
    if path.suffix.lower() != ".xlsx":
        return data.decode("utf-8-sig")
    import openpyxl

    sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets[0]
    rows = [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    return "".join(_csv_line(r, "\n") for r in rows if any(r))


def _diff(name: str, before: str, after: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), name, name
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- output --------------------------------------------------------------------------


def print_sheet_update(update: SheetUpdate, *, as_json: bool) -> None:
    from handler.cli.commands.init.onboard import next_commands

    commands = next_commands(Path(update.config), update.source)
    renamed = [{"from": c.missing, "to": c.new, "evidence": c.evidence()} for c in update.renamed]
    added = [
        {"source": g.source, "target": g.target, "data_type": str(g.data_type), "reason": g.reason}
        for g in update.added
    ]
    removed = [{"source": c.source, "target": c.target} for c in update.removed]
    if as_json:
        print(
            json.dumps(
                {
                    "config": update.config,
                    "mapping": update.sheet,
                    "source": update.source,
                    "renamed": renamed,
                    "added": added,
                    "removed": removed,
                    "diff": update.diff,
                    "written": update.written,
                    "warnings": update.warnings,
                    "next": commands,
                }
            )
        )
        return
    if not update.written:
        print(f"{update.source}: its header is the one {update.sheet} maps; nothing written")
        return
    print(update.diff, end="")
    for c in update.renamed:
        print(f"renamed: '{c.missing}' -> '{c.new}' ({c.evidence()})")
    for g in update.added:
        print(f"added: '{g.source}' as {g.target} {g.data_type} ({g.reason})")
    for spec in update.removed:
        print(
            f"removed: '{spec.source}' is not in the file: its row ({spec.target}) is deleted; "
            f"the target's column {spec.target} stays: drop it there, or run is refused as drift"
        )
    for warning in update.warnings:
        print(f"warning: {warning}")
    if update.config_written:
        print(f"wrote {update.config} (allow_new_columns: the target gets the added columns)")
    print(f"wrote {update.sheet}\nnext:")
    for command in commands:
        print(f"  {command}")
