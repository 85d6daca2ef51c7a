"""What each step takes and returns: the typed payloads and results (pydantic).

What a step needs and what it returns is written here once. Payloads are validated at
the boundary (handler.aws.events.to_payload, through `validate_payload`), results when a
step returns (`step_result`). Both allow extra keys, because the state machine passes the
whole execution state from step to step; results are bounded (see `bounded_check`) so
that state stays far below Step Functions' 256 KiB.

pydantic is imported here only: `import handler` (Lambda's cold path) imports this on
first use, not at import.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from steps.shared.checks.status import passed
from steps.shared.errors import ConfigError

# freshness, digest: invoked by a schedule, not by the state machine.
StepName = Literal["ingest", "load", "validate", "notify", "freshness", "digest"]

# A run id names outbox files, staging tables and audit rows, and mapping sheets derive
# columns from it (`{run_id}`, varchar(64) in the samples): no '/', at most 64 characters.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
RUN_ID_RULE = "1-64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"


# --- step payloads ---------------------------------------------------------------------


class _Model(BaseModel):
    # Unknown keys are the rest of the execution state: passed on untouched.
    # defer_build: the schemas are built on first use, not at import (cold start).
    model_config = ConfigDict(extra="allow", defer_build=True)


class StepPayload(_Model):
    """What every step gets: the step, the run and where things are."""

    step: StepName
    run_id: str
    curated_root: str
    table: str | None = None
    warehouse: str | None = None
    execution_id: str | None = None
    mapping: str | None = None

    @field_validator("run_id")
    @classmethod
    def _valid_run_id(cls, value: str) -> str:
        if not RUN_ID.fullmatch(value):
            raise ValueError(f"must be {RUN_ID_RULE}")
        return value


class IngestPayload(StepPayload):
    config: str
    source: str
    # The S3 version an event named: that version is loaded, not the latest (a replay of an
    # older event loads its own file). Absent for an unversioned bucket and a local file.
    source_version_id: str | None = None


class LoadPayload(StepPayload):
    config: str
    curated_uri: str
    content_hash: str
    source: str | None = None
    source_version: str | None = None
    source_modified_at: str | None = None  # ISO; orders the table's files (stale ones)
    config_hash: str | None = None
    rows_written: int | None = None


class ValidatePayload(StepPayload):
    """`rows_*` come from ingest and load; a test that needs one that is missing reports
    status `error` ("re-run from load") instead of comparing against nothing."""

    config: str
    rows_written: int | None = None
    rows_loaded: int | None = None
    rows_before: int | None = None
    checks_before_publish: list[dict[str, Any]] | None = None


class NotifyPayload(StepPayload):
    """A failure: ours (`error`), or Step Functions' Catch (`failure`: Error, Cause)."""

    config: str | None = None
    source: str | None = None
    failed_step: StepName | None = None
    error: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    checks: list[dict[str, Any]] | None = None


class FreshnessPayload(StepPayload):
    """The scheduled check of every table's age; `now` (ISO) for tests and back-fills."""

    config_root: str | None = None
    now: str | None = None
    outbox: str | None = None


MAX_DIGEST_HOURS = 24 * 366 * 100  # a century: far past any ledger, inside datetime's range


class DigestPayload(StepPayload):
    """The daily fleet digest: the window is the `since` hours before `now` (ISO)."""

    config_root: str | None = None
    since: float | None = None
    now: str | None = None
    outbox: str | None = None

    @field_validator("since")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        # `not 0 < value <= MAX` also turns away nan and inf (no datetime holds them).
        if value is not None and not 0 < value <= MAX_DIGEST_HOURS:
            raise ValueError(f"must be a number of hours above 0 and at most {MAX_DIGEST_HOURS}")
        return value


PAYLOADS: dict[str, type[StepPayload]] = {
    "ingest": IngestPayload,
    "load": LoadPayload,
    "validate": ValidatePayload,
    "notify": NotifyPayload,
    "freshness": FreshnessPayload,
    "digest": DigestPayload,
}


