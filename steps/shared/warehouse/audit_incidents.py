"""etl_audit.incidents: one row per problem (a table and a cause), open until a passing run
of the table resolves it (steps.shared.alerts.incidents decides what to send from it).

Concurrent failures of the same problem meet on the row's unique key: one atomic
insert-or-update (PostgreSQL, DuckDB), or a locked read-then-write where the server has no
INSERT ... ON CONFLICT (Redshift), so two runs failing at once open ONE incident.
The table is made on the first failure, never on a passing run's path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steps.shared.warehouse.audit import AUDIT_SCHEMA
from steps.shared.warehouse.audit_values import _naive, _text
from steps.shared.warehouse.client import utcnow

if TYPE_CHECKING:
    from steps.shared.warehouse.base import Warehouse

INCIDENTS = "incidents"
COLUMNS = """
        incident_key VARCHAR(256) NOT NULL PRIMARY KEY,
        table_name VARCHAR(256),
        cause VARCHAR(1024),
        status VARCHAR(16) NOT NULL,
        occurrences BIGINT NOT NULL,
        first_seen TIMESTAMP NOT NULL,
        last_seen TIMESTAMP NOT NULL,
        notified_at TIMESTAMP,
        last_run_id VARCHAR(128),
        resolved_at TIMESTAMP,
        resolved_by VARCHAR(128)"""


@dataclass(frozen=True)
class Occurrence:
    """A problem as the failing run finds it after counting itself in."""

    occurrences: int  # 1: this run opened the incident
    first_seen: dt.datetime
    notify: bool  # this run tells the recipients (a new incident, or a reminder is due)
    noticed_at: dt.datetime  # the notice time this run wrote (see `forget_notice`)


def _ensure(warehouse: Warehouse) -> str:
    warehouse.ensure_audit_tables()
    name = warehouse.table(AUDIT_SCHEMA, INCIDENTS)
    warehouse.catalog.create_missing(f"CREATE TABLE IF NOT EXISTS {name} ({COLUMNS})")
    return name


def record_occurrence(
    warehouse: Warehouse,
    key: str,
    table_name: str | None,
    cause: str,
    run_id: str | None,
    remind_after: dt.timedelta,
) -> Occurrence:
    """Count a failure in: open the incident, or bump the open one's count. `notify` is
    true for one run only: the one that opened it, or the first one past `remind_after`
    since the last notice."""
    name = _ensure(warehouse)
    now = utcnow()
    cutoff = now - remind_after
    values = (key, table_name and _text(table_name, 256), _text(cause, 1024), now, now, now, run_id)
    if warehouse.dialect == "redshift":
        return _locked_occurrence(warehouse, name, values, cutoff)
    [(count, first, noticed)] = warehouse.query(
        f"INSERT INTO {name} AS i (incident_key, table_name, cause, status, occurrences, "
        "first_seen, last_seen, notified_at, last_run_id) "
        "VALUES (%s, %s, %s, 'open', 1, %s, %s, %s, %s) "
        "ON CONFLICT (incident_key) DO UPDATE SET "
        "occurrences = CASE WHEN i.status = 'open' THEN i.occurrences + 1 ELSE 1 END, "
        "first_seen = CASE WHEN i.status = 'open' THEN i.first_seen ELSE excluded.first_seen END, "
        "notified_at = CASE WHEN i.status = 'open' AND i.notified_at IS NOT NULL "
        "AND i.notified_at > %s THEN i.notified_at ELSE excluded.notified_at END, "
        "status = 'open', cause = excluded.cause, last_seen = excluded.last_seen, "
        "last_run_id = excluded.last_run_id, resolved_at = NULL, resolved_by = NULL "
        "RETURNING occurrences, first_seen, notified_at",
        (*values, cutoff),
    )
    return Occurrence(
        int(count), _naive(first), noticed is not None and _naive(noticed) == now, now
    )


def _locked_occurrence(
    warehouse: Warehouse, name: str, values: tuple[object, ...], cutoff: dt.datetime
) -> Occurrence:
    """Redshift: no ON CONFLICT; its LOCK serialises the read and the write instead."""
    key, _, cause, now, _, _, run_id = values
    with warehouse.transaction():
        warehouse.execute(f"LOCK {name}")
        row = warehouse.query(
            f"SELECT status, occurrences, first_seen, notified_at FROM {name} "
            "WHERE incident_key = %s",
            (key,),
        )
        if not row:
            warehouse.execute(
                f"INSERT INTO {name} (incident_key, table_name, cause, status, occurrences, "
                "first_seen, last_seen, notified_at, last_run_id) "
                "VALUES (%s, %s, %s, 'open', 1, %s, %s, %s, %s)",
                values,
            )
            return Occurrence(1, now, True, now)  # type: ignore[arg-type]
        status, count, first, noticed = row[0]
        still_open = status == "open"
        count = int(count) + 1 if still_open else 1
        first = _naive(first) if still_open else now
        notify = not (still_open and noticed is not None and _naive(noticed) > cutoff)
        warehouse.execute(
            f"UPDATE {name} SET status = 'open', occurrences = %s, first_seen = %s, "
            "notified_at = %s, cause = %s, last_seen = %s, last_run_id = %s, "
            "resolved_at = NULL, resolved_by = NULL WHERE incident_key = %s",
            (count, first, now if notify else noticed, cause, now, run_id, key),
        )
    return Occurrence(count, first, notify, now)  # type: ignore[arg-type]


def forget_notice(warehouse: Warehouse, key: str, noticed_at: dt.datetime) -> None:
    """The notice reached nobody: the next failure notifies again."""
    warehouse.execute(
        f"UPDATE {warehouse.table(AUDIT_SCHEMA, INCIDENTS)} SET notified_at = NULL "
        "WHERE incident_key = %s AND notified_at = %s",
        (key, noticed_at),
    )


def resolve_incidents(warehouse: Warehouse, table_name: str, run_id: str) -> None:
    """Resolve the table's open incidents (a passing run)."""
    warehouse.execute(
        f"UPDATE {_ensure(warehouse)} SET status = 'resolved', resolved_at = %s, "
        "resolved_by = %s WHERE table_name = %s AND status = 'open'",
        (utcnow(), run_id, table_name),
    )
