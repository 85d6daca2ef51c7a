"""Every check type passes and fails on DuckDB, with its audit row and sample rows."""

from __future__ import annotations

import json

import pytest

from handler import lambda_handler

# SQL behaviour differs between warehouses here: every test runs on all three.
pytestmark = pytest.mark.all_warehouses

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),,,false,\ncountry,country,varchar(2),,,,\nn,n,integer,,,,\n"
    "name,name,string,,,,\n"
)
DATA = "code,country,n,name\nAA,US,1,alpha\nBB,US,2,beta\nCC,XX,3,Ωmega\nDD,,40,delta\n"

CASES = [
    ({"type": "row_count_between", "min": 1, "max": 10}, "pass", "4", []),
    ({"type": "row_count_between", "min": 1, "max": 3}, "fail", "4", []),
    ({"type": "uniqueness", "columns": ["code"]}, "pass", "0", []),
    (
        {"type": "uniqueness", "columns": ["country"]},
        "fail",
        "1",
        [{"country": "US", "occurrences": 2}],
    ),
    ({"type": "not_null", "columns": ["code", "n"]}, "pass", "0", []),
    (
        {"type": "not_null", "columns": ["country"]},
        "fail",
        "1",
        [{"code": "DD", "country": None, "n": 40, "name": "delta"}],
    ),
    ({"type": "accepted_values", "column": "country", "values": ["US", "XX"]}, "pass", "0", []),
    (
        {"type": "accepted_values", "column": "country", "values": ["US"]},
        "fail",
        "unexpected values: XX (1 row)",
        [{"code": "CC", "country": "XX", "n": 3, "name": "Ωmega"}],
    ),
    ({"type": "accepted_values", "column": "n", "values": [1, 2, 3, 40]}, "pass", "0", []),
    ({"type": "range", "column": "n", "min": 1, "max": 100}, "pass", "0", []),
    (
        {"type": "range", "column": "n", "max": 10},
        "fail",
        "1",
        [{"code": "DD", "country": None, "n": 40, "name": "delta"}],
    ),
    ({"type": "regex", "column": "code", "pattern": "^[A-Z]{2}$"}, "pass", "0", []),
    (
        {"type": "regex", "column": "country", "pattern": "^U"},
        "fail",
        "1",
        [{"code": "CC", "country": "XX", "n": 3, "name": "Ωmega"}],
    ),
    ({"type": "max_length", "column": "name", "bytes": 6}, "pass", "0", []),
    (
        {"type": "max_length", "column": "name", "bytes": 5},
        "fail",
        "1",
        [{"code": "CC", "country": "XX", "n": 3, "name": "Ωmega"}],
    ),
    (
        {
            "type": "referential_integrity",
            "columns": ["country"],
            "ref_table": "ref.countries",
            "ref_columns": ["alpha_2"],
        },
        "fail",
        "1",
        [{"code": "CC", "country": "XX", "n": 3, "name": "Ωmega"}],
    ),
    (
        {
            "type": "referential_integrity",
            "columns": ["code"],
            "ref_table": "ref.t_codes",
            "ref_columns": ["code"],
        },
        "pass",
        "0",
        [],
    ),
    ({"type": "custom_sql", "sql": "SELECT code, n FROM {table} WHERE n > 100"}, "pass", "0", []),
    (
        {"type": "custom_sql", "sql": "SELECT code, n FROM {table} WHERE n > 10"},
        "fail",
        "1",
        [],  # what user SQL returns is kept only with store_samples
    ),
    (
        {
            "type": "custom_sql",
            "sql": "SELECT code, n FROM {table} WHERE n > 10",
            "store_samples": True,
        },
        "fail",
        "1",
        [{"code": "DD", "n": 40}],
    ),
    (
        # A trailing comment once swallowed the SQL refload wraps around the query.
        {"type": "custom_sql", "sql": "SELECT code FROM {table} t WHERE t.n > 100 -- none"},
        "pass",
        "0",
        [],
    ),
    (
        {
            "type": "custom_sql",
            "sql": "SELECT code, n FROM {table}\nWHERE n > 10 -- too big\n-- second note",
            "store_samples": True,
        },
        "fail",
        "1",
        [{"code": "DD", "n": 40}],
    ),
]


