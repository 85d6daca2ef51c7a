"""What a run costs on AWS: in the run summary, the run log, status, history and EMF."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from handler import lambda_handler
from handler.cli import main
from steps.shared import cost
from tests.conftest import CONFIGS, ROOT, SAMPLES

CURRENCY = CONFIGS / "dim_currency.json"


def _currency_file():
    return next((SAMPLES / "currency").glob("*/*"))


def _json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _logged_costs(sql, run_id):
    rows = sql("SELECT step, details FROM etl_audit.run_log WHERE run_id = ?", run_id)
    return {step: json.loads(details)["cost"] for step, details in rows}


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_a_run_reports_its_cost_and_status_and_history_sum_it(
    run_cli, warehouse_url, sql, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    code, first = run_cli(CURRENCY, _currency_file())
    assert code == 0
    spent = first["cost"]
    assert set(spent) == {"usd", "lambda_gb_seconds", "transitions", "s3_requests"}
    # ChooseFirstStep, Ingest, IngestedOrIgnored, Load, PublishedOrStale, Validate,
    # ValidationPassed, Loaded: the states a passing run passes through.
    assert spent["transitions"] == 8
    assert spent["s3_requests"] == 0  # a local file, a local curated root
    assert 0 < spent["lambda_gb_seconds"] < 60
    # 8 transitions and 3 Lambda requests are the floor; the GB-seconds at 1 GB are on top.
    floor = 8 * 0.025 / 1000 + 3 * 0.20 / 1e6
    gb_seconds = spent["lambda_gb_seconds"] * 0.0000166667
    assert spent["usd"] == pytest.approx(floor + gb_seconds, abs=1e-7)  # rounded per step
    # Each step's run_log row carries its share; the run's cost is their sum.
    logged = _logged_costs(sql, first["run_id"])
    assert set(logged) == {"ingest", "load", "validate"}
    assert sum(c["transitions"] for c in logged.values()) == 8
    assert sum(c["usd"] for c in logged.values()) == pytest.approx(spent["usd"])

    code, second = run_cli(CURRENCY, _currency_file())  # the same file: load skips it
    assert code == 0 and second["cost"]["transitions"] == 8
    runs = _json(capsys, ["history", "dim_currency", "--warehouse", warehouse_url, "--json"])
    assert [r["cost"] for r in runs] == [second["cost"], first["cost"]]
    both = first["cost"]["usd"] + second["cost"]["usd"]
    by_month = _json(
        capsys, ["history", "dim_currency", "--warehouse", warehouse_url, "--cost", "--json"]
    )
    assert [(m["runs"], m["usd"]) for m in by_month["months"]] == [(2, pytest.approx(both))]
    assert len(by_month["runs"]) == 2
    capsys.readouterr()
    assert main(["history", "dim_currency", "--warehouse", warehouse_url, "--cost"]) == 0
    text = capsys.readouterr().out
    assert f"cost ${first['cost']['usd']:.6f}" in text
    assert "cost of dim_currency per month (USD, on AWS):" in text
    assert f"${both:.6f}  2 runs" in text

    fleet = _json(
        capsys,
        ["status", "--config-root", str(CONFIGS), "--warehouse", warehouse_url, "--json"],
    )
    by_table = {t["table"]: t["cost_usd_30d"] for t in fleet["tables"]}
    assert by_table["dim_currency"] == pytest.approx(both, abs=1e-6)
    assert by_table["dim_country"] == 0.0  # no run yet


def test_a_failed_run_costs_the_steps_it_ran(run_cli, write, table_dir, monkeypatch):
    monkeypatch.setenv("REFLOAD_COST_REGION", "us-west-1")  # its transitions cost more
    config = table_dir("source_column,target_column,data_type\ncode,code,int\n")
    code, summary = run_cli(config, write("bad.csv", "code\nnot-a-number\n"))
    assert code == 2
    # ChooseFirstStep, Ingest, IngestFailed, Notify, Failed.
    assert summary["cost"]["transitions"] == 5
    assert summary["cost"]["usd"] > 5 * 0.0279 / 1000


def test_s3_requests_are_counted_and_priced(s3, warehouse_url, sql, capsys, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")  # the context's wins
    monkeypatch.setenv("REFLOAD_METRICS", "stderr")
    s3.put_object(
        Bucket="raw", Key="currency/2026-11-01/iso4217.csv", Body=_currency_file().read_bytes()
    )
    state = {
        "config": str(CURRENCY),
        "source": "s3://raw/currency/2026-11-01/iso4217.csv",
        "warehouse": warehouse_url,
        "curated_root": "s3://curated/refload",
    }
    context = SimpleNamespace(memory_limit_in_mb=512, aws_request_id="r-1")
    capsys.readouterr()
    state = lambda_handler({**state, "step": "ingest"}, context)
    spent = state["cost"]
    [metric] = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if '"_aws"' in line and '"Step": "ingest"' in line
    ]
    # The context's 512 MB, not the environment's 10 GB, times the billed seconds.
    billed = 0.5 * metric["DurationMs"] / 1000
    assert spent["lambda_gb_seconds"] == pytest.approx(billed, abs=0.5 * 0.02)
    # At least the source's read and the curated file's write went through boto3.
    assert spent["s3_requests"] >= 2
    assert spent["usd"] > spent["lambda_gb_seconds"] * 0.0000166667 + 0.2e-6 + 3 * 0.025e-3
    assert _logged_costs(sql, state["run_id"])["ingest"] == spent


def test_the_step_emits_its_cost_as_an_emf_metric(warehouse_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REFLOAD_METRICS", "stderr")
    state = {
        "config": str(CURRENCY),
        "source": str(_currency_file()),
        "warehouse": warehouse_url,
        "curated_root": str(tmp_path / "curated"),
    }
    capsys.readouterr()
    result = lambda_handler({**state, "step": "ingest"}, None)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"_aws"' in line]
    record = next(line for line in lines if line.get("Step") == "ingest")
    assert record["CostUsd"] == result["cost"]["usd"]
    names = [m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert "CostUsd" in names


def test_the_priced_states_are_the_state_machines():
    states = json.loads((ROOT / "statemachine.asl.json").read_text())["States"]
    assert {s for path in cost.TRANSITIONS.values() for s in path} <= set(states)
