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
    # A first load (nothing before) records its keys without joining the empty target.
    assert _ledger_changes(sql, first["run_id"]) == (
        "truncate",
        (4, 0, 0),
        {
            "added": [{"key": {"code": c}} for c in ("AA", "BB", "CC", "DD")],
            "removed": [],
            "changed": [],
        },
    )

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
    # One of each kind in turn (an alert shows three): over the limit and changed first.
    assert details["sample_rows"] == [
        {"change": "changed", "code": "BB", "name before": "Beta", "name after": "Bravo"},
        {"change": "removed", "code": "CC"},
        {"change": "added", "code": "EE"},
        {"change": "changed", "code": "DD", "n before": None, "n after": 4},
    ]
    # The alert lists the changed keys with their values before and after.
    alert = json.loads(next((tmp_path / "outbox").glob("*.alert.json")).read_text())["text"]
    assert "Failed test: changes_within" in alert
    assert (
        'sample: {"change": "changed", "code": "BB", "name before": "Beta", "name after": "Bravo"}'
        in alert
    )
    assert 'sample: {"change": "removed", "code": "CC"}' in alert
    assert 'sample: {"change": "added", "code": "EE"}' in alert


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
    assert details["sample_rows"][0] == {"change": "added", "code": "EE"}
    assert summary["alert"]["outbox"]["status"] == "sent"
    alert = json.loads(next((tmp_path / "outbox").glob("*.alert.json")).read_text())["text"]
    assert "Changes:       added 1, removed 1, changed 2" in alert


# --- scd2 ---------------------------------------------------------------------------------

SCD2 = {"load_mode": "scd2", "primary_key": ["code"]}
VERSIONS = "SELECT code, name, n, valid_from, valid_to FROM ref.t_codes ORDER BY code, valid_from"


def _loaded_at(sql, run_id):
    return sql("SELECT loaded_at FROM etl_audit.load_ledger WHERE run_id = ?", run_id)[0][0]


def test_scd2_keeps_every_version(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, **SCD2)
    _, first = run_cli(config, write("a.csv", FIRST))
    t1 = _loaded_at(sql, first["run_id"])
    code, second = run_cli(config, write("b.csv", SECOND))
    assert code == 0, second["error"]
    t2 = _loaded_at(sql, second["run_id"])

    assert sql(VERSIONS) == [
        ("AA", "Alpha", 1, t1, None),  # unchanged: untouched
        ("BB", "Beta", 2, t1, t2),  # changed: closed, and a new version
        ("BB", "Bravo", 2, t2, None),
        ("CC", "Gamma", 3, t1, t2),  # gone from the file: closed
        ("DD", "Delta", None, t1, t2),
        ("DD", "Delta", 4, t2, None),
        ("EE", "Echo", 5, t2, None),  # new
    ]
    assert second["changes"] == {"added": 1, "removed": 1, "changed": 2}
    # rows_before / rows_after count the current versions.
    assert sql(
        "SELECT load_mode, rows_before, rows_after FROM etl_audit.load_ledger WHERE run_id = ?",
        second["run_id"],
    ) == [("scd2", 4, 4)]
    assert second["rows_in_target"] == 4


def test_scd2_replaying_the_same_file_changes_nothing(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, **SCD2)
    run_cli(config, write("a.csv", FIRST))
    run_cli(config, write("b.csv", SECOND))
    versions = sql(VERSIONS)

    code, replay = run_cli(config, write("b.csv", SECOND))
    assert code == 0 and replay["published"] is False
    # Even forced through the ledger, an unchanged file touches no row.
    code, forced = run_cli(config, write("b.csv", SECOND), "--force")
    assert code == 0 and forced["published"] is True
    assert forced["changes"] == {"added": 0, "removed": 0, "changed": 0}
    assert sql(VERSIONS) == versions


def test_scd2_an_older_file_makes_new_versions_not_a_rewind(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, **SCD2)
    run_cli(config, write("a.csv", FIRST))
    run_cli(config, write("b.csv", SECOND))
    code, again = run_cli(config, write("a.csv", FIRST))
    assert code == 0, again["error"]
    t3 = _loaded_at(sql, again["run_id"])

    assert again["changes"] == {"added": 1, "removed": 1, "changed": 2}
    assert sql("SELECT code, name, n FROM ref.t_codes WHERE valid_to IS NULL ORDER BY code") == [
        ("AA", "Alpha", 1),
        ("BB", "Beta", 2),
        ("CC", "Gamma", 3),
        ("DD", "Delta", None),
    ]
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(10,)]
    assert sql("SELECT code FROM ref.t_codes WHERE valid_from = ? ORDER BY code", t3) == [
        ("BB",),
        ("CC",),
        ("DD",),
    ]


