"""before_publish tests, read-only custom SQL, hostile names, and `history`."""

from __future__ import annotations

import json

import pytest

from handler.cli import main
from steps.shared.config.model import parse_config
from steps.shared.errors import ConfigError

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
    assert [r["status"] for r in runs] == ["rejected", "failed", "passed"]
    assert runs[2]["rows_published"] == 2
    assert runs[1]["checks"][0]["status"] == "fail"
    assert runs[0]["steps"][0]["error_type"] == "RejectedInput"
    assert main(["history", "t_codes", "--warehouse", warehouse_url]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[2:4] == ["REJECTED", "run"]
    assert any("fail  country_present (error): observed 1, expected 0" in line for line in text)


def _side_effects(sql) -> None:
    sql("CREATE SCHEMA ref")
    sql("CREATE SEQUENCE ref.seq")
    sql("SELECT nextval('ref.seq')")  # at 1: a reset to 1 would be invisible
    sql("SELECT nextval('ref.seq')")
    sql("CREATE TABLE ref.keep (id INTEGER)")
    sql("INSERT INTO ref.keep VALUES (1), (2)")
    sql(
        "CREATE FUNCTION ref.purge() RETURNS INTEGER LANGUAGE sql AS "
        "'DELETE FROM ref.keep; SELECT 0'"
    )


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    "query",
    [
        "SELECT code FROM {table} WHERE setval('ref.seq', 1) < 0",
        "SELECT code FROM {table} WHERE ref.purge() < 0",
    ],
    ids=["sequence-reset", "function-delete"],
)
def test_before_publish_custom_sql_cannot_write_on_postgresql(
    query, table_dir, write, run_cli, sql
):
    _side_effects(sql)
    # severity warn: the publish commits whatever the test does, so any write would stick.
    gate = {"type": "custom_sql", "sql": query, "when": "before_publish", "severity": "warn"}
    config = table_dir(MAPPING, quality_tests=[gate])
    code, summary = run_cli(config, write("a.csv", GOOD))
    assert code == 0, summary
    [check] = summary["checks"]
    assert check["status"] == "error"
    [(details,)] = sql("SELECT details FROM etl_audit.data_quality_tests")
    assert "read-only transaction" in json.loads(details)["error"]
    assert sql("SELECT last_value FROM ref.seq") == [(2,)]
    assert sql("SELECT id FROM ref.keep ORDER BY id") == [(1,), (2,)]
    # The publish went on after the savepoint was rolled back to, and is not read-only.
    assert sql("SELECT code FROM ref.t_codes ORDER BY code") == [("AA",), ("BB",)]
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == [(1,)]


@pytest.mark.parametrize("warehouse_url", ["postgresql", "duckdb"], indirect=True)
def test_before_publish_custom_sql_gates_the_publish(table_dir, write, run_cli, sql):
    gate = {
        "type": "custom_sql",
        "name": "no_xx",
        "sql": "SELECT code FROM {table} WHERE country = 'XX'  -- vendor test rows",
        "when": "before_publish",
    }
    config = table_dir(MAPPING, quality_tests=[gate])
    assert run_cli(config, write("a.csv", GOOD))[0] == 0
    code, summary = run_cli(config, write("b.csv", BAD))
    assert code == 1
    assert summary["checks"][0]["status"] == "fail"
    assert sql("SELECT code FROM ref.t_codes ORDER BY code") == [("AA",), ("BB",)]


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_before_publish_custom_sql_is_refused_on_redshift(table_dir, write, run_cli, sql):
    gate = {"type": "custom_sql", "sql": "SELECT 1 FROM {table}", "when": "before_publish"}
    config = table_dir(MAPPING, quality_tests=[{"type": "not_null", "columns": ["code"]}, gate])
    code, summary = run_cli(config, write("a.csv", GOOD))
    assert code == 2
    assert summary["error"]["type"] == "ConfigError"
    assert summary["error"]["message"] == (
        f"{config}, quality_tests[1] (custom_sql): custom_sql cannot run before_publish on "
        "redshift: it has no savepoints to keep the query read-only inside the publish "
        'transaction; use "when": "after_publish"'
    )
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'ref'") == [
        (0,)
    ]


