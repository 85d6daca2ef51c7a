"""Staging: the curated rows made readable in the warehouse for the publish transaction,
or, for a new target, the decision to fill it from the curated file instead (ADR 23)."""

from __future__ import annotations

import datetime as dt
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from steps.shared.errors import RefloadError, RejectedInput
from steps.shared.warehouse.audit import LedgerEntry
from steps.shared.warehouse.catalog import VALID_TO, Catalog, TargetTable
from steps.shared.warehouse.client import SqlClient
from steps.shared.warehouse.modes import MODES
from steps.shared.warehouse.modes.scd2 import VALID_FROM

if TYPE_CHECKING:
    from steps.shared.config.model import LedgerMode


class Staging:
    """Staging tables through the session's SQL client and the catalog."""

    def __init__(self, sql: SqlClient, catalog: Catalog) -> None:
        self.sql = sql
        self.catalog = catalog

    def duplicate_key_in(self, staging: str, key: list[str]) -> tuple[Any, ...] | None:
        q = self.sql.quote
        cols = ", ".join(q(k) for k in key)
        rows = self.sql.query(
            f"SELECT {cols} FROM {q(staging)} GROUP BY {cols} HAVING COUNT(*) > 1 LIMIT 1"
        )
        return rows[0] if rows else None

    def fills_new(self, target: TargetTable, mode: LedgerMode, existed: dict[str, str]) -> bool:
        """Whether a publish fills the target it creates straight from the curated file
        (`capabilities.fills_new_target`): where the target does not exist yet, and the
        mode publishes every curated row into an empty table as it is. Not upsert, whose
        incoming keys are checked first; not scd2, whose rows gain history columns."""
        return (
            not existed
            and self.catalog.capabilities.fills_new_target
            and not MODES[mode].unique_staged_keys
            and not target.history
        )

    def fills(self, entry: LedgerEntry, target: TargetTable, existed: dict[str, str]) -> bool:
        # Not when the local pipeline staged the rows early (the target existed then).
        early = entry.curated_uri in self.catalog.staged_early
        return self.fills_new(target, entry.load_mode, existed) and not early

    def stage(self, entry: LedgerEntry, target: TargetTable) -> str:
        """The staging table of the entry's curated rows: the one the local pipeline
        filled while ingest wrote them (`steps.ingest.early`), else a new one."""
        early = self.catalog.staged_early.pop(entry.curated_uri, None)
        if early is not None:
            return early
        staging = self.catalog.staging_name(entry.run_id)
        try:
            self.catalog.stage(staging, target.mapping, entry.curated_uri)
        except BaseException:
            self.drop(staging)  # what a failed stage left, where staging is dropped
            raise
        return staging

    def stage_checked(self, entry: LedgerEntry, target: TargetTable) -> str:
        """`stage`, its incoming keys checked where the mode needs them unique (upsert);
        dropped again when they are not."""
        staging = self.stage(entry, target)
        try:
            self.refuse_doubled_keys(entry, target, staging)
        except BaseException:
            self.drop(staging)
            raise
        return staging

    def drop(self, staging: str) -> None:
        # A temporary table goes with the session (the step's, or the local run's);
        # where staging must go now, best effort: a failed cleanup must not hide why
        # the publish failed.
        self.catalog.staged_rows.pop(staging, None)
        if self.catalog.drops_staging:
            with suppress(RefloadError):
                self.sql.execute(self.catalog.drop_staging_sql(staging))

    def refuse_doubled_keys(self, entry: LedgerEntry, target: TargetTable, staging: str) -> None:
        if MODES[entry.load_mode].unique_staged_keys:
            doubled = self.duplicate_key_in(staging, target.key)
            if doubled:
                value = ", ".join(f"{k}={v!r}" for k, v in zip(target.key, doubled, strict=True))
                raise RejectedInput(
                    f"duplicate primary key ({value}) in the incoming rows",
                    file=entry.curated_uri,
                )

    def stage_as_of(self, staging: str, target: TargetTable, at: dt.datetime) -> None:
        """A history table's versions valid at `at`, copied (the publish changes the table)."""
        q = self.sql.quote
        cols = ", ".join(q(c) for c in target.mapping.targets)
        # A literal, not a bind parameter: Redshift binds none in CREATE TABLE AS (its
        # PREPARE takes only SELECT, INSERT, UPDATE and DELETE).
        when = self.catalog.timestamp_literal(at)
        self.sql.execute(
            f"CREATE TEMPORARY TABLE {q(staging)} AS SELECT {cols} "
            f"FROM {self.sql.table(target.schema, target.name)} WHERE {q(VALID_FROM)} <= {when} "
            f"AND ({q(VALID_TO)} IS NULL OR {q(VALID_TO)} > {when})"
        )
