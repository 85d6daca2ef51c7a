"""Reference data has history: change sets, the changes_within guard, scd2, rollback.

On all three warehouses (Redshift through the proxy): the SQL that finds the changes and
keeps the versions differs between them.
"""

from __future__ import annotations

import json

import pytest

from handler.cli import main

pytestmark = pytest.mark.all_warehouses

# `loaded` is derived from a placeholder: it differs on every load and is no change.
MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\n"
    "name,name,varchar(20),,,,\n"
    "n,n,integer,,,,\n"
    ",loaded_by,string,,{run_id},,\n"
)
FIRST = "code,name,n\nAA,Alpha,1\nBB,Beta,2\nCC,Gamma,3\nDD,Delta,\n"
# BB's name changes, DD's null n gets a value, CC goes, EE comes.
SECOND = "code,name,n\nAA,Alpha,1\nBB,Bravo,2\nDD,Delta,4\nEE,Echo,5\n"


def _ledger_changes(sql, run_id):
    rows = sql(
        "SELECT load_mode, keys_added, keys_removed, keys_changed, change_samples "
        "FROM etl_audit.load_ledger WHERE run_id = ?",
        run_id,
    )
    mode, added, removed, changed, samples = rows[0]
    return mode, (added, removed, changed), json.loads(samples)


def test_each_publish_counts_keys_added_removed_and_changed(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, primary_key=["code"])
    code, first = run_cli(config, write("a.csv", FIRST))
    assert code == 0
    assert first["changes"] == {"added": 4, "removed": 0, "changed": 0}

    code, second = run_cli(config, write("b.csv", SECOND))

    assert code == 0, second["error"]
    assert second["changes"] == {"added": 1, "removed": 1, "changed": 2}
    mode, counts, samples = _ledger_changes(sql, second["run_id"])
    assert (mode, counts) == ("truncate", (1, 1, 2))
    assert samples["added"] == [{"key": {"code": "EE"}}]
    assert samples["removed"] == [{"key": {"code": "CC"}}]
    assert samples["changed"] == [
        {"key": {"code": "BB"}, "before": {"name": "Beta"}, "after": {"name": "Bravo"}},
        {"key": {"code": "DD"}, "before": {"n": None}, "after": {"n": 4}},
    ]


def test_upsert_counts_no_removed_keys(table_dir, write, run_cli):
    config = table_dir(MAPPING, load_mode="upsert", primary_key=["code"])
    assert run_cli(config, write("a.csv", FIRST))[0] == 0
    code, summary = run_cli(config, write("b.csv", SECOND))
    assert code == 0
    # Upsert keeps CC: only the file's keys are added or changed.
    assert summary["changes"] == {"added": 1, "removed": 0, "changed": 2}


def test_a_table_without_a_primary_key_has_no_change_set(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING)
    code, summary = run_cli(config, write("a.csv", FIRST))
    assert code == 0 and summary["changes"] is None
    assert _ledger_changes_raw(sql) == [(None, None, None)]


def _ledger_changes_raw(sql):
    return sql("SELECT keys_added, keys_removed, keys_changed FROM etl_audit.load_ledger")


