"""`python -m handler diff TABLE`: what changed between two publishes of a table.

It compares the curated files the two runs published (the ledger keeps their URIs):
columns added and removed, keys added, removed and changed, with samples. For a replace
table that is the table before and after; for append, upsert and scd2 each curated file is
one delivery, so the diff compares two deliveries, not the target's rows.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from handler.cli.command import Command, root_and_warehouse

MAX_SAMPLES = 20


def diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table_name from its config")
    parser.add_argument("--run", help="the newer run (default: the table's last publish)")
    parser.add_argument("--against", help="the older run (default: the publish before --run)")
    root_and_warehouse(parser)
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")


def diff(args: argparse.Namespace) -> int:
    from handler.aws.events import config_root
    from handler.cli.commands.rollback import find_config
    from steps.shared.config.table import load_table_config
    from steps.shared.warehouse import open_warehouse
    from steps.shared.warehouse.audit_publishes import ingested_run, table_publishes

    spec = load_table_config(find_config(args.config_root or config_root(), args.table))
    with open_warehouse(args.warehouse, must_exist=True) as warehouse:
        warehouse.ensure_audit_tables()
        publishes = table_publishes(warehouse, args.table)
        if args.run and all(p.run_id != args.run for p in publishes):
            # A run a before-publish test blocked: its file against the table's last publish.
            blocked = ingested_run(warehouse, args.table, args.run)
            publishes = [blocked, *publishes] if blocked else publishes
    run, against = pick_runs(args.table, publishes, args.run, args.against)
    result = compare(args.table, run, against, *compared(spec))
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print_diff(result)
    return 0


DIFF = Command(
    "what changed between two publishes of a table (columns, keys, sample rows), "
    "from their curated files",
    diff_arguments,
    diff,
)


def pick_runs(
    table: str, publishes: list[Any], run_id: str | None, against_id: str | None
) -> tuple[Any, Any]:
    """The two publishes to compare (the ledger's newest first); unknown ids are exit 2."""
    from steps.shared.errors import ConfigError

    listing = f"`python -m handler history {table}` lists its runs"
    if not publishes:
        raise ConfigError(f"{table} has no publish in etl_audit.load_ledger: nothing to diff")

    def find(run: str) -> int:
        for i, publish in enumerate(publishes):
            if publish.run_id == run:
                return i
        raise ConfigError(f"run {run} published nothing into {table}; {listing}")

    at = find(run_id) if run_id else 0
    if against_id:
        return publishes[at], publishes[find(against_id)]
    if at + 1 >= len(publishes):
        raise ConfigError(
            f"run {publishes[at].run_id} is the first publish of {table}: there is no "
            f"earlier one to diff against; {listing}"
        )
    return publishes[at], publishes[at + 1]


@dataclass(frozen=True)
class _Side:
    """A curated file read for comparison."""

    columns: list[str]
    rows: Any  # a pyarrow Table without the provenance column


def _read(table: str, publish: Any) -> _Side:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from steps.shared.errors import RejectedInput
    from steps.shared.io import storage
    from steps.shared.provenance import LINE_COLUMN

    gone = (
        f"the curated file of run {publish.run_id} ({table}) is gone; curated files are kept "
        "CuratedRetentionDays days (template.yaml), so this run can no longer be diffed"
    )
    if not publish.curated_uri:
        raise RejectedInput(gone)
    try:
        parts = storage.curated_parts(publish.curated_uri)
        with storage.local_files(parts) as paths:
            rows = pa.concat_tables([pq.read_table(path) for path in paths])
    except (RejectedInput, OSError):
        raise RejectedInput(gone, file=publish.curated_uri) from None
    if LINE_COLUMN in rows.column_names:
        rows = rows.drop_columns([LINE_COLUMN])
    return _Side(rows.column_names, rows)


def compared(spec: Any) -> tuple[list[str], list[str]]:
    """A table's key, and the columns that differ on every load without the data changing
    (a default that is a placeholder: load date, run id, source key), as the publish's
    change set leaves them out (TargetTable.compared_columns)."""
    from steps.shared.warehouse.catalog import TargetTable

    key = list(spec.config.primary_key)
    target = TargetTable("", "", spec.mapping, key)
    kept = set(target.compared_columns) | set(key)
    return key, [c for c in spec.mapping.targets if c not in kept]


def compare(
    table: str, run: Any, against: Any, key: list[str], ignored: list[str] | None = None
) -> dict[str, Any]:
    """The diff of two publishes' curated files, in the `diff --json` shape; `ignored`
    columns are shown in samples but never make a row added, removed or changed."""
    import duckdb

    new, old = _read(table, run), _read(table, against)
    common = [c for c in new.columns if c in old.columns and c not in (ignored or [])]
    # Without a primary key (or with a key column gone), a row is its own key: rows are
    # added or removed, never changed.
    keyed = [k for k in key if k in common] if key and all(k in common for k in key) else common
    values = [c for c in common if c not in keyed]
    q = _quote
    on = " AND ".join(f"n.{q(k)} IS NOT DISTINCT FROM o.{q(k)}" for k in keyed) or "TRUE"
    differs = " OR ".join(f"n.{q(c)} IS DISTINCT FROM o.{q(c)}" for c in values) or "FALSE"
    order = ", ".join(q(k) for k in keyed) or "1"
    with duckdb.connect() as db:
        db.register("new_rows", new.rows)
        db.register("old_rows", old.rows)
        cols_new = ", ".join(f"n.{q(c)}" for c in new.columns)
        cols_old = ", ".join(f"o.{q(c)}" for c in old.columns)
        added_sql = (
            f"SELECT {cols_new} FROM new_rows n WHERE NOT EXISTS "
            f"(SELECT 1 FROM old_rows o WHERE {on})"
        )
        removed_sql = (
            f"SELECT {cols_old} FROM old_rows o WHERE NOT EXISTS "
            f"(SELECT 1 FROM new_rows n WHERE {on})"
        )
        changed_sql = (
            "SELECT "
            + ", ".join(
                [*(f"n.{q(k)} AS {q('k_' + k)}" for k in keyed)]
                + [f"o.{q(c)} AS {q('b_' + c)}, n.{q(c)} AS {q('a_' + c)}" for c in values]
            )
            + f" FROM new_rows n JOIN old_rows o ON {on} WHERE {differs}"
        )
        counts = {
            kind: int(db.execute(f"SELECT COUNT(*) FROM ({sql}) d").fetchone()[0])  # type: ignore[index]
            for kind, sql in (("added", added_sql), ("removed", removed_sql))
        }
        counts["changed"] = (
            int(db.execute(f"SELECT COUNT(*) FROM ({changed_sql}) d").fetchone()[0])  # type: ignore[index]
            if values
            else 0
        )
        samples: dict[str, list[dict[str, Any]]] = {
            "added": _rows(db, f"SELECT * FROM ({added_sql}) d ORDER BY {order}"),
            "removed": _rows(db, f"SELECT * FROM ({removed_sql}) d ORDER BY {order}"),
            "changed": [],
        }
        if values:
            changed_order = ", ".join(q("k_" + k) for k in keyed)
            for row in _rows(db, f"SELECT * FROM ({changed_sql}) d ORDER BY {changed_order}"):
                before = {c: row["b_" + c] for c in values if row["b_" + c] != row["a_" + c]}
                samples["changed"].append(
                    {
                        "key": {k: row["k_" + k] for k in keyed},
                        "before": before,
                        "after": {c: row["a_" + c] for c in before},
                    }
                )
    return {
        "table": table,
        "run": run.run_id,
        "against": against.run_id,
        "columns": {
            "added": [c for c in new.columns if c not in old.columns],
            "removed": [c for c in old.columns if c not in new.columns],
        },
        "keys": counts,
        "samples": samples,
    }


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows(db: Any, sql: str) -> list[dict[str, Any]]:
    from steps.shared.checks.context import jsonable

    cursor = db.execute(f"{sql} LIMIT {MAX_SAMPLES}")
    names = [d[0] for d in cursor.description]
    return [{n: jsonable(v) for n, v in zip(names, row, strict=True)} for row in cursor.fetchall()]


def print_diff(result: dict[str, Any]) -> None:
    columns, keys, samples = result["columns"], result["keys"], result["samples"]
    print(f"{result['table']}: run {result['run']} against run {result['against']}")
    for kind in ("added", "removed"):
        if columns[kind]:
            print(f"  columns {kind}: {', '.join(columns[kind])}")
    print(
        f"  keys: added {keys['added']:,}, removed {keys['removed']:,}, changed {keys['changed']:,}"
    )
    for kind in ("added", "removed"):
        for row in samples[kind]:
            print(f"  {kind}: {json.dumps(row, default=str, ensure_ascii=False)}")
    for change in samples["changed"]:
        shown = ", ".join(
            f"{c}: {change['before'][c]!r} -> {change['after'][c]!r}" for c in change["before"]
        )
        key = ", ".join(f"{k}={v!r}" for k, v in change["key"].items())
        print(f"  changed {key}: {shown}")