# --- step results ----------------------------------------------------------------------

# What one check may carry in the state: the full samples are in
# etl_audit.data_quality_tests and the rejects file.
SAMPLE_ROWS_IN_STATE = 3
# docs/architecture.md: a step returns at most 32 KiB, with at most 20 check results in it.
STATE_BYTES = 32 * 1024
CHECKS_IN_STATE = 20
CHECK_LISTS = ("checks_before_publish", "checks")  # the first gives up room first
SAMPLE_ROW_BYTES = 1000
VALUE_CHARS = 200


def _short(value: Any, limit: int = VALUE_CHARS) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def _short_row(row: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    size = 0
    for name, value in row.items():
        short = _short(value, VALUE_CHARS // 2)
        size += len(str(name)) + len(json.dumps(short, default=str))
        if size > SAMPLE_ROW_BYTES:
            kept["…"] = f"{len(row) - len(kept)} more column(s)"
            break
        kept[name] = short
    return kept


def bounded_check(check: dict[str, Any]) -> dict[str, Any]:
    """One check result as it travels in the state: name, type, severity, status,
    observed, expected, small details and at most three truncated sample rows."""
    details = check.get("details") or {}
    rows = details.get("sample_rows") or []
    small = {k: _short(v) for k, v in details.items() if k != "sample_rows"}
    small["sample_rows"] = [_short_row(r) for r in rows[:SAMPLE_ROWS_IN_STATE]]
    if len(rows) > SAMPLE_ROWS_IN_STATE:
        small["sample_rows_in_audit"] = len(rows)
    head = {k: _short(check.get(k)) for k in ("name", "type", "severity", "status")}
    return {
        **head,
        "observed": _short(check.get("observed")),
        "expected": _short(check.get("expected")),
        "details": small,
    }


def _failing_first(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(checks, key=lambda c: (passed(c), c.get("severity") != "error"))


def bounded_checks(checks: list[dict[str, Any]], key: str = "checks") -> dict[str, Any]:
    """At most CHECKS_IN_STATE results under `key` (failing first, error severity before
    warn), each bounded, with `<key>_total` and `<key>_failed` counting them all."""
    return {
        key: [bounded_check(c) for c in _failing_first(checks)[:CHECKS_IN_STATE]],
        f"{key}_total": len(checks),
        f"{key}_failed": sum(not passed(c) for c in checks),
    }


def _bounded(data: Any, key: str) -> Any:
    """A result's check list bounded, with the counts beside it (counts the step gave
    itself are kept: validate adds up load's and its own)."""
    if isinstance(data, dict) and isinstance(data.get(key), list):
        bounded = bounded_checks(data[key], key)
        data = {**bounded, **data, key: bounded[key]}
    return data


def _drop(state: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Remove `fields` from every check's details, last checks first, until the state fits."""
    lists = [state[k] for k in CHECK_LISTS if isinstance(state.get(k), list)]
    for checks in lists:
        for check in reversed(checks):
            if _size(state) <= STATE_BYTES:
                return
            details = check.get("details")
            if isinstance(details, dict):
                for name in fields:
                    details.pop(name, None)


def _size(state: dict[str, Any]) -> int:
    return len(json.dumps(state, default=str).encode())


def fit_state(state: dict[str, Any]) -> dict[str, Any]:
    """The state a step returns, at most STATE_BYTES whatever the data: sample rows go
    first, then the checks' details, then the last checks listed (the counts stay)."""
    if _size(state) <= STATE_BYTES:
        return state
    state = json.loads(json.dumps(state, default=str))
    _drop(state, ("sample_rows",))
    _drop(state, tuple({n for c in _checks_of(state) for n in c.get("details") or {}}))
    for key in CHECK_LISTS:
        while isinstance(state.get(key), list) and state[key] and _size(state) > STATE_BYTES:
            state[key].pop()
    return state


def _checks_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for k in CHECK_LISTS if isinstance(state.get(k), list) for c in state[k]]


class IngestResult(_Model):
    table: str
    run_id: str
    config: str
    config_hash: str
    source: str
    source_version: str
    source_modified_at: str | None = None
    content_hash: str
    curated_uri: str
    rejects_uri: str | None = None
    rows_read: int
    rows_rejected: int
    duplicates_dropped: int
    rows_written: int


class SparkHandOff(_Model):
    """ingest's result for a table on the Spark engine in AWS: not rows but the job the state
    machine runs on EMR Serverless (steps.ingest.emr.hand_off), whose result the next
    ingest call reads from `spark_job.result_uri`."""

    table: str
    run_id: str
    config: str
    source: str
    engine: Literal["spark"]
    spark_job: dict[str, Any]  # arguments (the job's), result_uri (where it writes)


class LoadResult(_Model):
    table: str
    run_id: str
    target: str
    load_mode: str
    target_created: bool
    published: bool
    skipped_reason: str | None = None
    # The target holds a newer file: nothing to validate, the run ends `stale`.
    stale: bool = False
    # A table group's member, held until its group's other files arrive (steps.group).
    held: bool = False
    rows_loaded: int
    rows_before: int | None = None
    rows_after: int | None = None
    # Keys added/removed/changed (tables with a primary key); the samples are in the ledger.
    changes: dict[str, int] | None = None
    checks_before_publish: list[dict[str, Any]] = []
    checks_before_publish_total: int = 0
    checks_before_publish_failed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _bound(cls, data: Any) -> Any:
        return _bounded(data, "checks_before_publish")


class ValidateResult(_Model):
    table: str
    run_id: str
    validation: Literal["passed", "failed"]
    checks: list[dict[str, Any]]
    checks_total: int
    checks_failed: int

    @model_validator(mode="before")
    @classmethod
    def _bound(cls, data: Any) -> Any:
        return _bounded(data, "checks")


class NotifyResult(_Model):
    """Small on purpose: Step Functions puts it beside the state, not over it."""

    table: str
    run_id: str | None
    subject: str
    notified: dict[str, dict[str, Any]]
    failed_channels: list[str] = []


class FreshnessResult(_Model):
    """One small line per table (the schedule's response, never Step Functions state)."""

    status: str
    tables: list[dict[str, Any]]
    alerts: Any = None


class DigestResult(_Model):
    """`--json` of `digest` (the schedule's response, never Step Functions state)."""

    since: str
    tables: list[dict[str, Any]]
    sent: Any = None


RESULTS: dict[str, type[_Model]] = {
    "ingest": IngestResult,
    "load": LoadResult,
    "validate": ValidateResult,
    "notify": NotifyResult,
    "freshness": FreshnessResult,
    "digest": DigestResult,
}


def step_result(step: str, result: dict[str, Any]) -> dict[str, Any]:
    """A step's result, checked against its model and bounded."""
    handed_off = step == "ingest" and result.get("engine") == "spark"
    model = SparkHandOff if handed_off else RESULTS[step]
    return fit_state(model.model_validate(result).model_dump())


def _describe(step: str, error: ValidationError) -> str:
    missing = [str(e["loc"][0]) for e in error.errors() if e["type"] == "missing"]
    problems = [f"missing {', '.join(missing)}"] if missing else []
    for problem in error.errors():
        if problem["type"] != "missing":
            where = ".".join(str(p) for p in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message} (got {str(problem.get('input'))[:100]!r})")
    if missing and len(problems) == 1:
        return f"'{step}' payload is missing {', '.join(missing)}"
    return f"'{step}' payload: " + "; ".join(problems)


def validate_payload(step: str, payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` checked against its step's model; the keys it was given (and the extra
    ones) as a dict. A ConfigError names what is missing or wrong."""
    try:
        model = PAYLOADS[step].model_validate(payload)
    except ValidationError as error:
        raise ConfigError(_describe(step, error)) from None
    return model.model_dump(exclude_unset=True)
