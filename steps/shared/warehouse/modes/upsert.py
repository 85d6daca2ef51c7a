"""upsert: the file's rows replace the table's rows with the same key, others are added."""

from __future__ import annotations

from dataclasses import dataclass

from steps.shared.warehouse.modes.mode import ChangeCounts, LoadMode, Spelling, Staged


@dataclass(frozen=True)
class Upsert(LoadMode):
    def statements(self, sql: Spelling, staged: Staged) -> list[str]:
        q, target, staging = sql.quote, staged.target, sql.quote(staged.staging)
        match = " AND ".join(f"{target}.{q(k)} = {staging}.{q(k)}" for k in staged.key)
        return [
            f"DELETE FROM {target} USING {staging} WHERE {match}",
            self.insert_all(sql, staged),
        ]

    def rows_after(self, before: int, loaded: int, changes: ChangeCounts | None) -> int | None:
        # Staged keys are unique: each replaces its row or adds one.
        return None if changes is None else before + changes.added


UPSERT = Upsert("upsert", replaces=False, needs_key=True, unique_staged_keys=True)
