"""`python -m handler dbt-sources`: a dbt sources file for the tables refload loads.

A source per schema, a table per config. Freshness is the config's `freshness`, measured
as `python -m handler freshness` measures it: the last file the table received, from
etl_audit (a `loaded_at_query`), so dbt and refload agree and no load-time column is
needed. Quality tests become dbt's generic tests where dbt has one: `not_null`, `unique`
(one column), `accepted_values`, `relationships` (one column, to a table in the file);
scd2 tables test their current rows, as refload does. The mapping sheet has no
description column, so the file has no descriptions.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from steps.shared.config.model import TableConfig
from steps.shared.warehouse.base import AUDIT_SCHEMA, VALID_TO

# refload check type -> dbt generic test (the others have no dbt equivalent)
DBT_TESTS = {
    "not_null": "not_null",
    "uniqueness": "unique",
    "accepted_values": "accepted_values",
    "referential_integrity": "relationships",
}
TEXT_KINDS = ("string", "varchar")
# Strings YAML reads as themselves unquoted (not `yes`, `null`, `1e3`, `a: b`...).
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n"})


def sources(root: str) -> dict[str, Any]:
    """The sources file's content for every config under `root` (a folder or s3:// prefix)."""
    from steps.shared.config.table import load_table_config
    from steps.shared.io import storage

    uris = [u for u in storage.list_uris(root, suffix=".json") if not u.endswith(".schema.json")]
    specs = [load_table_config(uri) for uri in uris]  # a broken config: ConfigError, exit 2
    known = {(s.config.redshift_schema, s.config.target_table) for s in specs}
    by_schema: dict[str, list[dict[str, Any]]] = {}
    for spec in sorted(specs, key=lambda s: (s.config.redshift_schema, s.config.target_table)):
        kinds: dict[str, str] = {c.target: c.data_type.kind for c in spec.mapping.columns}
        by_schema.setdefault(spec.config.redshift_schema, []).append(
            _table(spec.config, kinds, known)
        )
    return {
        "version": 2,
        "sources": [
            {"name": schema, "schema": schema, "tables": tables}
            for schema, tables in by_schema.items()
        ],
    }


def _table(
    config: TableConfig, kinds: dict[str, str], known: set[tuple[str, str]]
) -> dict[str, Any]:
    table: dict[str, Any] = {"name": config.target_table}
    if config.freshness:
        rule = config.freshness
        table["loaded_at_query"] = _last_received(config.table_name)
        table["freshness"] = {
            key: {"count": limit.count, "period": limit.period}
            for key, limit in (("warn_after", rule.warn_after), ("error_after", rule.error_after))
            if limit
        }
    settings: dict[str, Any] = {}
    if config.strategy.history:
        settings["where"] = f"{VALID_TO} is null"
    columns: dict[str, list[Any]] = {}
    for test in config.quality_tests:
        extra = {**settings, **({"severity": "warn"} if test.severity == "warn" else {})}
        for column, (name, arguments) in _dbt_tests(test, kinds, known):
            body = {**({"arguments": arguments} if arguments else {})}
            if extra:
                body["config"] = extra
            columns.setdefault(column, []).append({name: body} if body else name)
    if columns:
        table["columns"] = [{"name": c, "data_tests": t} for c, t in columns.items()]
    return table


def _dbt_tests(
    test: Any, kinds: dict[str, str], known: set[tuple[str, str]]
) -> list[tuple[str, tuple[str, dict[str, Any]]]]:
    """(column, (dbt test, its arguments)) for one refload quality test; none where dbt
    has no such test."""
    name = DBT_TESTS.get(test.type)
    if name == "not_null":
        return [(column, ("not_null", {})) for column in test.columns]
    if name == "unique" and len(test.columns) == 1:
        return [(test.columns[0], ("unique", {}))]
    if name == "accepted_values":
        arguments: dict[str, Any] = {"values": list(test.values)}
        if kinds.get(test.column) not in TEXT_KINDS:
            arguments["quote"] = False
        return [(test.column, ("accepted_values", arguments))]
    if name == "relationships" and len(test.columns) == 1:
        schema, _, ref = test.ref_table.rpartition(".")
        if (schema or "public", ref) in known:
            to = f"source('{schema or 'public'}', '{ref}')"
            return [(test.columns[0], ("relationships", {"to": to, "field": test.ref_columns[0]}))]
    return []


def _last_received(table_name: str) -> str:
    """When the table last received a file, as steps.freshness.last_received reads it."""
    quoted = "'" + table_name.replace("'", "''") + "'"
    return (
        f"select max(received) from (select max(loaded_at) as received from "
        f"{AUDIT_SCHEMA}.load_ledger where table_name = {quoted} union all "
        f"select max(logged_at) from {AUDIT_SCHEMA}.run_log where status = 'skipped' "
        f"and table_name = {quoted}) as last_file"
    )


def _scalar(value: Any) -> str:
    if isinstance(value, str) and PLAIN.fullmatch(value) and value.lower() not in YAML_WORDS:
        return value
    return json.dumps(value)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block YAML for plain dicts, lists and scalars; scalars as JSON, which YAML reads."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for item in value:
            text = to_yaml(item, indent + 2) if isinstance(item, dict | list) and item else None
            lines.append(f"{pad}- {text.lstrip()}" if text else f"{pad}- {_scalar(item)}")
        return "\n".join(lines)
    return pad + _scalar(value)


def write(root: str, out: str | None) -> int:
    text = "# Written by `python -m handler dbt-sources`: edit the table configs instead.\n"
    text += to_yaml(sources(root)) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0
