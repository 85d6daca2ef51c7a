"""Learned freshness (`"freshness": {"expect": "auto", "grace_hours": N}`): when a table's
files usually arrive, learned from its last 30 arrivals in the ledger, and how late the
next one is.

Two shapes cover reference files: on some weekdays (daily: all seven; weekday-only: Monday
to Friday; weekly: one), and monthly (on about the same day of the month). A weekday is
expected when files arrived on it in at least half as many weeks as on the busiest
weekday: a holiday (one missing Monday in six) leaves Monday expected, and one extra file
on a Saturday does not make Saturdays expected. The time of day is the median arrival
time. All in UTC, as the ledger keeps time.

A due file later than the grace is `warn`; `error` once it is later than twice the grace,
or when the file due after it is late too (one more missed cycle), whichever comes first.
With fewer than MIN_ARRIVALS arrival days the status is `learning`.
"""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import statistics
from dataclasses import dataclass
from typing import Literal

MIN_ARRIVALS = 5
# A median gap of this many days or more between arrival days: a monthly file.
MONTHLY_GAP_DAYS = 20
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Pattern:
    """When files arrive: on `weekdays` (0 = Monday), or monthly on `day_of_month`; at
    about `time_of_day`."""

    weekdays: frozenset[int]
    day_of_month: int | None  # set for a monthly file
    time_of_day: dt.time
    arrivals: int  # the arrival days it was learned from

    @property
    def text(self) -> str:
        at = f"around {self.time_of_day:%H:%M} UTC"
        if self.day_of_month is not None:
            return f"monthly on day {self.day_of_month} {at}"
        if len(self.weekdays) == 7:
            return f"daily {at}"
        if self.weekdays == frozenset(range(5)):
            return f"weekdays (Mon-Fri) {at}"
        return f"on {', '.join(DAY_NAMES[d] for d in sorted(self.weekdays))} {at}"

    def next_due(self, after: dt.datetime) -> dt.datetime:
        """When the first file after the one received at `after` is due."""
        day = after.date()
        if self.day_of_month is not None:
            year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
            last = calendar.monthrange(year, month)[1]
            return dt.datetime.combine(
                dt.date(year, month, min(self.day_of_month, last)), self.time_of_day
            )
        day += dt.timedelta(days=1)
        while day.weekday() not in self.weekdays:
            day += dt.timedelta(days=1)
        return dt.datetime.combine(day, self.time_of_day)


def learn(arrivals: list[dt.datetime]) -> Pattern | None:
    """The pattern of these arrival times (naive UTC), or None while there are fewer than
    MIN_ARRIVALS arrival days to learn from. Several files on one day count once (the
    first: a re-sent file is not a new cycle)."""
    first_of_day: dict[dt.date, dt.datetime] = {}
    for moment in sorted(arrivals):
        first_of_day.setdefault(moment.date(), moment)
    days = sorted(first_of_day)
    if len(days) < MIN_ARRIVALS:
        return None
    seconds = statistics.median_low(
        m.hour * 3600 + m.minute * 60 + m.second for m in first_of_day.values()
    )
    time_of_day = dt.time(seconds // 3600, seconds // 60 % 60, seconds % 60)
    gaps = [(b - a).days for a, b in itertools.pairwise(days)]
    if statistics.median(gaps) >= MONTHLY_GAP_DAYS:
        day_of_month = statistics.median_high(d.day for d in days)
        return Pattern(frozenset(), day_of_month, time_of_day, len(days))
    per_weekday = [sum(d.weekday() == w for d in days) for w in range(7)]
    busiest = max(per_weekday)
    weekdays = frozenset(w for w, n in enumerate(per_weekday) if n * 2 >= busiest)
    return Pattern(weekdays, None, time_of_day, len(days))


@dataclass(frozen=True)
class Lateness:
    status: Literal["pass", "warn", "error"]
    due: dt.datetime  # the first file after the last one received
    late_hours: float  # how late it is (0 while not yet due)


def lateness(pattern: Pattern, last: dt.datetime, now: dt.datetime, grace_hours: float) -> Lateness:
    """How late the file due after `last` is at `now`: warn past the grace, error past
    twice the grace or once the file after it is past its grace too."""
    due = pattern.next_due(last)
    grace = dt.timedelta(hours=grace_hours)
    late = max((now - due).total_seconds() / 3600, 0.0)
    status: Literal["pass", "warn", "error"] = "pass"
    if now > due + grace:
        status = "warn"
        if now > min(due + 2 * grace, pattern.next_due(due) + grace):
            status = "error"
    return Lateness(status, due, round(late, 2))
