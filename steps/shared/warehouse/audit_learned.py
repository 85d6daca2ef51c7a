"""What learned bounds and learned freshness read from etl_audit: a table's recent publishes
and the times its files arrived. Read only when a config asks to learn (`"auto": true`,
`"expect": "auto"`), so a run without them sends no more statements than before.

Functions over any warehouse, beside `audit` and `audit_reads`: the only code that reads
etl_audit's tables.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steps.shared.warehouse.audit import AUDIT_SCHEMA
from steps.shared.warehouse.audit_values import _naive
from steps.shared.warehouse.modes import MODES

if TYPE_CHECKING:
    from steps.shared.warehouse.client import SqlClient

# How far back both learn: the newest 30 publishes (or arrivals) of a table.
LEARN_FROM = 30


@dataclass(frozen=True)
class PastPublish:
    """One earlier publish of a target, as the load ledger keeps it."""

    rows_before: int
    rows_after: int
    added: int | None  # keys_*: None for a table without a primary key
    removed: int | None
    changed: int | None


def recent_publishes(
    warehouse: SqlClient, target: str, other_than: str, limit: int = LEARN_FROM
) -> list[PastPublish]:
    """The target's newest `limit` publishes of a new file, newest first, other than run
    `other_than` (the run being checked). A rollback publishes an old file again: it says
    nothing about how the vendor's files change, so it is left out."""
    rows = warehouse.query(
        "SELECT rows_before, rows_after, keys_added, keys_removed, keys_changed FROM "
        f"{warehouse.table(AUDIT_SCHEMA, 'load_ledger')} WHERE target = %s AND run_id <> %s "
        f"AND load_mode <> 'rollback' ORDER BY loaded_at DESC LIMIT {int(limit)}",
        (target, other_than),
    )
    return [
        PastPublish(int(r[0]), int(r[1]), *(None if v is None else int(v) for v in r[2:5]))
        for r in rows
    ]


def arrivals(
    warehouse: SqlClient, tables: list[str], limit: int = LEARN_FROM
) -> dict[str, list[dt.datetime]]:
    """Per table, the newest `limit` times a file arrived (as `last_received` counts them:
    a publish of a new file, or a replay skipped as unchanged), oldest first. ONE query for
    every table asked about."""
    if not tables:
        return {}
    names = ", ".join(warehouse.literal(t) for t in tables)
    fresh = ", ".join(warehouse.literal(m) for m, mode in MODES.items() if mode.configurable)
    ledger, run_log = (
        warehouse.table(AUDIT_SCHEMA, "load_ledger"),
        warehouse.table(AUDIT_SCHEMA, "run_log"),
    )
    rows = warehouse.query(
        "SELECT table_name, arrived FROM (SELECT table_name, arrived, ROW_NUMBER() OVER "
        "(PARTITION BY table_name ORDER BY arrived DESC) AS newest FROM ("
        f"SELECT table_name, loaded_at AS arrived FROM {ledger} "
        f"WHERE load_mode IN ({fresh}) AND table_name IN ({names}) UNION ALL "
        f"SELECT table_name, logged_at AS arrived FROM {run_log} "
        f"WHERE status = 'skipped' AND table_name IN ({names})"
        f") received) recent WHERE newest <= {int(limit)} ORDER BY arrived"
    )
    found: dict[str, list[dt.datetime]] = defaultdict(list)
    for table, moment in rows:
        found[str(table)].append(_naive(moment))
    return dict(found)
