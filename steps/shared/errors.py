"""One error hierarchy for every step.

Context (file, line, column, value, table, step) lives in attributes and the
message is built from them, so logs, alerts and the CLI all say the same thing.
`TransientError` subclasses are retried by Step Functions (the ASL's Retry
lists their names); `TerminalError` subclasses are not.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, ClassVar

VALUE_CHARS = 200  # of a value quoted in an error message
# An error's text where it travels (Step Functions state, `--json`, log lines, an alert's
# subject) and where it is kept in full (etl_audit.run_log, the alert's body).
MESSAGE_BYTES = 2048
FULL_TEXT_BYTES = 65535
TRUNCATED = "…(truncated, "  # the start of truncate_bytes' marker


def truncate_bytes(text: str, max_bytes: int) -> str:
    """At most `max_bytes` of UTF-8, with a visible marker saying how long it was."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    marker = f"{TRUNCATED}{len(data)} bytes)"
    keep = max(max_bytes - len(marker.encode()), 0)
    return data[:keep].decode(errors="ignore") + marker


def shortened(error: BaseException) -> BaseException:
    """`error` with a text of at most MESSAGE_BYTES. The Lambda runtime reports str(error)
    as the errorMessage that a Step Functions Catch puts in the state (256 KiB at most)."""
    text = str(error)
    if len(text.encode()) <= MESSAGE_BYTES:
        return error
    short = truncate_bytes(text, MESSAGE_BYTES - 64)
    with suppress(Exception):
        error.args = (short,)
    if len(str(error).encode()) <= MESSAGE_BYTES:
        return error
    # A class whose __str__ ignores args: the same text, bounded, under a plain type.
    return RuntimeError(truncate_bytes(f"{type(error).__name__}: {text}", MESSAGE_BYTES))


class RefloadError(Exception):
    """Root of every error refload raises on purpose."""

    exit_code: ClassVar[int] = 3
    status: ClassVar[str] = "error"

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        value: Any = None,
        key: str | None = None,
        table: str | None = None,
        step: str | None = None,
        details: dict[str, Any] | None = None,
        note: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        self.row = row
        self.column = column
        self.value = value
        self.key = key
        self.table = table
        self.step = step
        self.details = details or {}
        self.note = note
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The text as it travels: at most MESSAGE_BYTES (the full one is `full_message`)."""
        return truncate_bytes(self._text(), MESSAGE_BYTES)

    @property
    def full_message(self) -> str:
        """The text as etl_audit.run_log and the alert's body keep it: at most 64 KiB."""
        return truncate_bytes(self._text(), FULL_TEXT_BYTES)

    def _text(self) -> str:
        where = [self.file] if self.file else []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.key:
            where.append(self.key)
        if self.column:
            where.append(f"column '{self.column}'")
        text = (", ".join(where) + ": " if where else "") + self.reason
        if self.value is not None:
            # A value can be a whole 100 KB field: the message travels in Step Functions
            # state (256 KiB), logs and alerts, so it shows the start and the length.
            shown = repr(self.value)
            if len(shown) > VALUE_CHARS:
                shown = f"{shown[:VALUE_CHARS]}… ({len(str(self.value))} characters)"
            text += f" (value {shown})"
        if self.note:
            text += f"; {self.note}"
        return text

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": self.message}


class TerminalError(RefloadError):
    """Retrying cannot help: the input, the config or the data is wrong."""


class TransientError(RefloadError):
    """Retrying may help: a service was unreachable, busy or timed out."""


class ConfigError(TerminalError):
    """A table config, mapping sheet or event is invalid."""

    exit_code = 2
    status = "rejected"


class RejectedInput(TerminalError):
    """The source file cannot be loaded as the mapping says; nothing was published."""

    exit_code = 2
    status = "rejected"


class QualityCheckFailed(TerminalError):
    """An error-severity data-quality test failed."""

    exit_code = 1
    status = "failed"


class InfrastructureError(TerminalError):
    """Storage or warehouse refused the request for a reason retrying will not fix."""

    exit_code = 3


class StorageUnavailable(TransientError):
    """Object storage could not be reached or timed out."""

    exit_code = 3


class WarehouseUnavailable(TransientError):
    """The warehouse could not be reached, dropped the connection or hit a conflict."""

    exit_code = 3


class AlertNotDelivered(TransientError):
    """No alert channel delivered the report: nobody would hear of the failure."""

    exit_code = 3


def at(unit: str, number: int) -> dict[str, Any]:
    """`line=` or `row=` keyword for an error, chosen by the source's unit."""
    return {unit: number}


def transient_error_names() -> list[str]:
    """Names Step Functions must retry: every TransientError subclass."""
    names: list[str] = []
    pending: list[type[RefloadError]] = [TransientError]
    while pending:
        cls = pending.pop()
        names.append(cls.__name__)
        pending.extend(cls.__subclasses__())
    return sorted(names)


def error_class(name: str) -> type[RefloadError] | None:
    """The RefloadError subclass with this name (e.g. from a Step Functions Catch), if any."""
    pending: list[type[RefloadError]] = [RefloadError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return None


# A RefloadError across a process boundary (a Spark task to its driver, the EMR job to the
# Lambda that waits for it): every field that locates it, as JSON, and back.
def error_json(error: RefloadError) -> str:
    import json

    fields = ("reason", "file", "line", "row", "column", "value", "key", "details", "note")
    return json.dumps(
        {"type": type(error).__name__, **{f: getattr(error, f) for f in fields}}, default=str
    )


def error_from_json(text: str) -> RefloadError:
    import json

    fields = json.loads(text)
    error_type = globals().get(fields.pop("type"), RefloadError)
    if not (isinstance(error_type, type) and issubclass(error_type, RefloadError)):
        error_type = RefloadError
    reason = fields.pop("reason")
    error: RefloadError = error_type(reason, **fields)
    return error
