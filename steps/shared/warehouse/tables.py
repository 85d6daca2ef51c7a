"""The target table as a config defines it, and declared types compared across dialects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from steps.shared.warehouse.modes.scd2 import HISTORY_COLUMNS

if TYPE_CHECKING:
    from steps.shared.mapping.sheet import Mapping


class _CreatedConcurrently(Exception):
    """The publish transaction lost a race to create the target; it was rolled back."""


@dataclass(frozen=True)
class TargetTable:
    """The table a config publishes into, as the mapping sheet defines it."""

    schema: str
    name: str
    mapping: Mapping
    key: list[str] = field(default_factory=list)
    sort_key: list[str] | None = None
    dist_key: str | None = None
    allow_new_columns: bool = False
    # scd2: the table keeps every version, with `valid_from` / `valid_to` (HISTORY_COLUMNS).
    history: bool = False

    @property
    def compared_columns(self) -> list[str]:
        """The columns whose change makes a changed key: all but the key and the derived
        columns whose default is a placeholder (load date, run id, source key), which
        differ on every load without the data changing."""
        from steps.shared.mapping.sheet import PLACEHOLDERS

        return [
            c.target
            for c in self.mapping.columns
            if c.target not in self.key
            and not (c.derived and c.default and any(p in c.default for p in PLACEHOLDERS))
        ]


_TYPE_FAMILIES = {
    "character varying": "varchar",
    "varchar": "varchar",
    "text": "varchar",
    "character": "varchar",
    "smallint": "smallint",
    "int2": "smallint",
    "integer": "integer",
    "int": "integer",
    "int4": "integer",
    "bigint": "bigint",
    "int8": "bigint",
    "numeric": "decimal",
    "decimal": "decimal",
    "double precision": "double",
    "double": "double",
    "float8": "double",
    "boolean": "boolean",
    "bool": "boolean",
    "date": "date",
    "timestamp without time zone": "timestamp",
    "timestamp": "timestamp",
}


def type_signature(
    data_type: str, length: Any = None, precision: Any = None, scale: Any = None
) -> str:
    """A declared type as one comparable string across dialects: varchar(5), decimal(9,4)."""
    text = data_type.strip().lower()
    base, _, args = text.partition("(")
    family = _TYPE_FAMILIES.get(base.strip(), base.strip())
    numbers = [a.strip() for a in args.rstrip(")").split(",") if a.strip()]
    if family == "varchar":
        size = length or (numbers[0] if numbers else None)
        return f"varchar({size})" if size else "varchar"
    if family == "decimal":
        if numbers:
            precision, scale = numbers[0], numbers[1] if len(numbers) > 1 else 0
        return f"decimal({precision},{scale})" if precision is not None else "decimal"
    return family


def _same_type(declared: str, wanted: str) -> bool:
    # DuckDB does not keep VARCHAR lengths; an unbounded side matches any length.
    if declared.startswith("varchar") and wanted.startswith("varchar"):
        return "(" not in declared or "(" not in wanted or declared == wanted
    return declared == wanted


def column_count_problem(count: int, history: bool, dialect: str, limit: int) -> str:
    """The message for a mapping with more columns than a warehouse allows in a table."""
    extra = f" (with {', '.join(HISTORY_COLUMNS)} of load_mode scd2)" if history else ""
    return (
        f"the table would have {count:,} columns{extra}; {dialect} allows at most {limit:,}: "
        "split the table or leave columns out of the mapping sheet"
    )
