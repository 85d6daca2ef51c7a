"""etl_audit for table groups: what each member held at a time, a group's last run and
its members' last publishes (`handler rollback --group`, `status`)."""

from __future__ import annotations

import datetime as dt
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
