"""`python -m handler freshness` and `{"step": "freshness"}` against real audit tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from handler import lambda_handler
from handler.cli import main
from tests.conftest import SAMPLES

CURRENCY_CSV = next((SAMPLES / "currency").glob("*/*.csv"))
FRESHNESS = {
    "warn_after": {"count": 26, "period": "hour"},
    "error_after": {"count": 2, "period": "day"},
}
BOTH = pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)


@pytest.fixture
def fleet(sample_configs: Path) -> Path:
    """The shipped configs; dim_currency (and only it) has a freshness key."""
    path = sample_configs / "dim_currency.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "freshness": FRESHNESS}))
    return sample_configs


def _freshness(fleet: Path, warehouse_url: str, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["freshness", "--config-root", str(fleet), "--warehouse", warehouse_url, *extra])
    return code, capsys.readouterr().out


def _at(hours_from_now: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours_from_now)
    return moment.isoformat(timespec="seconds")


@BOTH
def test_age_runs_from_the_last_publish(fleet, warehouse_url, run_cli, capsys, tmp_path):
    code, summary = run_cli(fleet / "dim_currency.json", CURRENCY_CSV)
    assert code == 0 and summary["published"] is True

    verdicts = {}
    for hours in (1, 30, 47, 60):
        code, out = _freshness(fleet, warehouse_url, capsys, "--now", _at(hours), "--json")
        report = json.loads(out)
        [table] = report["tables"]  # tables without the key are not checked
        assert table["table"] == "dim_currency"
        assert table["age_hours"] == pytest.approx(hours, abs=0.05)
        assert table["last_loaded_at"].endswith("Z")
        verdicts[hours] = (code, report["status"], table["status"])
    assert out.splitlines() == [out.strip()]  # --json: one object, nothing else
    assert verdicts == {
        1: (0, "pass", "pass"),
        30: (0, "warn", "warn"),
        47: (0, "warn", "warn"),
        60: (1, "error", "error"),
    }
    # Only the error sent an alert, one for the stale table, saying what to do.
    [alert_file] = (tmp_path / "outbox").glob("*.alert.json")
    alert = json.loads(alert_file.read_text())
    # Past 48 hours the age is told in days; no file came, so there is nothing to re-run.
    assert alert["subject"] == "[refload] dim_currency stale: no file for 2 days"
    assert "Age:           2 days (60.0 hours)" in alert["text"]
    assert not list((tmp_path / "outbox").glob("*.rerun.json"))
    assert f"Last load:     {table['last_loaded_at']}" in alert["text"]
    assert "a file at least every 2 days (warn after 26 hours, error after 2 days)" in alert["text"]
    assert "object key prefix 'currency/' in the raw bucket" in alert["text"]
    assert alert["signature"] == "refload:dim_currency:freshness"


@BOTH
def test_a_replay_skipped_as_unchanged_counts_as_a_received_file(
    fleet, warehouse_url, run_cli, sql, capsys
):
    run_cli(fleet / "dim_currency.json", CURRENCY_CSV)
    # The publish was three days ago; today the vendor sends the very same file again.
    sql("UPDATE etl_audit.load_ledger SET loaded_at = loaded_at - INTERVAL '3 days'")
    code, out = _freshness(fleet, warehouse_url, capsys, "--json")
    assert (code, json.loads(out)["tables"][0]["status"]) == (1, "error")

    code, summary = run_cli(fleet / "dim_currency.json", CURRENCY_CSV)
    assert code == 0 and summary["published"] is False

    code, out = _freshness(fleet, warehouse_url, capsys, "--json")
    [table] = json.loads(out)["tables"]
    assert code == 0 and table["status"] == "pass" and table["age_hours"] < 0.1


def test_never_loaded_table_is_listed_and_passes_the_exit_code(fleet, warehouse_url, capsys, sql):
    sql("SELECT 1")  # the warehouse is there (DuckDB's file too), no run yet
    code, out = _freshness(fleet, warehouse_url, capsys, "--json")
    assert code == 0
    assert json.loads(out) == {
        "status": "warn",
        "tables": [
            {
                "table": "dim_currency",
                "status": "never_loaded",
                "last_loaded_at": None,
                "age_hours": None,
            }
        ],
        "broken_configs": [],
    }


def test_text_output_is_one_line_per_table(fleet, warehouse_url, run_cli, capsys):
    run_cli(fleet / "dim_currency.json", CURRENCY_CSV)
    code, out = _freshness(fleet, warehouse_url, capsys, "--now", _at(30))
    assert code == 0
    [line] = out.splitlines()
    assert line.startswith("dim_currency       WARN         last file ")
    assert line.endswith("(30.0 h ago)  [warn after 26 hours, error after 2 days]")
    code, out = _freshness(fleet, warehouse_url, capsys, "--now", _at(60))
    assert code == 1
    [line] = out.splitlines()  # the alert it sent is on the table's line
    assert line.startswith("dim_currency       ERROR        last file ")
    assert line.endswith("[warn after 26 hours, error after 2 days]  alert: outbox sent")


def test_bad_now_is_exit_2_naming_the_value(fleet, warehouse_url, capsys):
    code = main(["freshness", "--config-root", str(fleet), "--now", "yesterday"])
    assert code == 2
    assert "--now: 'yesterday' is not an ISO 8601 time" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("freshness", "message"),
    [
        ({}, "freshness: needs warn_after, error_after or expect: 'auto'"),
        (
            {"warn_after": {"count": 1, "period": "week"}},
            "freshness.warn_after.period: Input should be 'minute', 'hour' or 'day'",
        ),
        (
            {
                "warn_after": {"count": 3, "period": "day"},
                "error_after": {"count": 1, "period": "day"},
            },
            "freshness: warn_after (3 days) is later than error_after (1 day)",
        ),
        (
            {"eror_after": {"count": 1, "period": "day"}},
            "freshness.eror_after: unknown key 'eror_after' in freshness "
            "(did you mean 'error_after'?)",
        ),
    ],
)
def test_bad_freshness_config_is_exit_2_naming_the_path(fleet, capsys, freshness, message):
    path = fleet / "dim_currency.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "freshness": freshness}))
    code = main(["freshness", "--config-root", str(fleet)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(path) in err and message in err


def test_the_scheduled_lambda_event_checks_and_alerts(
    fleet, warehouse_url, run_cli, monkeypatch, tmp_path
):
    run_cli(fleet / "dim_currency.json", CURRENCY_CSV)
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(fleet))
    monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("REFLOAD_RAW_ROOT", "s3://acme-raw/")
    # What the template's schedule sends, with a clock moved three days on.
    result = lambda_handler({"step": "freshness", "now": _at(72)}, None)
    assert result["status"] == "error"
    assert [(t["table"], t["status"]) for t in result["tables"]] == [("dim_currency", "error")]
    assert result["alerts"]["dim_currency"]["outbox"]["status"] == "sent"
    [alert_file] = (tmp_path / "outbox").glob("*.alert.json")
    assert "s3://acme-raw/currency/<yyyy-mm-dd>/<file>" in alert_file.read_text()


@pytest.mark.parametrize("how", ["cli", "lambda"])
def test_a_broken_config_is_skipped_and_the_others_still_checked(
    how, fleet, warehouse_url, run_cli, capsys, monkeypatch, tmp_path
):
    run_cli(fleet / "dim_currency.json", CURRENCY_CSV)
    broken = fleet / "dim_zipcode.json"
    broken.write_text(json.dumps({**json.loads(broken.read_text()), "table_name": "Dim Zip"}))
    message = f"{broken}: table_name: identifier 'Dim Zip' must be lower-case letters"

    if how == "cli":
        capsys.readouterr()
        root = ["--config-root", str(fleet), "--warehouse", warehouse_url]
        code = main(["freshness", *root, "--now", _at(60), "--json"])
        out, err = capsys.readouterr()
        assert code == 2  # a broken config outranks a stale table (whose alert went out)
        assert message in err and "(skipped)" in err
        report = json.loads(out)
    else:
        monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(fleet))
        monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", warehouse_url)
        report = lambda_handler({"step": "freshness", "now": _at(60)}, None)

    assert report["status"] == "error"
    assert [(t["table"], t["status"]) for t in report["tables"]] == [("dim_currency", "error")]
    [skipped] = report["broken_configs"]
    assert skipped["config"] == str(broken)
    assert skipped["error"]["type"] == "ConfigError"
    assert skipped["error"]["message"].startswith(message)
    [alert_file] = (tmp_path / "outbox").glob("*.alert.json")
    assert json.loads(alert_file.read_text())["table"] == "dim_currency"


def test_replaying_the_scheduled_event_runs_the_fleet_check(
    fleet, warehouse_url, run_cli, capsys, tmp_path
):
    run_cli(fleet / "dim_currency.json", CURRENCY_CSV)
    verdicts = {}
    for hours in (1, 60):
        event = tmp_path / f"freshness-{hours}.json"
        event.write_text(
            json.dumps({"step": "freshness", "config_root": str(fleet), "now": _at(hours)})
        )
        capsys.readouterr()
        code = main(["replay", str(event), "--warehouse", warehouse_url, "--json"])
        out, err = capsys.readouterr()
        report = json.loads(out)
        verdicts[hours] = (code, [(t["table"], t["status"]) for t in report["tables"]])
        assert "internal error" not in out + err
    assert verdicts == {1: (0, [("dim_currency", "pass")]), 60: (1, [("dim_currency", "error")])}
    # One alert: the stale table's, none for an "unknown table".
    [alert_file] = (tmp_path / "outbox").glob("*.alert.json")
    assert json.loads(alert_file.read_text())["subject"] == (
        "[refload] dim_currency stale: no file for 2 days"
    )


def test_a_config_that_links_to_itself_is_named_not_skipped(fleet, warehouse_url, capsys, sql):
    sql("SELECT 1")  # the warehouse is there (DuckDB's file too), no run yet
    loop = fleet / "dim_loop.json"
    loop.symlink_to(loop.name)
    code, out = _freshness(fleet, warehouse_url, capsys, "--json")
    assert code == 2
    assert json.loads(out)["broken_configs"] == [
        {
            "config": str(loop),
            "table": "dim_loop",
            "error": {
                "type": "RejectedInput",
                "message": f"{loop}: is a symbolic link that loops (to itself, or through "
                "others back to itself)",
            },
        }
    ]


def test_a_rollback_is_no_file_received(fleet, warehouse_url, run_cli, sql, capsys):
    code, first = run_cli(fleet / "dim_currency.json", CURRENCY_CSV)
    assert code == 0
    sql("UPDATE etl_audit.load_ledger SET loaded_at = loaded_at - INTERVAL '3 days'")
    capsys.readouterr()
    rollback = ["rollback", "dim_currency", "--to", first["run_id"], "--json"]
    assert main([*rollback, "--warehouse", warehouse_url, "--config-root", str(fleet)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "passed"

    # The table still waits for a file: the rollback published an old one again.
    code, out = _freshness(fleet, warehouse_url, capsys, "--json")
    [table] = json.loads(out)["tables"]
    assert (code, table["status"]) == (1, "error")
    assert table["age_hours"] == pytest.approx(72, abs=0.1)
