"""Where a long run has got to, for a terminal to draw (handler.progress does).

Steps call `phase()` when they move on, `advance()` as they get through it and `count()`
for the rows a phase measured in bytes has produced (ingest's read: bytes of the file,
and rows). With no listener (Lambda, a pipe, `--quiet`, `REFLOAD_PROGRESS=0`) each call is
one global lookup.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Listener(Protocol):
    def phase(self, name: str, total: int | None, unit: str) -> None: ...

    def advance(self, amount: int) -> None: ...

    def count(self, rows: int) -> None: ...


_listener: Listener | None = None
_advancing = threading.Lock()  # the curated parts are written on threads


def listen(listener: Listener | None) -> None:
    global _listener
    _listener = listener


def phase(name: str, total: int | None = None, unit: str = "") -> None:
    """The current step enters `name` (ingest: read, dedupe, write), `total` units long;
    `unit` names what `advance` counts (none: only the time is shown)."""
    if _listener is not None:
        _listener.phase(name, total, unit)


def advance(amount: int) -> None:
    if _listener is not None:
        with _advancing:
            _listener.advance(amount)


def count(rows: int) -> None:
    """Rows the current phase has produced, shown beside its bar (of bytes)."""
    if _listener is not None:
        with _advancing:
            _listener.count(rows)