def test_scd2_quality_tests_see_the_current_rows(table_dir, write, run_cli, sql):
    tests = [
        {"type": "uniqueness", "columns": ["code"]},
        {"type": "row_count_match"},
        {"type": "row_count_between", "min": 4, "max": 4},
        {"type": "row_count_change", "max_pct": 0, "when": "before_publish"},
        # custom_sql reads every version: {table} is the whole history table.
        {"type": "custom_sql", "sql": "SELECT code FROM {table} t WHERE t.valid_from IS NULL"},
    ]
    config = table_dir(MAPPING, **SCD2, quality_tests=tests)
    run_cli(config, write("a.csv", FIRST))
    code, summary = run_cli(config, write("b.csv", SECOND))
    assert code == 0, summary["checks"]
    assert [c["status"] for c in summary["checks"]] == ["pass"] * 5
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(7,)]


def test_scd2_history_columns_and_the_redshift_sort_key(table_dir, write, run_cli, sql, dialect):
    from tests.warehouses import STATEMENTS

    config = table_dir(MAPPING, **SCD2)
    assert run_cli(config, write("a.csv", FIRST))[0] == 0
    columns = sql(
        "SELECT column_name, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'ref' AND table_name = 't_codes' ORDER BY ordinal_position"
    )
    assert columns[-2:] == [("valid_from", "NO"), ("valid_to", "YES")]
    if dialect == "redshift":
        create = next(s for s in STATEMENTS if s.startswith('CREATE TABLE IF NOT EXISTS "ref"'))
        assert create.endswith('SORTKEY ("valid_to", "code")')


@pytest.mark.parametrize(
    ("mapping", "options", "message"),
    [
        (MAPPING, {"load_mode": "scd2"}, "load_mode 'scd2' needs primary_key"),
        (
            MAPPING + "vt,valid_to,timestamp,,,,\n",
            SCD2,
            "load_mode 'scd2' adds the columns valid_from and valid_to; the mapping already "
            "has valid_to",
        ),
    ],
)
def test_scd2_config_mistakes_are_refused(table_dir, write, run_cli, mapping, options, message):
    config = table_dir(mapping, **options)
    code, summary = run_cli(config, write("a.csv", FIRST))
    assert code == 2
    assert message in summary["error"]["message"]


def test_a_fault_mid_publish_leaves_the_history_table_exactly_as_it_was(
    table_dir, write, run_cli, sql
):
    config = table_dir(MAPPING, **SCD2)
    run_cli(config, write("a.csv", FIRST))
    run_cli(config, write("b.csv", SECOND))
    versions = sql(VERSIONS)
    # The ledger INSERT, the last statement of the publish transaction, now fails: after
    # the UPDATE that closed versions and the INSERT of new ones.
    sql("ALTER TABLE etl_audit.load_ledger ADD COLUMN must_have INTEGER DEFAULT 1")
    sql("ALTER TABLE etl_audit.load_ledger ALTER COLUMN must_have SET NOT NULL")
    sql("ALTER TABLE etl_audit.load_ledger ALTER COLUMN must_have DROP DEFAULT")

    code, summary = run_cli(config, write("c.csv", FIRST))

    assert code == 3 and "must_have" in summary["error"]["message"]
    assert sql(VERSIONS) == versions


@pytest.mark.parametrize("warehouse_url", ["postgresql", "redshift"], indirect=True)
def test_a_server_error_after_versions_were_closed_rolls_them_back(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, **SCD2)
    run_cli(config, write("a.csv", FIRST))
    versions = sql(VERSIONS)
    # A real server-side fault on the INSERT of new versions, after the UPDATE closed some.
    sql(
        "CREATE FUNCTION ref.refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected failure after UPDATE'; END $$"
    )
    sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON ref.t_codes FOR EACH STATEMENT "
        "EXECUTE FUNCTION ref.refuse()"
    )
    code, summary = run_cli(config, write("b.csv", SECOND))
    assert code == 3 and "injected failure after UPDATE" in summary["error"]["message"]
    assert sql(VERSIONS) == versions
    sql("DROP TRIGGER refuse ON ref.t_codes")
    code, summary = run_cli(config, write("b.csv", SECOND))
    assert code == 0 and summary["changes"] == {"added": 1, "removed": 1, "changed": 2}


