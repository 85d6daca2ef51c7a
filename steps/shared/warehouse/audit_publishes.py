"""A table's publishes as the load ledger records them: what `diff` and `why` compare.

With `audit` and `audit_reads`, the only code that reads etl_audit. Plain functions of a
warehouse (its `query` and `table`), so they ride along whatever holds the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steps.shared.warehouse.audit import AUDIT_SCHEMA


@dataclass(frozen=True)
class Publish:
    """One ledger row: a run that published a curated file into a target."""

    run_id: str
    target: str
    source_uri: str | None
    curated_uri: str | None
    load_mode: str
    loaded_at: Any


def table_publishes(warehouse: Any, table_name: str, limit: int | None = None) -> list[Publish]:
    """The table's publishes, newest first (a rollback too: it published an older file)."""
    rows = warehouse.query(
        "SELECT run_id, target, source_uri, curated_uri, load_mode, loaded_at FROM "
        f"{warehouse.table(AUDIT_SCHEMA, 'load_ledger')} WHERE table_name = %s "
        "ORDER BY loaded_at DESC" + (f" LIMIT {int(limit)}" if limit else ""),
        (table_name,),
    )
    return [Publish(str(r[0]), str(r[1]), r[2], r[3], str(r[4]), r[5]) for r in rows]


def last_publishes(warehouse: Any, limit: int = 2) -> dict[str, list[Publish]]:
    """Every table's newest `limit` publishes, newest first: ONE query for the fleet."""
    rows = warehouse.query(
        "SELECT table_name, run_id, target, source_uri, curated_uri, load_mode, loaded_at "
        "FROM (SELECT table_name, run_id, target, source_uri, curated_uri, load_mode, "
        "loaded_at, ROW_NUMBER() OVER (PARTITION BY table_name ORDER BY loaded_at DESC) "
        f"AS newest FROM {warehouse.table(AUDIT_SCHEMA, 'load_ledger')}) recent "
        f"WHERE newest <= {int(limit)} ORDER BY table_name, loaded_at DESC"
    )
    found: dict[str, list[Publish]] = {}
    for r in rows:
        found.setdefault(str(r[0]), []).append(
            Publish(str(r[1]), str(r[2]), r[3], r[4], str(r[5]), r[6])
        )
    return found


def ingested_run(warehouse: Any, table_name: str, run_id: str) -> Publish | None:
    """A run that wrote a curated file but published nothing (a before-publish test blocked
    it): its ingest step's run_log row names the file. `loaded_at` is None."""
    import json

    rows = warehouse.query(
        f"SELECT details, source_uri FROM {warehouse.table(AUDIT_SCHEMA, 'run_log')} "
        "WHERE run_id = %s AND table_name = %s AND step = 'ingest' AND status = 'ok' "
        "ORDER BY logged_at DESC LIMIT 1",
        (run_id, table_name),
    )
    if not rows:
        return None
    try:
        details = json.loads(rows[0][0] or "{}")
    except ValueError:
        details = {}
    curated = details.get("curated_uri") if isinstance(details, dict) else None
    return Publish(run_id, "", rows[0][1], curated, "not published", None)
