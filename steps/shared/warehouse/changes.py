"""Change sets: the keys a publish adds, removes and changes, against the rows before it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from steps.shared.warehouse.client import SqlClient
from steps.shared.warehouse.modes.mode import CHANGE_COLUMN
from steps.shared.warehouse.modes.scd2 import VALID_TO
from steps.shared.warehouse.tables import TargetTable

CHANGE_KINDS = ("added", "removed", "changed")
# Sample keys of each kind kept in the audit (the step result carries counts only).
# Bounded whatever the table: keys x differing columns shown x characters of a value.
SAMPLE_KEYS = 10
SAMPLE_COLUMNS = 10
SAMPLE_VALUE_CHARS = 100


@dataclass(frozen=True)
class ChangeSet:
    """Keys a publish added, removed and changed, against the rows before it."""

    added: int
    removed: int
    changed: int
    # Per kind, up to SAMPLE_KEYS entries: {"key": {...}}, and for a changed key also
    # "before" and "after" with the values that differ.
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


class ChangeDetection:
    """The keys a publish adds, removes and changes, with sample keys, queried through
    the session's SQL client."""

    def __init__(self, sql: SqlClient) -> None:
        self.sql = sql

    def change_set(
        self,
        replaces: bool,
        target: TargetTable,
        ref: str,
        staging: str,
        head: tuple[str, list[Any]] = ("SELECT 1 AS refload_one", []),
    ) -> tuple[ChangeSet, int, tuple[Any, ...]]:
        """Inside the publish transaction, before the target changes: the keys this publish
        adds, removes (when the mode `replaces` the set of rows) and changes, with sample
        keys of each kind (a changed key's differing values before and after), and the
        number of staged rows: ONE query, no temporary table. `head` (a one-row query and
        its parameters) runs in the same query; its row is returned too.

        The join is ranked per kind (ROW_NUMBER by key) and cut at SAMPLE_KEYS: the
        counts come from a window over the whole join, the samples from its first ranks.
        """
        q = self.sql.quote
        key, compared = target.key, target.compared_columns
        join = "FULL OUTER JOIN" if replaces else "LEFT JOIN"
        on = " AND ".join(f"s.{q(k)} = t.{q(k)}" for k in key)
        first = q(key[0])  # never null in the staged rows (ingest rejects an empty key)
        differs = [self._differs(f"s.{q(c)}", f"t.{q(c)}") for c in compared]
        kind = (
            f"CASE WHEN s.{first} IS NULL THEN 'removed' "
            f"WHEN t.{first} IS NULL THEN 'added' ELSE 'changed' END"
        )
        # Positional names: a mapping column may be called anything, "kind" included.
        keys = [q(f"k{i}") for i in range(len(key))]
        columns = [
            f"{kind} AS refload_kind",
            *(f"COALESCE(s.{q(k)}, t.{q(k)}) AS {keys[i]}" for i, k in enumerate(key)),
            *(f"t.{q(c)} AS {q(f'b{i}')}" for i, c in enumerate(compared)),
            *(f"s.{q(c)} AS {q(f'a{i}')}" for i, c in enumerate(compared)),
        ]
        joined = (
            f"SELECT {', '.join(columns)} FROM {q(staging)} s {join} {ref} t ON {on} "
            f"WHERE {' OR '.join([f's.{first} IS NULL', f't.{first} IS NULL', *differs])}"
        )
        # Each kind's first SAMPLE_KEYS keys (a top-N, not a sort of the whole join: a
        # window ranking every row sorted all of a first load's 1M wide rows, 4.5 s on
        # PostgreSQL), and each kind's count from a grouping of the join. Where a CTE can
        # be materialised (`capabilities.materialized_cte`), the join runs once and is read
        # four times: a 1M-row replace on PostgreSQL, 1% of it changed, 1.1 s against 4.4 s
        # (10 s before the target's statistics are gathered), all of it changed 1.9 s
        # against 4.5 s; the whole run on DuckDB 2.1 s against 2.8 s. Elsewhere (Redshift)
        # it is written out each time.
        if self.sql.capabilities.materialized_cte:
            prefix, diff = f"WITH refload_diff AS MATERIALIZED ({joined}) ", "refload_diff"
        else:
            prefix, diff = "", f"({joined})"
        order = ", ".join(keys)
        firsts = " UNION ALL ".join(
            f"SELECT * FROM (SELECT * FROM {diff} d WHERE refload_kind = '{change}' "
            f"ORDER BY {order} LIMIT {SAMPLE_KEYS}) {q(f'first_{change}')}"
            for change in CHANGE_KINDS
        )
        ranked = (
            "SELECT f.*, c.refload_count, "
            f"ROW_NUMBER() OVER (PARTITION BY f.refload_kind ORDER BY {order}) AS refload_rank "
            f"FROM ({firsts}) f JOIN (SELECT refload_kind AS refload_counted, COUNT(*) AS "
            f"refload_count FROM {diff} d GROUP BY refload_kind) c "
            "ON c.refload_counted = f.refload_kind"
        )
        found = self.sql.query(
            f"{prefix}SELECT h.*, n.staged, r.* FROM ({head[0]}) h "
            f"CROSS JOIN (SELECT COUNT(*) AS staged FROM {q(staging)}) n "
            f"LEFT JOIN ({ranked}) r ON r.refload_rank <= {SAMPLE_KEYS} "
            "ORDER BY r.refload_kind, r.refload_rank",
            head[1],
        )
        # The head's columns, then what this query adds (as the one without a head).
        width_of_head = len(found[0]) - (len(key) + 2 * len(compared) + 4)
        rows = [row[width_of_head:] for row in found]
        counts = dict.fromkeys(CHANGE_KINDS, 0)
        samples: dict[str, list[dict[str, Any]]] = {k: [] for k in CHANGE_KINDS}
        width = len(compared)
        for row in rows:
            change = row[1]
            if change is None:  # no key changed: the one row of the staged count
                continue
            values = row[2:]
            counts[change] = int(values[len(key) + 2 * width])
            sample: dict[str, Any] = {"key": _row_dict(key, values[: len(key)])}
            if change == "changed":
                before = values[len(key) : len(key) + width]
                after = values[len(key) + width : len(key) + 2 * width]
                differing = [
                    i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a
                ][:SAMPLE_COLUMNS]
                sample["before"] = {compared[i]: _sample_value(before[i]) for i in differing}
                sample["after"] = {compared[i]: _sample_value(after[i]) for i in differing}
            samples[change].append(sample)
        changes = ChangeSet(counts["added"], counts["removed"], counts["changed"], samples)
        return changes, int(rows[0][0]), tuple(found[0][:width_of_head])

    def changes_into_new(
        self,
        target: TargetTable,
        rows: str,
        head: tuple[str, list[Any]] = ("SELECT 1 AS refload_one", []),
        staged_rows: int | None = None,
    ) -> tuple[ChangeSet, int, tuple[Any, ...]]:
        """`change_set` for a target this transaction created (so empty): every key of
        `rows` (staging, or the new target filled directly: a relation, quoted) is added,
        which needs no join with the target, only its count and its first keys (a first
        load of 1M rows: 0.3 s against 1.3 s on PostgreSQL). The count is not scanned for
        when the COPY reported it (`staged_rows`)."""
        q = self.sql.quote
        keys = ", ".join(q(k) for k in target.key)
        firsts = ", ".join(f"r.{q(k)}" for k in target.key)
        count = (
            f"SELECT {int(staged_rows)} AS staged"
            if staged_rows is not None
            else f"SELECT COUNT(*) AS staged FROM {rows}"
        )
        found = self.sql.query(
            f"SELECT h.*, n.staged, {firsts} FROM ({head[0]}) h "
            f"CROSS JOIN ({count}) n "
            f"LEFT JOIN (SELECT {keys} FROM {rows} ORDER BY {keys} "
            f"LIMIT {SAMPLE_KEYS}) r ON 1 = 1 ORDER BY {firsts}",
            head[1],
        )
        width_of_head = len(found[0]) - len(target.key) - 1
        staged = int(found[0][width_of_head])
        samples: dict[str, list[dict[str, Any]]] = {k: [] for k in CHANGE_KINDS}
        samples["added"] = [
            {"key": _row_dict(target.key, row[width_of_head + 1 :])}
            for row in found
            if staged  # else the one row of the (empty) count
        ]
        return ChangeSet(staged, 0, 0, samples), staged, tuple(found[0][:width_of_head])

    def compute_changes(
        self, replaces: bool, target: TargetTable, ref: str, staging: str, delta: str
    ) -> ChangeSet:
        """Inside the publish transaction, before the target changes: the keys this publish
        adds, removes (when the mode `replaces` the set of rows) and changes, kept in the
        temporary table `delta` (key columns and CHANGE_COLUMN) for the publish statements."""
        q = self.sql.quote
        key = target.key
        current = f"(SELECT * FROM {ref} WHERE {q(VALID_TO)} IS NULL)" if target.history else ref
        join = "FULL OUTER JOIN" if replaces else "LEFT JOIN"
        on = " AND ".join(f"s.{q(k)} = t.{q(k)}" for k in key)
        first = q(key[0])  # never null in the staged rows (ingest rejects an empty key)
        differs = [self._differs(f"s.{q(c)}", f"t.{q(c)}") for c in target.compared_columns]
        kind = (
            f"CASE WHEN s.{first} IS NULL THEN 'removed' "
            f"WHEN t.{first} IS NULL THEN 'added' ELSE 'changed' END"
        )
        keys = ", ".join(f"COALESCE(s.{q(k)}, t.{q(k)}) AS {q(k)}" for k in key)
        self.sql.execute(
            f"CREATE TEMPORARY TABLE {q(delta)} AS SELECT {keys}, {kind} AS {q(CHANGE_COLUMN)} "
            f"FROM {q(staging)} s {join} {current} t ON {on} "
            f"WHERE {' OR '.join([f's.{first} IS NULL', f't.{first} IS NULL', *differs])}"
        )
        counts = dict.fromkeys(CHANGE_KINDS, 0)
        for change, number in self.sql.query(
            f"SELECT {q(CHANGE_COLUMN)}, COUNT(*) FROM {q(delta)} GROUP BY {q(CHANGE_COLUMN)}"
        ):
            counts[change] = int(number)
        key_cols = ", ".join(f"d.{q(k)}" for k in key)
        samples: dict[str, list[dict[str, Any]]] = {}
        for change in ("added", "removed"):
            rows = (
                self.sql.query(
                    f"SELECT {key_cols} FROM {q(delta)} d WHERE d.{q(CHANGE_COLUMN)} = %s "
                    f"ORDER BY {key_cols} LIMIT {SAMPLE_KEYS}",
                    (change,),
                )
                if counts[change]
                else []
            )
            samples[change] = [{"key": _row_dict(key, row)} for row in rows]
        samples["changed"] = (
            self._changed_samples(target, current, staging, delta) if counts["changed"] else []
        )
        return ChangeSet(counts["added"], counts["removed"], counts["changed"], samples)

    def _changed_samples(
        self, target: TargetTable, current: str, staging: str, delta: str
    ) -> list[dict[str, Any]]:
        q = self.sql.quote
        key, compared = target.key, target.compared_columns
        key_cols = ", ".join(f"d.{q(k)}" for k in key)
        keys = ", ".join(q(k) for k in key)
        # The sample keys first, then the join: with ORDER BY ... LIMIT over the whole
        # join, PostgreSQL, which has no statistics on the temporary tables, walks the
        # target in key order in a nested loop against the delta (2x10^10 comparisons at
        # 100,000 changed keys of 200,000 rows), holding the target's lock meanwhile.
        sampled = (
            f"(SELECT {keys} FROM {q(delta)} WHERE {q(CHANGE_COLUMN)} = 'changed' "
            f"ORDER BY {keys} LIMIT {SAMPLE_KEYS}) d"
        )
        rows = self.sql.query(
            f"SELECT {key_cols}, "
            + ", ".join([*(f"t.{q(c)}" for c in compared), *(f"s.{q(c)}" for c in compared)])
            + f" FROM {sampled} "
            f"JOIN {q(staging)} s ON {' AND '.join(f's.{q(k)} = d.{q(k)}' for k in key)} "
            f"JOIN {current} t ON {' AND '.join(f't.{q(k)} = d.{q(k)}' for k in key)} "
            f"ORDER BY {key_cols}"
        )
        samples = []
        for row in rows:
            before = row[len(key) : len(key) + len(compared)]
            after = row[len(key) + len(compared) :]
            differing = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if b != a]
            differing = differing[:SAMPLE_COLUMNS]
            samples.append(
                {
                    "key": _row_dict(key, row[: len(key)]),
                    "before": {compared[i]: _sample_value(before[i]) for i in differing},
                    "after": {compared[i]: _sample_value(after[i]) for i in differing},
                }
            )
        return samples

    @staticmethod
    def _differs(left: str, right: str) -> str:
        # IS DISTINCT FROM spelt out: Redshift has no such operator.
        return (
            f"({left} <> {right} OR ({left} IS NULL AND {right} IS NOT NULL) "
            f"OR ({left} IS NOT NULL AND {right} IS NULL))"
        )


def _sample_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return str(value)[:SAMPLE_VALUE_CHARS]


def _row_dict(names: list[str], row: Sequence[Any]) -> dict[str, Any]:
    return {n: _sample_value(v) for n, v in zip(names, row, strict=True)}
