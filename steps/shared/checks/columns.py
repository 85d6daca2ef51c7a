"""Checks on columns' values: `uniqueness`, `not_null`, `accepted_values`, `range`, `regex`,
`max_length`, and `referential_integrity` (the values present in another table)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from steps.shared.checks.context import (
    CheckContext,
    check_result,
    count_duplicates,
    count_rows,
    jsonable,
    sample_rows,
)
from steps.shared.checks.models import ColumnsTest, ColumnTest, identifier, table_reference

UNEXPECTED_VALUES_SHOWN = 5  # accepted_values names this many, then "and K more"


class Uniqueness(ColumnsTest):
    type: Literal["uniqueness"]


class NotNull(ColumnsTest):
    type: Literal["not_null"]


class AcceptedValues(ColumnTest):
    type: Literal["accepted_values"]
    values: list[str | int | float | bool] = Field(min_length=1)


class Range(ColumnTest):
    type: Literal["range"]
    min: float | int | str | None = None
    max: float | int | str | None = None


class Regex(ColumnTest):
    type: Literal["regex"]
    pattern: str


class MaxLength(ColumnTest):
    type: Literal["max_length"]
    bytes: int = Field(gt=0)


class ReferentialIntegrity(ColumnsTest):
    type: Literal["referential_integrity"]
    ref_table: str
    ref_columns: list[str] = Field(min_length=1)

    @field_validator("ref_table")
    @classmethod
    def _check_ref_table(cls, value: str) -> str:
        return table_reference(value)

    @field_validator("ref_columns")
    @classmethod
    def _check_ref_columns(cls, value: list[str]) -> list[str]:
        return [identifier(c) for c in value]

    @model_validator(mode="after")
    def _same_arity(self) -> ReferentialIntegrity:
        if len(self.columns) != len(self.ref_columns):
            raise ValueError("columns and ref_columns must have the same length")
        return self


def _unique_by_ingest(ctx: CheckContext, columns: list[str]) -> bool:
    """The columns hold the primary key, and this run replaced the table with rows whose
    keys ingest found unique and non-empty: no scan can find a repeat (1M rows: ~0.7 s on
    PostgreSQL, the largest of a run's checks)."""
    return (
        ctx.load_mode == "truncate"
        and ctx.published is True
        and bool(ctx.primary_key)
        and set(ctx.primary_key) <= set(columns)
    )


def uniqueness(ctx: CheckContext, test: Uniqueness) -> dict[str, Any]:
    if _unique_by_ingest(ctx, test.columns):
        return check_result(
            "pass",
            0,
            0,
            meaning="key values that occur more than once",
            known_from="ingest: the primary key is unique, and this run replaced the table",
        )
    cols = ", ".join(ctx.warehouse.quote(c) for c in test.columns)
    grouped = (
        f"SELECT {cols}, COUNT(*) AS occurrences FROM {ctx.target} "
        f"GROUP BY {cols} HAVING COUNT(*) > 1"
    )
    observed = count_duplicates(ctx, cols, grouped)
    samples = sample_rows(ctx, f"{grouped} ORDER BY occurrences DESC") if observed else []
    return check_result(
        "pass" if observed == 0 else "fail",
        observed,
        0,
        samples,
        meaning="key values that occur more than once",
    )


def not_null(ctx: CheckContext, test: NotNull) -> dict[str, Any]:
    where = "WHERE " + " OR ".join(f"{ctx.warehouse.quote(c)} IS NULL" for c in test.columns)
    observed = count_rows(ctx, where)
    samples = sample_rows(ctx, f"SELECT * FROM {ctx.target} {where}") if observed else []
    return check_result("pass" if observed == 0 else "fail", observed, 0, samples)


def _rows_where(
    ctx: CheckContext, where: str, params: tuple[Any, ...], expected: Any
) -> dict[str, Any]:
    observed = count_rows(ctx, f"WHERE {where}", params)
    samples = (
        sample_rows(ctx, f"SELECT * FROM {ctx.target} WHERE {where}", params) if observed else []
    )
    return check_result("pass" if observed == 0 else "fail", observed, expected, samples)


def accepted_values(ctx: CheckContext, test: AcceptedValues) -> dict[str, Any]:
    # Compared as the column's type, not as text: on decimal(9,2), 1.5 is the stored 1.50.
    column = ctx.warehouse.quote(test.column)
    cast = _cast_type(ctx, test.column)
    mark = f"CAST(%s AS {cast})" if cast else "%s"
    values = tuple(_param_text(v) for v in test.values)
    where = f"{column} IS NOT NULL AND {column} NOT IN ({', '.join([mark] * len(values))})"
    expected = f"one of {list(test.values)}"
    # Counted in the one-pass scan: a passing test costs no statement of its own.
    if count_rows(ctx, f"WHERE {where}", values) == 0:
        return check_result("pass", 0, expected)
    # The unexpected values with their counts, most rows first: `ZA (151 rows)` says what
    # to add to the list or ask the vendor about; a row count alone does not.
    found = ctx.warehouse.query(
        f"SELECT {column}, COUNT(*), COUNT(*) OVER (), SUM(COUNT(*)) OVER () "
        f"FROM {ctx.target} WHERE {where} GROUP BY {column} ORDER BY 2 DESC, 1 "
        f"LIMIT {UNEXPECTED_VALUES_SHOWN}",
        values,
    )
    if not found:
        return check_result("pass", 0, expected)
    kinds, total = int(found[0][2]), int(found[0][3])
    shown = [_value_count(value, int(n)) for value, n, _, _ in found]
    listed = sum(int(n) for _, n, _, _ in found)
    more = (
        f" and {kinds - len(found):,} more ({_rows(total - listed)})" if kinds > len(found) else ""
    )
    samples = sample_rows(ctx, f"SELECT * FROM {ctx.target} WHERE {where}", values)
    return check_result(
        "fail",
        f"unexpected values: {', '.join(shown)}{more}",
        expected,
        samples,
        failing_rows=total,
        unexpected_values=kinds,
    )


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


def _value_count(value: Any, count: int) -> str:
    text = str(jsonable(value))
    if len(text) > 40:  # a long value is named by its start: the audit column is bounded
        text = text[:39] + "…"
    return f"{text} ({_rows(count)})"


def _cast_type(ctx: CheckContext, column: str) -> str | None:
    """The SQL type to bind a config value as, to compare with `column`; None for text."""
    declared = ctx.warehouse.table_columns(*ctx.schema_and_table).get(column, "varchar")
    if declared.startswith("varchar"):
        return None
    if declared.startswith("decimal"):
        return declared.upper()
    return ctx.warehouse.TYPE_NAMES.get(declared, declared.upper())


def _param_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def range_check(ctx: CheckContext, test: Range) -> dict[str, Any]:
    column = ctx.warehouse.quote(test.column)
    parts, params = [], []
    if test.min is not None:
        parts.append(f"{column} < %s")
        params.append(test.min)
    if test.max is not None:
        parts.append(f"{column} > %s")
        params.append(test.max)
    if not parts:
        return check_result("pass", 0, "no bounds given")
    return _rows_where(ctx, " OR ".join(parts), tuple(params), f"between {test.min} and {test.max}")


def regex(ctx: CheckContext, test: Regex) -> dict[str, Any]:
    column = ctx.warehouse.quote(test.column)
    where = f"{column} IS NOT NULL AND {ctx.warehouse.regex_mismatch(column)}"
    return _rows_where(ctx, where, (test.pattern,), f"matches {test.pattern}")


def max_length(ctx: CheckContext, test: MaxLength) -> dict[str, Any]:
    column = ctx.warehouse.quote(test.column)
    where = f"{ctx.warehouse.byte_length(column)} > {int(test.bytes)}"
    return _rows_where(ctx, where, (), f"<= {test.bytes} bytes")


def referential_integrity(ctx: CheckContext, test: ReferentialIntegrity) -> dict[str, Any]:
    q = ctx.warehouse.quote
    ref = ctx.warehouse.table_ref(test.ref_table)
    join = " AND ".join(
        f"c.{q(a)} = r.{q(b)}" for a, b in zip(test.columns, test.ref_columns, strict=True)
    )
    present = " AND ".join(f"c.{q(a)} IS NOT NULL" for a in test.columns)
    orphans = (
        f"SELECT c.* FROM (SELECT * FROM {ctx.target}) c LEFT JOIN {ref} r ON {join} "
        f"WHERE {present} AND r.{q(test.ref_columns[0])} IS NULL"
    )
    observed = int(ctx.warehouse.scalar(f"SELECT COUNT(*) FROM ({orphans}) o"))
    samples = sample_rows(ctx, orphans) if observed else []
    return check_result(
        "pass" if observed == 0 else "fail", observed, 0, samples, ref_table=test.ref_table
    )
