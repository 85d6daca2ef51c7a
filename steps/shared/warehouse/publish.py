"""The publisher: stage, then one transaction that publishes and writes the ledger row."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from steps.shared.errors import RefloadError, WarehouseUnavailable
from steps.shared.warehouse.audit import AuditStore, LedgerEntry, TargetState
from steps.shared.warehouse.catalog import VALID_TO, Catalog, TargetTable, _CreatedConcurrently
from steps.shared.warehouse.changes import ChangeDetection, ChangeSet
from steps.shared.warehouse.client import SqlClient, utcnow
from steps.shared.warehouse.modes import MODES, Staged
from steps.shared.warehouse.skips import skip
from steps.shared.warehouse.staging import Staging

if TYPE_CHECKING:
    from steps.shared.config.model import LedgerMode
    from steps.shared.warehouse.base import Warehouse

log = structlog.get_logger("refload")

# before_publish(warehouse, rows_before, rows_staged, changes): see `Warehouse.publish`.
BeforePublish = Callable[["Warehouse", int, int, ChangeSet | None], None]
# The same, as the publisher calls it: the facade passes itself as the warehouse.
RowsBeforePublish = Callable[[int, int, ChangeSet | None], None]


@dataclass(frozen=True)
class PublishResult:
    published: bool
    rows_loaded: int
    rows_before: int
    rows_after: int
    skipped_reason: str | None = None
    target_created: bool = False
    changes: ChangeSet | None = None
    # Not published because the target holds a newer file (`Publisher._skipped`).
    stale: bool = False


@dataclass(frozen=True)
class GroupMember:
    """One table of a group's publish (`Publisher.publish_group`)."""

    entry: LedgerEntry
    target: TargetTable
    # As `publish`'s before_publish: the publisher calls it with the rows' counts; the
    # facade (`Warehouse.publish_group`) takes one that gets the warehouse first.
    before_publish: Callable[..., None] | None = None
    # A history (scd2) target's own rows as they were at this time, staged in place of a
    # curated file: `handler rollback --group` publishes them as a new version.
    as_of: dt.datetime | None = None


# group_gate(warehouse): the group's checks, inside its publish (`Warehouse.publish_group`).
GroupGate = Callable[["Warehouse"], None]


class _GroupStale(Exception):
    """A member's file is older than its target's: the group's transaction rolls back."""

    def __init__(self, results: list[PublishResult]) -> None:
        super().__init__("stale member")
        self.results = results

    def held_back(self, members: list[GroupMember]) -> list[PublishResult]:
        stale = [m.entry.table_name for m, r in zip(members, self.results, strict=True) if r.stale]
        reason = f"not published: the file of {', '.join(stale)} is stale"
        return [
            r
            if r.stale or not r.published
            else PublishResult(False, 0, r.rows_before, r.rows_before, reason, stale=True)
            for r in self.results
        ]


# From this many staged rows (where the COPY counted them), the target's state is asked
# before the change set, in a round trip of its own, so that a skipped file is never joined.
STATE_FIRST_FROM_ROWS = 100_000


