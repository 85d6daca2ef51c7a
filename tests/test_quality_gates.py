"""before_publish tests, read-only custom SQL, hostile names, and `history`."""

from __future__ import annotations

import json

import pytest

from handler.cli import main
from steps.config import parse_config
from steps.errors import ConfigError

# SQL behaviour differs between warehouses here: every test runs on all three.
pytestmark = pytest.mark.all_warehouses

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),,,false,\ncountry,country,varchar(2),,,,\nn,n,integer,,,,\n"
)
GOOD = "code,country,n\nAA,US,1\nBB,US,2\n"
BAD = "code,country,n\nCC,XX,3\nDD,,4\n"
GATE = {
    "type": "not_null",
    "columns": ["country"],
    "when": "before_publish",
    "name": "country_present",
}


def test_before_publish_failure_leaves_the_target_exactly_as_it_was(
    table_dir, write, run_cli, sql, tmp_path
):
    config = table_dir(MAPPING, quality_tests=[GATE])
    code, first = run_cli(config, write("a.csv", GOOD))
    assert code == 0, first["error"]
    before = sql("SELECT * FROM ref.t_codes ORDER BY code")

    code, summary = run_cli(config, write("b.csv", BAD))

    assert code == 1
    assert summary["status"] == "failed"
    assert summary["error"]["type"] == "QualityCheckFailed"
    assert summary["checks"] == [
        {
            "name": "country_present",
            "type": "not_null",
            "severity": "error",
            "status": "fail",
            "observed": 1,
            "expected": 0,
        }
    ]
    assert sql("SELECT * FROM ref.t_codes ORDER BY code") == before
    assert sql(
        "SELECT COUNT(*) FROM etl_audit.load_ledger WHERE run_id = ?", summary["run_id"]
    ) == [(0,)]
    [(status, details)] = sql(
        "SELECT status, details FROM etl_audit.data_quality_tests WHERE run_id = ?",
        summary["run_id"],
    )
    assert status == "fail"
    assert json.loads(details)["sample_rows"] == [{"code": "DD", "country": None, "n": 4}]
    [alert] = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.alert.json")]
    assert "Failed test: country_present (not_null, severity error): fail" in alert["text"]


def test_before_publish_pass_publishes_and_is_listed_with_the_other_tests(
    table_dir, write, run_cli, sql
):
    config = table_dir(
        MAPPING, quality_tests=[GATE, {"type": "row_count_between", "min": 1, "max": 5}]
    )
    code, summary = run_cli(config, write("a.csv", GOOD))
    assert code == 0, summary["error"]
    assert [(c["name"], c["status"]) for c in summary["checks"]] == [
        ("country_present", "pass"),
        ("row_count_between", "pass"),
    ]
    assert sql("SELECT COUNT(*) FROM etl_audit.data_quality_tests") == [(2,)]


def test_warn_before_publish_does_not_stop_the_load(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, quality_tests=[{**GATE, "severity": "warn"}])
    code, summary = run_cli(config, write("b.csv", BAD))
    assert code == 0
    assert summary["checks"][0]["status"] == "fail"
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(2,)]


HOSTILE_SQL = [
    ("DELETE FROM {table}", "custom_sql must be a SELECT, found DELETE"),
    ("DROP TABLE {table}", "custom_sql must be a SELECT, found DROP"),
    ("SELECT 1; DELETE FROM {table}", "must be exactly one SELECT, found 2 statements"),
    ("SELECT * FROM {table} -- harmless\n; DROP TABLE x", "found 2 statements"),
    ("SELECT * FROM {table} /* ; */ ; UPDATE t SET a = 1", "found 2 statements"),
    (
        "WITH gone AS (DELETE FROM {table} RETURNING *) SELECT * FROM gone",
        "custom_sql must only read; it contains DELETE",
    ),
    ("SELECT * INTO copy_of_it FROM {table}", "custom_sql must only read; it contains INTO"),
    ("INSERT INTO x SELECT * FROM {table}", "custom_sql must be a SELECT, found INSERT"),
    ("SELEC * FROM {table}", "custom_sql"),
]


@pytest.mark.parametrize(("sql_text", "message"), HOSTILE_SQL, ids=[m for _, m in HOSTILE_SQL])
def test_custom_sql_that_is_not_one_read_only_select_is_a_config_error(sql_text, message):
    raw = {
        "table_name": "t",
        "mapping_file": "m.csv",
        "quality_tests": [
            {"type": "not_null", "columns": ["a"]},
            {"type": "custom_sql", "name": "sneaky", "sql": sql_text},
        ],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="t.json")
    assert "quality_tests[1].sql: " in str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize("warehouse_url", ["postgresql", "redshift"], indirect=True)
def test_custom_sql_runs_read_only(table_dir, write, run_cli, sql):
    # nextval() writes: parsing lets it through, the read-only transaction does not.
    sql("CREATE SCHEMA ref")
    sql("CREATE SEQUENCE ref.seq")
    config = table_dir(
        MAPPING,
        quality_tests=[{"type": "custom_sql", "sql": "SELECT nextval('ref.seq') FROM {table}"}],
    )
    code, summary = run_cli(config, write("a.csv", GOOD))
    assert code == 1
    assert summary["checks"][0]["status"] == "error"
    [(details,)] = sql("SELECT details FROM etl_audit.data_quality_tests")
    assert "read-only transaction" in json.loads(details)["error"]
    assert sql("SELECT is_called FROM ref.seq") == [(False,)]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"table_name": 't"; DROP TABLE x; --'},
            "table_name: identifier 't\"; DROP TABLE x; --' must be lower-case",
        ),
        ({"redshift_schema": "public; DROP"}, "redshift_schema: identifier"),
        (
            {
                "quality_tests": [
                    {
                        "type": "referential_integrity",
                        "columns": ["a"],
                        "ref_table": "x.y; DROP TABLE z",
                        "ref_columns": ["b"],
                    }
                ]
            },
            "quality_tests[0].ref_table: identifier 'y; DROP TABLE z' must be lower-case",
        ),
        ({"primary_key": ['a" OR 1=1']}, "primary_key: identifier"),
    ],
)
def test_hostile_identifiers_are_config_errors(raw, message):
    with pytest.raises(ConfigError, match=None) as caught:
        parse_config({"table_name": "t", "mapping_file": "m.csv", **raw}, source="t.json")
    assert message in str(caught.value)


def test_history_lists_recent_runs_newest_first(table_dir, write, run_cli, warehouse_url, capsys):
    config = table_dir(MAPPING, quality_tests=[GATE])
    _, first = run_cli(config, write("a.csv", GOOD))
    _, second = run_cli(config, write("b.csv", BAD))
    _, third = run_cli(config, write("c.csv", "code,country,n\nAA,US,1\n,US,2\n"))
    capsys.readouterr()
    assert main(["history", "t_codes", "--warehouse", warehouse_url, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == [third["run_id"], second["run_id"], first["run_id"]]
    assert [r["status"] for r in runs] == ["failed", "failed", "passed"]
    assert runs[2]["rows_published"] == 2
    assert runs[1]["checks"][0]["status"] == "fail"
    assert runs[0]["steps"][0]["error_type"] == "RejectedInput"
    assert main(["history", "t_codes", "--warehouse", warehouse_url]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[2:4] == ["FAILED", "run"]
    assert any("fail  country_present (error): observed 1, expected 0" in line for line in text)