@pytest.fixture
def countries(sql):
    sql("CREATE SCHEMA ref")
    sql("CREATE TABLE ref.countries (alpha_2 VARCHAR(2))")
    sql("INSERT INTO ref.countries VALUES ('US')")


@pytest.mark.parametrize(
    ("test", "status", "observed", "samples"), CASES, ids=[f"{c[0]['type']}-{c[1]}" for c in CASES]
)
def test_check(test, status, observed, samples, countries, table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, quality_tests=[test])
    code, summary = run_cli(config, write("t.csv", DATA))
    assert code == (0 if status == "pass" else 1), summary
    [check] = summary["checks"]
    assert (check["type"], check["status"]) == (test["type"], status)
    [(audit_status, audit_observed, details)] = sql(
        "SELECT status, observed_value, details FROM etl_audit.data_quality_tests WHERE run_id = ?",
        summary["run_id"],
    )
    assert (audit_status, audit_observed) == (status, observed)
    assert json.loads(details)["sample_rows"] == samples


def test_warn_failure_keeps_the_run_green_and_is_recorded(table_dir, write, run_cli, sql):
    config = table_dir(
        MAPPING,
        quality_tests=[
            {"type": "not_null", "columns": ["country"], "severity": "warn", "name": "country_set"}
        ],
    )
    code, summary = run_cli(config, write("t.csv", DATA))
    assert code == 0
    assert summary["status"] == "passed"
    assert summary["checks"][0] | {} == {
        "name": "country_set",
        "type": "not_null",
        "severity": "warn",
        "status": "fail",
        "observed": 1,
        "expected": 0,
    }
    assert sql("SELECT severity, status FROM etl_audit.data_quality_tests") == [("warn", "fail")]


def test_a_check_that_cannot_run_is_an_error_and_fails_the_run(table_dir, write, run_cli, sql):
    config = table_dir(
        MAPPING,
        quality_tests=[
            {
                "type": "referential_integrity",
                "columns": ["country"],
                "ref_table": "ref.missing",
                "ref_columns": ["alpha_2"],
            }
        ],
    )
    code, summary = run_cli(config, write("t.csv", DATA))
    assert code == 1
    assert summary["checks"][0]["status"] == "error"
    [(details,)] = sql("SELECT details FROM etl_audit.data_quality_tests")
    assert "missing" in json.loads(details)["error"]


def test_row_count_change_against_the_previous_load(table_dir, write, run_cli):
    config = table_dir(MAPPING, quality_tests=[{"type": "row_count_change", "max_pct": 10}])
    assert run_cli(config, write("a.csv", DATA))[0] == 0
    code, summary = run_cli(config, write("b.csv", "code,country,n,name\nAA,US,1,alpha\n"))
    assert code == 1
    assert (summary["checks"][0]["status"], summary["checks"][0]["observed"]) == ("fail", "75.00%")


def test_row_count_match_compares_ingest_with_the_target(table_dir, write, run_cli, warehouse_url):
    config = table_dir(MAPPING, quality_tests=[{"type": "row_count_match", "tolerance_pct": 10}])
    code, summary = run_cli(config, write("a.csv", DATA))
    assert code == 0 and summary["checks"][0]["observed"] == 4
    # A manual re-run of validate that claims ingest wrote 5 rows: 4 is within 10%? No: 20%.
    result = lambda_handler(
        {
            "step": "validate",
            "config": str(config),
            "run_id": "manual-1",
            "rows_written": 5,
            "warehouse": warehouse_url,
        }
    )
    assert result["validation"] == "failed"
    assert (result["checks"][0]["observed"], result["checks"][0]["expected"]) == (4, 5)


TYPED_MAPPING = (
    "source_column,target_column,data_type\n"
    'code,code,varchar(3)\nprice,price,"decimal(9,2)"\nqty,qty,integer\n'
    "day,day,date\nactive,active,boolean\nratio,ratio,double\n"
)
TYPED_DATA = (
    "code,price,qty,day,active,ratio\nAA,1.5,2,2024-01-31,true,0.5\nBB,2,7,2024-02-29,false,2\n"
)