class Publisher:
    """The one publish transaction: skip rules, locks, change detection, the load
    mode's statements and the ledger row. It composes the parts it is given: the
    session's SQL client, the catalog (the target's DDL, staging), change sets and the
    audit store (the target's state, the ledger row)."""

    def __init__(
        self, sql: SqlClient, catalog: Catalog, changes: ChangeDetection, audit: AuditStore
    ) -> None:
        self.sql = sql
        self.catalog = catalog
        self.changes = changes
        self.audit = audit
        self.staging = Staging(sql, catalog)

    def _skipped(
        self, entry: LedgerEntry, target: TargetTable, state: TargetState, created: bool
    ) -> PublishResult | None:
        """A result that publishes nothing, where the skip rules say so (`skips`)."""
        found = skip(entry, target, state, created)
        if found is None:
            return None
        return PublishResult(False, 0, state.rows, state.rows, found.reason, stale=found.stale)

    def _take_publish_lock(self, target: str, where: str) -> None:
        """Serialise publishers of the target, waiting a bounded time for other writers."""
        caps = self.sql.capabilities
        if caps.publisher_lock:
            statement = f"LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE"
        elif caps.statement_timeout:
            # Takes the table's write lock now (Redshift: ShareRowExclusiveLock), so that
            # waiting for another writer happens here, under the statement_timeout bound.
            statement = f"DELETE FROM {target} WHERE 1 = 0"
        else:
            return  # DuckDB: nothing to wait for
        with self.sql.bounded_lock_wait(where, announce=True):
            self.sql.execute(statement)

    def publish_statements(
        self,
        mode: LedgerMode,
        target: str,
        staging: str,
        columns: list[str],
        key: list[str],
        delta: str | None = None,
        loaded_at: dt.datetime | None = None,
    ) -> list[str]:
        """The statements that publish staged rows: the load mode's (`modes`)."""
        staged = Staged(target, staging, columns, key, delta, loaded_at or utcnow())
        return MODES[mode].statements(self.catalog, staged)

    def count(self, target: str, *, current: bool = False) -> int:
        """Rows of a table; `current`: of a history table, the current versions only."""
        where = f" WHERE {self.sql.quote(VALID_TO)} IS NULL" if current else ""
        return int(self.sql.scalar(f"SELECT COUNT(*) FROM {target}{where}"))

    def publish(
        self,
        entry: LedgerEntry,
        target: TargetTable,
        before_publish: RowsBeforePublish | None = None,
        *,
        force: bool = False,
    ) -> PublishResult:
        """Stage, then create/replace/upsert/append/scd2 plus the ledger row in ONE transaction.

        `before_publish(warehouse, rows_before, rows_staged, changes)` runs inside that
        transaction after the rows are in place and before the ledger row; raising there
        rolls everything back, the target's creation included. `changes` is the change set
        (tables with a primary key), else None. `force` publishes even when the ledger says
        this file is already in the target.
        """
        existed = self.catalog.check_target(target)
        if force:
            log.info("force: publishing whatever the ledger says", target=entry.target)
        # Staged before the publish transaction (unless the target is new and is filled
        # in it); whether the file is already in the target is asked once, under the
        # publish lock (`_skipped`).
        fills = self.staging.fills(entry, target, existed)
        staging = None if fills else self.staging.stage_checked(entry, target)
        try:
            return self._publish_staged(entry, target, existed, staging, before_publish, force)
        except _CreatedConcurrently:
            # Another run created the schema or table a moment ago and this transaction is
            # rolled back: again, now that it exists (and so staged).
            log.info("target created by a concurrent run; publishing again", target=entry.target)
            if staging is None:
                staging = self.staging.stage_checked(entry, target)
            try:
                return self._publish_staged(entry, target, {}, staging, before_publish, force)
            except _CreatedConcurrently as again:
                raise WarehouseUnavailable(
                    f"{entry.target} was being created by another run twice in a row; "
                    "a retry may succeed",
                    table=entry.target,
                ) from again
        finally:
            if staging is not None:
                self.staging.drop(staging)

    def publish_group(
        self,
        members: list[GroupMember],
        group_gate: Callable[[], None] | None = None,
        *,
        force: bool = False,
    ) -> list[PublishResult]:
        """Stage every member, then publish them all in ONE transaction, or none.

        Each member publishes as `publish` does (its skip rules, lock, before_publish gate
        and ledger row), in the members' order (so two group runs lock in the same order);
        then `group_gate()`, the checks across members, reads them all as they are about
        to be published: raising there rolls every member back. A member whose file is
        stale stops the whole group (nothing published, every result `stale`).
        """
        existed = [self.catalog.check_target(m.target) for m in members]
        stagings: list[str | None] = []
        try:
            for member, found in zip(members, existed, strict=True):
                if member.as_of is not None:
                    as_of = self.catalog.staging_name(member.entry.run_id)
                    stagings.append(as_of)
                    self.staging.stage_as_of(as_of, member.target, member.as_of)
                elif self.staging.fills(member.entry, member.target, found):
                    stagings.append(None)  # a new target, filled in the transaction
                else:
                    stagings.append(self.staging.stage_checked(member.entry, member.target))
            for attempt in (1, 2):
                try:
                    with self.sql.transaction():
                        results = [
                            self._publish_in_transaction(
                                m.entry, m.target, found, staging, m.before_publish, force
                            )
                            for m, found, staging in zip(members, existed, stagings, strict=True)
                        ]
                        if any(r.stale for r in results):
                            raise _GroupStale(results)
                        if group_gate is not None:
                            group_gate()
                    return results
                except _GroupStale as stale:
                    return stale.held_back(members)
                except _CreatedConcurrently as again:
                    if attempt == 2:
                        raise WarehouseUnavailable(
                            "a member of the group was being created by another run twice "
                            "in a row; a retry may succeed"
                        ) from again
                    log.info("target created by a concurrent run; publishing the group again")
                    existed = [{} for _ in members]
                    for i, member in enumerate(members):  # now there: staged as any other
                        if stagings[i] is None:
                            stagings[i] = self.staging.stage_checked(member.entry, member.target)
            raise AssertionError("unreachable")
        finally:
            for member, staging in zip(members, stagings, strict=False):
                if staging is None:
                    continue
                if member.as_of is None:
                    self.staging.drop(staging)
                else:
                    with suppress(RefloadError):
                        self.sql.execute(f"DROP TABLE IF EXISTS {self.sql.quote(staging)}")

    def _fill_new_target(
        self,
        entry: LedgerEntry,
        target: TargetTable,
        ref: str,
        before_publish: RowsBeforePublish | None,
        force: bool,
    ) -> PublishResult:
        """The publish of a target this transaction created: its rows COPYed from the
        curated file, with no staging table to fill first and insert from (ADR 23). The
        skip rules are asked before the COPY, as the staged publish asks them before its
        statements; every row is added, and its first keys are the change set's sample."""
        state = self.audit.target_state(entry, ref, target.history)
        if state.rows:  # another run's, committed between the look and CREATE ... IF NOT EXISTS
            raise _CreatedConcurrently(f"{target.schema}.{target.name} holds rows already")
        skipped = None if force else self._skipped(entry, target, state, created=True)
        if skipped:
            return skipped
        loaded_at = utcnow()
        loaded = self.catalog.fill(ref, target.mapping, entry.curated_uri)
        if loaded < 0:  # no row count from the driver
            loaded = self.count(ref)
        changes = (
            self.changes.changes_into_new(target, ref, staged_rows=loaded)[0]
            if target.key
            else None
        )
        if before_publish is not None:
            before_publish(0, loaded, changes)
        after = MODES[entry.load_mode].rows_after(0, loaded, changes)
        if after is None:
            after = self.count(ref)
        self.audit.write_ledger(entry, loaded, 0, after, changes, loaded_at)
        return PublishResult(True, loaded, 0, after, target_created=True, changes=changes)

    def _publish_staged(
        self,
        entry: LedgerEntry,
        target: TargetTable,
        existed: dict[str, str],
        staging: str | None,
        before_publish: RowsBeforePublish | None,
        force: bool,
    ) -> PublishResult:
        with self.sql.transaction():
            return self._publish_in_transaction(
                entry, target, existed, staging, before_publish, force
            )

    def _publish_in_transaction(
        self,
        entry: LedgerEntry,
        target: TargetTable,
        existed: dict[str, str],
        staging: str | None,
        before_publish: RowsBeforePublish | None,
        force: bool,
    ) -> PublishResult:
        """One target's publish inside the caller's transaction (one table's, or a group's).
        No `staging`: the target is new, and filled from the curated file here."""
        ref = self.sql.table(target.schema, target.name)
        where = f"{target.schema}.{target.name}"
        mode = MODES[entry.load_mode]
        created = self.catalog.ensure_target(target, existed)
        self._take_publish_lock(ref, where)
        if staging is None:
            if not created:  # since check_target, by a run that has committed: stage it
                raise _CreatedConcurrently(f"{where} exists now")
            return self._fill_new_target(entry, target, ref, before_publish, force)
        # Under the lock: a concurrent run may have published this file meanwhile, or
        # a newer one (which wins, whichever run commits first).
        changes, delta, loaded = None, None, None
        staged = self.catalog.staged_rows.get(staging)
        joins_large = not created and staged is not None and staged >= STATE_FIRST_FROM_ROWS
        if target.key and not target.history and not joins_large:
            # The change set in the same query as the target's state: one round trip
            # (computed for nothing when the file is then skipped, a replay).
            head = self.audit.state_query(entry, ref, target.history)
            if created:  # empty: every staged key is added
                changes, loaded, row = self.changes.changes_into_new(
                    target, self.sql.quote(staging), head, staged
                )
            else:
                changes, loaded, row = self.changes.change_set(
                    mode.replaces, target, ref, staging, head
                )
            state = self.audit.read_state(entry, row)
        else:
            state = self.audit.target_state(entry, ref, target.history)
        skipped = None if force else self._skipped(entry, target, state, created)
        if skipped:
            return skipped
        if target.key and not target.history and changes is None:
            # Many staged rows: their join with the target only once the skip rules have
            # let the file through (a replay of 1M rows on PostgreSQL: 3 s less).
            changes, loaded, _ = self.changes.change_set(mode.replaces, target, ref, staging)
        before = state.rows
        loaded_at = utcnow()
        if target.key and target.history:  # scd2 publishes from the delta table
            delta = f"refload_delta_{secrets.token_hex(4)}"
            changes = self.changes.compute_changes(mode.replaces, target, ref, staging, delta)
        for statement in self.publish_statements(
            entry.load_mode, ref, staging, target.mapping.targets, target.key, delta, loaded_at
        ):
            self.sql.execute(statement)
        if delta:  # temporary; inside the transaction, so a rollback removes it too
            self.sql.execute(f"DROP TABLE {self.sql.quote(delta)}")
        if loaded is None:
            loaded = self.catalog.staged_rows.get(staging)
        if loaded is None:
            loaded = int(self.sql.scalar(f"SELECT COUNT(*) FROM {self.sql.quote(staging)}"))
        if before_publish is not None:
            before_publish(before, loaded, changes)
        # Known from the counts where the mode says so (before_publish only reads).
        after = mode.rows_after(before, loaded, changes)
        if after is None:
            after = self.count(ref, current=target.history)
        self.audit.write_ledger(entry, loaded, before, after, changes, loaded_at)
        return PublishResult(True, loaded, before, after, target_created=created, changes=changes)
