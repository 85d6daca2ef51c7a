"""Each step's CloudWatch Embedded Metric Format line: valid EMF, the right numbers, and
never on the CLI's stdout unless asked."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from handler import lambda_handler
from handler.cli import main
from steps.shared.metrics import DIMENSION_SETS, METRICS, NAMESPACE
from tests.conftest import CONFIGS, ROOT, SAMPLES, run_args

CURRENCY_CSV = next((SAMPLES / "currency").glob("*/*"))


def assert_valid_emf(line: str) -> dict[str, Any]:
    """The EMF specification's structure: a root object with `_aws` (Timestamp in epoch
    milliseconds, CloudWatchMetrics directives: Namespace, Dimensions as sets of keys,
    Metrics as {Name, Unit}); every dimension key a string member of the root, every
    metric named in a directive a number member of the root."""
    record = json.loads(line)
    assert isinstance(record, dict)
    meta = record["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    assert isinstance(meta["CloudWatchMetrics"], list) and meta["CloudWatchMetrics"]
    for directive in meta["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert isinstance(directive["Namespace"], str) and directive["Namespace"]
        for dimension_set in directive["Dimensions"]:
            assert 1 <= len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(record[key], str) and record[key], key
        assert directive["Metrics"] and len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            value = record[metric["Name"]]
            assert isinstance(value, int | float) and not isinstance(value, bool), metric
    return record


def _emf_lines(text: str) -> list[dict[str, Any]]:
    return [assert_valid_emf(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def test_in_lambda_each_step_prints_one_emf_line_on_stdout(
    warehouse_url, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "refload")
    state = {
        "step": "ingest",
        "config": str(CONFIGS / "dim_currency.json"),
        "source": str(CURRENCY_CSV),
        "warehouse": warehouse_url,
        "curated_root": str(tmp_path / "curated"),
    }
    capsys.readouterr()
    for step in ("ingest", "load", "validate"):
        state = lambda_handler({**state, "step": step}, None)
    out = capsys.readouterr().out
    records = _emf_lines(out)
    assert len(records) == len(out.splitlines()) == 3  # stdout holds nothing else
    by_step = {r["Step"]: r for r in records}
    assert {r["Table"] for r in records} == {"dim_currency"}
    assert {r["_aws"]["CloudWatchMetrics"][0]["Namespace"] for r in records} == {"refload"}
    assert records[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Table", "Step"], ["Step"]]
    ingest, load, validate = by_step["ingest"], by_step["load"], by_step["validate"]
    assert (ingest["RowsRead"], ingest["RowsRejected"], ingest["DuplicatesDropped"]) == (181, 0, 3)
    assert load["RowsLoaded"] == 178
    assert validate["ChecksFailed"] == 0
    assert all(r["DurationMs"] >= 0 for r in records)
    units = {
        m["Name"]: m["Unit"] for r in records for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }
    assert units == {name: unit for name, (unit, _) in METRICS.items()}


def test_failed_tests_are_counted_and_a_failed_step_still_reports(
    warehouse_url, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("REFLOAD_METRICS", "stderr")
    config = json.loads((CONFIGS / "dim_currency.json").read_text())
    # The sheet beside the copied config: a mapping sheet must lie under the config's folder.
    sheet = tmp_path / config["mapping_file"]
    sheet.parent.mkdir(parents=True, exist_ok=True)
    sheet.write_bytes((CONFIGS / config["mapping_file"]).read_bytes())
    config["quality_tests"] += [
        {"type": "row_count_between", "min": 500},  # error: only 178 rows
        {"type": "row_count_between", "max": 10, "severity": "warn"},  # a warning, not counted
        {"type": "regex", "column": "currency_code", "pattern": "^[A-Z]{3}$"},  # passes
    ]
    path = tmp_path / "dim_currency.json"
    path.write_text(json.dumps(config))
    capsys.readouterr()
    code = main(run_args(path, CURRENCY_CSV, warehouse_url, "--json"))
    captured = capsys.readouterr()
    assert code == 1
    json.loads(captured.out)  # stdout is still exactly the one summary
    records = {r["Step"]: r for r in _emf_lines(captured.err)}
    assert records["validate"]["ChecksFailed"] == 1
    assert records["notify"]["Table"] == "dim_currency" and "DurationMs" in records["notify"]

    # A rejected file: ingest fails, and its line still carries the table and the duration.
    bad = tmp_path / "bad.csv"
    bad.write_bytes(CURRENCY_CSV.read_bytes().replace(b"AED;784", b"AED;78X", 1))
    code = main(["run", "--config", str(path), "--source", str(bad), "--warehouse", warehouse_url])
    records = {r["Step"]: r for r in _emf_lines(capsys.readouterr().err)}
    assert code == 2
    assert set(records["ingest"]) == {"_aws", "Table", "Step", "DurationMs", "CostUsd"}


@pytest.mark.parametrize("setting", [None, "auto", "off", "bogus"])
def test_locally_stdout_is_only_the_summary(warehouse_url, tmp_path, capsys, monkeypatch, setting):
    if setting:
        monkeypatch.setenv("REFLOAD_METRICS", setting)
    code = main(run_args(CONFIGS / "dim_currency.json", CURRENCY_CSV, warehouse_url, "--json"))
    captured = capsys.readouterr()
    assert code == 0
    assert len(captured.out.splitlines()) == 1 and json.loads(captured.out)["status"] == "passed"
    assert '"_aws"' not in captured.err
    if setting == "bogus":
        assert "REFLOAD_METRICS: unknown destination 'bogus'" in captured.err


def _template() -> dict[str, Any]:
    import yaml

    from tests.test_workflow import _CloudFormationLoader

    return yaml.load((ROOT / "template.yaml").read_text(), Loader=_CloudFormationLoader)


def test_the_dashboard_and_the_alarm_use_the_metrics_the_steps_emit():
    resources = _template()["Resources"]
    body = resources["FleetDashboard"]["Properties"]["DashboardBody"]["Sub"]
    widgets = json.loads(body.replace("${AWS::Region}", "eu-west-1"))["widgets"]
    searched = {
        re.search(r'\{(\w+),Step,Table\} MetricName="(\w+)"', m[0]["expression"]).groups()
        for w in widgets
        for m in w["properties"]["metrics"]
        if isinstance(m[0], dict)
    }
    assert {namespace for namespace, _ in searched} == {NAMESPACE}
    assert {"RowsLoaded", "ChecksFailed", "DurationMs"} <= {name for _, name in searched}
    assert {name for _, name in searched} <= set(METRICS)

    alarm = resources["ChecksFailedAlarm"]["Properties"]
    watched = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert {(m["Namespace"], m["MetricName"]) for m in watched} == {(NAMESPACE, "ChecksFailed")}
    # The alarm reads the per-Step series, so the Step dimension set must be emitted.
    assert [[d["Name"] for d in m["Dimensions"]] for m in watched] == [["Step"], ["Step"]]
    assert ["Step"] in DIMENSION_SETS
    assert {d["Value"] for m in watched for d in m["Dimensions"]} == {"load", "validate"}


def test_the_cli_in_a_lambda_environment_keeps_stdout_for_the_summary(
    warehouse_url, capsys, monkeypatch
):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "refload")
    code = main(run_args(CONFIGS / "dim_currency.json", CURRENCY_CSV, warehouse_url, "--json"))
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["status"] == "passed"
    # stderr reaches CloudWatch Logs too in Lambda: the metrics are still there.
    assert [r["Step"] for r in _emf_lines(captured.err)] == ["ingest", "load", "validate"]