# --- rollback -----------------------------------------------------------------------------


@pytest.fixture
def rollback(warehouse_url, tmp_path, capsys):
    """`python -m handler rollback TABLE --to RUN_ID --json`: (exit code, summary)."""

    def run(table: str, run_id: str) -> tuple[int, dict]:
        capsys.readouterr()
        code = main(
            [
                "rollback",
                table,
                "--to",
                run_id,
                "--warehouse",
                warehouse_url,
                "--config-root",
                str(tmp_path / "cfg"),
                "--json",
            ]
        )
        return code, json.loads(capsys.readouterr().out)

    return run


def test_rollback_publishes_the_run_file_again_and_tests_it(
    table_dir, write, run_cli, sql, rollback
):
    tests = [{"type": "uniqueness", "columns": ["code"]}, {"type": "row_count_match"}]
    config = table_dir(MAPPING, primary_key=["code"], quality_tests=tests)
    _, first = run_cli(config, write("a.csv", FIRST))
    rows_of_first = sql("SELECT code, name, n FROM ref.t_codes ORDER BY code")
    run_cli(config, write("b.csv", SECOND))

    code, summary = rollback("t_codes", first["run_id"])

    assert code == 0, summary["error"]
    assert summary["status"] == "passed" and summary["run_id"] != first["run_id"]
    assert [(c["name"], c["status"]) for c in summary["checks"]] == [
        ("uniqueness_code", "pass"),
        ("row_count_match", "pass"),
    ]
    assert summary["changes"] == {"added": 1, "removed": 1, "changed": 2}
    assert sql("SELECT code, name, n FROM ref.t_codes ORDER BY code") == rows_of_first
    assert sql(
        "SELECT load_mode, content_hash, curated_uri, rows_after FROM etl_audit.load_ledger "
        "WHERE run_id = ?",
        summary["run_id"],
    ) == sql(
        "SELECT 'rollback', content_hash, curated_uri, rows_after FROM etl_audit.load_ledger "
        "WHERE run_id = ?",
        first["run_id"],
    )
    # The tests' audit rows and the run log are those of any run.
    assert sql(
        "SELECT step, status FROM etl_audit.run_log WHERE run_id = ? ORDER BY logged_at",
        summary["run_id"],
    ) == [("load", "ok"), ("validate", "passed")]


def test_rollback_refuses_what_it_cannot_do(table_dir, write, run_cli, sql, rollback, tmp_path):
    config = table_dir(MAPPING, primary_key=["code"])
    _, first = run_cli(config, write("a.csv", FIRST))
    _, replay = run_cli(config, write("a.csv", FIRST))  # skipped: no ledger row
    table_dir(MAPPING, name="t_upsert", load_mode="upsert", primary_key=["code"])
    before = sql("SELECT code, name, n FROM ref.t_codes ORDER BY code")

    cases = [
        ("t_codes", replay["run_id"], f"run {replay['run_id']} has no ledger row for ref.t_codes"),
        ("t_codes", "no-such-run", "run no-such-run has no ledger row for ref.t_codes"),
        ("t_upsert", first["run_id"], "t_upsert has load_mode 'upsert': rollback re-publishes"),
        ("t_code", first["run_id"], "unknown table 't_code' (did you mean 't_codes'?)"),
    ]
    for table, run_id, message in cases:
        code, summary = rollback(table, run_id)
        assert code == 2, (table, run_id, summary)
        assert message in summary["error"]["message"]

    curated = sql(
        "SELECT curated_uri FROM etl_audit.load_ledger WHERE run_id = ?", first["run_id"]
    )[0][0]
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "x.parquet").write_bytes(b"")
    import shutil

    shutil.move(curated, tmp_path / "gone" / "x.parquet")
    code, summary = rollback("t_codes", first["run_id"])
    assert code == 2
    assert summary["error"]["message"] == _gone(curated, first["run_id"])
    assert sql("SELECT code, name, n FROM ref.t_codes ORDER BY code") == before


def _gone(uri: object, run_id: str) -> str:
    """rollback's message for a curated file (or part) that is no longer there."""
    return (
        f"{uri}: the curated file of run {run_id} is gone; curated files are kept "
        "CuratedRetentionDays days (template.yaml), and a run older than that cannot be "
        "rolled back to"
    )


