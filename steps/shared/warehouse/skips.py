"""The publish's skip rules: when a file is not published, though its run is."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from steps.shared.warehouse.audit import LedgerEntry, TargetState
from steps.shared.warehouse.catalog import TargetTable
from steps.shared.warehouse.modes import MODES

log = structlog.get_logger("refload")


@dataclass(frozen=True)
class Skip:
    reason: str
    stale: bool = False  # the target holds a newer file


def skip(entry: LedgerEntry, target: TargetTable, state: TargetState, created: bool) -> Skip | None:
    """Why nothing is published: this file is already in the target, or the target's last
    published file was written after this one (stale); None: publish.

    The ledger alone is not enough: a target dropped or emptied out of band, then the
    same file replayed, must be published again (the mode's `republish` rule). S3
    delivers out of order and two files may run at once: a file older than the last
    published one is stale, in the modes that are `ordered`. A target's first file, and
    a file or ledger row without a time (published by an earlier version), never are.
    """
    where = f"{target.schema}.{target.name}"
    count, latest, run_id = state.rows, state.latest, state.published_by
    mode = MODES[entry.load_mode]
    if run_id is not None and created:
        log.warning("target is gone; publishing the file again", target=where, run=run_id)
    elif run_id is not None:
        left = latest.rows_after if latest else count
        if not mode.republish(count, left):
            return Skip(f"already published by run {run_id} (same content and config)")
        log.warning(
            "target changed since the last publish; publishing the file again",
            target=where,
            rows_in_target=count,
            rows_after_last_publish=left,
            run=run_id,
        )
    newest = latest.source_modified_at if latest else None
    modified = entry.source_modified_at
    if not mode.ordered or modified is None or newest is None or latest is None:
        return None
    if modified >= newest:
        return None
    return Skip(
        f"stale: the file was written at {modified.isoformat()}, before the file run "
        f"{latest.run_id} published ({newest.isoformat()}); --force publishes it",
        stale=True,
    )
