"""Run the steps in order on one machine, as the state machine does in AWS.

ingest -> load -> validate, and notify on any failure. Returns the summary
that `python -m handler run --json` prints and the exit code.
"""

from __future__ import annotations

from typing import Any

import structlog

from handler.aws.dispatch import StepOutcome, log_ignored, record_outcomes, run_step
from handler.aws.events import new_run_id, to_payload
from steps.contracts import bounded_checks
from steps.shared.checks.status import passed

ORDER = ("ingest", "load", "validate")
log = structlog.get_logger("refload")

# Summary status -> exit code (docs/architecture.md: 0 passed, 1 failed, 2 rejected, 3 error;
# `ignored`: a landed marker object, nothing to load). Errors carry their own status and
# exit code (steps.shared.errors); these are for the outcomes that are no error.
# `stale`: the target holds a newer file, nothing published, no alert.
EXIT_CODES = {"passed": 0, "ignored": 0, "stale": 0, "failed": 1, "rejected": 2, "error": 3}


def summarize(state: dict[str, Any], status: str, error: dict[str, str] | None) -> dict[str, Any]:
    checks = [
        {k: c.get(k) for k in ("name", "type", "severity", "status", "observed", "expected")}
        for c in state.get("checks") or []
    ]
    return {
        "status": status,
        "table": state.get("table"),
        "run_id": state.get("run_id"),
        "rows_read": state.get("rows_read"),
        "rows_loaded": state.get("rows_loaded"),
        "rows_in_target": state.get("rows_in_target"),
        "rows_rejected": state.get("rows_rejected"),
        "duplicates_dropped": state.get("duplicates_dropped"),
        "published": state.get("published"),
        "skipped_reason": state.get("skipped_reason"),
        "changes": state.get("changes"),
        "curated_uri": state.get("curated_uri"),
        "rejects_uri": state.get("rejects_uri"),
        "checks": checks,
        "checks_total": state.get("checks_total", len(checks)),
        "checks_failed": state.get("checks_failed", sum(not passed(c) for c in checks)),
        "error": error,
        "alert": state.get("alert"),
    }


def _notify(state: dict[str, Any], failed_step: str, error: dict[str, str] | None) -> None:
    from steps.shared.errors import MESSAGE_BYTES, AlertNotDelivered, truncate_bytes

    payload = {
        **state,
        "step": "notify",
        "failed_step": failed_step,
        "error": error,
    }
    try:
        state["alert"] = run_step("notify", payload).get("notified")
    except AlertNotDelivered as failure:  # the run keeps its own outcome and exit code
        state["alert"] = failure.details["notified"]
    except Exception as failure:  # alerting must never hide the run's own outcome
        reason = truncate_bytes(str(failure), MESSAGE_BYTES)
        log.error("notify failed", error=reason)
        state["alert"] = {"error": reason}


def run_pipeline(event: dict[str, Any], start_at: str | None = None) -> tuple[dict[str, Any], int]:
    from steps.shared import cost
    from steps.shared.warehouse import import_driver_early, shared_connections

    import_driver_early(event.get("warehouse"))
    # The steps share one warehouse connection; their run_log rows are written at the end.
    outcomes: list[StepOutcome] = []
    with shared_connections(), cost.collecting() as costs:
        try:
            summary, code = _run_steps(event, start_at, outcomes)
        finally:
            record_outcomes(outcomes)
    # What the run's recorded steps cost on AWS (each run_log row carries its step's).
    return {**summary, "cost": cost.total(costs)}, code


def _run_steps(
    event: dict[str, Any], start_at: str | None, outcomes: list[StepOutcome]
) -> tuple[dict[str, Any], int]:
    from steps.shared.errors import MESSAGE_BYTES, QualityCheckFailed, RefloadError, truncate_bytes

    # The run id is fixed before anything can fail, so a failure's alert, its logs and
    # etl_audit.run_log all name the same run.
    if not event.get("run_id") and not event.get("execution_id"):
        event = {**event, "run_id": new_run_id()}
    # Until the event becomes a payload, the state is the event: an alert of a failure to
    # route it goes to the run's outbox, and its re-run input is the event itself.
    state: dict[str, Any] = {**event, "run_id": event.get("run_id")}
    step = start_at or event.get("step") or "ingest"
    try:
        state = to_payload({**event, "step": step})
        if state.get("ignored"):
            log_ignored(state)
            return summarize(state, "ignored", None), EXIT_CODES["ignored"]
        for step in ORDER[ORDER.index(state["step"]) :]:  # step names the failure
            state.update(run_step(step, {**state, "step": step}, outcomes))
            if state.get("stale"):  # as the state machine's PublishedOrStale: no validate
                return summarize(state, "stale", None), EXIT_CODES["stale"]
    except RefloadError as error:
        summary_error = error.to_dict()
        if not state.get("table"):
            state["table"] = error.table
        if "checks" in error.details:  # before-publish tests that stopped the load
            state.update(bounded_checks(error.details["checks"]))
        record_outcomes(outcomes)  # notify reads a cut error's full text from run_log
        _notify(state, step, summary_error)
        return summarize(state, error.status, summary_error), error.exit_code
    except Exception as error:
        log.exception("unexpected error", step=step)
        message = truncate_bytes(f"internal error: {error}", MESSAGE_BYTES)
        summary_error = {"type": type(error).__name__, "message": message}
        record_outcomes(outcomes)
        _notify(state, step, summary_error)
        return summarize(state, RefloadError.status, summary_error), RefloadError.exit_code
    if state.get("validation") == "failed":
        _notify(state, "validate", None)
        return summarize(state, QualityCheckFailed.status, None), QualityCheckFailed.exit_code
    return summarize(state, "passed", None), EXIT_CODES["passed"]