def test_rollback_goes_back_to_an_output_written_as_parts(
    table_dir, write, run_cli, sql, rollback, warehouse_url, capsys, monkeypatch
):
    """A large output is parts and a manifest (its curated_uri): rollback publishes every
    part again, and refuses, as for a file that is gone, when one of them is gone."""
    import os

    import steps.ingest

    monkeypatch.setattr(steps.ingest, "BATCH_ROWS", 2)
    monkeypatch.setattr(steps.ingest, "PARTS_FROM_ROWS", 4)
    config = table_dir(MAPPING, primary_key=["code"])
    _, first = run_cli(config, write("a.csv", FIRST))
    assert first["curated_uri"].endswith("/parts.manifest")
    rows_of_first = sql("SELECT * FROM ref.t_codes ORDER BY code")
    monkeypatch.setattr(steps.ingest, "PARTS_FROM_ROWS", 100)
    _, second = run_cli(config, write("b.csv", SECOND))
    assert second["curated_uri"].endswith(".parquet")

    code, summary = rollback("t_codes", first["run_id"])

    assert code == 0, summary["error"]
    assert summary["rows_loaded"] == 4
    assert sql("SELECT * FROM ref.t_codes ORDER BY code") == rows_of_first
    assert sql(
        "SELECT load_mode, curated_uri FROM etl_audit.load_ledger WHERE run_id = ?",
        summary["run_id"],
    ) == [("rollback", first["curated_uri"])]
    capsys.readouterr()
    assert main(["history", "t_codes", "--warehouse", warehouse_url, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["run_id"], r["rows_published"], r["load_mode"]) for r in runs] == [
        (summary["run_id"], 4, "rollback"),
        (second["run_id"], 4, "truncate"),
        (first["run_id"], 4, "truncate"),
    ]

    gone = first["curated_uri"].replace("parts.manifest", "part-00001.parquet")
    os.remove(gone)
    code, summary = rollback("t_codes", second["run_id"])
    assert code == 0, summary["error"]
    rows_of_second = sql("SELECT * FROM ref.t_codes ORDER BY code")
    runs_logged = sql("SELECT COUNT(*) FROM etl_audit.run_log")
    code, summary = rollback("t_codes", first["run_id"])
    assert code == 2
    assert summary["error"]["message"] == _gone(gone, first["run_id"])
    # Refused before anything ran, as for a single file: no failed load, no alert.
    assert sql("SELECT COUNT(*) FROM etl_audit.run_log") == runs_logged
    assert sql("SELECT * FROM ref.t_codes ORDER BY code") == rows_of_second


def test_the_readme_history_queries(table_dir, write, run_cli, sql):
    """As of a moment, current rows, what a run changed: as the README writes them."""
    config = table_dir(MAPPING, **SCD2)
    _, first = run_cli(config, write("a.csv", FIRST))
    _, second = run_cli(config, write("b.csv", SECOND))
    t1, t2 = _loaded_at(sql, first["run_id"]), _loaded_at(sql, second["run_id"])
    as_of = (
        "SELECT code, name, n FROM ref.t_codes WHERE valid_from <= ? "
        "AND (valid_to IS NULL OR valid_to > ?) ORDER BY code"
    )
    between = t1 + (t2 - t1) / 2
    assert sql(as_of, between, between) == [
        ("AA", "Alpha", 1),
        ("BB", "Beta", 2),
        ("CC", "Gamma", 3),
        ("DD", "Delta", None),
    ]
    assert sql(as_of, t2, t2) == sql(
        "SELECT code, name, n FROM ref.t_codes WHERE valid_to IS NULL ORDER BY code"
    )
    changed = sql(
        "SELECT z.code, CASE WHEN z.valid_from = l.loaded_at THEN 'new version' "
        "ELSE 'closed' END AS what FROM ref.t_codes z "
        "JOIN etl_audit.load_ledger l ON l.run_id = ? "
        "WHERE z.valid_from = l.loaded_at OR z.valid_to = l.loaded_at ORDER BY z.code, what",
        second["run_id"],
    )
    assert changed == [
        ("BB", "closed"),
        ("BB", "new version"),
        ("CC", "closed"),
        ("DD", "closed"),
        ("DD", "new version"),
        ("EE", "new version"),
    ]


