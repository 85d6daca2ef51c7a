"""`python -m handler init`: a table config and mapping sheet inferred from a sample file.

The file is read by refload's own readers (`steps.ingest.sources`) once its layout is known, and
every type is proposed only when `steps.shared.mapping.casts.cast_values`, the cast `run` uses,
accepts every value of the column (handler.cli.commands.init.infer_columns): what init writes is
what run loads. Only the CLI imports this; docs/adr/0009-init-proposes-what-run-accepts.md says why.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from handler.cli.commands.init.infer_columns import (
    ColumnGuess,
    guess_column,
    propose_key,
    unique_names,
)
from handler.cli.commands.init.layout import Given, Layout, read_layout
from handler.cli.commands.init.propose import described, propose_checks
from steps.ingest.sources import FORMAT_READERS, format_of, read_source
from steps.ingest.transform import apply_mapping
from steps.shared import progress
from steps.shared.config.model import TableConfig, parse_config
from steps.shared.errors import ConfigError, RejectedInput, at
from steps.shared.io import storage
from steps.shared.mapping.sheet import SHEET_COLUMNS, Mapping
from steps.shared.names import identifier_problem

# Whole values vendors write for "no value" ('NA' is not one: it is Namibia's ISO code).
NULL_TOKENS = ("NULL", "null", "N/A", "n/a", "#N/A")
BLANK_HEADER = re.compile(r"\(unnamed \d+\)")
# Names of columns that hold codes, whatever their values look like.
CODE_NAME = re.compile(r"code|numeric|zip|postal|fips|iso|naics|sic")


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

    # Proposed from the sample's profile (handler.cli.commands.init.propose).
    checks: list[dict[str, Any]] = field(default_factory=list)

    def config(self, mapping_file: str) -> dict[str, Any]:
        tests: list[dict[str, Any]] = [{"type": "row_count_match", "tolerance_pct": 0}]
        return {
            "table_name": self.table,
            "redshift_schema": "public",
            "redshift_table": self.table,
            **self.layout.config_keys(),
            "mapping_file": mapping_file,
            "load_mode": "truncate",
            "primary_key": self.primary_key,
            "source_prefix": self.source_prefix,
            "quality_tests": tests + self.checks,
        }


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
    given: Given | None = None,
) -> Proposal:
    problem = identifier_problem(table)
    if problem:
        raise ConfigError(f"--table: {problem}")
    progress.phase("read")
    layout, text, quoted = _read_sample(source, table, source_format, sheet_name, given or Given())
    warnings: list[str] = []
    targets = unique_names(text.column_names)
    guesses = []
    progress.phase("infer", total=len(targets), unit="columns")
    for name, target in zip(text.column_names, targets, strict=True):
        progress.advance(1)
        if not name or BLANK_HEADER.fullmatch(name):  # as steps.ingest.sources names blank headers
            warnings.append(f"column {name or target} has no name in the header: left out")
            continue
        values = text.column(name).combine_chunks()
        guess = guess_column(name, target, values, warnings, name in quoted)
        guesses.append(guess)
    mapping = Mapping("init", tuple(g.spec() for g in guesses))
    progress.phase("key")
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
    key, key_reason = propose_key(distinct, guesses, primary_key, typed, layout.locate)
    for guess in guesses:
        if guess.target in key:
            guess.nullable = False
    if FORMAT_READERS[layout.source_format] == "excel":
        warnings += [
            f"{g.target}: Excel keeps codes as numbers (004 arrives as 4); if it is a code, "
            "make it varchar(n) with zfill(n)"
            for g in guesses
            if g.data_type.kind in ("smallint", "integer", "bigint") and CODE_NAME.search(g.target)
        ]
    prefix, prefix_reason = _source_prefix(source, table)
    required = [g.target for g in guesses if not g.nullable]
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
        propose_checks(distinct, key, required, {g.target: g.data_type.length for g in guesses}),
    )


def _read_sample(
    source: str, table: str, source_format: str | None, sheet_name: str | None, given: Given
) -> tuple[Layout, pa.Table, frozenset[str]]:
    """The file's layout, every row as text, read as `run` will read it, and the columns the
    file wrote as strings (JSON)."""
    with storage.local_file(source) as path:
        layout = read_layout(_sample_bytes(path, source), source, source_format, sheet_name, given)

        def read() -> tuple[pa.Table, frozenset[str]]:
            keys = {"table_name": table, "mapping_file": "-", **layout.config_keys()}
            return _read_all(path, source, parse_config(keys, source="init"), layout)

        text, quoted = read()
        found = [
            t for t in NULL_TOKENS if any(pc.any(pc.equal(c, t)).as_py() for c in text.columns)
        ]
        if found:  # read again, as run will: the tokens as nulls
            layout.null_values = ["", *found]
            layout.notes.append(f"null_values {layout.null_values}: {found} stand for empty")
            text, quoted = read()
        return layout, text, quoted


def _sample_bytes(path: Path, source: str) -> bytes:
    data = path.read_bytes()
    if data.startswith(b"\x1f\x8b"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise RejectedInput(f"gzip data is corrupt: {error}", file=source) from None
    if not data.strip():
        raise RejectedInput("file is empty", file=source)
    return data


def _read_all(
    path: Path, uri: str, config: TableConfig, layout: Layout | None = None
) -> tuple[pa.Table, frozenset[str]]:
    """Every row, as text, by the reader run uses, and the columns it wrote as strings."""
    table = read_source(path, uri, config)
    rows = pa.concat_tables(list(table.chunks)) if table.column_names else pa.table({})
    if layout is not None:  # init's own sample: a repeated key is named by its lines
        layout.locate = (table.unit, table.locate)
    bad = table.bad_records()
    if bad:
        raise RejectedInput(bad[0].reason, file=uri, **at(table.unit, bad[0].where))
    if not rows.num_rows:
        raise RejectedInput("file has a header but no data rows", file=uri)
    return rows, table.quoted_columns


# --- a vendor's new layout ---------------------------------------------------------

# The config keys that say how a file is read: all that --update-layout rewrites.
LAYOUT_KEYS = ("source_format", "encoding", "delimiter", "header_row", "sheet_name")


@dataclass
class LayoutUpdate:
    config: str
    source: str
    layout: Layout
    changes: dict[str, tuple[Any, Any]]  # key -> (before, after); None: not in the config


def update_layout(
    source: str,
    config_path: str,
    *,
    source_format: str | None = None,
    sheet_name: str | None = None,
    given: Given | None = None,
) -> LayoutUpdate:
    """Rewrite only the layout keys of an existing config to read `source` (a vendor moved
    the header, changed the delimiter or the encoding). The mapping sheet and every other
    key stay; the config is left alone unless the sample reads with it, mapped columns
    and all."""
    from steps.shared.config.model import read_config
    from steps.shared.config.table import load_table_config

    if storage.is_s3(config_path):
        raise ConfigError("--update-layout: give a config file on this machine, then upload it")
    if not Path(config_path).is_file():
        raise ConfigError("--update-layout: the config file does not exist", file=config_path)
    spec = load_table_config(config_path)  # the config and its mapping, valid as they are
    raw, _ = read_config(config_path)
    with storage.local_file(source) as path:
        data = _sample_bytes(path, source)
        layout = read_layout(data, source, source_format, sheet_name, given or Given())
        wanted = {k: v for k, v in layout.config_keys().items() if k in LAYOUT_KEYS}
        # A key the config leaves to its default (or to the extension) stays left out
        # while that default still reads the file.
        implied = spec.config.model_dump(include=set(LAYOUT_KEYS))
        implied["source_format"] = format_of(source)
        wanted = {k: v for k, v in wanted.items() if k in raw or implied.get(k) != v}
        updated: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "mapping_file":  # new layout keys go where init writes them
                updated |= {k: v for k, v in wanted.items() if k not in raw}
            if key not in LAYOUT_KEYS:
                updated[key] = value
            elif key in wanted:
                updated[key] = wanted[key]
        updated |= {k: v for k, v in wanted.items() if k not in updated}
        config = parse_config(updated, source=config_path)
        header = read_source(path, source, config).column_names
        missing = [name for name in spec.mapping.sources if name not in header]
        if missing:
            raise RejectedInput(
                f"read as {_described(wanted)}, its header has no column "
                f"{', '.join(repr(m) for m in missing)} that the mapping sheet maps (header: "
                f"{', '.join(header)}); {config_path} is unchanged: map the new names first",
                file=source,
            )
        _read_all(path, source, config)  # every row splits into the header's columns
    changes = {
        key: (raw.get(key), updated.get(key))
        for key in LAYOUT_KEYS
        if raw.get(key) != updated.get(key)
    }
    if changes:
        Path(config_path).write_text(
            json.dumps(updated, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        load_table_config(config_path)  # what run will read
    return LayoutUpdate(config_path, source, layout, changes)


def _described(keys: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in keys.items())


def print_update(update: LayoutUpdate, *, as_json: bool) -> None:
    commands = next_commands(Path(update.config), update.source)
    if as_json:
        print(
            json.dumps(
                {
                    "config": update.config,
                    "source": update.source,
                    "changes": {k: {"from": a, "to": b} for k, (a, b) in update.changes.items()},
                    "written": bool(update.changes),
                    "layout": update.layout.notes,
                    "next": commands,
                }
            )
        )
        return
    print(f"{update.source}: layout for {update.config}")
    for note in update.layout.notes:
        print(f"  {note}")
    if not update.changes:
        print(f"layout unchanged: {update.config} not written")
        return
    for key, (before, after) in update.changes.items():
        print(
            f"  {key}: {'(none)' if before is None else repr(before)} -> "
            f"{'(none)' if after is None else repr(after)}"
        )
    print(f"wrote {update.config} (only its layout keys)\nnext:")
    for command in commands:
        print(f"  {command}")


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
    from steps.shared.config.table import load_table_config

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
                    "proposed_tests": proposal.checks,
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
    print("proposed tests (quality_tests; delete the ones you do not want):")
    for check in proposal.checks:
        print(f"  {described(check)}")
    for warning in proposal.warnings:
        print(f"warning: {warning}")
    print(f"wrote {config_path}\nwrote {mapping_path}\nnext:")
    for command in commands:
        print(f"  {command}")
