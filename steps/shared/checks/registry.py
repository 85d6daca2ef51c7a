"""Data-quality checks: one `CheckType` (config model and function) per check type, in one
plain registry (`CHECKS`).

Each check runs SQL shared by every dialect (the dialect supplies the few
expressions that differ) and returns a result with status, observed and
expected values and up to SAMPLE_ROWS failing rows. The functions live by what they
read: `counts` (row counts, changes), `columns` (column values), `custom_sql`; this
module runs them, counting what they ask of the target in one pass first.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import replace
from typing import Any

from steps.shared.checks.columns import (
    AcceptedValues,
    MaxLength,
    NotNull,
    Range,
    ReferentialIntegrity,
    Regex,
    Uniqueness,
    accepted_values,
    max_length,
    not_null,
    range_check,
    referential_integrity,
    regex,
    uniqueness,
)
from steps.shared.checks.context import CheckContext, check_result
from steps.shared.checks.counts import (
    ChangesWithin,
    RowCountBetween,
    RowCountChange,
    RowCountMatch,
    changes_within,
    row_count_between,
    row_count_change,
    row_count_match,
)
from steps.shared.checks.custom_sql import CustomSql, custom_sql
from steps.shared.checks.models import CheckType
from steps.shared.checks.status import passed
from steps.shared.errors import ConfigError, RefloadError

# The one list of check types: the config's `quality_tests` union is built from it
# (steps.shared.config.model), in this order.
CHECKS: dict[str, CheckType] = {
    "row_count_match": CheckType(RowCountMatch, row_count_match),
    "row_count_between": CheckType(RowCountBetween, row_count_between),
    "row_count_change": CheckType(RowCountChange, row_count_change),
    "uniqueness": CheckType(Uniqueness, uniqueness),
    "not_null": CheckType(NotNull, not_null),
    "accepted_values": CheckType(AcceptedValues, accepted_values),
    "range": CheckType(Range, range_check),
    "regex": CheckType(Regex, regex),
    "max_length": CheckType(MaxLength, max_length),
    "referential_integrity": CheckType(ReferentialIntegrity, referential_integrity),
    "custom_sql": CheckType(CustomSql, custom_sql),
    "changes_within": CheckType(ChangesWithin, changes_within),
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
                CHECKS[test.type].run(recorder, test)
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
    return [c for c in checks if c["severity"] == "error" and not passed(c)]


def run_check(ctx: CheckContext, test: Any) -> dict[str, Any]:
    """Run one test; a test whose SQL fails is status 'error', never a crash."""
    check = CHECKS.get(test.type)
    if check is None:  # a model without a function: an error row, not a crashed step
        return errored(test, f"no check runs '{test.type}'")
    try:
        result = check.run(ctx, test)
    except ConfigError:
        raise
    except RefloadError as error:
        return errored(test, error.message)
    return {"name": test.test_name, "type": test.type, "severity": test.severity, **result}


def errored(test: Any, message: str) -> dict[str, Any]:
    """The result of a test that could not run."""
    head = {"name": test.test_name, "type": test.type, "severity": test.severity}
    return {**head, **check_result("error", None, None, error=message)}
