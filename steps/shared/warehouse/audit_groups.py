"""etl_audit for table groups: what each member held at a time, a group's last run and
its members' last publishes (`handler rollback --group`, `status`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from steps.shared.warehouse.audit import AUDIT_SCHEMA

if TYPE_CHECKING:
    from steps.shared.warehouse.base import Warehouse


def published_before(warehouse: Warehouse, target: str, at: dt.datetime) -> tuple[Any, ...] | None:
    """The target's last ledger row at or before `at` (UTC, naive): run id, curated URI,
    content hash, source URI and version, rows loaded, source_modified_at, loaded_at."""
    rows = warehouse.query(
        "SELECT run_id, curated_uri, content_hash, source_uri, source_version, rows_loaded, "
        f"source_modified_at, loaded_at FROM {warehouse.table(AUDIT_SCHEMA, 'load_ledger')} "
        "WHERE target = %s AND loaded_at <= %s ORDER BY loaded_at DESC LIMIT 1",
        (target, at),
    )
    return rows[0] if rows else None


def last_group_publish(warehouse: Warehouse, tables: list[str]) -> tuple[str, dt.datetime] | None:
    """The last group run that published any of these tables: its id and time."""
    if not tables:
        return None
    marks = ", ".join(["%s"] * len(tables))
    rows = warehouse.query(
        f"SELECT group_run_id, MAX(loaded_at) FROM {warehouse.table(AUDIT_SCHEMA, 'load_ledger')} "
        f"WHERE table_name IN ({marks}) AND group_run_id IS NOT NULL "
        "GROUP BY group_run_id ORDER BY 2 DESC LIMIT 1",
        tables,
    )
    return (str(rows[0][0]), rows[0][1]) if rows else None


def _pending(warehouse: Warehouse, tables: list[str], columns: str) -> list[tuple[Any, ...]]:
    """run_log ingest rows (`columns` of them, alias i) whose file is still pending."""
    marks = ", ".join(["%s"] * len(tables))
    log = warehouse.table(AUDIT_SCHEMA, "run_log")
    done = "l.step = 'load' AND l.status IN ('ok', 'skipped', 'stale')"
    return warehouse.query(
        f"SELECT {columns} FROM {log} i "
        f"WHERE i.step = 'ingest' AND i.status = 'ok' AND i.table_name IN ({marks}) "
        f"AND NOT EXISTS (SELECT 1 FROM {log} l WHERE l.table_name = i.table_name AND {done} "
        "AND (l.run_id = i.run_id OR l.logged_at >= i.logged_at))",
        tables,
    )


def pending_members(warehouse: Warehouse, tables: list[str]) -> dict[str, dt.datetime]:
    """Tables holding a file that was ingested and not published (a group waiting for its
    other members, or a group run that failed): table -> when the first such file came.

    A file is pending when its run's ingest passed and neither that run nor a later one
    published the table or found its file already there (a load `ok`, `skipped` or `stale`
    in run_log; a file held for its group is `held`)."""
    if not tables:
        return {}
    first: dict[str, dt.datetime] = {}
    for table, at in _pending(warehouse, tables, "i.table_name, i.logged_at"):
        if table not in first or at < first[table]:
            first[str(table)] = at
    return first


def pending_files(warehouse: Warehouse, tables: list[str]) -> dict[str, dict[str, Any]]:
    """Each table's newest pending file: what its ingest handed to load (run_log details)."""
    newest: dict[str, tuple[dt.datetime, str]] = {}
    for table, at, details in _pending(warehouse, tables, "i.table_name, i.logged_at, i.details"):
        if table not in newest or at > newest[table][0]:
            newest[str(table)] = (at, details)
    return {table: json.loads(details) for table, (_at, details) in newest.items()}


def holds_published_file(
    warehouse: Warehouse, target: str, content_hash: str, config_hash: str
) -> bool:
    """Whether the target's last publish was this very file with this config (a replay)."""
    rows = warehouse.query(
        f"SELECT content_hash, config_hash FROM {warehouse.table(AUDIT_SCHEMA, 'load_ledger')} "
        "WHERE target = %s ORDER BY loaded_at DESC LIMIT 1",
        (target,),
    )
    return bool(rows) and tuple(rows[0]) == (content_hash, config_hash)