@pytest.mark.parametrize(
    ("warehouse_url", "in_publish"),
    [("postgresql", True), ("postgresql", False), ("redshift", False)],
    indirect=["warehouse_url"],
)
def test_custom_sql_leaves_the_statement_timeout_as_it_was(
    in_publish, table_dir, write, run_cli, warehouse_url
):
    from contextlib import nullcontext

    from steps.shared.checks.registry import CheckContext, run_check
    from steps.shared.config.table import load_table_config
    from steps.shared.warehouse import open_warehouse

    check = {"type": "custom_sql", "sql": "SELECT code FROM {table} WHERE n > 1"}
    config = table_dir(MAPPING, quality_tests=[check])
    assert run_cli(config, write("a.csv", GOOD))[0] == 1
    [test] = load_table_config(str(config)).config.quality_tests
    with open_warehouse(warehouse_url) as warehouse:
        warehouse.execute("SET statement_timeout TO 7000")
        ctx = CheckContext(warehouse, '"ref"."t_codes"', 2, 2, 0, "truncate")
        # In the publish transaction (a before_publish test) or on its own (validate).
        with warehouse.transaction() if in_publish else nullcontext():
            assert run_check(ctx, test)["status"] == "fail"
            assert run_check(ctx, test)["status"] == "fail"
            # A later statement on this connection has the session's limit, not the check's.
            assert warehouse.scalar("SHOW statement_timeout") == "7s"
        assert warehouse.scalar("SHOW statement_timeout") == "7s"


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
@pytest.mark.parametrize("store_samples", [False, True])
def test_custom_sql_rows_reach_audit_and_alert_only_when_asked(
    store_samples, table_dir, write, run_cli, sql, tmp_path
):
    # custom_sql can read any table the warehouse user can; what it returns is not copied
    # into audit rows and alerts unless the config asks for it.
    sql("CREATE SCHEMA hr")
    sql("CREATE TABLE hr.people (name VARCHAR(20), ssn VARCHAR(11))")
    sql("INSERT INTO hr.people VALUES ('Ann', '078-05-1120')")
    check = {
        "type": "custom_sql",
        "name": "peek",
        "sql": "SELECT p.name, p.ssn FROM {table} t CROSS JOIN hr.people p",
        "store_samples": store_samples,
    }
    config = table_dir(MAPPING, quality_tests=[check])
    code, summary = run_cli(config, write("a.csv", GOOD))
    assert code == 1
    assert (summary["checks"][0]["status"], summary["checks"][0]["observed"]) == ("fail", 2)
    [(details,)] = sql("SELECT details FROM etl_audit.data_quality_tests")
    [alert] = [p.read_text() for p in (tmp_path / "outbox").glob("*.alert.json")]
    if store_samples:
        assert json.loads(details)["sample_rows"][0] == {"name": "Ann", "ssn": "078-05-1120"}
        assert "078-05-1120" in alert
    else:
        assert json.loads(details) == {
            "note": "sample rows not stored: set store_samples to keep them",
            "sample_rows": [],
        }
        assert "078-05-1120" not in alert
        assert "078-05-1120" not in repr(sql("SELECT * FROM etl_audit.run_log"))


# A query that parses and binds but fails while it runs, on every warehouse.
FAILS_AT_RUNTIME = "SELECT * FROM {table} WHERE CAST(country AS INTEGER) > 0"


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("severity", "exit_code", "published"), [("warn", 0, True), ("error", 1, False)]
)
def test_before_publish_custom_sql_that_fails_while_it_runs_is_an_error_result(
    severity, exit_code, published, table_dir, write, run_cli, sql
):
    broken = {
        "type": "custom_sql",
        "name": "country_numeric",
        "sql": FAILS_AT_RUNTIME,
        "when": "before_publish",
        "severity": severity,
    }
    config = table_dir(MAPPING, quality_tests=[broken, GATE])

    code, summary = run_cli(config, write("a.csv", GOOD))

    # The query's error is its test's result; the publish goes on (warn) or is blocked by
    # the test (error), as any failing test would, never by an aborted transaction.
    assert code == exit_code, summary["error"]
    assert [(c["name"], c["status"]) for c in summary["checks"]] == [
        ("country_numeric", "error"),
        ("country_present", "pass"),
    ]
    rows = sql("SELECT test_name, status, details FROM etl_audit.data_quality_tests")
    assert [(name, status) for name, status, _ in rows] == [
        ("country_numeric", "error"),
        ("country_present", "pass"),
    ]
    assert "US" in json.loads(rows[0][2])["error"]  # the warehouse's own message
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == [(int(published),)]
    tables = sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_codes'")
    assert tables == [(int(published),)]