@pytest.mark.parametrize(
    ("column", "values", "observed"),
    [
        ("price", [1.5, 2], 0),  # stored as 1.50 and 2.00
        ("price", ["1.50", "2.0"], 0),
        ("price", [1.5], 1),
        ("qty", [2, 7.0], 0),
        ("qty", [2], 1),
        ("day", ["2024-01-31", "2024-02-29"], 0),
        ("active", [True, False], 0),
        ("active", [True], 1),
        ("ratio", [0.5, 2], 0),
        ("code", ["AA", "BB"], 0),
    ],
)
def test_accepted_values_compares_as_the_column_type(
    column, values, observed, table_dir, write, run_cli, sql
):
    config = table_dir(
        TYPED_MAPPING,
        quality_tests=[{"type": "accepted_values", "column": column, "values": values}],
    )
    code, summary = run_cli(config, write("t.csv", TYPED_DATA))
    assert code == (1 if observed else 0), summary
    # A failure names the value the column holds (as stored), not the row count.
    shown = summary["checks"][0]["observed"]
    assert shown == 0 if not observed else shown.startswith("unexpected values: "), shown
    assert sql("SELECT observed_value FROM etl_audit.data_quality_tests") == [(str(shown),)]


def test_wide_rows_keep_every_audit_row_bounded(table_dir, write, run_cli, sql):
    # 20 KB values in failing rows: the sample rows of five failing tests, as JSON, are
    # far beyond VARCHAR(65535), which Redshift counts in bytes.
    mapping = (
        "source_column,target_column,data_type\n"
        "code,code,varchar(3)\ncountry,country,varchar(2)\nwide,wide,string\nnote,note,string\n"
    )
    rows = [f"C{i:02d},{'' if i % 2 else 'XX'},{'é' * 10_000},{'n' * 20_000}" for i in range(12)]
    tests = [
        {"type": "not_null", "columns": ["country"]},
        {"type": "accepted_values", "column": "country", "values": ["US"]},
        {"type": "max_length", "column": "wide", "bytes": 100},
        {"type": "regex", "column": "note", "pattern": "^x"},
        {"type": "uniqueness", "columns": ["wide"]},
        {"type": "custom_sql", "sql": "SELECT * FROM {table}", "store_samples": True},
    ]
    config = table_dir(mapping, quality_tests=tests)
    code, summary = run_cli(config, write("t.csv", "code,country,wide,note\n" + "\n".join(rows)))
    assert code == 1, summary["error"]
    assert [c["status"] for c in summary["checks"]] == ["fail"] * 6
    audit = sql(
        "SELECT test_type, details FROM etl_audit.data_quality_tests "
        "WHERE run_id = ? ORDER BY test_type",
        summary["run_id"],
    )
    assert len(audit) == 6
    for test_type, details in audit:
        assert len(details.encode()) <= 65535, test_type
        parsed = json.loads(details)  # still JSON, with a visible marker where it was cut
        assert "…(truncated, " in details, test_type
        assert parsed["sample_rows"] or parsed["truncated"], test_type
    [(status, details)] = sql(
        "SELECT status, details FROM etl_audit.run_log WHERE run_id = ? AND step = 'validate'",
        summary["run_id"],
    )
    assert status == "failed" and len(details.encode()) <= 65535
    assert json.loads(details)


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)  # enforces VARCHAR(n)
def test_a_test_over_many_columns_gets_a_name_the_audit_holds(table_dir, write, run_cli, sql):
    # What init proposes for a wide file: not_null over every never-empty column.
    columns = [f"vendor_column_{i:02d}" for i in range(25)]
    mapping = "source_column,target_column,data_type\n" + "".join(
        f"{c},{c},varchar(8)\n" for c in columns
    )
    tests = [
        {"type": "not_null", "columns": columns},
        {"type": "not_null", "columns": columns[:-1]},  # a name with the same long start
    ]
    config = table_dir(mapping, quality_tests=tests)
    data = ",".join(columns) + "\n" + ",".join("x" for _ in columns) + "\n"

    code, summary = run_cli(config, write("wide.csv", data))

    assert code == 0, summary["error"]
    names = [c["name"] for c in summary["checks"]]
    assert [len(n) for n in names] == [200, 200] and names[0] != names[1]
    assert all(n.startswith("not_null_vendor_column_00_vendor_column_01_") for n in names)
    recorded = sql("SELECT test_name, status FROM etl_audit.data_quality_tests ORDER BY test_name")
    assert sorted(recorded) == sorted((n, "pass") for n in names)


