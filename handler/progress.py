"""Progress on a terminal, as dbt and dlt show it: the step, its phase, bytes read, and
one line per finished step with its time. Only for a person at a terminal: never in
Lambda, never when stderr is not a TTY, never with `--quiet` or `REFLOAD_PROGRESS=0`.
stdout (the summary, the `--json` object) and the log records are not touched.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

# Log events (handler.aws.dispatch) that open and close a step.
STEP_OPENED = "step started"
STEP_CLOSED = {"step finished": "ok", "step failed": "failed", "step failed unexpectedly": "failed"}

current: TerminalProgress | None = None


def wanted(quiet: bool = False) -> bool:
    return (
        not quiet
        and os.environ.get("REFLOAD_PROGRESS", "1") != "0"
        and "AWS_LAMBDA_FUNCTION_NAME" not in os.environ
        and sys.stderr.isatty()
    )


class TerminalProgress:
    """A structlog processor (it watches the step records go by) and a steps.shared.progress
    listener (ingest reports its phases and the bytes it has read)."""

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm  # only at a terminal: Lambda never imports it

        self._tqdm = tqdm
        self._bar_class = _bar_class(tqdm)
        self.stream = stream
        self.bar: Any = None
        self.step: str | None = None
        self.step_started = 0.0
        self.phase_name: str | None = None
        self.phase_started = 0.0
        self.phases: list[tuple[str, float]] = []

    # -- structlog processor ------------------------------------------------------------
    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        name = event.get("event")
        if name == STEP_OPENED:
            self._open_step(str(event.get("step")))
        elif name in STEP_CLOSED and self.step is not None:
            self._close_step(STEP_CLOSED[name])
        return event

    # -- steps.shared.progress listener --------------------------------------------------------
    def phase(self, name: str, total: int | None, unit: str) -> None:
        self._end_phase()
        self.phase_name, self.phase_started = name, time.perf_counter()
        self._new_bar(f"{self.step or 'run'}: {name}", total, unit)

    def advance(self, amount: int) -> None:
        if self.bar is not None:
            self.bar.update(amount)

    def count(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.rows += rows
            self.bar.update(0)  # drawn again when due, as update draws

    # -- output -----------------------------------------------------------------------
    def write(self, text: str) -> None:
        """A log record: printed above the bar, which is drawn again below it."""
        with self._tqdm.external_write_mode(file=self.stream):
            self.stream.write(text)

    def close(self) -> None:
        if self.step is not None:
            self._close_step("stopped")
        self._close_bar()

    def _open_step(self, step: str) -> None:
        if self.step is not None:
            self._close_step("ok")
        self.step, self.step_started, self.phases = step, time.perf_counter(), []
        self.phase_name = None
        self._new_bar(step, None, "")

    def _close_step(self, outcome: str) -> None:
        self._end_phase()
        self._close_bar()
        elapsed = time.perf_counter() - self.step_started
        mark = {"ok": "OK", "failed": "FAILED"}.get(outcome, outcome.upper())
        phases = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.phases)
        line = f"{self.step:<9} {mark:<7} {elapsed:6.2f} s" + (f"  ({phases})" if phases else "")
        self._tqdm.write(line, file=self.stream)
        self.step = None

    def _end_phase(self) -> None:
        if self.phase_name is not None:
            self.phases.append((self.phase_name, time.perf_counter() - self.phase_started))
            self.phase_name = None

    def _new_bar(self, label: str, total: int | None, unit: str) -> None:
        self._close_bar()
        # As dlt and tqdm show a download: the share of a known size, sizes in KB/MB, a
        # rate; counts with thousands separators (562,499 rows).
        bar_format = (
            "{desc:<18} {percentage:3.0f}%|{bar:16}| {n_fmt}B/{total_fmt}B{rows} "
            "[{elapsed}<{remaining}, {rate_fmt}]"
            if total and unit == "B"
            else "{desc:<18} {percentage:3.0f}%|{bar:24}| {n_sep}/{total_sep} {unit} [{elapsed}]"
            if total
            else "{desc:<18} {n_sep} {unit} [{elapsed}, {rate_sep} {unit}/s]"
            if unit
            else "{desc:<18} [{elapsed}]"
        )
        self.bar = self._bar_class(
            total=total,
            unit=unit or "it",
            unit_scale=unit == "B",
            unit_divisor=1024,
            desc=label,
            file=self.stream,
            leave=False,
            bar_format=bar_format,
            mininterval=0.1,
            **self._size(),
        )

    def _size(self) -> dict[str, int]:
        """The terminal's size; one that reports 0x0 (a fresh pty) gets 100x24: tqdm would
        otherwise draw nothing at all."""
        try:
            size = os.get_terminal_size(self.stream.fileno())
            columns, lines = size.columns, size.lines
        except (OSError, ValueError, AttributeError):
            columns = lines = 0
        return {"ncols": columns or 100, "nrows": lines or 24}

    def _close_bar(self) -> None:
        if self.bar is not None:
            # Drawn once more as it ends: a phase shorter than the redraw interval (a small
            # .xlsx read whole) would otherwise show the counts it started with.
            self.bar.refresh()
            self.bar.close()
            self.bar = None


def _bar_class(tqdm: Any) -> Any:
    """tqdm with the fields the bars show beside its own (tqdm's documented way to add
    some: `format_dict`)."""

    class Bar(tqdm):
        rows = 0

        @property
        def format_dict(self) -> dict[str, Any]:
            d = dict(super().format_dict)
            rate = d.get("rate") or (d["n"] / d["elapsed"] if d.get("elapsed") else None)
            d["n_sep"] = f"{d['n']:,}"
            d["total_sep"] = f"{d['total']:,}" if d.get("total") else "?"
            d["rate_sep"] = f"{rate:,.0f}" if rate else "?"
            d["rows"] = f", {self.rows:,} rows" if self.rows else ""
            return d

    return Bar


class _AboveTheBar:
    """stdout while a bar is drawn on the same terminal: the bar is lifted for each write.
    What is written to stdout is unchanged (the bar's clearing goes to stderr)."""

    def __init__(self, stream: TextIO, drawer: TerminalProgress) -> None:
        self.stream, self.drawer = stream, drawer

    def write(self, text: str) -> int:
        with self.drawer._tqdm.external_write_mode(file=self.drawer.stream):
            return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def shown(quiet: bool = False, command: str | None = None) -> Iterator[None]:
    """Draw progress on stderr for the duration, when a person is watching. A `command`
    without steps of its own (init, check) is shown as one step of that name."""
    global current
    if not wanted(quiet):
        yield
        return
    import structlog

    from steps.shared import progress

    drawer = TerminalProgress(sys.stderr)
    stdout = sys.stdout
    sys.stdout = _AboveTheBar(stdout, drawer)  # what a command prints clears the bar first
    config = structlog.get_config()
    processors = list(config["processors"])
    structlog.configure(processors=[*processors[:-1], drawer, processors[-1]])
    progress.listen(drawer)
    current = drawer
    if command:
        drawer._open_step(command)
    try:
        yield
        if command:
            drawer._close_step("ok")
    finally:
        current = None
        sys.stdout = stdout
        progress.listen(None)
        drawer.close()
        structlog.configure(processors=processors)
