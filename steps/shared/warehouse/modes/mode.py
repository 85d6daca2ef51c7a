"""What a load mode is: its publish statements and its rules, stated once per mode."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

# The delta table's column that says what happened to a key (`Staged.delta`).
CHANGE_COLUMN = "refload_change"


class ChangeCounts(Protocol):
    """A change set's counts (`steps.shared.warehouse.changes.ChangeSet`)."""

    @property
    def added(self) -> int: ...

    @property
    def removed(self) -> int: ...

    @property
    def changed(self) -> int: ...


class Spelling(Protocol):
    """The little of a warehouse a mode's statements need: quoting and literals."""

    def quote(self, identifier: str) -> str: ...

    def timestamp_literal(self, value: dt.datetime) -> str: ...


@dataclass(frozen=True)
class Staged:
    """What one publish's statements work on (names unquoted, `target` quoted)."""

    target: str
    staging: str
    columns: list[str]
    key: list[str]
    # The temporary table of changed keys (`ChangeDetection.compute_changes`), when the
    # target had rows and the table has a key; None otherwise.
    delta: str | None
    loaded_at: dt.datetime


@dataclass(frozen=True)
class LoadMode:
    """One load mode, as data plus its statements (as dbt's materialization strategies).

    The publisher composes these into its one transaction; nothing else in the load
    layer asks which mode it is.
    """

    # The name in the ledger's load_mode column (and the config's, when `configurable`).
    name: str
    # The publish replaces the set of rows: keys missing from the file go. Change
    # detection then also looks for removed keys; only the latest publish counts as
    # "already published" (an older file again is a legitimate roll-back).
    replaces: bool
    # The config must give primary_key.
    needs_key: bool = False
    # A file older than the target's last published file is stale (not published).
    ordered: bool = True
    # The target keeps every version (valid_from / valid_to); checks read current rows.
    history: bool = False
    # Staged rows with the same key twice are refused before publishing.
    unique_staged_keys: bool = False
    # A table config may name it (`handler rollback` writes "rollback" itself).
    configurable: bool = True
    # `handler rollback` may re-publish one of its earlier files.
    takes_rollback: bool = False

    def statements(self, sql: Spelling, staged: Staged) -> list[str]:
        """The statements that publish the staged rows into the target."""
        raise NotImplementedError

    def republish(self, rows_in_target: int, rows_after_last_publish: int) -> bool:
        """Whether a file the ledger says is already published goes in again: the target
        changed since (dropped, emptied, edited out of band). Safe to repeat: whenever its
        row count differs from what the last publish left."""
        return rows_in_target != rows_after_last_publish

    def rows_after(self, before: int, loaded: int, changes: ChangeCounts | None) -> int | None:
        """The target's rows after the publish, where the counts already say it (None:
        count them). `before` and the result count a history table's current versions."""
        return None

    def insert_all(self, sql: Spelling, staged: Staged) -> str:
        cols = ", ".join(sql.quote(c) for c in staged.columns)
        return (
            f"INSERT INTO {staged.target} ({cols}) SELECT {cols} FROM {sql.quote(staged.staging)}"
        )
