"""A test's statuses that pass: `pass`, and `learning` (a test with learned bounds still
learning them, steps.shared.checks.learned). A leaf: the summaries, alerts, metrics and
the state machine's results count with it without importing the checks."""

from __future__ import annotations

from typing import Any

PASSING = ("pass", "learning")


def passed(check: dict[str, Any]) -> bool:
    return check.get("status") in PASSING
