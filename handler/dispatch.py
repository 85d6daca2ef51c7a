"""Parse the event, run the step it names, return the step's result.

Step modules are imported on first use so that dispatch and notify stay free
of pandas, pyarrow and warehouse drivers (Lambda cold start).
"""

from __future__ import annotations

import importlib
from typing import Any

import structlog

from handler import events
from handler.log import configure_logging

# step name -> module with a `run(payload) -> dict`
STEPS: dict[str, str] = {
    "ingest": "steps.ingest",
    "load": "steps.load",
    "validate": "steps.validate",
    "notify": "steps.notify",
}
# Steps whose outcome goes to etl_audit.run_log (notify must stay driver-free).
RECORDED_STEPS = ("ingest", "load", "validate")

log = structlog.get_logger("refload")


def run_step(step: str, payload: dict[str, Any]) -> dict[str, Any]:
    from steps.errors import RefloadError

    module = importlib.import_module(STEPS[step])
    structlog.contextvars.bind_contextvars(
        step=step, run_id=payload.get("run_id"), table=payload.get("table")
    )
    log.info("step started")
    try:
        result: dict[str, Any] = module.run(payload)
    except RefloadError as error:
        error.step = error.step or step
        log.error("step failed", error_type=type(error).__name__, error=error.message)
        if step in RECORDED_STEPS:
            _record(
                step,
                {**payload, "table": payload.get("table") or error.table},
                "failed",
                error.to_dict(),
                error.details,
            )
        raise
    if step in RECORDED_STEPS:
        status = result.get("validation") or (
            "skipped" if result.get("published") is False else "ok"
        )
        _record(step, {**payload, "table": result.get("table")}, status, None, result)
    log.info("step finished", **{k: v for k, v in result.items() if k.startswith("rows_")})
    return result


def _record(
    step: str,
    payload: dict[str, Any],
    status: str,
    error: dict[str, str] | None,
    details: dict[str, Any],
) -> None:
    """One etl_audit.run_log row; a warehouse that is down must not hide the step's outcome."""
    from steps.errors import RefloadError
    from steps.warehouse import open_warehouse

    try:
        with open_warehouse(payload.get("warehouse")) as warehouse:
            warehouse.ensure_audit_tables()
            warehouse.record_step(
                payload.get("run_id", ""),
                payload.get("table"),
                step,
                status,
                error,
                payload.get("source"),
                details,
            )
    except RefloadError as failure:
        log.warning("could not record the step in etl_audit.run_log", error=failure.message)


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    configure_logging()
    structlog.contextvars.clear_contextvars()
    payload = events.to_payload(event)
    result = run_step(payload["step"], payload)
    # Steps pass pointers on: the next state's input is this payload plus the result.
    return {**payload, **result}