def test_history_shows_the_change_set(table_dir, write, run_cli, warehouse_url, capsys):
    config = table_dir(MAPPING, primary_key=["code"])
    run_cli(config, write("a.csv", FIRST))
    _, second = run_cli(config, write("b.csv", SECOND))

    assert main(["history", "t_codes", "--warehouse", warehouse_url, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["run_id"] == second["run_id"]
    assert runs[0]["changes"] == {"added": 1, "removed": 1, "changed": 2}
    assert main(["history", "t_codes", "--warehouse", warehouse_url]) == 0
    assert "keys added 1, removed 1, changed 2" in capsys.readouterr().out


def test_an_existing_ledger_gets_the_change_columns(table_dir, write, run_cli, sql):
    """A ledger made before change sets existed is extended, its rows kept."""
    sql("CREATE SCHEMA etl_audit")
    sql(
        "CREATE TABLE etl_audit.load_ledger (run_id VARCHAR(128) NOT NULL, "
        "table_name VARCHAR(256) NOT NULL, target VARCHAR(512) NOT NULL, "
        "source_uri VARCHAR(2048), source_version VARCHAR(1024), "
        "content_hash VARCHAR(64) NOT NULL, config_hash VARCHAR(64) NOT NULL, "
        "curated_uri VARCHAR(2048), load_mode VARCHAR(16) NOT NULL, rows_loaded BIGINT NOT NULL, "
        "rows_before BIGINT NOT NULL, rows_after BIGINT NOT NULL, loaded_at TIMESTAMP NOT NULL)"
    )
    sql(
        "INSERT INTO etl_audit.load_ledger VALUES ('old', 'x', 'ref.x', '', '', 'h', 'c', '', "
        "'truncate', 1, 0, 1, TIMESTAMP '2026-01-01 00:00:00')"
    )
    config = table_dir(MAPPING, primary_key=["code"])
    code, summary = run_cli(config, write("a.csv", FIRST))
    assert code == 0, summary["error"]
    assert sql("SELECT run_id, keys_added FROM etl_audit.load_ledger ORDER BY loaded_at") == [
        ("old", None),
        (summary["run_id"], 4),
    ]


GUARD = {
    "type": "changes_within",
    "max_changed_pct": 30,
    "max_removed_pct": 10,
    "when": "before_publish",
}


def test_a_file_that_rewrites_the_table_is_blocked(table_dir, write, run_cli, sql, tmp_path):
    config = table_dir(MAPPING, primary_key=["code"], quality_tests=[GUARD])
    assert run_cli(config, write("a.csv", FIRST))[0] == 0
    before = sql("SELECT code, name, n FROM ref.t_codes ORDER BY code")

    code, summary = run_cli(config, write("b.csv", SECOND))

    assert code == 1
    assert summary["status"] == "failed"
    check = summary["checks"][0]
    assert (check["type"], check["status"]) == ("changes_within", "fail")
    assert check["observed"] == "added 1 (25.00%), removed 1 (25.00%), changed 2 (50.00%)"
    assert check["expected"] == "removed <= 10.0%, changed <= 30.0%"
    # The target keeps its rows, and the ledger has no row for the blocked run.
    assert sql("SELECT code, name, n FROM ref.t_codes ORDER BY code") == before
    assert sql(
        "SELECT COUNT(*) FROM etl_audit.load_ledger WHERE run_id = ?", summary["run_id"]
    ) == [(0,)]
    details = json.loads(
        sql(
            "SELECT details FROM etl_audit.data_quality_tests WHERE run_id = ?",
            summary["run_id"],
        )[0][0]
    )
    assert details["sample_rows"][0] == {
        "change": "changed",
        "key": {"code": "BB"},
        "before": {"name": "Beta"},
        "after": {"name": "Bravo"},
    }
    # The alert lists the changed keys with their values before and after.
    alert = json.loads(next((tmp_path / "outbox").glob("*.alert.json")).read_text())["text"]
    assert "Failed test: changes_within" in alert
    assert '"key": {"code": "BB"}, "before": {"name": "Beta"}, "after": {"name": "Bravo"}' in alert


def test_a_file_within_the_limits_publishes(table_dir, write, run_cli, sql):
    guard = {**GUARD, "max_changed_pct": 60, "max_removed_pct": 25}
    config = table_dir(MAPPING, primary_key=["code"], quality_tests=[guard])
    assert run_cli(config, write("a.csv", FIRST))[0] == 0
    code, summary = run_cli(config, write("b.csv", SECOND))
    assert code == 0, summary
    assert summary["checks"][0]["status"] == "pass"
    assert sql("SELECT name FROM ref.t_codes WHERE code = 'BB'") == [("Bravo",)]


def test_changes_within_after_publish_reads_the_run_change_set(
    table_dir, write, run_cli, sql, tmp_path
):
    guard = {"type": "changes_within", "max_added_pct": 10}
    config = table_dir(MAPPING, primary_key=["code"], quality_tests=[guard])
    assert run_cli(config, write("a.csv", FIRST))[0] == 0
    code, summary = run_cli(config, write("b.csv", SECOND))
    # After publish: the file is in (too late to block), and the run fails with the alert.
    assert code == 1
    assert sql("SELECT name FROM ref.t_codes WHERE code = 'EE'") == [("Echo",)]
    details = json.loads(
        sql(
            "SELECT details FROM etl_audit.data_quality_tests WHERE run_id = ?",
            summary["run_id"],
        )[0][0]
    )
    assert details["sample_rows"][0] == {"change": "added", "key": {"code": "EE"}}
    assert summary["alert"]["outbox"]["status"] == "sent"
    alert = json.loads(next((tmp_path / "outbox").glob("*.alert.json")).read_text())["text"]
    assert "Changes:       added 1, removed 1, changed 2" in alert
