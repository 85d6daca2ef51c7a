"""scd2: the table keeps every version of a key, with valid_from / valid_to."""

from __future__ import annotations

from dataclasses import dataclass

from steps.shared.warehouse.modes.mode import (
    CHANGE_COLUMN,
    ChangeCounts,
    LoadMode,
    Spelling,
    Staged,
)

# The two columns a history target has besides the mapping's (valid_to NULL: current).
VALID_FROM, VALID_TO = "valid_from", "valid_to"
HISTORY_COLUMNS = (VALID_FROM, VALID_TO)


@dataclass(frozen=True)
class History(LoadMode):
    def statements(self, sql: Spelling, staged: Staged) -> list[str]:
        """Close the current versions of removed and changed keys, insert a version for
        each added and changed key; unchanged rows are not touched. UPDATE ... FROM and
        INSERT ... SELECT, which DuckDB, PostgreSQL and Redshift all run (no MERGE)."""
        q, target, delta = sql.quote, staged.target, staged.delta
        assert delta is not None, "scd2 publishes from the change set's delta table"
        at = sql.timestamp_literal(staged.loaded_at)
        closes = " AND ".join(f"{target}.{q(k)} = d.{q(k)}" for k in staged.key)
        picks = " AND ".join(f"s.{q(k)} = d.{q(k)}" for k in staged.key)
        cols = ", ".join(q(c) for c in staged.columns)
        values = ", ".join(f"s.{q(c)}" for c in staged.columns)
        return [
            f"UPDATE {target} SET {q(VALID_TO)} = {at} FROM {q(delta)} d "
            f"WHERE {target}.{q(VALID_TO)} IS NULL "
            f"AND d.{q(CHANGE_COLUMN)} IN ('removed', 'changed') AND {closes}",
            f"INSERT INTO {target} ({cols}, {q(VALID_FROM)}) SELECT {values}, {at} "
            f"FROM {q(staged.staging)} s JOIN {q(delta)} d ON {picks} "
            f"WHERE d.{q(CHANGE_COLUMN)} IN ('added', 'changed')",
        ]

    def rows_after(self, before: int, loaded: int, changes: ChangeCounts | None) -> int | None:
        # Current versions: a removed key's is closed, an added key gets one.
        return None if changes is None else before + changes.added - changes.removed


SCD2 = History("scd2", replaces=True, needs_key=True, history=True)