def test_check_plans_an_scd2_table_with_its_history_columns_as_ok(
    table_dir, write, run_cli, warehouse_url, tmp_path, capsys
):
    config = table_dir(MAPPING, **SCD2)
    assert run_cli(config, write("a.csv", FIRST))[0] == 0
    capsys.readouterr()
    code = main(["check", str(tmp_path / "cfg"), "--warehouse", warehouse_url, "--json"])
    plans = json.loads(capsys.readouterr().out)["plans"]
    assert code == 0, plans
    assert [p["plan"] for p in plans] == ["ok"]


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_change_samples_are_bounded_and_the_step_result_has_counts_only(
    table_dir, write, run_cli, sql
):
    columns = [f"c{i:02d}" for i in range(12)]
    mapping = "source_column,target_column,data_type,transform,default,nullable,format\n"
    mapping += "code,code,varchar(3),,,false,\n"
    mapping += "".join(f"{c},{c},string,,,,\n" for c in columns)
    config = table_dir(mapping, primary_key=["code"])
    header = "code," + ",".join(columns) + "\n"

    def rows(value: str) -> str:
        return header + "".join(
            f"K{k:02d}," + ",".join([value] * len(columns)) + "\n" for k in range(15)
        )

    assert run_cli(config, write("a.csv", rows("a" * 300)))[0] == 0
    code, summary = run_cli(config, write("b.csv", rows("b" * 300)))

    assert code == 0 and summary["changes"] == {"added": 0, "removed": 0, "changed": 15}
    _, _, samples = _ledger_changes(sql, summary["run_id"])
    assert len(samples["changed"]) == 10
    assert samples["changed"][0]["key"] == {"code": "K00"}
    assert list(samples["changed"][0]["after"]) == columns[:10]
    assert samples["changed"][0]["after"]["c00"] == "b" * 100
    # The load step's result (what Step Functions carries) has the counts, no samples.
    details = json.loads(
        sql(
            "SELECT details FROM etl_audit.run_log WHERE run_id = ? AND step = 'load'",
            summary["run_id"],
        )[0][0]
    )
    assert details["changes"] == {"added": 0, "removed": 0, "changed": 15}
    assert "K00" not in json.dumps(details)


def test_status_shows_the_last_change_set(table_dir, write, run_cli, warehouse_url, capsys):
    config = table_dir(MAPPING, primary_key=["code"])
    run_cli(config, write("a.csv", FIRST))
    run_cli(config, write("b.csv", SECOND))
    root = str(config.parent)
    capsys.readouterr()
    assert main(["status", "--config-root", root, "--warehouse", warehouse_url, "--json"]) == 0
    [table] = json.loads(capsys.readouterr().out)["tables"]
    assert table["changes"] == {"added": 1, "removed": 1, "changed": 2}
    assert [r["changes"] for r in table["history"]] == [
        {"added": 4, "removed": 0, "changed": 0},
        {"added": 1, "removed": 1, "changed": 2},
    ]
    assert main(["status", "--config-root", root, "--warehouse", warehouse_url]) == 0
    assert capsys.readouterr().out.rstrip().endswith("keys added 1, removed 1, changed 2")


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_change_samples_too_wide_even_as_keys_are_dropped_not_cut(table_dir, write, run_cli, sql):
    # A 40-column primary key of 100-character values: ten keys added and ten removed do
    # not fit the ledger's 65,000 characters even as bare keys.
    columns = [f"key_part_{i:02d}" for i in range(40)]
    mapping = "source_column,target_column,data_type,transform,default,nullable,format\n"
    mapping += "".join(f"{c},{c},string,,,false,\n" for c in columns)
    config = table_dir(
        mapping,
        primary_key=columns,
        quality_tests=[{"type": "changes_within", "max_added_pct": 1000}],
    )

    def rows(letter: str) -> str:
        return (
            ",".join(columns)
            + "\n"
            + "".join(",".join([f"{letter}{k}" * 50] * len(columns)) + "\n" for k in range(10))
        )

    assert run_cli(config, write("a.csv", rows("a")))[0] == 0
    code, summary = run_cli(config, write("b.csv", rows("b")))

    assert code == 0, summary["error"]
    assert summary["changes"] == {"added": 10, "removed": 10, "changed": 0}
    assert [c["status"] for c in summary["checks"]] == ["pass"]
    _, counts, samples = _ledger_changes(sql, summary["run_id"])  # valid JSON
    assert counts == (10, 10, 0)
    assert samples == {"added": [], "removed": [], "changed": []}


