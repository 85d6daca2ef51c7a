"""The source formats' names, as data: what a config's `source_format` may say.

A leaf both sides import. The config (on `notify`'s cold path) builds its `source_format`
type from these names without importing a reader; `steps.ingest.sources` resolves each
format's `FormatSpec` from its "module:attribute" string on first use (only ingest and
`init` do), as the warehouse resolves `DIALECTS` (docs/architecture.md, "Extension points").
"""

from __future__ import annotations

# A format's name -> "module:attribute" of its FormatSpec, imported on first use. A new
# format is its module plus one line here.
FORMATS: dict[str, str] = {
    "csv": "steps.ingest.sources.csv:FORMAT",
    "excel": "steps.ingest.sources.excel:FORMAT",
    "json": "steps.ingest.sources.json:FORMAT",
    "parquet": "steps.ingest.sources.parquet:FORMAT",
}

# Other names a config may give a format -> the format that reads them (tsv: csv on tabs).
ALIASES: dict[str, str] = {
    "xlsx": "excel",
    "xls": "excel",
    "jsonl": "json",
    "ndjson": "json",
    "tsv": "csv",
}


def source_formats() -> tuple[str, ...]:
    """Every value `source_format` takes, read afresh: the formats, then their aliases."""
    return (*FORMATS, *(alias for alias, name in ALIASES.items() if name in FORMATS))


def reader_of(source_format: str) -> str:
    """The format that reads a `source_format` value (itself, or what its alias names)."""
    return ALIASES.get(source_format, source_format)
