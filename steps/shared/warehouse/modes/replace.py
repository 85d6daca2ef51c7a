"""replace (load_mode "truncate"): the file's rows become the table's rows."""

from __future__ import annotations

from dataclasses import dataclass

from steps.shared.warehouse.modes.mode import ChangeCounts, LoadMode, Spelling, Staged


@dataclass(frozen=True)
class Replace(LoadMode):
    def statements(self, sql: Spelling, staged: Staged) -> list[str]:
        # DELETE, never TRUNCATE: TRUNCATE commits implicitly on Redshift.
        return [f"DELETE FROM {staged.target}", self.insert_all(sql, staged)]

    def rows_after(self, before: int, loaded: int, changes: ChangeCounts | None) -> int | None:
        return loaded


REPLACE = Replace("truncate", replaces=True, takes_rollback=True)
# `handler rollback`: an earlier run's file published again, as a replace. Never stale:
# an older file is the point.
ROLLBACK = Replace("rollback", replaces=True, ordered=False, configurable=False)
