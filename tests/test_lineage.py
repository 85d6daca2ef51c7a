"""OpenLineage run events (steps.shared.lineage): through the CLI and the handler, file and HTTP
transports, every event checked against the RunEvent schema."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from handler import lambda_handler
from handler.cli import main
from tests.conftest import CONFIGS, SAMPLES, run_args

CURRENCY_CSV = next((SAMPLES / "currency").glob("*/*"))
CODES_MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\n"
)

# openlineage-python ships no copy of the OpenLineage JSON Schema (its wheel has only the
# generated classes), so this is the spec's RunEvent (2-0-2) with the facets refload sends:
# their required fields and types, every facet with its _producer and _schemaURL.
FACET = {
    "type": "object",
    "required": ["_producer", "_schemaURL"],
    "properties": {"_producer": {"type": "string"}, "_schemaURL": {"type": "string"}},
}
DATASET = {
    "type": "object",
    "required": ["namespace", "name"],
    "properties": {
        "namespace": {"type": "string"},
        "name": {"type": "string"},
        "facets": {
            "type": "object",
            "additionalProperties": FACET,
            "properties": {
                "schema": {
                    "required": ["fields"],
                    "properties": {
                        "fields": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            },
                        }
                    },
                },
                "dataQualityAssertions": {
                    "required": ["assertions"],
                    "properties": {
                        "assertions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["assertion", "success"],
                                "properties": {
                                    "assertion": {"type": "string"},
                                    "success": {"type": "boolean"},
                                    "column": {"type": "string"},
                                },
                            },
                        }
                    },
                },
            },
        },
        "outputFacets": {
            "type": "object",
            "additionalProperties": FACET,
            "properties": {
                "outputStatistics": {
                    "required": ["rowCount"],
                    "properties": {"rowCount": {"type": "integer"}},
                }
            },
        },
    },
}
RUN_EVENT = {
    "type": "object",
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
    "properties": {
        "eventTime": {"type": "string", "format": "date-time"},
        "producer": {"type": "string", "pattern": "^[a-z][a-z0-9+.-]*:"},
        "schemaURL": {"type": "string", "pattern": "/OpenLineage.json#/\\$defs/RunEvent$"},
        "eventType": {
            "enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"],
        },
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {
                "runId": {"type": "string", "format": "uuid"},
                "facets": {"type": "object", "additionalProperties": FACET},
            },
        },
        "job": {
            "type": "object",
            "required": ["namespace", "name"],
            "properties": {"namespace": {"type": "string"}, "name": {"type": "string"}},
        },
        "inputs": {"type": "array", "items": DATASET},
        "outputs": {"type": "array", "items": DATASET},
    },
}


def _valid(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for event in events:
        jsonschema.validate(event, RUN_EVENT, format_checker=jsonschema.FormatChecker())
        uuid.UUID(event["run"]["runId"])
    return events


@pytest.fixture(autouse=True)
def _client_environment() -> Iterator[None]:
    """The client copies OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__... variables of the
    process, and then ignores a new OPENLINEAGE_URL: each test starts without them."""
    yield
    for name in [n for n in os.environ if n.startswith("OPENLINEAGE__")]:
        del os.environ[name]


@pytest.fixture
def file_transport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """OPENLINEAGE_CONFIG naming the client's file transport; returns the events file."""
    events = tmp_path / "lineage" / "events.jsonl"
    events.parent.mkdir()
    config = tmp_path / "openlineage-config.yml"
    config.write_text(
        f"transport:\n  type: file\n  log_file_path: {events}\n  append: true\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    return events


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return _valid([json.loads(line) for line in path.read_text().splitlines() if line])


def _target_name(warehouse_url: str, table: str) -> tuple[str, str]:
    """The OpenLineage namespace and name of a table in the test warehouse."""
    if warehouse_url.startswith("duckdb"):
        return "duckdb", f"warehouse.{table}"
    parts = urlsplit(warehouse_url)
    scheme = "redshift" if parts.scheme == "redshift" else "postgres"
    return f"{scheme}://127.0.0.1:{parts.port}", f"{parts.path.lstrip('/')}.{table}"


@pytest.mark.all_warehouses  # each dialect names its namespace
def test_a_run_sends_start_and_complete_with_its_datasets(
    file_transport, warehouse_url, sql, run_cli
):
    code, summary = run_cli(CONFIGS / "dim_currency.json", CURRENCY_CSV)
    assert (code, summary["status"]) == (0, "passed")
    start, complete = _events(file_transport)
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    run_id = str(uuid.uuid5(uuid.UUID("6f1c2b0e-5a43-4c1e-9d3e-7a0c5e2b9f41"), summary["run_id"]))
    assert start["run"]["runId"] == complete["run"]["runId"] == run_id
    assert (
        start["job"]
        == complete["job"]
        == {"namespace": "refload", "name": "dim_currency", "facets": {}}
    )
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [
        ("file", str(CURRENCY_CSV))
    ]
    (target,) = complete["outputs"]
    assert (target["namespace"], target["name"]) == _target_name(
        warehouse_url, "public.dim_currency"
    )
    assert [f["name"] for f in target["facets"]["schema"]["fields"]][:3] == [
        "currency_code",
        "numeric_code",
        "name",
    ]
    assert target["outputFacets"]["outputStatistics"]["rowCount"] == 178
    assertions = target["facets"]["dataQualityAssertions"]["assertions"]
    assert len(assertions) == summary["checks_total"] == 5
    assert all(a["success"] for a in assertions)
    assert {a["name"]: a.get("column") for a in assertions}["uniqueness_currency_code"] == (
        "currency_code"
    )
    # The lineage run id is on record beside the run's ingest.
    (details,) = sql(
        "SELECT details FROM etl_audit.run_log WHERE run_id = ? AND step = 'ingest'",
        summary["run_id"],
    )[0]
    assert json.loads(details)["lineage_run_id"] == run_id


def test_a_run_whose_tests_fail_sends_fail_over_http(
    httpserver, monkeypatch, warehouse_url, run_cli, table_dir, write
):
    httpserver.expect_request("/api/v1/lineage", method="POST").respond_with_data("", status=201)
    monkeypatch.setenv("OPENLINEAGE_URL", httpserver.url_for("/").rstrip("/"))
    config = table_dir(CODES_MAPPING, quality_tests=[{"type": "row_count_between", "min": 5}])
    code, summary = run_cli(config, write("a.csv", "code\nAA\n"))
    assert (code, summary["status"]) == (1, "failed")
    events = _valid([json.loads(request.data) for request, _ in httpserver.log])
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    (target,) = events[1]["outputs"]
    (assertion,) = target["facets"]["dataQualityAssertions"]["assertions"]
    assert (assertion["assertion"], assertion["success"]) == ("row_count_between", False)
    assert target["name"] == "warehouse.ref.t_codes"
    assert [f["name"] for f in target["facets"]["schema"]["fields"]] == ["code"]


def test_a_rejected_file_sends_start_and_fail_from_notify(
    file_transport, warehouse_url, run_cli, table_dir, write
):
    config = table_dir(CODES_MAPPING)
    code, summary = run_cli(config, write("a.csv", "code\nTOOLONG\n"))
    assert code == 2
    start, fail = _events(file_transport)
    assert (start["eventType"], fail["eventType"]) == ("START", "FAIL")
    assert summary["error"]["message"] in fail["run"]["facets"]["errorMessage"]["message"]
    assert fail["outputs"][0]["name"] == "warehouse.ref.t_codes"


def test_the_state_machine_steps_send_one_start_and_one_end(
    file_transport, warehouse_url, tmp_path
):
    state: dict[str, Any] = {
        "step": "ingest",
        "config": str(CONFIGS / "dim_currency.json"),
        "source": str(CURRENCY_CSV),
        "warehouse": warehouse_url,
        "curated_root": str(tmp_path / "curated"),
        "execution_id": "arn:aws:states:us-east-1:123456789012:execution:refload:exec-1",
    }
    sent = []
    for step in ("ingest", "load", "validate"):
        state = lambda_handler({**state, "step": step}, None)
        sent.append([e["eventType"] for e in _events(file_transport)])
    assert sent == [["START"], ["START"], ["START", "COMPLETE"]]
    assert {e["run"]["runId"] for e in _events(file_transport)} == {
        str(uuid.uuid5(uuid.UUID("6f1c2b0e-5a43-4c1e-9d3e-7a0c5e2b9f41"), "exec-1"))
    }


def test_a_step_functions_failure_ends_at_notify(file_transport, warehouse_url, tmp_path):
    # Load failed (its Catch): the START came from ingest, notify sends the one FAIL.
    state = {
        "step": "ingest",
        "config": str(CONFIGS / "dim_currency.json"),
        "source": str(CURRENCY_CSV),
        "warehouse": warehouse_url,
        "curated_root": str(tmp_path / "curated"),
        "execution_id": "arn:aws:states:us-east-1:123456789012:execution:refload:exec-2",
    }
    state = lambda_handler(state, None)
    failure = {"Error": "WarehouseUnavailable", "Cause": json.dumps({"errorMessage": "down"})}
    lambda_handler({**state, "step": "notify", "failed_step": "load", "failure": failure}, None)
    events = _events(file_transport)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert events[1]["run"]["facets"]["errorMessage"]["message"] == "WarehouseUnavailable: down"


def test_a_transport_that_fails_never_fails_the_load(
    monkeypatch, warehouse_url, sql, capsys, tmp_path
):
    # The discard port refuses; no retries here (the client's default backs off 5 times).
    config = tmp_path / "openlineage.yml"
    config.write_text(
        "transport:\n  type: http\n  url: http://127.0.0.1:9\n"
        "  retry:\n    total: 0\n    connect: 0\n    read: 0\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("OPENLINEAGE_CONFIG", str(config))
    code = main(
        run_args(
            CONFIGS / "dim_currency.json",
            CURRENCY_CSV,
            warehouse_url,
            "--quiet",
            curated=tmp_path / "curated",
        )
    )
    assert code == 0
    assert sql("SELECT COUNT(*) FROM public.dim_currency") == [(178,)]
    warnings = [
        line
        for line in capsys.readouterr().err.splitlines()
        if "could not send the OpenLineage event" in line
    ]
    assert len(warnings) == 2  # one per event sent: START, COMPLETE


def test_target_namespaces_follow_the_openlineage_naming():
    from steps.shared.lineage import target_dataset

    assert target_dataset("postgresql://u:p@db.example:6543/ref", "public", "t") == (
        "postgres://db.example:6543",
        "ref.public.t",
    )
    assert target_dataset("redshift://u:p@cluster.example/dw?ssl=true", "s", "t") == (
        "redshift://cluster.example:5439",
        "dw.s.t",
    )
    assert target_dataset("duckdb:////data/ref.duckdb", "public", "t") == (
        "duckdb",
        "ref.public.t",
    )


def test_a_rollback_is_a_run_of_its_own(file_transport, warehouse_url, run_cli, table_dir, write):
    config = table_dir(CODES_MAPPING)
    code, first = run_cli(config, write("a.csv", "code\nAA\n"))
    run_cli(config, write("b.csv", "code\nBB\n"))
    sent = len(_events(file_transport))
    assert sent == 4
    code = main(
        [
            *("rollback", "t_codes", "--to", first["run_id"]),
            *("--warehouse", warehouse_url, "--config-root", str(config.parent), "--quiet"),
        ]
    )
    assert code == 0
    start, complete = _events(file_transport)[sent:]
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert (
        start["run"]["runId"]
        == complete["run"]["runId"]
        != _events(file_transport)[0]["run"]["runId"]
    )
