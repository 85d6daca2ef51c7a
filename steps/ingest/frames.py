"""pandas at the edge: what ingest makes of a file, as DataFrames.

The pipeline runs on Arrow and never imports pandas (ADR 1, ADR 5). People look at data
in pandas, so this runs the very same ingest on a file, publishes nothing, and hands the
result back as DataFrames with Arrow-backed dtypes: decimals stay exact, dates stay
dates, `02134` stays a string, and the conversion copies nothing.

    from steps.ingest.frames import preview
    result = preview("configs/dim_zipcode.json", "samples/zipcodes.csv")
    result.rows.head(); result.rejects; result.summary

`python -m handler preview` prints the same on a terminal.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import TYPE_CHECKING, Any

from steps.shared.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


@dataclasses.dataclass(frozen=True)
class Preview:
    rows: pd.DataFrame
    """The curated rows, typed as the mapping says (what `load` would publish)."""
    rejects: pd.DataFrame
    """One row per problem: the line (or row) in the source, column, value and reason."""
    summary: dict[str, Any]
    """rows_read, rows_rejected, duplicates_dropped, rows_written, and `refused`: why a
    real run would refuse the file (too many rejects), or None."""


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ConfigError(
            "pandas is not installed: pip install 'refload[pandas]' to preview tables"
        ) from None
    return pandas


def preview(config: str, source: str, *, mapping: str | None = None) -> Preview:
    """Ingest `source` as `config` says, into a scratch folder; nothing reaches a warehouse.

    Every rejected row is shown (the first REFLOAD_MAX_REJECTS_KEPT problems), even past
    `max_reject_pct` (the summary's `refused` then says a real run would stop). Other bad
    input raises as in a real run: a missing column, a duplicate primary key, an unreadable
    file.
    """
    pd = _pandas()
    import pyarrow as pa
    import pyarrow.parquet as pq

    from steps import ingest
    from steps.shared.config.table import load_table_config
    from steps.shared.io import storage
    from steps.shared.provenance import LINE_COLUMN

    spec = load_table_config(config, mapping_override=mapping)
    limit = spec.config.max_reject_pct
    everything = dataclasses.replace(
        spec, config=spec.config.model_copy(update={"max_reject_pct": 100.0})
    )
    with tempfile.TemporaryDirectory(prefix="refload-preview-") as root:
        result = ingest.ingest_spec(
            everything, {"source": source, "run_id": "preview", "curated_root": root}
        )
        # One file, or (from ingest.PARTS_FROM_ROWS rows) every part its manifest lists.
        parts = storage.curated_parts(result["curated_uri"])
        rows = pa.concat_tables(pq.read_table(part) for part in parts)
        if LINE_COLUMN in rows.column_names:  # the rows a load would publish, as typed
            rows = rows.drop_columns([LINE_COLUMN])
        rows = rows.to_pandas(types_mapper=pd.ArrowDtype)
        rejects_uri = result["rejects_uri"]
        rejects = (
            pq.read_table(rejects_uri).to_pandas(types_mapper=pd.ArrowDtype)
            if rejects_uri
            else pd.DataFrame()
        )
    share = result["rows_rejected"] * 100 / result["rows_read"]
    counts = ("rows_read", "rows_rejected", "duplicates_dropped", "rows_written")
    summary = {k: result[k] for k in ("table", "source", *counts)}
    summary["refused"] = (
        f"{result['rows_rejected']} of {result['rows_read']} row(s) rejected ({share:.2f}% > "
        f"max_reject_pct {limit:g}): a real run would load nothing"
        if share > limit
        else None
    )
    return Preview(rows=rows, rejects=rejects, summary=summary)
