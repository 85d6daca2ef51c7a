"""Parse the event, run the step it names, return the step's result.

Step modules are imported on first use so that dispatch and notify stay free
of pandas, pyarrow and warehouse drivers (Lambda cold start).
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from typing import Any

import structlog

from handler.log import configure_logging
from steps.shared import cost, lineage, metrics

# step name -> module with a `run(payload) -> dict`
STEPS: dict[str, str] = {
    "ingest": "steps.ingest",
    "load": "steps.load",
    "validate": "steps.validate",
    "notify": "steps.notify",
    "freshness": "steps.freshness",
    "digest": "steps.digest",
}
# Steps a schedule invokes (template.yaml), not the state machine.
SCHEDULED_STEPS = ("freshness", "digest")
# Steps whose outcome goes to etl_audit.run_log (notify must stay driver-free).
RECORDED_STEPS = ("ingest", "load", "validate")

log = structlog.get_logger("refload")


# One etl_audit.run_log row: (warehouse URL, row fields).
StepOutcome = tuple[str | None, dict[str, Any]]


def run_step(
    step: str, payload: dict[str, Any], outcomes: list[StepOutcome] | None = None
) -> dict[str, Any]:
    """Run one step and record its outcome in etl_audit.run_log.

    With `outcomes`, the row is collected for the caller to write with the others
    (the local pipeline writes them in one connection); otherwise it is written now.
    """
    from steps.contracts import step_result
    from steps.shared.errors import FULL_TEXT_BYTES, RefloadError, shortened, truncate_bytes

    module = importlib.import_module(STEPS[step])
    structlog.contextvars.bind_contextvars(
        step=step, run_id=payload.get("run_id"), table=payload.get("table")
    )
    log.info("step started")
    record_now = outcomes is None
    outcomes = [] if outcomes is None else outcomes
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    if step == "notify":  # the run's FAIL, whether or not an alert channel delivers
        lineage.after_step(step, payload, {}, started_at)
    meter = cost.Meter()
    try:
        with cost.metering() as meter:
            result = step_result(step, module.run(payload))
    except RefloadError as error:
        error.step = error.step or step
        if error.table and not payload.get("table"):
            structlog.contextvars.bind_contextvars(table=error.table)
        spent = _cost(step, "failed", started, meter)
        failed = {**error.details, "table": payload.get("table") or error.table, **spent}
        metrics.emit(step, failed, started)
        log.error("step failed", error_type=type(error).__name__, error=error.message)
        if step in RECORDED_STEPS:
            outcomes.append(
                _outcome(
                    step,
                    payload,
                    payload.get("table") or error.table,
                    "failed",
                    {"type": type(error).__name__, "message": error.full_message},
                    {**error.details, **spent},
                )
            )
        if record_now:
            record_outcomes(outcomes)
        raise
    except Exception as error:  # a bug or an unwrapped library error: still on record
        failure = {
            "type": type(error).__name__,
            "message": truncate_bytes(f"internal error: {error}", FULL_TEXT_BYTES),
        }
        # What the log line, the Lambda runtime's errorMessage and so the state carry.
        short = shortened(error)
        log.exception("step failed unexpectedly", error_type=type(error).__name__)
        spent = _cost(step, "failed", started, meter)
        metrics.emit(step, {"table": payload.get("table"), **spent}, started)
        if step in RECORDED_STEPS:
            outcomes.append(_outcome(step, payload, payload.get("table"), "failed", failure, spent))
        if record_now:
            record_outcomes(outcomes)
        if short is error:
            raise
        raise short from error
    if step in RECORDED_STEPS:
        outcome = "stale" if result.get("stale") else "ok"
        if result.get("validation") == "failed":
            outcome = "failed"
        result = {**result, **_cost(step, outcome, started, meter)}
    metrics.emit(step, result, started)
    lineage_run = (
        None if step == "notify" else lineage.after_step(step, payload, result, started_at)
    )
    if step in RECORDED_STEPS:
        # The OpenLineage run id in run_log's details, beside the step that sent an event.
        details = {**result, "lineage_run_id": lineage_run} if lineage_run else result
        status = result.get("validation") or (
            "held"  # a group member's file, waiting for the others (steps.group)
            if result.get("held")
            else "stale"
            if result.get("stale")
            else "skipped"
            if result.get("published") is False
            else "ok"
        )
        outcomes.append(_outcome(step, payload, result.get("table"), status, None, details))
    if record_now:
        record_outcomes(outcomes)
    log.info("step finished", **{k: v for k, v in result.items() if k.startswith("rows_")})
    return result


def _cost(step: str, outcome: str, started: float, meter: cost.Meter) -> dict[str, Any]:
    """`{"cost": ...}` for a recorded step (its run_log row and result), else nothing."""
    if step not in RECORDED_STEPS:
        return {}
    spent = cost.step_cost(step, outcome, time.perf_counter() - started, meter)
    cost.collect(spent)
    return {"cost": spent}


def _outcome(
    step: str,
    payload: dict[str, Any],
    table: str | None,
    status: str,
    error: dict[str, str] | None,
    details: dict[str, Any],
) -> StepOutcome:
    return payload.get("warehouse"), {
        "run_id": payload.get("run_id", ""),
        "table_name": table,
        "step": step,
        "status": status,
        "error": error,
        "source_uri": payload.get("source"),
        "details": details,
    }


def record_outcomes(outcomes: list[StepOutcome]) -> None:
    """Write run_log rows; a warehouse that is down must not hide the steps' outcome."""
    from steps.shared.errors import RefloadError
    from steps.shared.warehouse import open_warehouse

    while outcomes:
        url = outcomes[0][0]
        rows = [row for u, row in outcomes if u == url]
        outcomes[:] = [(u, row) for u, row in outcomes if u != url]
        try:
            with open_warehouse(url) as warehouse:
                warehouse.ensure_audit_tables()
                warehouse.record_steps(rows)
        except RefloadError as failure:
            log.warning("could not record the step in etl_audit.run_log", error=failure.message)