@pytest.mark.parametrize("parts", [False, True], ids=["one file", "parts"])
def test_rollback_to_a_run_publishes_that_runs_rows_after_a_rerun_of_its_file(
    parts, table_dir, write, run_cli, sql, rollback, monkeypatch
):
    """The curated output holds `{run_id}`: a re-run of the same file (a retry, --force, S3
    delivering twice) writes its own output and leaves the first run's as it was, parts and
    manifest alike, so rolling back to the first run publishes rows stamped with its id."""
    from pathlib import Path

    import steps.ingest
    from steps.shared.io import storage

    if parts:
        monkeypatch.setattr(steps.ingest, "BATCH_ROWS", 2)
        monkeypatch.setattr(steps.ingest, "PARTS_FROM_ROWS", 4)
    config = table_dir(MAPPING, primary_key=["code"])
    source = write("a.csv", FIRST)
    _, first = run_cli(config, source)
    run_cli(config, write("b.csv", SECOND))
    code, again = run_cli(config, source, "--force")
    assert code == 0, again["error"]
    assert sql("SELECT DISTINCT loaded_by FROM ref.t_codes") == [(again["run_id"],)]

    code, summary = rollback("t_codes", first["run_id"])

    assert code == 0, summary["error"]
    assert sql("SELECT DISTINCT loaded_by FROM ref.t_codes") == [(first["run_id"],)]
    assert sql("SELECT code FROM ref.t_codes ORDER BY code") == [
        ("AA",),
        ("BB",),
        ("CC",),
        ("DD",),
    ]
    assert again["curated_uri"] != first["curated_uri"]
    if parts:  # each output's folder holds exactly the parts its manifest lists
        for run in (first, again):
            manifest = json.loads(Path(run["curated_uri"]).read_text())["entries"]
            listed = {e["url"]: e["meta"]["content_length"] for e in manifest}
            folder = Path(run["curated_uri"]).parent
            assert listed == {str(p): p.stat().st_size for p in folder.glob("*.parquet")}
            assert storage.curated_parts(run["curated_uri"]) == sorted(listed)


# --- history shows what changed (#30.6) ---------------------------------------------------


