"""Source readers: CSV, Excel, JSON and Parquet in, a table of text columns out.

Every value is read as text (codes keep their leading zeros); the mapping
casts later. Each reader also knows how to turn a row position back into the
line or row a person would look at in the file.

Sizes are bounded on every path: CSV streams (and a compressed CSV stops at
`max_source_bytes()` once expanded); the formats read whole stop at
`max_whole_source_bytes()`, so a small compressed file cannot expand into GBs.

One module per format (`csv`, `excel`, `json`, `parquet`), each ending in its `FORMAT`
(a `FormatSpec`). The registry is `steps.shared.formats.FORMATS` (names as data, which
the config validates `source_format` against); `FORMATS` below resolves it. A new format
is one module and one line there: a config names it, `run` reads it, and `init` sniffs
and lays it out, from its `FormatSpec`.
"""

from __future__ import annotations

import codecs
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from steps.ingest.sources.base import (
    EXACT_DOUBLE_LIMIT,
    INEXACT_REASON,
    BadCell,
    BadRecord,
    FormatSpec,
    SourceTable,
    WholeReader,
    _corrupt_gzip,
    _read_whole,
    chunk_bytes,
    max_source_bytes,
    max_whole_source_bytes,
    parse_block_bytes,
    whole_read_bytes,
)
from steps.ingest.sources.csv import (
    DELIMITER_NAMES,
    DELIMITERS,
    MAX_BLOCK_BYTES,
    CsvLayout,
    CsvSource,
    sniff_csv,
)
from steps.ingest.sources.encodings import (
    BINARY_SIGNATURES,
    TEXT_LIKE_KINDS,
    WIDE_BOMS,
    ZIP_KINDS,
    binary_kind,
    bomless_utf16,
    wide_encoding,
)
from steps.ingest.sources.excel import OLE_MAGIC, read_excel
from steps.ingest.sources.json import JSON_SHAPES, read_json
from steps.ingest.sources.parquet import read_parquet
from steps.shared import formats as registry
from steps.shared.errors import RejectedInput
from steps.shared.io.workbook import max_sheet_cells, oversized_sheets

if TYPE_CHECKING:
    from steps.shared.config.model import TableConfig

__all__ = [
    "BINARY_SIGNATURES",
    "DELIMITERS",
    "DELIMITER_NAMES",
    "EXACT_DOUBLE_LIMIT",
    "EXTENSION_FORMATS",
    "FORMATS",
    "FORMAT_READERS",
    "INEXACT_REASON",
    "JSON_SHAPES",
    "MAX_BLOCK_BYTES",
    "OLE_MAGIC",
    "READERS",
    "TEXT_LIKE_KINDS",
    "WIDE_BOMS",
    "ZIP_KINDS",
    "BadCell",
    "BadRecord",
    "CsvLayout",
    "CsvSource",
    "FormatSpec",
    "SourceTable",
    "binary_kind",
    "bomless_utf16",
    "chunk_bytes",
    "format_of",
    "max_sheet_cells",
    "max_source_bytes",
    "max_whole_source_bytes",
    "not_text",
    "oversized_sheets",
    "parse_block_bytes",
    "read_excel",
    "read_json",
    "read_parquet",
    "read_source",
    "reading_config",
    "sniff_csv",
    "sniff_format",
    "whole_read_bytes",
    "wide_encoding",
]

FALLBACK = "csv"  # text no format's `sniff` claims


class _FromRegistry(Mapping[str, Any]):
    """A dict derived from the registry, read afresh on every use: a format added to it
    (one line) is known at once to everything that asks these."""

    def __init__(self, derive: Callable[[], dict[str, Any]]) -> None:
        self.derive = derive

    def __getitem__(self, key: str) -> Any:
        return self.derive()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.derive())

    def __len__(self) -> int:
        return len(self.derive())

    def __repr__(self) -> str:
        return repr(self.derive())


