"""What every check reads and returns: the context (`CheckContext`), the result shape, sample
rows, and the counts the one-pass scan (`registry.scan_target`) answers in advance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the config imports the checks' models: it stays clear of the warehouse
    from steps.shared.warehouse.audit_learned import PastPublish
    from steps.shared.warehouse.base import ChangeSet, Warehouse

SAMPLE_ROWS = 10


@dataclass
class CheckContext:
    warehouse: Warehouse
    # What the checks read: quoted schema.table, or for scd2 its current rows (a subquery
    # with an alias, `Warehouse.current_rows`).
    target: str
    rows_written: int | None  # rows ingest wrote
    rows_loaded: int | None  # rows this load published
    rows_before: int | None  # target rows before this load (scd2: current rows)
    load_mode: str
    changes: ChangeSet | None = None  # this publish's change set (tables with a primary key)
    table: str = ""  # quoted schema.table, every version of scd2 (custom_sql's {table})
    published: bool | None = None  # False: a replay the ledger skipped (nothing published)
    # What `scan_target` counted in its one pass, by what `count_rows` / `count_duplicates` ask.
    scanned: dict[tuple[Any, ...], int] | None = None
    # While `scan_target` collects what the tests will ask: the questions, nothing run.
    asked: list[tuple[Any, ...]] | None = None
    primary_key: tuple[str, ...] = ()  # ingest refused a repeated or empty one
    # The target's recent publishes, read only when a test learns its bounds (`learned`).
    history: list[PastPublish] | None = None

    @property
    def schema_and_table(self) -> tuple[str, str]:
        # `table` (else `target`) is quoted "schema"."table" of validated, quote-free names.
        schema, _, table = (self.table or self.target).partition(".")
        return schema.strip('"'), table.strip('"')


def check_result(
    status: str,
    observed: Any,
    expected: Any,
    samples: list[dict[str, Any]] | None = None,
    **details: Any,
) -> dict[str, Any]:
    return {
        "status": status,
        "observed": observed,
        "expected": expected,
        "details": {**details, "sample_rows": samples or []},
    }


def sample_rows(ctx: CheckContext, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    names, rows = ctx.warehouse.query_with_names(f"{sql} LIMIT {SAMPLE_ROWS}", params)
    return [{n: jsonable(v) for n, v in zip(names, row, strict=True)} for row in rows]


def jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def count_rows(ctx: CheckContext, where: str = "", params: tuple[Any, ...] = ()) -> int:
    question = ("rows", where.removeprefix("WHERE "), params)
    if ctx.asked is not None:
        ctx.asked.append(question)
        return 0
    if ctx.scanned and question in ctx.scanned:
        return ctx.scanned[question]
    return int(ctx.warehouse.scalar(f"SELECT COUNT(*) FROM {ctx.target} {where}", params))


def count_duplicates(ctx: CheckContext, cols: str, grouped: str) -> int:
    """Key values that occur more than once (`grouped` lists them)."""
    question = ("duplicates", cols)
    if ctx.asked is not None:
        ctx.asked.append(question)
        return 0
    if ctx.scanned and question in ctx.scanned:
        return ctx.scanned[question]
    return int(ctx.warehouse.scalar(f"SELECT COUNT(*) FROM ({grouped}) d"))


def missing(what: str) -> dict[str, Any]:
    """A test this payload cannot run: say so, rather than compare against nothing."""
    return check_result(
        "error", None, None, error=f"the payload has no {what}: re-run from load to run this test"
    )
