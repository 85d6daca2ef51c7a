"""OpenLineage run events (docs/architecture.md "Ecosystem"), through the openlineage-python client.

Off unless OPENLINEAGE_URL or OPENLINEAGE_CONFIG is set or the client would find an
openlineage.yml: only then is the client imported (the `lineage` extra), so dispatch and
notify stay light. Under Step Functions a run spans several invocations, so each event
belongs to the step whose outcome decides it, and a run gets one START and one end:

- START when ingest has succeeded (its eventTime: when ingest began), so Step Functions'
  retries of a failing ingest send nothing twice; a rollback's when its load succeeded;
- COMPLETE when validate passed (or load found the file stale), FAIL when validate failed;
- FAIL from notify for a failed step (with the START first when ingest never succeeded);
  a validate that failed its tests already sent its FAIL.

A transport that fails never fails the load: one warning.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from steps.shared.checks.status import passed

log = structlog.get_logger("refload.lineage")

JOB_NAMESPACE = "refload"
PRODUCER = "urn:refload:openlineage"
# The OpenLineage run id is uuid5(this, refload's run id): every invocation of a run (and
# a replay of it) names the same OpenLineage run without storing anything first.
RUN_NAMESPACE = uuid.UUID("6f1c2b0e-5a43-4c1e-9d3e-7a0c5e2b9f41")
# warehouse URL scheme -> OpenLineage namespace scheme (postgresql:// is postgres://)
NAMESPACE_SCHEMES = {"postgresql": "postgres", "postgres": "postgres", "redshift": "redshift"}


def configured() -> bool:
    """Whether the client would find a transport: where it looks, without importing it."""
    if os.environ.get("OPENLINEAGE_URL") or os.environ.get("OPENLINEAGE_CONFIG"):
        return True
    places = (Path.cwd() / "openlineage.yml", Path.home() / ".openlineage" / "openlineage.yml")
    return any(place.is_file() for place in places)


def lineage_run_id(run_id: str) -> str:
    return str(uuid.uuid5(RUN_NAMESPACE, run_id))


def after_step(
    step: str, payload: dict[str, Any], result: dict[str, Any], started: dt.datetime
) -> str | None:
    """Send the events this step's outcome decides; the OpenLineage run id when it did."""
    if not configured():
        return None
    states = _states(step, payload, result)
    run_id = payload.get("run_id") or result.get("run_id")
    if not states or not run_id:
        return None
    try:
        from openlineage.client.event_v2 import set_producer

        set_producer(PRODUCER)  # before any facet is made: each names its producer
        events = [_event(state, str(run_id), payload, result, started) for state in states]
        _emit(events)
    except Exception as failure:  # lineage is a by-product: the run keeps its outcome
        log.warning("could not send the OpenLineage event", error=str(failure)[:500])
    return lineage_run_id(str(run_id))


def _states(step: str, payload: dict[str, Any], result: dict[str, Any]) -> list[str]:
    if step == "ingest":
        # A Spark hand-off is not the end of ingest: its result comes in a later call.
        return [] if result.get("engine") == "spark" else ["START"]
    begins = ["START"] if payload.get("rollback_to") else []  # a rollback begins at load
    if step == "load":
        return begins + (["COMPLETE"] if result.get("stale") else [])
    if step == "validate":
        return ["COMPLETE" if result.get("validation") == "passed" else "FAIL"]
    if step == "notify":
        if payload.get("failed_step") == "validate" and payload.get("validation") == "failed":
            return []  # validate sent this run's FAIL
        failed = payload.get("failed_step")
        if failed in (None, "ingest") or (failed == "load" and begins):
            return ["START", "FAIL"]  # the step that sends START never succeeded
        return ["FAIL"]
    return []