class _Specs(Mapping[str, FormatSpec]):
    """The registry (`steps.shared.formats.FORMATS`, names as data) resolved: a format's
    name -> its FormatSpec, imported from where its line says on first use."""

    def __getitem__(self, name: str) -> FormatSpec:
        module, attribute = registry.FORMATS[name].split(":")
        spec: FormatSpec = getattr(importlib.import_module(module), attribute)
        return spec

    def __iter__(self) -> Iterator[str]:
        return iter(registry.FORMATS)

    def __len__(self) -> int:
        return len(registry.FORMATS)


FORMATS: Mapping[str, FormatSpec] = _Specs()
# source_format values -> the reader that reads them; tsv is csv split on tabs.
FORMAT_READERS: Mapping[str, str] = _FromRegistry(
    lambda: {value: registry.reader_of(value) for value in registry.source_formats()}
)
# A file's extension -> the source_format it implies.
EXTENSION_FORMATS: Mapping[str, str] = _FromRegistry(
    lambda: {ext: alias for spec in FORMATS.values() for ext, alias in spec.extensions.items()}
)
# Formats small enough to read whole (CSV streams, see read_source).
READERS: Mapping[str, WholeReader] = _FromRegistry(
    lambda: {name: spec.read for name, spec in FORMATS.items() if spec.read}
)


def format_of(uri: str) -> str | None:
    """The source_format a file name implies (the extension under any .gz), if known."""
    name = uri.rsplit("/", 1)[-1].lower().removesuffix(".gz")
    return EXTENSION_FORMATS.get("." + name.rsplit(".", 1)[-1]) if "." in name else None


def sniff_format(head: bytes) -> str | None:
    """The source_format a file's first bytes imply: the first format whose `sniff` claims
    them, else CSV for text; None for a binary file no format reads (a pdf, a plain zip)."""
    kind = binary_kind(head)
    for spec in FORMATS.values():
        claimed = spec.sniff(head, kind)
        if claimed:
            return claimed
    return None if kind else FALLBACK


def reading_config(uri: str, config: TableConfig) -> TableConfig:
    """The config with the format its reader needs: an omitted source_format is the
    extension's (csv when unknown, as before the key was optional); an alias's defaults
    (tsv: tabs) apply unless the config sets them."""
    source_format = config.source_format or format_of(uri) or FALLBACK
    reader = FORMAT_READERS[source_format]
    update: dict[str, Any] = {"source_format": reader}
    defaults = FORMATS[reader].alias_defaults.get(source_format, {})
    update |= {k: v for k, v in defaults.items() if k not in config.model_fields_set}
    return config.model_copy(update=update)


def not_text(uri: str, kind: str, source_format: str | None) -> RejectedInput:
    """A file whose first bytes say it is `kind`, given to a text format (or to none)."""
    readable = kind.split()[0]  # 'xls (or another OLE2 document)' -> 'xls'
    said = f", but source_format is {source_format}" if source_format else ""
    hint = f"; set source_format to {readable}" if readable in FORMAT_READERS else ""
    return RejectedInput(f"not a text file (looks like: {kind}){said}{hint}", file=uri)


def read_source(path: Path, uri: str, config: TableConfig) -> SourceTable:
    declared = config.source_format or format_of(uri) or FALLBACK
    config = reading_config(uri, config)
    with path.open("rb") as probe:
        compression = "gzip" if probe.read(2) == b"\x1f\x8b" else None
    try:
        with pa.input_stream(str(path), compression=compression) as stream:
            head = stream.read(1 << 16)
    except (OSError, pa.ArrowInvalid, EOFError) as error:
        raise _corrupt_gzip(uri, error) from None
    spec = FORMATS[config.source_format or FALLBACK]
    text = spec.text
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
    if spec.stream:
        return spec.stream(path, compression, uri, config, wide)
    assert spec.read is not None, "a FormatSpec reads whole or streams"
    data, content_hash = _read_whole(path, compression, uri)
    source = spec.read(data, uri, config)
    return replace(source, content_hash=lambda: content_hash)
