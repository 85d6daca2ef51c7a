"""`python -m handler why TABLE COLUMN=VALUE[,COLUMN=VALUE]`: where a row came from.

Every version of the row, newest first, each with the run that published it, when, the
source file and the row's line in it (`steps.shared.provenance`). An scd2 table keeps
every version in the target: each is matched to the publish that made it (its
`valid_from` is that publish's time), its line read from that run's curated file while the
file is kept. Another table keeps only its current rows, so its versions are the rows the
kept curated files delivered, one per publish.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from handler.cli.command import Command, root_and_warehouse


def why_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table_name from its config")
    parser.add_argument(
        "row",
        metavar="COLUMN=VALUE[,COLUMN=VALUE]",
        help="the row: target columns and their values (usually the primary key)",
    )
    root_and_warehouse(parser)
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")


def why(args: argparse.Namespace) -> int:
    from handler.aws.events import config_root
    from handler.cli.commands.rollback import find_config
    from steps.shared.config.table import load_table_config
    from steps.shared.warehouse import open_warehouse
    from steps.shared.warehouse.audit_publishes import table_publishes

    spec = load_table_config(find_config(args.config_root or config_root(), args.table))
    key = parse_row(args.row, spec.mapping.targets)
    with open_warehouse(args.warehouse, must_exist=True) as warehouse:
        warehouse.ensure_audit_tables()
        publishes = table_publishes(warehouse, args.table)
        if spec.config.mode == "scd2" and publishes:  # none yet: maybe no target either
            versions = history_versions(warehouse, spec, key, publishes)
        else:
            versions = [v for p in publishes for v in delivered(p, key)]
    result = {"table": args.table, "key": key, "versions": versions}
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print_why(result)
    return 0


WHY = Command(
    "where a row came from: every version with its run, publish time, source file and line",
    why_arguments,
    why,
)


def parse_row(text: str, columns: list[str]) -> dict[str, str]:
    """`code=FR,kind=x` as {column: value}; a column the table does not have is exit 2.
    A part without `=` continues the value before it (a value may hold commas)."""
    from steps.shared.errors import ConfigError
    from steps.shared.names import unknown_name

    row: dict[str, str] = {}
    for part in text.split(","):
        column, equals, value = part.partition("=")
        column = column.strip()
        if row and part and not equals:
            # A comma inside a value (`name=Korea, Republic of`): it goes on that value.
            last = list(row)[-1]
            row[last] += "," + part
            continue
        if not equals or not column:
            raise ConfigError(f"'{part}' is not COLUMN=VALUE (a row is COLUMN=VALUE[,...])")
        if column not in columns:
            raise ConfigError(unknown_name("column", column, columns))
        if column in row:
            raise ConfigError(f"column '{column}' is given twice in '{text}'")
        row[column] = value
    return row


def delivered(publish: Any, key: dict[str, str]) -> list[dict[str, Any]]:
    """The rows matching `key` in a publish's curated file (none when the file is gone)."""
    rows = _matching_rows(publish.curated_uri, key)
    return [_version(publish, row) for row in rows]


def history_versions(
    warehouse: Any, spec: Any, key: dict[str, str], publishes: list[Any]
) -> list[dict[str, Any]]:
    """An scd2 table's versions of the row, each with the publish whose time is its
    valid_from, and its line from that publish's curated file while it is kept."""
    from steps.shared.warehouse.modes.scd2 import VALID_FROM

    q = warehouse.quote
    columns = spec.mapping.targets
    where = " AND ".join(f"CAST({q(c)} AS VARCHAR(65535)) = %s" for c in key)
    names, rows = warehouse.query_with_names(
        f"SELECT {', '.join(q(c) for c in [*columns, VALID_FROM])} FROM "
        f"{warehouse.table(spec.config.redshift_schema, spec.config.target_table)} "
        f"WHERE {where} ORDER BY {q(VALID_FROM)} DESC",
        tuple(key.values()),
    )
    by_time = {_moment(p.loaded_at): p for p in publishes}
    versions = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        made = by_time.get(_moment(values.pop(VALID_FROM)))
        lines = _matching_rows(made.curated_uri, key) if made else []
        version = _version(made, lines[0]) if made and lines else None
        versions.append(
            version
            or {
                "run_id": made.run_id if made else None,
                "published_at": str(made.loaded_at) if made else None,
                "source": made.source_uri if made else None,
                "line": None,  # the curated file is gone (or the Spark engine wrote it)
                "values": {c: _jsonable(v) for c, v in values.items()},
            }
        )
    return versions


def _moment(value: Any) -> str:
    return str(value)[:26]


def _matching_rows(curated_uri: str | None, key: dict[str, str]) -> list[dict[str, Any]]:
    import duckdb

    from steps.shared.errors import RejectedInput
    from steps.shared.io import storage

    if not curated_uri:
        return []
    try:
        parts = storage.curated_parts(curated_uri)
        with storage.local_files(parts) as paths, duckdb.connect() as db:
            files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
            where = " AND ".join(f"CAST({_quote(c)} AS VARCHAR) = ?" for c in key)
            cursor = db.execute(
                f"SELECT * FROM read_parquet([{files}], union_by_name = true) WHERE {where}",
                list(key.values()),
            )
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except (RejectedInput, OSError):
        return []  # past CuratedRetentionDays: this version is no longer known


def _version(publish: Any, row: dict[str, Any]) -> dict[str, Any]:
    from steps.shared.provenance import LINE_COLUMN

    line = row.pop(LINE_COLUMN, None)
    return {
        "run_id": publish.run_id,
        "published_at": str(publish.loaded_at),
        "source": publish.source_uri,
        "line": line,
        "values": {c: _jsonable(v) for c, v in row.items()},
    }


def _jsonable(value: Any) -> Any:
    from steps.shared.checks.context import jsonable

    return jsonable(value)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def print_why(result: dict[str, Any]) -> None:
    key = ", ".join(f"{k}={v}" for k, v in result["key"].items())
    if not result["versions"]:
        print(f"{result['table']}: no version of {key} in the table or in a kept curated file")
        return
    print(f"{result['table']} {key}: {len(result['versions'])} version(s), newest first")
    for v in result["versions"]:
        where = f"{v['source']}, line {v['line'] if v['line'] is not None else '?'}"
        print(f"  {v['published_at']}  run {v['run_id']}  {where}")
        print(f"    {json.dumps(v['values'], default=str, ensure_ascii=False)}")
