"""upsert: the file's rows replace the table's rows with the same key, others are added."""

from __future__ import annotations

from dataclasses import dataclass

from steps.warehouse.modes.mode import LoadMode, Spelling, Staged


@dataclass(frozen=True)
class Upsert(LoadMode):
    def statements(self, sql: Spelling, staged: Staged) -> list[str]:
        q, target, staging = sql.quote, staged.target, sql.quote(staged.staging)
        match = " AND ".join(f"{target}.{q(k)} = {staging}.{q(k)}" for k in staged.key)
        return [
            f"DELETE FROM {target} USING {staging} WHERE {match}",
            self.insert_all(sql, staged),
        ]


UPSERT = Upsert("upsert", replaces=False, needs_key=True, unique_staged_keys=True)