def test_a_thousand_failing_checks_list_twenty_failing_first_with_the_counts(
    table_dir, write, run_cli, sql, tmp_path
):
    tests = [{"type": "not_null", "columns": ["code"]}]  # passes: listed after the failures
    tests += [
        {"type": "row_count_between", "max": 1, "name": f"rows_{i:04d}_{'n' * 240}"}
        for i in range(1000)
    ]
    tests.append({"type": "row_count_between", "max": 1, "name": "warned", "severity": "warn"})
    code, summary = run_cli(table_dir(MAPPING, quality_tests=tests), write("t.csv", DATA))
    assert code == 1, summary["error"]
    assert (summary["checks_total"], summary["checks_failed"]) == (1002, 1001)
    assert len(summary["checks"]) == 20
    assert [c["status"] for c in summary["checks"]] == ["fail"] * 20
    assert summary["checks"][0]["name"].startswith("rows_0000_")
    assert sql("SELECT COUNT(*) FROM etl_audit.data_quality_tests WHERE status = 'fail'") == [
        (1001,)
    ]
    [alert] = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.alert.json")]
    assert (alert["checks_total"], alert["checks_failed"]) == (1002, 1001)
    assert "981 more failing test(s) are not listed here" in alert["text"]


KEYED_MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\nname,name,varchar(20),,,,\n"
)


def test_changes_within_reads_the_change_set_of_its_own_target(
    table_dir, write, run_cli, warehouse_url
):
    # One run id publishes two tables (--run-id); the guard of the first must see the
    # first table's changed keys, not the ones the other table's ledger row keeps.
    guard = {"type": "changes_within", "max_added_pct": 10}
    codes = table_dir(KEYED_MAPPING, "t_codes", primary_key=["code"], quality_tests=[guard])
    other = table_dir(KEYED_MAPPING, "t_other", primary_key=["code"])
    assert run_cli(codes, write("a.csv", "code,name\nAA,Alpha\nBB,Beta\n"))[0] == 0
    code, summary = run_cli(
        codes, write("b.csv", "code,name\nAA,Alpha\nBB,Beta\nCC,Gamma\n"), "--run-id", "shared-1"
    )
    assert code == 1 and summary["changes"] == {"added": 1, "removed": 0, "changed": 0}
    assert run_cli(other, write("c.csv", "code,name\nXX,Xray\n"))[0] == 0
    again = run_cli(
        other, write("d.csv", "code,name\nXX,Xray\nYY,Yankee\n"), "--run-id", "shared-1"
    )
    assert again[0] == 0, again[1]["error"]

    # A manual re-run of the first table's validate, as an operator would after a fix.
    result = lambda_handler(
        {
            "step": "validate",
            "config": str(codes),
            "run_id": "shared-1",
            "rows_before": 2,
            "changes": summary["changes"],
            "warehouse": warehouse_url,
        }
    )

    check = result["checks"][0]
    assert (check["type"], check["status"]) == ("changes_within", "fail")
    assert check["details"]["sample_rows"] == [{"change": "added", "code": "CC"}]


@pytest.mark.parametrize(
    "options",
    [{"load_mode": "append"}, {"load_mode": "upsert", "primary_key": ["code"]}],
    ids=["append", "upsert"],
)
@pytest.mark.parametrize("when", ["after_publish", "before_publish"])
def test_row_count_match_on_tables_that_keep_their_rows(options, when, table_dir, write, run_cli):
    # The target keeps rows of earlier files: this load's published rows are compared
    # with the rows ingest wrote, not the table's count.
    check = {"type": "row_count_match", "tolerance_pct": 0, "when": when}
    config = table_dir(KEYED_MAPPING, quality_tests=[check], **options)
    assert run_cli(config, write("a.csv", "code,name\nAA,Alpha\nBB,Beta\n"))[0] == 0
    source = write("b.csv", "code,name\nBB,Bravo\nCC,Gamma\nDD,Delta\n")

    code, summary = run_cli(config, source)

    assert code == 0, summary["checks"]
    [result] = summary["checks"]
    assert (result["status"], result["observed"], result["expected"]) == ("pass", 3, 3)
    assert summary["rows_in_target"] == {"append": 5, "upsert": 4}[options["load_mode"]]
    # The same file again is skipped: nothing published, which is no mismatch.
    code, replay = run_cli(config, source)
    assert code == 0, replay["checks"]
    assert replay["published"] is False
    assert [c["status"] for c in replay["checks"]] == (["pass"] if when == "after_publish" else [])


