"""The Spark ingest on EMR Serverless: what the state machine needs to run it as a job
(`hand_off`, in Lambda), the job itself (`job_main`, scripts/spark_job.py), and its result
read back by the Lambda step after it (`job_result`). pyspark only inside the job."""

from __future__ import annotations

import json
from typing import Any

from steps.ingest.curated import DEFAULT_CURATED_ROOT
from steps.shared.config.table import TableSpec
from steps.shared.errors import RefloadError
from steps.shared.io import storage

# Set on the Lambda function when the stack has an EMR Serverless application: ingest then
# hands a Spark table to the state machine instead of running it.
APPLICATION_ENV = "REFLOAD_SPARK_APPLICATION_ID"


def hand_off(spec: TableSpec, payload: dict[str, Any]) -> dict[str, Any]:
    """What the state machine needs to run this ingest as an EMR Serverless job.

    The job gets the ingest payload as its one argument and writes its result (or its
    refload error) as JSON to `spark_job.result_uri`; the Lambda step after it gets that URI
    as `spark_result_uri` and reads it back.
    """
    root = payload.get("curated_root") or DEFAULT_CURATED_ROOT
    result_uri = storage.join(root, spec.config.table_name, "_spark", f"{payload['run_id']}.json")
    job_payload = {
        k: payload[k]
        for k in (
            "config",
            "mapping",
            "source",
            "source_version_id",
            "run_id",
            "curated_root",
            "warehouse",
        )
        if payload.get(k)
    }
    arguments = [json.dumps({**job_payload, "spark_result_uri": result_uri})]
    # The result's URI only inside spark_job: the state machine hands it to the Lambda step
    # after the job, while a re-run of this state (an alert's) hands the file off again.
    return {
        **job_payload,
        "step": "ingest",
        "table": spec.config.table_name,
        "engine": "spark",
        "spark_job": {"arguments": arguments, "result_uri": result_uri},
    }


def job_main(argv: list[str]) -> int:
    """The EMR Serverless job (scripts/spark_job.py): ingest, then write the outcome.

    A refload error (a rejected file) is an outcome, not a crash: it is written for the
    Lambda step after the job to raise, so the alert says what the Lambda engine says.
    """
    from steps.ingest.spark import run
    from steps.shared.config.table import load_table_config
    from steps.shared.errors import error_json

    payload = json.loads(argv[0])
    result_uri = payload.pop("spark_result_uri")
    try:
        spec = load_table_config(payload["config"], mapping_override=payload.get("mapping"))
        outcome: dict[str, Any] = {"result": run(spec, payload)}
    except RefloadError as error:
        outcome = {"error": json.loads(error_json(error)) | {"table": error.table}}
    storage.write_bytes(result_uri, json.dumps(outcome, default=str).encode())
    return 0


def job_result(result_uri: str) -> dict[str, Any]:
    """The Spark job's ingest result, or its error raised again."""
    outcome = json.loads(storage.read_bytes(result_uri))
    if "error" in outcome:
        fields = outcome["error"]
        table = fields.pop("table", None)
        from steps.shared.errors import error_from_json

        error = error_from_json(json.dumps(fields))
        error.table = table
        raise error
    result: dict[str, Any] = outcome["result"]
    return result
