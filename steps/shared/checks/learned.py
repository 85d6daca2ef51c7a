"""Learned bounds: `"auto": true` on `row_count_change` and `changes_within`.

The usual change is learned from the table's last 30 publishes (the load ledger, read once
per step by `history`): the median of the percent change, give or take
SPREAD x MAD_SCALE x the median absolute deviation, and never tighter than +-FLOOR_PCT
points. The median and MAD are robust: one bad day among 30 moves neither, so a failed
publish that stayed in the target does not widen the bounds for the month after. With
MAD_SCALE the MAD estimates a standard deviation (for normal data), so SPREAD = 3 is the
familiar "three sigma". With fewer than MIN_PUBLISHES earlier publishes the check's status
is `learning`: it passes, and says so in its audit row.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steps.shared.checks.context import CheckContext, check_result, count_rows, missing
from steps.shared.warehouse.audit_learned import LEARN_FROM, PastPublish, recent_publishes

if TYPE_CHECKING:
    from steps.shared.checks.counts import RowCountChange
    from steps.shared.warehouse.base import Warehouse

MIN_PUBLISHES = 5
MAD_SCALE = 1.4826
SPREAD = 3.0
FLOOR_PCT = 1.0


@dataclass(frozen=True)
class Bounds:
    low: float
    high: float
    median: float
    publishes: int

    @property
    def text(self) -> str:
        return f"usual {_pct(self.low)}..{_pct(self.high)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "low_pct": round(self.low, 3),
            "high_pct": round(self.high, 3),
            "median_pct": round(self.median, 3),
            "publishes": self.publishes,
        }


def history(
    warehouse: Warehouse, target: str, run_id: str, tests: list[Any]
) -> list[PastPublish] | None:
    """The target's recent publishes when one of `tests` learns its bounds, else None
    (and no query: a run without `auto` sends what it always sent)."""
    if not any(getattr(t, "auto", False) for t in tests):
        return None
    return recent_publishes(warehouse.client, target, run_id, LEARN_FROM)


def learn(values: list[float], cap: float | None = None, floor: float | None = None) -> Bounds:
    """The usual range of `values` (percentages): median +- max(SPREAD*MAD_SCALE*MAD,
    FLOOR_PCT), within +-cap when one is set (a hand-set max_pct caps what is learned)."""
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    half = max(SPREAD * MAD_SCALE * mad, FLOOR_PCT)
    low, high = median - half, median + half
    if floor is not None:
        low = max(low, floor)
    if cap is not None:
        low, high = max(low, -cap), min(high, cap)
        if low > high:  # the usual change is itself past the cap: the cap alone holds
            low, high = -cap if floor is None else floor, cap
    return Bounds(low, high, median, len(values))


def row_count_change(ctx: CheckContext, test: RowCountChange) -> dict[str, Any]:
    """The change of the row count against the usual change (signed: a table that grows
    by 2% a day and suddenly shrinks by 2% is unusual)."""
    if ctx.rows_before is None:
        return missing("rows_before (target rows before load)")
    if ctx.history is None:
        return missing("history (the ledger's recent publishes)")
    observed = count_rows(ctx)
    before = ctx.rows_before
    if before == 0:  # nothing to compare with, as without `auto`
        return check_result("pass", observed, "usual change", note="first load")
    past = [
        (p.rows_after - p.rows_before) * 100 / p.rows_before for p in ctx.history if p.rows_before
    ]
    change = (observed - before) * 100 / before
    shown = f"{_pct(change)} rows"
    counts: dict[str, Any] = {"rows_before": before, "rows_after": observed}
    if len(past) < MIN_PUBLISHES:
        learning = f"learning: {len(past)} of {MIN_PUBLISHES} publishes"
        if test.max_pct is not None and abs(change) > test.max_pct:
            return check_result("fail", shown, f"<= {test.max_pct}% ({learning})", **counts)
        return check_result("learning", shown, learning, **counts)
    bounds = learn(past, test.max_pct)
    ok = bounds.low <= change <= bounds.high
    return check_result(
        "pass" if ok else "fail",
        shown,
        bounds.text,
        learned=bounds.as_dict(),
        explanation=f"{shown}; {bounds.text}",
        **counts,
    )


def change_limits(
    ctx: CheckContext, limits: dict[str, float | None]
) -> tuple[dict[str, float | None], dict[str, Bounds], int]:
    """`changes_within`'s limits per kind with `auto`: the learned upper bound of each
    kind's share (capped by a max_*_pct set beside it); fewer changes than usual is no
    alarm. Kinds not learned yet keep their hand-set limit. Also the learned bounds and
    how many publishes they come from."""
    usable = [p for p in ctx.history or [] if p.rows_before and p.added is not None]
    if len(usable) < MIN_PUBLISHES:
        return limits, {}, len(usable)
    learned: dict[str, Bounds] = {}
    for kind, cap in limits.items():
        shares = [getattr(p, kind) * 100 / p.rows_before for p in usable]
        learned[kind] = learn(shares, cap, floor=0.0)
    return {k: b.high for k, b in learned.items()}, learned, len(usable)


def _pct(value: float) -> str:
    """+1.0%, -50.0%; never "-0.0%" (a rounded tiny negative)."""
    return f"{round(value, 1) + 0.0:+.1f}%"