def log_ignored(payload: dict[str, Any]) -> None:
    """The one log line of a landed marker object: no step runs, no alert, no run_log row.

    An object no config routes, or an empty one (`not_loaded`), may be a file someone
    expected to load: a warning and a metric (an alarm's business, not a page at 3 a.m.).
    """
    structlog.contextvars.bind_contextvars(run_id=payload.get("run_id"), step=payload["step"])
    kind = payload.get("not_loaded")
    if kind:
        structlog.contextvars.bind_contextvars(table=payload.get("table"))
        log.warning(
            "object not loaded", source=payload.get("source"), reason=payload["skipped_reason"]
        )
        metrics.emit_not_loaded(kind, payload.get("table"))
        return
    log.info("object ignored", source=payload.get("source"), reason=payload["skipped_reason"])


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    # pydantic (the payload models, steps.contracts) on first use: `import handler` stays light.
    from handler.aws.events import to_payload
    from steps.contracts import fit_state

    configure_logging()
    structlog.contextvars.clear_contextvars()
    # Every record of this invocation names it: the Lambda request (CloudWatch's
    # RequestId) and, under Step Functions, the execution (from the execution id every
    # Task passes), besides the table and run id run_step binds.
    invocation = {
        "request_id": getattr(context, "aws_request_id", None),
        "execution": _execution_name(event),
    }
    structlog.contextvars.bind_contextvars(**{k: v for k, v in invocation.items() if v})
    payload = to_payload(event)
    if payload.get("ignored"):
        log_ignored(payload)
        return payload
    with metrics.lambda_invocation(), cost.lambda_memory(context):
        result = run_step(payload["step"], payload)
    if payload["step"] == "notify":
        # Step Functions keeps the state and adds this small result beside it.
        return result
    # Steps pass pointers on: the next state's input is this payload plus the result,
    # bounded as a whole (the payload carries load's checks beside validate's).
    return fit_state({**payload, **result})


def _execution_name(event: Any) -> str | None:
    """The execution's name: the last part of the ARN in `execution_id`, if any."""
    execution_id = event.get("execution_id") if isinstance(event, dict) else None
    return execution_id.rsplit(":", 1)[-1] if isinstance(execution_id, str) else None
