"""Checks on row counts: `row_count_match`, `row_count_between`, `row_count_change`, and
`changes_within` (this publish's added, removed and changed keys)."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any, Literal

from pydantic import Field, model_validator

from steps.shared.checks.context import (
    SAMPLE_ROWS,
    CheckContext,
    check_result,
    count_rows,
    missing,
)
from steps.shared.checks.models import QualityTest
from steps.shared.warehouse.modes import MODES


class RowCountMatch(QualityTest):
    type: Literal["row_count_match"]
    tolerance_pct: float = Field(default=0, ge=0)


class RowCountBetween(QualityTest):
    type: Literal["row_count_between"]
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class RowCountChange(QualityTest):
    type: Literal["row_count_change"]
    max_pct: float | None = Field(
        default=None,
        ge=0,
        description="Largest change of the row count, in percent of the rows before. With "
        "`auto`, a cap the learned bounds never exceed.",
    )
    auto: bool = Field(
        default=False,
        strict=True,  # "yes" or 1 read as true would learn bounds nobody asked for
        description="Learn the usual change from the table's last 30 publishes "
        "(steps.shared.checks.learned); `learning` (passes) before 5.",
    )

    @model_validator(mode="after")
    def _bounded(self) -> RowCountChange:
        if self.max_pct is None and not self.auto:
            raise ValueError("needs max_pct, auto: true, or both (max_pct then caps auto)")
        return self


class ChangesWithin(QualityTest):
    type: Literal["changes_within"]
    max_added_pct: float | None = Field(default=None, ge=0)
    max_removed_pct: float | None = Field(default=None, ge=0)
    max_changed_pct: float | None = Field(default=None, ge=0)
    auto: bool = Field(
        default=False,
        strict=True,
        description="Learn each kind's usual share from the table's last 30 publishes; a "
        "max_*_pct set beside it caps that kind's learned bound.",
    )


def row_count_match(ctx: CheckContext, test: RowCountMatch) -> dict[str, Any]:
    replaces = MODES[ctx.load_mode].replaces
    if ctx.rows_written is None:
        return missing("rows_written (rows ingest wrote)")
    if not replaces and ctx.rows_loaded is None:
        return missing("rows_loaded (rows load published)")
    if not replaces and ctx.published is False:
        # Append and upsert compare this load's published rows: a skipped replay published
        # none, and its rows are in the target from the file's first publish.
        return check_result(
            "pass",
            0,
            ctx.rows_written,
            note="nothing was published: the file is already in the target",
        )
    expected = ctx.rows_written
    observed = count_rows(ctx) if replaces else (ctx.rows_loaded or 0)
    allowed = expected * test.tolerance_pct / 100
    status = "pass" if abs(observed - expected) <= allowed else "fail"
    return check_result(status, observed, expected, tolerance_pct=test.tolerance_pct)


def row_count_between(ctx: CheckContext, test: RowCountBetween) -> dict[str, Any]:
    observed = count_rows(ctx)
    ok = (test.min is None or observed >= test.min) and (test.max is None or observed <= test.max)
    return check_result("pass" if ok else "fail", observed, f"between {test.min} and {test.max}")


def row_count_change(ctx: CheckContext, test: RowCountChange) -> dict[str, Any]:
    if test.auto:
        from steps.shared.checks import learned  # here: the config imports this module

        return learned.row_count_change(ctx, test)
    assert test.max_pct is not None  # the model wants max_pct without auto
    if ctx.rows_before is None:
        return missing("rows_before (target rows before load)")
    observed = count_rows(ctx)
    before = ctx.rows_before
    if before == 0:
        return check_result("pass", observed, f"change <= {test.max_pct}%", note="first load")
    change = abs(observed - before) * 100 / before
    return check_result(
        "pass" if change <= test.max_pct else "fail",
        f"{change:.2f}%",
        f"<= {test.max_pct}%",
        rows_before=before,
        rows_after=observed,
    )


def changes_within(ctx: CheckContext, test: ChangesWithin) -> dict[str, Any]:
    # Here, not at the top: the config imports this module for its models (cold start).
    from steps.shared.checks import learned
    from steps.shared.warehouse.changes import CHANGE_KINDS

    limits = {
        "added": test.max_added_pct,
        "removed": test.max_removed_pct,
        "changed": test.max_changed_pct,
    }
    bounds: dict[str, learned.Bounds] = {}
    if test.auto:  # the learned upper bounds, capped by any limit set beside them
        if ctx.history is None:
            return missing("history (the ledger's recent publishes)")
        limits, bounds, publishes = learned.change_limits(ctx, limits)
    expected = ", ".join(f"{k} <= {v}%" for k, v in limits.items() if v is not None) or "any"
    if bounds:
        expected = ", ".join(f"{k} {b.text}" for k, b in bounds.items())
    elif test.auto:
        expected = f"learning: {publishes} of {learned.MIN_PUBLISHES} publishes" + (
            f" ({expected})" if expected != "any" else ""
        )
    changes, before = ctx.changes, ctx.rows_before or 0
    if changes is None:
        return check_result("pass", "no change set", expected, note="nothing was published")
    counts = changes.counts()
    if before == 0:
        # Counts, as a later load shows them (no share: there was nothing to compare with).
        observed = "first load: " + ", ".join(f"{k} {counts[k]:,}" for k in CHANGE_KINDS)
        return check_result("pass", observed, expected, note="first load", changes=counts)
    share = {kind: counts[kind] * 100 / before for kind in CHANGE_KINDS}
    over = [k for k in CHANGE_KINDS if limits[k] is not None and share[k] > limits[k]]  # type: ignore[operator]
    observed = ", ".join(f"{k} {counts[k]} ({share[k]:.2f}%)" for k in CHANGE_KINDS)
    # An alert shows the first few samples: one of each kind in turn, so every kind is
    # seen, the kinds over their limit first and changed keys (with their values) first.
    shown = sorted(CHANGE_KINDS, key=lambda k: (k not in over, k != "changed", k))
    by_kind = [[_change_row(kind, s) for s in changes.samples.get(kind, [])] for kind in shown]
    samples = [row for turn in zip_longest(*by_kind) for row in turn if row is not None]
    status = "fail" if over else ("learning" if test.auto and not bounds else "pass")
    extra: dict[str, Any] = {}
    if bounds:  # so a failure explains itself: "removed 50.00%; usual +0.0%..+1.3%"
        extra["learned"] = {k: b.as_dict() for k, b in bounds.items()}
        if over:
            extra["explanation"] = "; ".join(f"{k} {share[k]:.2f}%; {bounds[k].text}" for k in over)
    return check_result(
        status,
        observed,
        expected,
        samples[:SAMPLE_ROWS] if over else [],
        rows_before=before,
        over_limit=over,
        changes=counts,
        **extra,
    )


def _change_row(kind: str, sample: dict[str, Any]) -> dict[str, Any]:
    """A sample key as one flat row (alerts and the state show flat rows):
    {"change": "changed", "code": "BB", "name before": "Beta", "name after": "Bravo"}."""
    row = {"change": kind, **sample["key"]}
    for column, value in sample.get("before", {}).items():
        row[f"{column} before"] = value
        row[f"{column} after"] = sample["after"][column]
    return row