def test_history_changes_prints_the_sample_keys_before_and_after(
    table_dir, write, run_cli, warehouse_url, capsys
):
    config = table_dir(MAPPING, primary_key=["code"])
    run_cli(config, write("a.csv", FIRST))
    _, second = run_cli(config, write("b.csv", SECOND))

    history = ["history", "t_codes", "--warehouse", warehouse_url, "--changes"]
    assert main(history) == 0
    lines = capsys.readouterr().out.splitlines()
    assert second["run_id"] in lines[0]
    assert lines[1:6] == [
        "    sample keys (4 of 4, from the ledger):",
        "      added    code=EE",
        "      removed  code=CC",
        "      changed  code=BB: name 'Beta' -> 'Bravo'",
        "      changed  code=DD: n None -> 4",
    ]
    assert main([*history, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["change_samples"]["changed"][0] == {
        "key": {"code": "BB"},
        "before": {"name": "Beta"},
        "after": {"name": "Bravo"},
    }
    # Without --changes the lines and the JSON are as before.
    assert main(history[:-1]) == 0
    assert "sample keys" not in capsys.readouterr().out


def test_a_rollback_in_history_names_the_run_it_restored(
    table_dir, write, run_cli, rollback, warehouse_url, capsys
):
    config = table_dir(MAPPING, primary_key=["code"])
    _, first = run_cli(config, write("a.csv", FIRST))
    run_cli(config, write("b.csv", SECOND))
    code, back = rollback("t_codes", first["run_id"])
    assert code == 0, back["error"]

    assert main(["history", "t_codes", "--warehouse", warehouse_url, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["load_mode"], r["restored_run"]) for r in runs] == [
        ("rollback", first["run_id"]),
        ("truncate", None),
        ("truncate", None),
    ]
    assert main(["history", "t_codes", "--warehouse", warehouse_url]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert f"published 4 (rollback of run {first['run_id']})" in line


def test_history_piped_into_head_ends_without_a_traceback(
    table_dir, write, run_cli, warehouse_url, tmp_path
):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    config = table_dir(MAPPING, primary_key=["code"])
    for i in range(3):
        run_cli(config, write(f"{i}.csv", FIRST if i % 2 else SECOND))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The reader goes away before the command prints, as `| head -1` does after a line.
    command = [sys.executable, "-m", "handler", "history", "t_codes"]
    with subprocess.Popen(
        [*command, "--warehouse", warehouse_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        err = process.stderr.read().decode()
        process.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert process.returncode == 1


def test_a_rerun_that_fails_between_its_parts_leaves_the_earlier_output_whole(
    table_dir, write, run_cli, sql, rollback, monkeypatch
):
    """A re-run of a file written in parts that fails after its first part is stored (the
    Lambda times out, S3 refuses the second upload) leaves every earlier output exactly as
    its manifest lists it: rolling back to the first run publishes only that run's rows."""
    from pathlib import Path

    import steps.ingest
    from steps.shared.io import storage

    monkeypatch.setattr(steps.ingest, "BATCH_ROWS", 2)
    monkeypatch.setattr(steps.ingest, "PARTS_FROM_ROWS", 4)
    config = table_dir(MAPPING, primary_key=["code"])
    source = write("a.csv", FIRST)
    _, first = run_cli(config, source)
    upload = storage.upload_file

    def fails_on_the_second_part(uri: str, path: Path, **kwargs: object) -> None:
        if uri.endswith("part-00001.parquet"):
            raise OSError("the second part could not be stored")
        upload(uri, path, **kwargs)

    monkeypatch.setattr(storage, "upload_file", fails_on_the_second_part)
    code, failed = run_cli(config, source, "--force")
    assert code != 0 and failed["published"] is not True
    monkeypatch.setattr(storage, "upload_file", upload)

    manifest = json.loads(Path(first["curated_uri"]).read_text())["entries"]
    assert {e["url"]: e["meta"]["content_length"] for e in manifest} == {
        str(p): p.stat().st_size for p in Path(first["curated_uri"]).parent.glob("*.parquet")
    }
    code, summary = rollback("t_codes", first["run_id"])
    assert code == 0, summary["error"]
    assert sql("SELECT DISTINCT loaded_by FROM ref.t_codes") == [(first["run_id"],)]


def test_changes_within_on_a_first_load_prints_the_counts(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, primary_key=["code"], quality_tests=[GUARD])
    code, summary = run_cli(config, write("a.csv", FIRST))
    assert code == 0, summary["error"]
    observed = "first load: added 4, removed 0, changed 0"  # not a Python dict
    assert summary["checks"][0]["observed"] == observed
    assert sql("SELECT observed_value FROM etl_audit.data_quality_tests") == [(observed,)]


@pytest.mark.parametrize("limit", ["-1", "0", "99999999999999999999"])
def test_a_limit_no_warehouse_takes_is_a_usage_error_not_an_outage(warehouse_url, capsys, limit):
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["history", "t_codes", "--cost", "--limit", limit, "--warehouse", warehouse_url])
    assert refused.value.code == 2  # not 3 (InfrastructureError: LIMIT cannot be negative)
    err = capsys.readouterr().err
    assert f"--limit: must be a whole number from 1 to 1,000,000 (got '{limit}')" in err


def test_read_only_commands_refuse_a_duckdb_file_that_is_not_there(
    table_dir, write, tmp_path, capsys
):
    config = table_dir(MAPPING, name="t_codes", primary_key=["code"])
    root = str(config.parent)
    typo = tmp_path / "typo.duckdb"
    url = f"duckdb:///{typo}"
    outbox = str(tmp_path / "outbox")
    for command in (
        ["history", "t_codes"],
        ["status", "--config-root", root],
        ["diff", "t_codes", "--config-root", root],
        ["why", "t_codes", "code=AA", "--config-root", root],
        ["digest", "--config-root", root, "--outbox", outbox],
        ["check", root],
    ):
        capsys.readouterr()
        assert main([*command, "--warehouse", url]) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"ConfigError: no DuckDB database at {typo} "), command
        assert not typo.exists(), command
    # A command that loads creates it, as before.
    source = write("first.csv", FIRST)
    assert main(["run", "--config", str(config), "--source", str(source), "--warehouse", url]) == 0
    assert typo.is_file()


def test_freshness_and_rollback_refuse_a_duckdb_file_that_is_not_there(table_dir, tmp_path, capsys):
    """They only read what a database holds: a mistyped path is not created empty and then
    every table reported 'never loaded', or a run reported to have 'no ledger row'."""
    watched = {"warn_after": {"count": 1, "period": "day"}}
    config = table_dir(MAPPING, name="t_codes", load_mode="truncate", freshness=watched)
    root = str(config.parent)
    (config.parent / "groups").mkdir()
    (config.parent / "groups" / "g.json").write_text('{"group": "g", "tables": ["t_codes"]}')
    typo = tmp_path / "typo.duckdb"
    for command in (
        ["freshness", "--config-root", root],
        ["rollback", "t_codes", "--to", "20261201T000000Z-abcdef", "--config-root", root],
        ["rollback", "--group", "g", "--to", "2026-12-01T00:00:00Z", "--config-root", root],
    ):
        capsys.readouterr()
        assert main([*command, "--warehouse", f"duckdb:///{typo}"]) == 2, command
        shown = capsys.readouterr()  # freshness reports on stdout, as its results
        assert f"ConfigError: no DuckDB database at {typo} " in shown.out + shown.err, command
        assert not typo.exists(), command


def test_rollback_refuses_a_file_that_no_longer_fits_the_mapping(
    table_dir, write, run_cli, sql, rollback
):
    """Ingest held the file to the mapping of its day; a varchar narrowed since would have
    the warehouse keep the longer text (DuckDB) or cut its trailing spaces (PostgreSQL)."""
    config = table_dir(MAPPING, primary_key=["code"])
    _, first = run_cli(config, write("a.csv", FIRST))
    run_cli(config, write("b.csv", "code,name,n\nAA,Alf,1\n"))
    table_dir(
        MAPPING.replace("name,name,varchar(20)", "name,name,varchar(4)"), primary_key=["code"]
    )
    before = sql("SELECT code, name, n FROM ref.t_codes ORDER BY code")

    code, summary = rollback("t_codes", first["run_id"])

    assert code == 2, summary
    assert summary["error"]["message"].endswith(
        f"run {first['run_id']}'s file, line 2, column 'name': is 5 bytes, longer than "
        "varchar(4) now (value 'Alpha'); the mapping was changed since that run: change it "
        "back to go back to it"
    )
    table_dir(MAPPING.replace("n,n,integer,,,,", "n,n,integer,,,false,"), primary_key=["code"])
    code, summary = rollback("t_codes", first["run_id"])
    assert code == 2, summary
    assert (
        "file, line 5, column 'n': is empty, and the column is not nullable now"
        in (summary["error"]["message"])
    )
    assert sql("SELECT code, name, n FROM ref.t_codes ORDER BY code") == before


def test_rollback_refuses_a_file_whose_decimals_a_narrowed_scale_would_round(
    table_dir, write, run_cli, sql, rollback
):
    """A decimal's scale narrowed since (the table altered to match): the publish would
    round 1.2345 to 1.23 without a word."""
    rates = (
        'source_column,target_column,data_type\ncode,code,varchar(3)\nrate,rate,"decimal(10,4)"\n'
    )
    config = table_dir(rates, primary_key=["code"])
    _, first = run_cli(config, write("a.csv", "code,rate\nAA,1.5\nBB,1.2345\n"))
    assert run_cli(config, write("b.csv", "code,rate\nAA,2.5\n"))[0] == 0
    table_dir(rates.replace("decimal(10,4)", "decimal(10,2)"), primary_key=["code"])
    sql("ALTER TABLE ref.t_codes ALTER COLUMN rate SET DATA TYPE DECIMAL(10,2)")
    before = sql("SELECT code, rate FROM ref.t_codes ORDER BY code")

    code, summary = rollback("t_codes", first["run_id"])

    assert code == 2, summary
    assert summary["error"]["message"].endswith(
        f"run {first['run_id']}'s file, line 3, column 'rate': is 1.2345, which decimal(10,2) "
        "now cannot hold exactly; the mapping was changed since that run: change it back to go "
        "back to it"
    )
    assert sql("SELECT code, rate FROM ref.t_codes ORDER BY code") == before


def test_rollback_of_a_table_with_a_nullable_decimal_as_mapped_restores_it(
    table_dir, write, run_cli, sql, rollback
):
    """A nullable decimal whose type is as the mapping says has nothing to be refused for:
    rollback publishes the file again (it failed with an internal error)."""
    rates = (
        "source_column,target_column,data_type,transform,default,nullable,format\n"
        'code,code,varchar(3),,,false,\nrate,rate,"decimal(10,4)",,,true,\n'
    )
    config = table_dir(rates, primary_key=["code"])
    _, first = run_cli(config, write("a.csv", "code,rate\nAA,1.5\nBB,\n"))
    assert run_cli(config, write("b.csv", "code,rate\nAA,2.5\n"))[0] == 0

    code, summary = rollback("t_codes", first["run_id"])

    assert code == 0, summary
    assert sql("SELECT code, CAST(rate AS VARCHAR) FROM ref.t_codes ORDER BY code") == [
        ("AA", "1.5000"),
        ("BB", None),
    ]
