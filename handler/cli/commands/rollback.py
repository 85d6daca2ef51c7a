"""rollback: publish an earlier run's curated file again (`python -m handler rollback`).

Only a replace-mode table can go back to a file: the file holds the whole table. The
rollback is the load and validate steps on that file, so it publishes in one transaction
(ledger row of mode `rollback`), runs the table's tests and alerts like any run.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from steps.shared.config.model import read_config
from steps.shared.config.table import load_table_config
from steps.shared.errors import ConfigError, RefloadError, RejectedInput
from steps.shared.io import storage
from steps.shared.names import unknown_name
from steps.shared.warehouse import open_warehouse

if TYPE_CHECKING:
    from steps.shared.mapping.sheet import Mapping


def find_config(root: str, table_name: str) -> str:
    """The config under `root` whose table_name is this one."""
    uris = [u for u in storage.list_uris(root, suffix=".json") if not u.endswith(".schema.json")]
    names = []
    for uri in uris:
        try:
            config = read_config(uri)[1]
        except RefloadError:
            continue  # another table's broken config is `handler check`'s business
        if config.table_name == table_name:
            return uri
        names.append(config.table_name)
    raise ConfigError(unknown_name("table", table_name, names), file=root)


def _curated_files(curated_uri: str) -> Iterator[str]:
    """The run's curated file; for an output of parts, its manifest and then every part it
    lists (a load needs them all)."""
    yield curated_uri
    if curated_uri.endswith(storage.MANIFEST_SUFFIX):
        yield from storage.curated_parts(curated_uri)


def require_curated_files(curated_uri: str, gone: str) -> None:
    """Refuse (exit 2, `gone` as the message) when any file the run's load needs is gone."""
    for uri in _curated_files(curated_uri):
        try:
            storage.size(uri)
        except RejectedInput:
            raise RejectedInput(gone, file=uri) from None


def require_fits_mapping(curated_uri: str, mapping: Mapping, run_id: str) -> None:
    """Refuse (exit 2) a file holding a text longer than its varchar(n) is now, a decimal
    its decimal(p,s) now cannot hold exactly, or a null where the column is no longer
    nullable: ingest checked the file against the mapping of its day, and the warehouse
    would not name the row (PostgreSQL cuts trailing spaces to fit without a word, DuckDB
    keeps any length, both round a decimal to a narrower scale, a null fails COPY as an
    outage)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from steps.shared.provenance import LINE_COLUMN

    checked = [
        c for c in mapping.columns if c.data_type.kind in ("varchar", "decimal") or not c.nullable
    ]
    if not checked:
        return
    with storage.local_files(storage.curated_parts(curated_uri)) as paths:
        for uri, path in zip(storage.curated_parts(curated_uri), paths, strict=True):
            names = pq.ParquetFile(path).schema_arrow.names
            columns = [c for c in checked if c.target in names]
            read = [c.target for c in columns] + ([LINE_COLUMN] if LINE_COLUMN in names else [])
            table = pq.read_table(path, columns=read)
            for column in columns:
                values = table.column(column.target).combine_chunks()
                bad = [] if column.nullable else [pc.is_null(values)]
                if column.data_type.kind == "varchar":
                    too_long = pc.greater(pc.binary_length(values), column.data_type.length)
                    bad.append(pc.fill_null(too_long, False))
                now = column.data_type.arrow()
                if column.data_type.kind == "decimal" and values.type != now:
                    # Through the type it has now and back: a value that comes back changed
                    # would be rounded (or cannot be held at all).
                    held = pc.cast(pc.cast(values, now, safe=False), values.type, safe=False)
                    bad.append(pc.fill_null(pc.not_equal(held, values), False))
                if not bad:  # a nullable decimal of the same type: nothing to check
                    continue
                found = pc.indices_nonzero(functools.reduce(pc.or_, bad))
                if not len(found):
                    continue
                row = found[0].as_py()
                value = values[row].as_py()
                line = f", line {table.column(LINE_COLUMN)[row]}" if LINE_COLUMN in read else ""
                if value is None:
                    problem = "is empty, and the column is not nullable now"
                elif column.data_type.kind == "decimal":
                    problem = f"is {value}, which {column.data_type} now cannot hold exactly"
                else:
                    problem = (
                        f"is {len(value.encode())} bytes, longer than {column.data_type} now "
                        f"(value {value!r})"
                    )
                raise RejectedInput(
                    f"run {run_id}'s file{line}, column '{column.target}': {problem}; the "
                    "mapping was changed since that run: change it back to go back to it",
                    file=uri,
                )


def load_event(
    table_name: str, run_id: str, config_root: str, warehouse: str | None
) -> dict[str, Any]:
    """The load-step payload that publishes `run_id`'s curated file again."""
    config_uri = find_config(config_root, table_name)
    spec = load_table_config(config_uri)
    config = spec.config
    if not config.strategy.takes_rollback:
        raise ConfigError(
            f"{table_name} has load_mode '{config.mode}': rollback re-publishes one whole "
            "file, which only a replace table (load_mode 'truncate') takes",
            file=config_uri,
        )
    # Nothing to go back to in a database that is not there: refused, never created empty.
    with open_warehouse(warehouse, must_exist=True) as connection:
        connection.ensure_audit_tables()
        published = connection.published_file(run_id, config.target)
    if published is None:
        raise ConfigError(
            f"run {run_id} has no ledger row for {config.target}: it published nothing "
            "(failed, blocked or skipped as already published), so there is no file to go "
            f"back to; `python -m handler history {table_name}` lists the runs"
        )
    curated_uri, content_hash, source_uri, source_version, rows_loaded, modified_at = published
    require_curated_files(
        curated_uri,
        f"the curated file of run {run_id} is gone; curated files are kept "
        "CuratedRetentionDays days (template.yaml), and a run older than that cannot "
        "be rolled back to",
    )
    require_fits_mapping(curated_uri, spec.mapping, run_id)
    return {
        "step": "load",
        "config": config_uri,
        "curated_uri": curated_uri,
        "content_hash": content_hash,
        "source": source_uri or "",
        "source_version": source_version or "",
        "rows_written": int(rows_loaded),
        # The file's own time, kept on the rollback's ledger row: later files are compared
        # with the file the table went back to.
        "source_modified_at": modified_at and str(modified_at),
        "rollback_to": run_id,
        # The ledger may hold this very file as the latest publish: go back all the same.
        "force": True,
        "table": table_name,
        **({"warehouse": warehouse} if warehouse else {}),
    }