def test_changes_within_on_a_skipped_replay_passes_and_says_why(table_dir, write, run_cli, sql):
    guard = {"type": "changes_within", "max_changed_pct": 10}
    config = table_dir(KEYED_MAPPING, primary_key=["code"], quality_tests=[guard])
    assert run_cli(config, write("a.csv", "code,name\nAA,Alpha\nBB,Beta\n"))[0] == 0
    source = write("b.csv", "code,name\nAA,Alpha\nBB,Bravo\n")
    code, summary = run_cli(config, source)
    assert code == 1 and summary["published"] is True  # after publish: too late to block

    code, replay = run_cli(config, source)

    # The file is in the target already: this run changed nothing, so nothing is over.
    assert (code, replay["published"]) == (0, False), replay["checks"]
    [check] = replay["checks"]
    assert (check["status"], check["observed"]) == ("pass", "no change set")
    [(details,)] = sql(
        "SELECT details FROM etl_audit.data_quality_tests WHERE run_id = ?", replay["run_id"]
    )
    assert json.loads(details)["note"] == "nothing was published"


def test_accepted_values_names_the_unexpected_values_most_rows_first(
    table_dir, write, run_cli, sql, tmp_path
):
    # 151 rows of ZA, then six other codes: the five with most rows, then "and 2 more".
    codes = ["ZA"] * 151 + ["YY"] * 4 + ["XX"] * 3 + ["WW"] * 2 + ["VV", "UU", "TT", "SS"]
    rows = [f"{i:03d},{c},{i},n" for i, c in enumerate(["US", *codes])]
    test = {"type": "accepted_values", "column": "country", "values": ["US"]}
    config = table_dir(MAPPING, quality_tests=[test])
    code, summary = run_cli(config, write("t.csv", "code,country,n,name\n" + "\n".join(rows)))
    assert code == 1, summary["error"]
    observed = (
        "unexpected values: ZA (151 rows), YY (4 rows), XX (3 rows), WW (2 rows), "
        "SS (1 row) and 3 more (3 rows)"
    )
    assert summary["checks"][0]["observed"] == observed
    assert sql("SELECT observed_value FROM etl_audit.data_quality_tests") == [(observed,)]
    [alert] = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.alert.json")]
    assert f"observed: {observed}" in alert["text"]


def test_uniqueness_of_a_replaced_tables_primary_key_is_known_from_ingest(
    table_dir, write, run_cli, sql
):
    # Ingest refuses a repeated primary key, and a replace load leaves exactly its rows in
    # the target: a test on columns that hold the key passes without scanning the table.
    unique = {"type": "uniqueness", "columns": ["name", "code"]}
    config = table_dir(KEYED_MAPPING, primary_key=["code"], quality_tests=[unique])

    code, summary = run_cli(config, write("a.csv", "code,name\nAA,Alpha\nBB,Alpha\n"))

    assert code == 0, summary["checks"]
    [check] = summary["checks"]
    assert (check["status"], check["observed"]) == ("pass", 0)
    [(details,)] = sql(
        "SELECT details FROM etl_audit.data_quality_tests WHERE run_id = ?", summary["run_id"]
    )
    assert json.loads(details)["known_from"] == (
        "ingest: the primary key is unique, and this run replaced the table"
    )


@pytest.mark.parametrize(
    ("options", "columns"),
    [
        ({"load_mode": "append", "primary_key": ["code"]}, ["code"]),  # earlier files' rows
        ({"primary_key": ["code"]}, ["name"]),  # not the key
    ],
    ids=["append", "other-columns"],
)
def test_uniqueness_scans_where_ingest_cannot_know(options, columns, table_dir, write, run_cli):
    unique = {"type": "uniqueness", "columns": columns}
    config = table_dir(KEYED_MAPPING, quality_tests=[unique], **options)
    assert run_cli(config, write("a.csv", "code,name\nAA,Alpha\n"))[0] == 0

    code, summary = run_cli(config, write("b.csv", "code,name\nAA,Beta\nBB,Beta\n"))

    [check] = summary["checks"]
    assert (code, check["status"], check["observed"]) == (1, "fail", 1)
