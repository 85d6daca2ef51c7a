"""structlog: JSON lines (run_id, table, step on every record); readable on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from steps.shared.io.secrets import redact_value


class _CurrentStderr:
    """Writes to whatever sys.stderr is now (test runners and the CLI swap it)."""

    def write(self, text: str) -> int:
        from handler import progress

        if progress.current is not None:  # printed above the progress bar, not through it
            progress.current.write(text)
            return len(text)
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """No credential (a warehouse URL's password, ...) reaches a log line, at any depth."""
    return {k: redact_value(v) for k, v in event.items()}


class _WarningsOnly:
    """The terminal renderer, for warnings and errors only. The last processor: the
    progress drawer (handler.progress, inserted before it) still sees every step record."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if logging.getLevelNamesMapping().get(str(event.get("level", "")).upper(), 0) < (
            logging.WARNING
        ):
            raise structlog.DropEvent
        return self.renderer(logger, method, event)


def configure_logging(force: bool = False, verbose: bool = False) -> None:
    """JSON records at INFO on stderr. At a terminal, readable records, and only warnings
    and errors unless `verbose` (`--verbose`) or REFLOAD_LOG_LEVEL asks for more: the
    progress lines say what the step records say, and a person reads them there."""
    if structlog.is_configured() and not force:
        return
    level = getattr(logging, os.environ.get("REFLOAD_LOG_LEVEL", "INFO").upper(), logging.INFO)
    renderer: structlog.typing.Processor = structlog.processors.JSONRenderer()
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=True)
        if not (verbose or os.environ.get("REFLOAD_LOG_LEVEL")):
            renderer = _WarningsOnly(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks without frame locals: a local may hold the warehouse URL, a
            # password, a row of data.
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            _redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