def _event(
    state: str,
    run_id: str,
    payload: dict[str, Any],
    result: dict[str, Any],
    started: dt.datetime,
) -> Any:
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent
    from openlineage.client.event_v2 import RunState as EventType
    from openlineage.client.facet_v2 import error_message_run

    table = result.get("table") or payload.get("table")
    if not table:
        raise ValueError("the run names no table (its config could not be read)")
    source = result.get("source") or payload.get("source")
    inputs = [InputDataset(*_source_dataset(str(source)))] if source else []
    run_facets: dict[str, Any] = {}
    if state == "FAIL":
        from steps.shared.alerts.report import error_of

        error = error_of(payload)
        message = f"{error['type']}: {error['message']}" if error else "data-quality tests failed"
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=message, programmingLanguage="python"
        )
    return RunEvent(
        eventType=getattr(EventType, state),
        eventTime=(started if state == "START" else dt.datetime.now(dt.UTC)).isoformat(),
        run=Run(runId=lineage_run_id(run_id), facets=run_facets),
        job=Job(namespace=JOB_NAMESPACE, name=str(table)),
        producer=PRODUCER,
        inputs=inputs,
        outputs=_outputs(state, payload, result, OutputDataset),
    )


def _source_dataset(source: str) -> tuple[str, str]:
    """(namespace, name) of a source file, as OpenLineage names S3 objects and local files."""
    if source.startswith("s3://"):
        bucket, _, key = source[len("s3://") :].partition("/")
        return f"s3://{bucket}", key
    return "file", str(Path(source).resolve())


def target_dataset(warehouse_url: str, schema: str, table: str) -> tuple[str, str]:
    """(namespace, name) of a target table: `postgres://host:port` and the like; the name
    `database.schema.table` (a DuckDB file's database is its file name without extension)."""
    parts = urlsplit(warehouse_url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme == "duckdb":
        path = warehouse_url.split("://", 1)[1]
        database = Path(path).stem if path.strip("/") not in ("", ":memory:") else "memory"
        return "duckdb", f"{database}.{schema}.{table}"
    default_port = 5439 if scheme == "redshift" else 5432
    namespace = (
        f"{NAMESPACE_SCHEMES.get(scheme, scheme)}://{parts.hostname}:{parts.port or default_port}"
    )
    return namespace, f"{parts.path.lstrip('/')}.{schema}.{table}"


def _outputs(state: str, payload: dict[str, Any], result: dict[str, Any], output: Any) -> list[Any]:
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq
    from openlineage.client.facet_v2 import (
        output_statistics_output_dataset,
        schema_dataset,
    )

    from steps.shared.warehouse import resolve_url

    config_uri = payload.get("config") or result.get("config")
    if not config_uri:
        return []
    facets: dict[str, Any] = {}
    if state == "FAIL" and "validation" not in result:
        # A failed step may be the mapping sheet itself: the config alone names the target.
        from steps.shared.config.model import read_config

        config = read_config(str(config_uri))[1]
    else:
        from steps.shared.config.table import load_table_config

        spec = load_table_config(str(config_uri), mapping_override=payload.get("mapping"))
        config = spec.config
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(name=c.target, type=str(c.data_type))
                for c in spec.mapping.columns
            ]
        )
    checks = result.get("checks") if "validation" in result else payload.get("checks")
    if checks:
        columns = {t.test_name: _column(t) for t in config.quality_tests}
        facets["dataQualityAssertions"] = dq.DataQualityAssertionsDatasetFacet(
            assertions=[
                dq.Assertion(
                    assertion=str(c.get("type") or c.get("name")),
                    success=passed(c),
                    column=columns.get(str(c.get("name"))),
                    severity=c.get("severity"),
                    name=c.get("name"),
                    expected=None if c.get("expected") is None else str(c["expected"]),
                    actual=None if c.get("observed") is None else str(c["observed"]),
                )
                for c in checks
            ]
        )
    output_facets: dict[str, Any] = {}
    rows = result.get("rows_after", payload.get("rows_after"))
    if state != "START" and rows is not None:
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=rows)
        )
    namespace, name = target_dataset(
        resolve_url(payload.get("warehouse")), config.redshift_schema, config.target_table
    )
    return [output(namespace, name, facets=facets, outputFacets=output_facets)]


def _column(test: Any) -> str | None:
    """The one column a quality test is about, if it is about one."""
    if hasattr(test, "column"):
        return str(test.column)
    columns = getattr(test, "columns", None)
    return str(columns[0]) if columns and len(columns) == 1 else None


def _emit(events: list[Any]) -> None:
    from openlineage.client import OpenLineageClient

    client = OpenLineageClient()
    try:
        for event in events:
            client.emit(event)
    finally:
        client.close(timeout=5)
