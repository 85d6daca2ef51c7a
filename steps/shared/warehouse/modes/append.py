"""append: the file's rows are added to the table's."""

from __future__ import annotations

from dataclasses import dataclass

from steps.shared.warehouse.modes.mode import ChangeCounts, LoadMode, Spelling, Staged


@dataclass(frozen=True)
class Append(LoadMode):
    def statements(self, sql: Spelling, staged: Staged) -> list[str]:
        return [self.insert_all(sql, staged)]

    def republish(self, rows_in_target: int, rows_after_last_publish: int) -> bool:
        # Only when the target is gone or empty: a second append of the same rows
        # would double them.
        return rows_in_target == 0 < rows_after_last_publish

    def rows_after(self, before: int, loaded: int, changes: ChangeCounts | None) -> int | None:
        return before + loaded


# Each appended file adds its own rows, whatever its age: never stale.
APPEND = Append("append", replaces=False, ordered=False)
