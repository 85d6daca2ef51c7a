"""Data-quality checks: one function per check type, in one plain registry.

Each check runs SQL shared by every dialect (the dialect supplies the few
expressions that differ) and returns a result with status, observed and
expected values and up to SAMPLE_ROWS failing rows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from itertools import zip_longest
from typing import Any

from steps.shared.config import model as cfg
from steps.shared.errors import ConfigError, RefloadError
from steps.shared.warehouse.base import CHANGE_KINDS, ChangeSet, Warehouse
from steps.shared.warehouse.modes import MODES

SAMPLE_ROWS = 10
SAMPLES_NOT_STORED = "sample rows not stored: set store_samples to keep them"
CUSTOM_SQL_TIMEOUT_SECONDS = 120
UNEXPECTED_VALUES_SHOWN = 5  # accepted_values names this many, then "and K more"


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
    # What `scan_target` counted in its one pass, by what `_count` / `_duplicates` ask.
    scanned: dict[tuple[Any, ...], int] | None = None
    # While `scan_target` collects what the tests will ask: the questions, nothing run.
    asked: list[tuple[Any, ...]] | None = None
    primary_key: tuple[str, ...] = ()  # ingest refused a repeated or empty one

    @property
    def schema_and_table(self) -> tuple[str, str]:
        # `table` (else `target`) is quoted "schema"."table" of validated, quote-free names.
        schema, _, table = (self.table or self.target).partition(".")
        return schema.strip('"'), table.strip('"')


def _result(
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


def _samples(ctx: CheckContext, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    names, rows = ctx.warehouse.query_with_names(f"{sql} LIMIT {SAMPLE_ROWS}", params)
    return [{n: _jsonable(v) for n, v in zip(names, row, strict=True)} for row in rows]


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _count(ctx: CheckContext, where: str = "", params: tuple[Any, ...] = ()) -> int:
    question = ("rows", where.removeprefix("WHERE "), params)
    if ctx.asked is not None:
        ctx.asked.append(question)
        return 0
    if ctx.scanned and question in ctx.scanned:
        return ctx.scanned[question]
    return int(ctx.warehouse.scalar(f"SELECT COUNT(*) FROM {ctx.target} {where}", params))


def _duplicates(ctx: CheckContext, cols: str, grouped: str) -> int:
    """Key values that occur more than once (`grouped` lists them)."""
    question = ("duplicates", cols)
    if ctx.asked is not None:
        ctx.asked.append(question)
        return 0
    if ctx.scanned and question in ctx.scanned:
        return ctx.scanned[question]
    return int(ctx.warehouse.scalar(f"SELECT COUNT(*) FROM ({grouped}) d"))


def _missing(what: str) -> dict[str, Any]:
    """A test this payload cannot run: say so, rather than compare against nothing."""
    return _result(
        "error", None, None, error=f"the payload has no {what}: re-run from load to run this test"
    )


def row_count_match(ctx: CheckContext, test: cfg.RowCountMatch) -> dict[str, Any]:
    replaces = MODES[ctx.load_mode].replaces
    if ctx.rows_written is None:
        return _missing("rows_written (rows ingest wrote)")
    if not replaces and ctx.rows_loaded is None:
        return _missing("rows_loaded (rows load published)")
    if not replaces and ctx.published is False:
        # Append and upsert compare this load's published rows: a skipped replay published
        # none, and its rows are in the target from the file's first publish.
        return _result(
            "pass",
            0,
            ctx.rows_written,
            note="nothing was published: the file is already in the target",
        )
    expected = ctx.rows_written
    observed = _count(ctx) if replaces else (ctx.rows_loaded or 0)
    allowed = expected * test.tolerance_pct / 100
    status = "pass" if abs(observed - expected) <= allowed else "fail"
    return _result(status, observed, expected, tolerance_pct=test.tolerance_pct)


def row_count_between(ctx: CheckContext, test: cfg.RowCountBetween) -> dict[str, Any]:
    observed = _count(ctx)
    ok = (test.min is None or observed >= test.min) and (test.max is None or observed <= test.max)
    return _result("pass" if ok else "fail", observed, f"between {test.min} and {test.max}")


def row_count_change(ctx: CheckContext, test: cfg.RowCountChange) -> dict[str, Any]:
    if ctx.rows_before is None:
        return _missing("rows_before (target rows before load)")
    observed = _count(ctx)
    before = ctx.rows_before
    if before == 0:
        return _result("pass", observed, f"change <= {test.max_pct}%", note="first load")
    change = abs(observed - before) * 100 / before
    return _result(
        "pass" if change <= test.max_pct else "fail",
        f"{change:.2f}%",
        f"<= {test.max_pct}%",
        rows_before=before,
        rows_after=observed,
    )


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


def uniqueness(ctx: CheckContext, test: cfg.Uniqueness) -> dict[str, Any]:
    if _unique_by_ingest(ctx, test.columns):
        return _result(
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
    observed = _duplicates(ctx, cols, grouped)
    samples = _samples(ctx, f"{grouped} ORDER BY occurrences DESC") if observed else []
    return _result(
        "pass" if observed == 0 else "fail",
        observed,
        0,
        samples,
        meaning="key values that occur more than once",
    )


def not_null(ctx: CheckContext, test: cfg.NotNull) -> dict[str, Any]:
    where = "WHERE " + " OR ".join(f"{ctx.warehouse.quote(c)} IS NULL" for c in test.columns)
    observed = _count(ctx, where)
    samples = _samples(ctx, f"SELECT * FROM {ctx.target} {where}") if observed else []
    return _result("pass" if observed == 0 else "fail", observed, 0, samples)


def _rows_where(
    ctx: CheckContext, where: str, params: tuple[Any, ...], expected: Any
) -> dict[str, Any]:
    observed = _count(ctx, f"WHERE {where}", params)
    samples = _samples(ctx, f"SELECT * FROM {ctx.target} WHERE {where}", params) if observed else []
    return _result("pass" if observed == 0 else "fail", observed, expected, samples)


def accepted_values(ctx: CheckContext, test: cfg.AcceptedValues) -> dict[str, Any]:
    # Compared as the column's type, not as text: on decimal(9,2), 1.5 is the stored 1.50.
    column = ctx.warehouse.quote(test.column)
    cast = _cast_type(ctx, test.column)
    mark = f"CAST(%s AS {cast})" if cast else "%s"
    values = tuple(_param_text(v) for v in test.values)
    where = f"{column} IS NOT NULL AND {column} NOT IN ({', '.join([mark] * len(values))})"
    expected = f"one of {list(test.values)}"
    # Counted in the one-pass scan: a passing test costs no statement of its own.
    if _count(ctx, f"WHERE {where}", values) == 0:
        return _result("pass", 0, expected)
    # The unexpected values with their counts, most rows first: `ZA (151 rows)` says what
    # to add to the list or ask the vendor about; a row count alone does not.
    found = ctx.warehouse.query(
        f"SELECT {column}, COUNT(*), COUNT(*) OVER (), SUM(COUNT(*)) OVER () "
        f"FROM {ctx.target} WHERE {where} GROUP BY {column} ORDER BY 2 DESC, 1 "
        f"LIMIT {UNEXPECTED_VALUES_SHOWN}",
        values,
    )
    if not found:
        return _result("pass", 0, expected)
    kinds, total = int(found[0][2]), int(found[0][3])
    shown = [_value_count(value, int(n)) for value, n, _, _ in found]
    listed = sum(int(n) for _, n, _, _ in found)
    more = (
        f" and {kinds - len(found):,} more ({_rows(total - listed)})" if kinds > len(found) else ""
    )
    samples = _samples(ctx, f"SELECT * FROM {ctx.target} WHERE {where}", values)
    return _result(
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
    text = str(_jsonable(value))
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


def range_check(ctx: CheckContext, test: cfg.Range) -> dict[str, Any]:
    column = ctx.warehouse.quote(test.column)
    parts, params = [], []
    if test.min is not None:
        parts.append(f"{column} < %s")
        params.append(test.min)
    if test.max is not None:
        parts.append(f"{column} > %s")
        params.append(test.max)
    if not parts:
        return _result("pass", 0, "no bounds given")
    return _rows_where(ctx, " OR ".join(parts), tuple(params), f"between {test.min} and {test.max}")


def regex(ctx: CheckContext, test: cfg.Regex) -> dict[str, Any]:
    column = ctx.warehouse.quote(test.column)
    where = f"{column} IS NOT NULL AND {ctx.warehouse.regex_mismatch(column)}"
    return _rows_where(ctx, where, (test.pattern,), f"matches {test.pattern}")


def max_length(ctx: CheckContext, test: cfg.MaxLength) -> dict[str, Any]:
    column = ctx.warehouse.quote(test.column)
    where = f"{ctx.warehouse.byte_length(column)} > {int(test.bytes)}"
    return _rows_where(ctx, where, (), f"<= {test.bytes} bytes")


def referential_integrity(ctx: CheckContext, test: cfg.ReferentialIntegrity) -> dict[str, Any]:
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
    samples = _samples(ctx, orphans) if observed else []
    return _result(
        "pass" if observed == 0 else "fail", observed, 0, samples, ref_table=test.ref_table
    )


def custom_sql(ctx: CheckContext, test: cfg.CustomSql) -> dict[str, Any]:
    from steps.shared.checks.sql import render_custom_sql

    schema, table = ctx.schema_and_table
    sql = render_custom_sql(test.sql, ctx.warehouse.dialect, schema, table)
    # The query may read any table the warehouse user can: what it returns is kept
    # (audit row, alert) only when the config asks for it.
    keep = test.store_samples
    with ctx.warehouse.read_only(CUSTOM_SQL_TIMEOUT_SECONDS):
        observed = int(ctx.warehouse.scalar(f"SELECT COUNT(*) FROM ({sql}) failing"))
        samples = _samples(ctx, f"SELECT * FROM ({sql}) failing") if observed and keep else []
    note = {"note": SAMPLES_NOT_STORED} if observed and not keep else {}
    return _result("pass" if observed == 0 else "fail", observed, 0, samples, **note)


def refuse_unsafe_gates(config: cfg.TableConfig, warehouse: Warehouse, config_uri: str) -> None:
    """Before anything is staged: before-publish custom SQL needs a warehouse that can keep
    it read-only inside the publish transaction (see `Warehouse.user_sql_in_publish`)."""
    if warehouse.user_sql_in_publish:
        return
    for index, test in enumerate(config.quality_tests):
        if test.type == "custom_sql" and test.when == "before_publish":
            raise ConfigError(
                f"custom_sql cannot run before_publish on {warehouse.dialect}: it has no "
                "savepoints to keep the query read-only inside the publish transaction; "
                'use "when": "after_publish"',
                file=config_uri,
                key=f"quality_tests[{index}] ({test.test_name})",
            )


def changes_within(ctx: CheckContext, test: cfg.ChangesWithin) -> dict[str, Any]:
    limits = {
        "added": test.max_added_pct,
        "removed": test.max_removed_pct,
        "changed": test.max_changed_pct,
    }
    expected = ", ".join(f"{k} <= {v}%" for k, v in limits.items() if v is not None) or "any"
    changes, before = ctx.changes, ctx.rows_before or 0
    if changes is None:
        return _result("pass", "no change set", expected, note="nothing was published")
    counts = changes.counts()
    if before == 0:
        # Counts, as a later load shows them (no share: there was nothing to compare with).
        observed = "first load: " + ", ".join(f"{k} {counts[k]:,}" for k in CHANGE_KINDS)
        return _result("pass", observed, expected, note="first load", changes=counts)
    share = {kind: counts[kind] * 100 / before for kind in CHANGE_KINDS}
    over = [k for k in CHANGE_KINDS if limits[k] is not None and share[k] > limits[k]]  # type: ignore[operator]
    observed = ", ".join(f"{k} {counts[k]} ({share[k]:.2f}%)" for k in CHANGE_KINDS)
    # An alert shows the first few samples: one of each kind in turn, so every kind is
    # seen, the kinds over their limit first and changed keys (with their values) first.
    shown = sorted(CHANGE_KINDS, key=lambda k: (k not in over, k != "changed", k))
    by_kind = [[_change_row(kind, s) for s in changes.samples.get(kind, [])] for kind in shown]
    samples = [row for turn in zip_longest(*by_kind) for row in turn if row is not None]
    return _result(
        "fail" if over else "pass",
        observed,
        expected,
        samples[:SAMPLE_ROWS] if over else [],
        rows_before=before,
        over_limit=over,
        changes=counts,
    )


def _change_row(kind: str, sample: dict[str, Any]) -> dict[str, Any]:
    """A sample key as one flat row (alerts and the state show flat rows):
    {"change": "changed", "code": "BB", "name before": "Beta", "name after": "Bravo"}."""
    row = {"change": kind, **sample["key"]}
    for column, value in sample.get("before", {}).items():
        row[f"{column} before"] = value
        row[f"{column} after"] = sample["after"][column]
    return row


CHECKS: dict[str, Callable[[CheckContext, Any], dict[str, Any]]] = {
    "row_count_match": row_count_match,
    "row_count_between": row_count_between,
    "row_count_change": row_count_change,
    "uniqueness": uniqueness,
    "not_null": not_null,
    "accepted_values": accepted_values,
    "range": range_check,
    "regex": regex,
    "max_length": max_length,
    "referential_integrity": referential_integrity,
    "custom_sql": custom_sql,
    "changes_within": changes_within,
}


# Tests whose query counts rows of the target: `scan_target` counts them all in one pass.
SCANNED = frozenset(
    {
        "row_count_match",
        "row_count_between",
        "row_count_change",
        "uniqueness",
        "not_null",
        "accepted_values",
        "range",
        "regex",
        "max_length",
    }
)


def scan_target(ctx: CheckContext, tests: list[Any]) -> None:
    """Count what these tests ask of the target in ONE query (one pass, many aggregates),
    for `run_check` to read from `ctx.scanned`; a failing test still reads its sample
    rows on its own. Outside a transaction only: a scan that fails (a bad pattern, say)
    then costs nothing, and each test runs, and errs, on its own as before."""
    if ctx.warehouse.in_transaction:
        return
    asked: list[tuple[Any, ...]] = []
    recorder = replace(ctx, asked=asked)
    for test in tests:
        if test.type in SCANNED:
            with suppress(RefloadError):
                CHECKS[test.type](recorder, test)
    questions = list(dict.fromkeys(asked))
    if not questions:
        return
    q = ctx.warehouse.quote
    sums: list[str] = []
    windows: list[str] = []
    params: list[Any] = []
    for question in questions:
        if question[0] == "rows" and not question[1]:
            sums.append("COUNT(*)")
        elif question[0] == "rows":
            sums.append(f"COALESCE(SUM(CASE WHEN {question[1]} THEN 1 ELSE 0 END), 0)")
            params.extend(question[2])
        else:  # duplicates: rows ranked within their key value
            n, first = q(f"refload_n{len(windows)}"), q(f"refload_r{len(windows)}")
            cols = question[1]
            windows.append(
                f"COUNT(*) OVER (PARTITION BY {cols}) AS {n}, "
                f"ROW_NUMBER() OVER (PARTITION BY {cols} ORDER BY {cols}) AS {first}"
            )
            sums.append(f"COALESCE(SUM(CASE WHEN {n} > 1 AND {first} = 1 THEN 1 ELSE 0 END), 0)")
    source = ctx.target
    if windows:
        source = f"(SELECT *, {', '.join(windows)} FROM {ctx.target}) refload_scan"
    try:
        row = ctx.warehouse.query(f"SELECT {', '.join(sums)} FROM {source}", params)[0]
    except RefloadError:
        return
    ctx.scanned = {question: int(value) for question, value in zip(questions, row, strict=True)}


def failed_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Error-severity tests that did not pass: these fail the run."""
    return [c for c in checks if c["severity"] == "error" and c["status"] != "pass"]


def run_check(ctx: CheckContext, test: Any) -> dict[str, Any]:
    """Run one test; a test whose SQL fails is status 'error', never a crash."""
    check = CHECKS.get(test.type)
    if check is None:  # a model without a function: an error row, not a crashed step
        return errored(test, f"no check runs '{test.type}'")
    try:
        result = check(ctx, test)
    except ConfigError:
        raise
    except RefloadError as error:
        return errored(test, error.message)
    return {"name": test.test_name, "type": test.type, "severity": test.severity, **result}


def errored(test: Any, message: str) -> dict[str, Any]:
    """The result of a test that could not run."""
    head = {"name": test.test_name, "type": test.type, "severity": test.severity}
    return {**head, **_result("error", None, None, error=message)}
