"""Load semantics on DuckDB: replace, upsert, append, the ledger, re-runs, failures."""

from __future__ import annotations

import importlib
import json
import time

import pytest

from steps.shared.warehouse import DIALECTS
from steps.shared.warehouse.base import Capabilities

# SQL behaviour differs between warehouses here: every test runs on all three.
pytestmark = pytest.mark.all_warehouses

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\nn,n,integer,,,,\n"
)


def _ledger(sql):
    return sql(
        "SELECT run_id, load_mode, rows_loaded, rows_before, rows_after "
        "FROM etl_audit.load_ledger ORDER BY loaded_at"
    )


def test_truncate_replaces_every_row(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, truncate_before_load=True)
    assert run_cli(config, write("a.csv", "code,n\nAA,1\nBB,2\n"))[0] == 0
    code, summary = run_cli(config, write("b.csv", "code,n\nBB,20\nCC,30\n"))
    assert code == 0, summary["error"]
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("BB", 20), ("CC", 30)]
    assert [row[1:] for row in _ledger(sql)] == [("truncate", 2, 0, 2), ("truncate", 2, 2, 2)]


def test_upsert_updates_and_inserts_by_primary_key(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, load_mode="upsert", primary_key=["code"])
    assert run_cli(config, write("a.csv", "code,n\nAA,1\nBB,2\n"))[0] == 0
    code, summary = run_cli(config, write("b.csv", "code,n\nBB,20\nCC,30\n"))
    assert code == 0, summary["error"]
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [
        ("AA", 1),
        ("BB", 20),
        ("CC", 30),
    ]
    assert [row[1:] for row in _ledger(sql)] == [("upsert", 2, 0, 2), ("upsert", 2, 2, 3)]


def test_append_adds_rows(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, load_mode="append")
    assert run_cli(config, write("a.csv", "code,n\nAA,1\n"))[0] == 0
    assert run_cli(config, write("b.csv", "code,n\nAA,1\nBB,2\n"))[0] == 0
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code, n") == [
        ("AA", 1),
        ("AA", 1),
        ("BB", 2),
    ]


@pytest.mark.parametrize(
    ("options"),
    [
        {"truncate_before_load": True},
        {"load_mode": "upsert", "primary_key": ["code"]},
        {"load_mode": "append"},
    ],
    ids=["truncate", "upsert", "append"],
)
def test_replaying_the_same_file_publishes_nothing_new(options, table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, **options)
    source = write("a.csv", "code,n\nAA,1\nBB,2\n")
    first_code, first = run_cli(config, source)
    code, summary = run_cli(config, source)
    assert (first_code, code) == (0, 0)
    assert summary["published"] is False
    assert summary["skipped_reason"] == (
        f"already published by run {first['run_id']} (same content and config)"
    )
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(2,)]
    assert len(_ledger(sql)) == 1


def test_reloading_an_older_file_after_a_newer_one_is_stale_unless_forced(
    table_dir, write, run_cli, sql
):
    config = table_dir(MAPPING)
    old, new = _files_written_in_order(write)
    assert run_cli(config, old)[0] == 0
    assert run_cli(config, new)[0] == 0
    code, summary = run_cli(config, old)
    assert (code, summary["status"], summary["published"]) == (0, "stale", False)
    assert sql("SELECT code FROM ref.t_codes") == [("BB",)]
    code, summary = run_cli(config, old, "--force")  # going back on purpose
    assert code == 0 and summary["published"] is True
    assert sql("SELECT code FROM ref.t_codes") == [("AA",)]


def test_a_changed_config_publishes_again(table_dir, write, run_cli, sql):
    source = write("a.csv", "code,n\nAA,1\n")
    assert run_cli(table_dir(MAPPING), source)[0] == 0
    changed = table_dir(
        MAPPING.replace("code,code,varchar(3),strip", "code,code,varchar(3),strip|lower")
    )
    code, summary = run_cli(changed, source)
    assert code == 0 and summary["published"] is True
    assert sql("SELECT code FROM ref.t_codes") == [("aa",)]


def test_failure_inside_the_publish_transaction_leaves_the_target_as_it_was(
    table_dir, write, run_cli, sql, warehouse_url
):
    config = table_dir(MAPPING)
    assert run_cli(config, write("a.csv", "code,n\nAA,1\nBB,2\n"))[0] == 0
    # Break the ledger so its INSERT (the last statement of the transaction) fails.
    sql("ALTER TABLE etl_audit.load_ledger ADD COLUMN must_have INTEGER DEFAULT 1")
    sql("ALTER TABLE etl_audit.load_ledger ALTER COLUMN must_have SET NOT NULL")
    sql("ALTER TABLE etl_audit.load_ledger ALTER COLUMN must_have DROP DEFAULT")
    code, summary = run_cli(config, write("b.csv", "code,n\nCC,3\n"))
    assert code == 3
    assert summary["status"] == "error"
    assert "must_have" in summary["error"]["message"]
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]
    assert len(_ledger(sql)) == 1


CREATED_TYPES = {
    "duckdb": [("code", "VARCHAR", "NO"), ("n", "INTEGER", "YES")],
    "postgresql": [("code", "character varying", "NO"), ("n", "integer", "YES")],
    "redshift": [("code", "character varying", "NO"), ("n", "integer", "YES")],
}


def test_target_is_created_from_the_mapping_with_its_types(table_dir, write, run_cli, sql, dialect):
    config = table_dir(MAPPING)
    assert run_cli(config, write("a.csv", "code,n\nAA,1\n"))[0] == 0
    assert (
        sql(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'ref' AND table_name = 't_codes' ORDER BY ordinal_position"
        )
        == CREATED_TYPES[dialect]
    )


def test_drift_between_table_and_mapping_is_refused_before_staging(table_dir, write, run_cli, sql):
    assert run_cli(table_dir(MAPPING), write("a.csv", "code,n\nAA,1\n"))[0] == 0
    grown = table_dir(MAPPING + "extra,extra,string,,,,\n")
    code, summary = run_cli(grown, write("b.csv", "code,n,extra\nBB,2,x\n"))
    assert code == 2
    assert (
        "target ref.t_codes does not match the mapping (mapping columns missing from the "
        "table: extra)"
    ) in summary["error"]["message"]
    assert sql("SELECT code FROM ref.t_codes") == [("AA",)]


def test_upsert_with_a_composite_key_matches_on_every_key_column(table_dir, write, run_cli, sql):
    mapping = (
        "source_column,target_column,data_type,transform,default,nullable,format\n"
        "country,country,varchar(2),,,false,\ncode,code,varchar(3),,,false,\nn,n,integer,,,,\n"
    )
    config = table_dir(mapping, load_mode="upsert", primary_key=["country", "code"])
    assert run_cli(config, write("a.csv", "country,code,n\nUS,AA,1\nUS,BB,2\nCA,AA,3\n"))[0] == 0
    # Same first key column, other second one: a new row, not an update of (US, AA).
    code, summary = run_cli(config, write("b.csv", "country,code,n\nUS,CC,4\nCA,AA,30\n"))
    assert code == 0, summary["error"]
    assert sql("SELECT country, code, n FROM ref.t_codes ORDER BY country, code") == [
        ("CA", "AA", 30),
        ("US", "AA", 1),
        ("US", "BB", 2),
        ("US", "CC", 4),
    ]


@pytest.mark.parametrize("scheme", sorted(DIALECTS))
def test_every_dialect_states_its_capabilities(scheme):
    module_name, class_name = DIALECTS[scheme].split(":")
    dialect = getattr(importlib.import_module(module_name), class_name)
    # Stated by the dialect itself, not inherited from the one it extends.
    assert isinstance(dialect.__dict__.get("capabilities"), Capabilities)


def _tables(sql, name="t_codes"):
    return sql(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'ref' AND table_name = ?",
        name,
    )


def test_a_skipped_replay_reports_nothing_loaded_and_what_is_there(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING)
    source = write("a.csv", "code,n\nAA,1\nBB,2\n")
    assert run_cli(config, source)[0] == 0

    code, summary = run_cli(config, source)

    assert code == 0
    assert summary["published"] is False
    assert (summary["rows_loaded"], summary["rows_in_target"]) == (0, 2)


def test_a_failed_first_load_leaves_no_table_behind(table_dir, write, run_cli, sql):
    gate = {"type": "row_count_between", "min": 5, "when": "before_publish"}
    config = table_dir(MAPPING, quality_tests=[gate])

    code, summary = run_cli(config, write("a.csv", "code,n\nAA,1\n"))

    assert code == 1, summary["error"]
    assert summary["error"]["type"] == "QualityCheckFailed"
    assert _tables(sql) == []
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == [(0,)]


# --- a new target, filled from the curated file in the publish (PostgreSQL, ADR 23) ------

FILLED = pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
MANY = "code,n\n" + "".join(
    f"{c}{d},{i}\n" for i, (c, d) in enumerate(zip("ZYXWVUTSRQPO", "0123456789AB", strict=True))
)


@FILLED
def test_a_new_target_filled_directly_publishes_what_a_staged_publish_does(
    table_dir, write, run_cli, sql
):
    """The same file into a new target (filled by COPY in the publish) and into an empty
    one that exists (staged, then inserted): the same rows, ledger row and change set,
    its sample keys included."""
    source = write("a.csv", MANY)
    sql("CREATE SCHEMA ref")
    sql("CREATE TABLE ref.t_there (code varchar(3) NOT NULL, n integer)")
    results = []
    for name in ("t_codes", "t_there"):
        config = table_dir(MAPPING, name=name, truncate_before_load=True, primary_key=["code"])
        code, summary = run_cli(config, source)
        assert code == 0, summary["error"]
        results.append(
            (
                summary["changes"],
                sql(f"SELECT code, n FROM ref.{name} ORDER BY code"),
                sql(
                    "SELECT rows_loaded, rows_before, rows_after, keys_added, keys_removed, "
                    "change_samples FROM etl_audit.load_ledger WHERE target = ?",
                    f"ref.{name}",
                ),
            )
        )
    assert results[0] == results[1]
    changes, rows, ledger = results[0]
    assert changes == {"added": 12, "removed": 0, "changed": 0} and len(rows) == 12
    samples = ledger[0][5] if isinstance(ledger[0][5], dict) else json.loads(ledger[0][5])
    assert [s["key"]["code"] for s in samples["added"]] == sorted(r[0] for r in rows)[:10]


@FILLED
def test_a_new_target_whose_copy_fails_is_not_left_behind(
    table_dir, write, run_cli, sql, monkeypatch
):
    from steps.shared.errors import WarehouseUnavailable
    from steps.shared.warehouse.postgres import PostgresCatalog

    def cut(self, *args):
        raise WarehouseUnavailable("server closed the connection unexpectedly")

    monkeypatch.setattr(PostgresCatalog, "_copy", cut)
    code, summary = run_cli(table_dir(MAPPING), write("a.csv", "code,n\nAA,1\n"))
    assert code == 3, summary
    assert "server closed the connection" in summary["error"]["message"]
    assert _tables(sql) == []
    assert sql(
        "SELECT step, status FROM etl_audit.run_log WHERE run_id = ? ORDER BY step",
        summary["run_id"],
    ) == [
        ("ingest", "ok"),
        ("load", "failed"),
    ]


@FILLED
def test_a_target_another_run_creates_meanwhile_is_staged_after_all(
    table_dir, write, run_cli, sql, monkeypatch
):
    """Missing when looked up, there when the publish would create it (another run's
    first load committed in between): this run stages its file and publishes it over."""
    from steps.shared.warehouse.catalog import Catalog

    config = table_dir(MAPPING, truncate_before_load=True)
    assert run_cli(config, write("a.csv", "code,n\nAA,1\n"))[0] == 0
    look = Catalog.check_target
    monkeypatch.setattr(Catalog, "check_target", lambda self, target: look(self, target) and {})
    code, summary = run_cli(config, write("b.csv", "code,n\nBB,2\nCC,3\n"))
    assert code == 0, summary["error"]
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("BB", 2), ("CC", 3)]
    assert [r[2:] for r in _ledger(sql)] == [(1, 0, 1), (2, 1, 2)]


@pytest.mark.parametrize("change", ["emptied", "dropped"])
@pytest.mark.parametrize(
    "options",
    [
        {"truncate_before_load": True},
        {"load_mode": "upsert", "primary_key": ["code"]},
        {"load_mode": "append"},
    ],
    ids=["truncate", "upsert", "append"],
)
def test_a_target_changed_out_of_band_gets_the_same_file_again(
    change, options, table_dir, write, run_cli, sql
):
    config = table_dir(MAPPING, **options)
    source = write("a.csv", "code,n\nAA,1\nBB,2\n")
    assert run_cli(config, source)[0] == 0
    sql("DELETE FROM ref.t_codes" if change == "emptied" else "DROP TABLE ref.t_codes")

    code, summary = run_cli(config, source)

    assert code == 0, summary["error"]
    assert summary["published"] is True
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]
    assert len(_ledger(sql)) == 2


def test_an_append_target_with_rows_of_its_own_is_not_appended_twice(
    table_dir, write, run_cli, sql
):
    config = table_dir(MAPPING, load_mode="append")
    source = write("a.csv", "code,n\nAA,1\nBB,2\n")
    assert run_cli(config, source)[0] == 0
    sql("INSERT INTO ref.t_codes (code, n) VALUES ('ZZ', 9)")

    code, summary = run_cli(config, source)

    assert code == 0 and summary["published"] is False
    assert summary["rows_in_target"] == 3


def test_force_publishes_a_file_the_ledger_already_has(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING)
    source = write("a.csv", "code,n\nAA,1\nBB,2\n")
    assert run_cli(config, source)[0] == 0
    sql("UPDATE ref.t_codes SET n = 99 WHERE code = 'AA'")  # same count: not noticed

    assert run_cli(config, source)[1]["published"] is False
    code, summary = run_cli(config, source, "--force")

    assert code == 0, summary["error"]
    assert summary["published"] is True
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]
    assert [row[1:] for row in _ledger(sql)] == [("truncate", 2, 0, 2), ("truncate", 2, 2, 2)]


LONG_COLUMN = "c" * 80  # 80 bytes: PostgreSQL would keep 63 of them


def test_a_name_longer_than_the_warehouse_keeps_is_refused_before_anything_is_made(
    table_dir, write, run_cli, sql, dialect
):
    config = table_dir(MAPPING + f"x,{LONG_COLUMN},integer,,,,\n")

    code, summary = run_cli(config, write("a.csv", "code,n,x\nAA,1,7\n"))

    if dialect != "postgresql":  # DuckDB and Redshift (127 bytes) keep the whole name
        assert code == 0, summary["error"]
        assert sql(f"SELECT {LONG_COLUMN} FROM ref.t_codes") == [(7,)]
        return
    assert code == 2
    assert summary["error"]["type"] == "ConfigError"
    assert summary["error"]["message"] == (
        f"{config.parent / 't_codes_mapping.csv'}, column '{LONG_COLUMN}': column name is "
        "80 bytes; postgresql keeps at most 63 bytes of a name: shorten it in the mapping sheet"
    )
    assert _tables(sql) == []


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)  # read before any SQL
@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_lock_timeout_that_is_not_a_positive_number_is_refused(
    value, table_dir, write, run_cli, sql, monkeypatch
):
    monkeypatch.setenv("REFLOAD_LOCK_TIMEOUT_SECONDS", value)

    code, summary = run_cli(table_dir(MAPPING), write("a.csv", "code,n\nAA,1\n"))

    assert code == 2
    assert summary["error"]["message"] == (
        f"REFLOAD_LOCK_TIMEOUT_SECONDS must be a number of seconds above 0 (value '{value}')"
    )
    assert _tables(sql) == []


def test_duckdb_publishes_without_keeping_insertion_order(tmp_path):
    """ADR 10: the connection refload publishes on does not pay for a row order SQL lacks
    (a DuckDB setting, so DuckDB only whatever the module's marker)."""
    from steps.shared.warehouse import open_warehouse

    with open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        setting = warehouse.scalar("SELECT current_setting('preserve_insertion_order')")
    assert setting is False


def test_awkward_text_arrives_in_the_warehouse_as_it_was(table_dir, write, run_cli, sql):
    """PostgreSQL is staged through COPY's CSV format: quotes, delimiters, line breaks,
    backslashes and NULL must come through exactly (DuckDB and Redshift stage otherwise)."""
    mapping = (
        "source_column,target_column,data_type,transform,default,nullable,format\n"
        "code,code,varchar(3),,,false,\nname,name,varchar(40),,,true,\n"
    )
    source = (
        'code,name\nA,"say ""hi"", then go"\nB,"two\nlines"\nC,back\\slash \\N\nD,\n'
        "E, padded \nF,Ünïcödé 🙂\n"
    )
    code, summary = run_cli(table_dir(mapping), write("t.csv", source))
    assert code == 0, summary["error"]
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == [
        ("A", 'say "hi", then go'),
        ("B", "two\nlines"),
        ("C", "back\\slash \\N"),
        ("D", None),
        ("E", " padded "),
        ("F", "Ünïcödé 🙂"),
    ]


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_the_publish_leaves_the_session_lock_timeout_as_it_was(
    table_dir, write, run_cli, monkeypatch
):
    # validate runs on the connection load used: a custom_sql test sees its session settings.
    monkeypatch.setenv("REFLOAD_LOCK_TIMEOUT_SECONDS", "42")
    leak = {
        "type": "custom_sql",
        "name": "session_lock_timeout",
        "sql": "SELECT current_setting('lock_timeout') AS lock_timeout FROM {table} "
        "WHERE current_setting('lock_timeout') <> '0'",
        "store_samples": True,
    }
    config = table_dir(MAPPING, quality_tests=[leak])

    code, summary = run_cli(config, write("a.csv", "code,n\nAA,1\n"))

    assert code == 0, summary["checks"]
    assert [(c["name"], c["status"]) for c in summary["checks"]] == [
        ("session_lock_timeout", "pass")
    ]


# --- files out of order -------------------------------------------------------------------

OLDER, NEWER = 1_790_000_000, 1_790_000_600  # mtimes: the older file was written first


def _files_written_in_order(write):
    import os

    older = write("older.csv", "code,n\nAA,1\n")
    newer = write("newer.csv", "code,n\nBB,2\n")
    os.utime(older, (OLDER, OLDER))
    os.utime(newer, (NEWER, NEWER))
    return older, newer


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"load_mode": "upsert", "primary_key": ["code"]},
        {"load_mode": "scd2", "primary_key": ["code"]},
    ],
    ids=["truncate", "upsert", "scd2"],
)
def test_a_file_older_than_the_last_published_one_is_stale(
    options, table_dir, write, run_cli, sql, warehouse_url, tmp_path, capsys
):
    import datetime as dt
    import json

    from handler.cli import main
    from tests.conftest import run_args

    config = table_dir(MAPPING, **options)
    older, newer = _files_written_in_order(write)
    code, first = run_cli(config, newer)
    assert code == 0, first["error"]
    rows = sql("SELECT code, n FROM ref.t_codes ORDER BY code")

    capsys.readouterr()
    code = main(run_args(config, older, warehouse_url, "--json", curated=tmp_path / "curated"))
    out, err = capsys.readouterr()
    summary = json.loads(out)

    assert (code, summary["status"], summary["published"], summary["error"]) == (
        0,
        "stale",
        False,
        None,
    )
    older_at, newer_at = (
        dt.datetime.fromtimestamp(t, dt.UTC).replace(tzinfo=None) for t in (OLDER, NEWER)
    )
    assert summary["skipped_reason"] == (
        f"stale: the file was written at {older_at.isoformat()}, before the file run "
        f"{first['run_id']} published ({newer_at.isoformat()}); --force publishes it"
    )
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == rows
    assert sql(
        "SELECT step, status FROM etl_audit.run_log WHERE run_id = ? AND status = 'stale'",
        summary["run_id"],
    ) == [("load", "stale")]
    assert sql("SELECT COUNT(*) FROM etl_audit.data_quality_tests") == [(0,)]
    records = [json.loads(line) for line in err.splitlines()]
    assert [r["event"] for r in records if "stale" in r["event"]] == ["stale file not published"]
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").iterdir())
    assert sql("SELECT run_id, source_modified_at FROM etl_audit.load_ledger") == [
        (first["run_id"], newer_at)
    ]

    # The fleet's views call the run stale: not a failure, not a run still going.
    assert main(["history", "t_codes", "--warehouse", warehouse_url, "--json"]) == 0
    newest = json.loads(capsys.readouterr().out)[0]
    assert (newest["run_id"], newest["status"]) == (summary["run_id"], "stale")
    status = ["status", "--config-root", str(config.parent), "--warehouse", warehouse_url]
    main([*status, "--json"])
    [table] = json.loads(capsys.readouterr().out)["tables"]
    assert (table["run_id"], table["status"], table["attention"]) == (
        summary["run_id"],
        "stale",
        "ok",
    )

    code, forced = run_cli(config, older, "--force")
    assert (code, forced["status"], forced["published"]) == (0, "passed", True)
    assert [r[0] for r in sql("SELECT code FROM ref.t_codes WHERE code = 'AA'")] == ["AA"]


def test_an_append_table_takes_files_in_any_order(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, load_mode="append")
    older, newer = _files_written_in_order(write)
    assert run_cli(config, newer)[0] == 0
    code, summary = run_cli(config, older)
    assert (code, summary["status"], summary["published"]) == (0, "passed", True)
    assert sql("SELECT code FROM ref.t_codes ORDER BY code") == [("AA",), ("BB",)]


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_of_two_runs_at_once_the_newer_file_wins_whichever_commits_last(
    table_dir, write, run_cli, sql, warehouse_url, tmp_path
):
    """Two processes publish one table: the newer file's run takes the publish lock first
    and commits, then the older file's run gets the lock. It must find the newer file in
    the ledger under the lock and publish nothing (stale), so the target keeps the newer
    file's rows although the older run committed last."""
    import json
    import os
    import subprocess
    import sys
    import time

    import psycopg

    from tests.conftest import POSTGRES_URL, ROOT, run_args

    config = table_dir(MAPPING)
    older, newer = _files_written_in_order(write)
    seed = write("seed.csv", "code,n\nZZ,0\n")
    os.utime(seed, (OLDER - 600, OLDER - 600))
    assert run_cli(config, seed)[0] == 0  # the target and the ledger exist
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(source):
        args = run_args(config, source, warehouse_url, "--json", curated=tmp_path / "curated")
        return subprocess.Popen(
            [sys.executable, "-m", "handler", *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def waiting_for_the_target(count: int, watcher) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT COUNT(*) FROM pg_locks WHERE NOT granted "
                "AND relation = 'ref.t_codes'::regclass "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()[0]
            if waiting == count:
                return
            time.sleep(0.1)
        raise AssertionError(f"{count} run(s) never waited for the target's lock")

    with (
        psycopg.connect(POSTGRES_URL) as holder,
        psycopg.connect(POSTGRES_URL, autocommit=True) as watcher,
    ):
        holder.execute("LOCK TABLE ref.t_codes IN ACCESS EXCLUSIVE MODE")
        runs = {"newer": start(newer)}
        waiting_for_the_target(1, watcher)
        runs["older"] = start(older)
        waiting_for_the_target(2, watcher)
        holder.commit()  # the newer run's publish goes first, the older one's after it
        outcomes = {}
        for name, process in runs.items():
            out, _ = process.communicate(timeout=120)
            outcomes[name] = (process.returncode, json.loads(out))

    assert outcomes["newer"][0] == 0 and outcomes["newer"][1]["status"] == "passed"
    code, summary = outcomes["older"]
    assert (code, summary["status"], summary["published"]) == (0, "stale", False)
    assert sql("SELECT code, n FROM ref.t_codes") == [("BB", 2)]
    assert sql("SELECT run_id FROM etl_audit.load_ledger ORDER BY loaded_at DESC LIMIT 1") == [
        (outcomes["newer"][1]["run_id"],)
    ]


def test_a_ledger_made_by_an_earlier_version_gets_the_time_column_and_its_rows_stale_nothing(
    table_dir, write, run_cli, sql
):
    import datetime as dt

    config = table_dir(MAPPING)
    older, newer = _files_written_in_order(write)
    assert run_cli(config, newer)[0] == 0
    sql("ALTER TABLE etl_audit.load_ledger DROP COLUMN source_modified_at")  # as it was made

    code, summary = run_cli(config, older)

    assert (code, summary["status"], summary["published"]) == (0, "passed", True)
    older_at = dt.datetime.fromtimestamp(OLDER, dt.UTC).replace(tzinfo=None)
    assert sql("SELECT source_modified_at FROM etl_audit.load_ledger ORDER BY loaded_at") == [
        (None,),
        (older_at,),
    ]


LARGE_MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(10),,,false,\nname,name,varchar(40),,,,\n"
)


def _large_csv(rows: int, suffix) -> str:
    return "code,name\n" + "".join(f"K{i:07d},name{i}{suffix(i)}\n" for i in range(rows))


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_an_upsert_changing_half_of_a_large_table_is_as_quick_as_a_plain_one(
    table_dir, write, run_cli, sql, monkeypatch
):
    # This hung for minutes in the change-set sample query (a nested loop of 2x10^10
    # comparisons, under the target's lock); the bound makes a regression fail instead.
    monkeypatch.setenv("REFLOAD_STATEMENT_TIMEOUT_SECONDS", "60")
    rows = 200_000
    config = table_dir(LARGE_MAPPING, load_mode="upsert", primary_key=["code"])
    assert run_cli(config, write("a.csv", _large_csv(rows, lambda i: "")))[0] == 0
    # As autovacuum does after a large load: the planner knows the target, not the
    # temporary staging and delta tables of the next publish.
    sql("ANALYZE ref.t_codes")
    started = time.perf_counter()
    code, plain = run_cli(config, write("b.csv", _large_csv(rows, lambda i: "p" * (i < 10))))
    plain_seconds = time.perf_counter() - started
    assert code == 0, plain["error"]
    assert plain["changes"] == {"added": 0, "removed": 0, "changed": 10}
    sql("ANALYZE ref.t_codes")

    started = time.perf_counter()
    # The upper half of the keys: a plan that walks the target in key order reaches the
    # first changed key only after 100,000 others.
    code, summary = run_cli(
        config, write("c.csv", _large_csv(rows, lambda i: "p" * (i < 10) + "x" * (i >= rows // 2)))
    )
    seconds = time.perf_counter() - started

    assert code == 0, summary["error"]
    assert summary["changes"] == {"added": 0, "removed": 0, "changed": 100_000}
    assert sql("SELECT COUNT(*) FROM ref.t_codes WHERE name LIKE '%x'") == [(100_000,)]
    [(text,)] = sql(
        "SELECT change_samples FROM etl_audit.load_ledger ORDER BY loaded_at DESC LIMIT 1"
    )
    changed = json.loads(text)["changed"]
    assert [s["key"]["code"] for s in changed] == [f"K{i:07d}" for i in range(100_000, 100_010)]
    assert changed[0] == {
        "key": {"code": "K0100000"},
        "before": {"name": "name100000"},
        "after": {"name": "name100000x"},
    }
    assert seconds < 2 * plain_seconds, (seconds, plain_seconds)


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_statement_timeout_that_is_not_a_positive_number_is_refused(
    value, table_dir, write, run_cli, sql, monkeypatch
):
    monkeypatch.setenv("REFLOAD_STATEMENT_TIMEOUT_SECONDS", value)

    code, summary = run_cli(table_dir(MAPPING), write("a.csv", "code,n\nAA,1\n"))

    assert code == 2
    assert summary["error"]["message"] == (
        f"REFLOAD_STATEMENT_TIMEOUT_SECONDS must be a number of seconds above 0 (value '{value}')"
    )
    assert _tables(sql) == []


EVERY_TYPE = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "k,k,varchar(3),,,false,\ns,s,string,,,true,\ni16,i16,smallint,,,true,\n"
    "i32,i32,integer,,,true,\ni64,i64,bigint,,,true,\nf,f,double,,,true,\n"
    'd,d,"decimal(9,4)",,,true,\nbig,big,"decimal(38,0)",,,true,\nday,day,date,,,true,\n'
    "at,at,timestamp,,,true,\nok,ok,boolean,,,true,\n"
)
EVERY_TYPE_ROWS = (
    "k,s,i16,i32,i64,f,d,big,day,at,ok\n"
    'A,"say ""hi"", then\n go",-32768,-2147483648,-9223372036854775808,-0.1,-12345.0678,'
    "-12345678901234567890123456789012345678,0001-01-01,1999-12-31 23:59:59.999999,false\n"
    "B,Ünïcödé 🙂,32767,2147483647,9223372036854775807,0.3333333333333333,0.0001,"
    "1,9999-12-31,2024-02-29 13:45:01.123456,true\n"
    "C,,,,,,,,,,\n"
)


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_every_type_arrives_in_postgresql_exactly(table_dir, write, run_cli, sql):
    """PostgreSQL is staged through COPY's binary format, encoded from the curated file's
    Arrow columns: each type's extremes and NULLs arrive as the CSV said (issue #28)."""
    import datetime as dt
    from decimal import Decimal

    code, summary = run_cli(table_dir(EVERY_TYPE), write("t.csv", EVERY_TYPE_ROWS))

    assert code == 0, summary["error"]
    assert sql("SELECT *, d::text FROM ref.t_codes ORDER BY k") == [
        (
            "A",
            'say "hi", then\n go',
            -32768,
            -2147483648,
            -9223372036854775808,
            -0.1,
            Decimal("-12345.0678"),
            Decimal("-12345678901234567890123456789012345678"),
            dt.date(1, 1, 1),
            dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
            False,
            "-12345.0678",
        ),
        (
            "B",
            "Ünïcödé 🙂",
            32767,
            2147483647,
            9223372036854775807,
            0.3333333333333333,
            Decimal("0.0001"),
            Decimal("1"),
            dt.date(9999, 12, 31),
            dt.datetime(2024, 2, 29, 13, 45, 1, 123456),
            True,
            "0.0001",
        ),
        ("C", None, None, None, None, None, None, None, None, None, None, None),
    ]


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_curated_file_typed_otherwise_is_staged_as_text(
    table_dir, write, run_cli, sql, warehouse_url, tmp_path, capsys
):
    """A curated file whose columns are not the mapping's Arrow types (another engine's, or
    an older version's: here bigint for an integer) cannot go as COPY's binary format, which
    PostgreSQL would read as the column's type: it goes as text, and rollback publishes it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from handler.cli import main

    config = table_dir(MAPPING, primary_key=["code"])
    _, first = run_cli(config, write("a.csv", "code,n\nAA,1\nBB,-2\nCC,\n"))
    assert run_cli(config, write("b.csv", "code,n\nDD,4\n"))[0] == 0
    curated = pq.read_table(first["curated_uri"])
    widened = curated.set_column(1, "n", curated.column("n").cast(pa.int64()))
    pq.write_table(widened, first["curated_uri"])
    capsys.readouterr()

    folder = str(tmp_path / "cfg")
    code = main(
        [
            "rollback",
            "t_codes",
            "--to",
            first["run_id"],
            "--warehouse",
            warehouse_url,
            "--config-root",
            folder,
            "--json",
        ]
    )

    assert code == 0, capsys.readouterr().out
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [
        ("AA", 1),
        ("BB", -2),
        ("CC", None),
    ]


@FILLED
@pytest.mark.parametrize("mode", ["truncate", "append"])
def test_a_target_another_run_commits_while_this_one_creates_it_is_published_over(
    mode, table_dir, write, run_cli, sql, monkeypatch
):
    """Another run's first load commits between this publish's look at the catalog and its
    CREATE TABLE IF NOT EXISTS (which then creates nothing): the table is not this run's
    new one, so its file is staged and published over the other run's rows, as into any
    existing target, never COPYed in beside them."""
    from steps.shared.warehouse.postgres import PostgresCatalog

    exists = PostgresCatalog.schema_exists

    def other_run_commits(self, schema):
        if schema == "ref" and not _tables(sql):
            sql("CREATE SCHEMA IF NOT EXISTS ref")
            sql("CREATE TABLE ref.t_codes (code varchar(3) NOT NULL, n integer)")
            sql("INSERT INTO ref.t_codes VALUES ('ZZ', 9)")
        return exists(self, schema)

    monkeypatch.setattr(PostgresCatalog, "schema_exists", other_run_commits)
    options = {"load_mode": "append"} if mode == "append" else {"truncate_before_load": True}
    code, summary = run_cli(table_dir(MAPPING, **options), write("a.csv", "code,n\nAA,1\n"))
    assert code == 0, summary["error"]
    expected = {"truncate": [("AA", 1)], "append": [("AA", 1), ("ZZ", 9)]}[mode]
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == expected
    assert [r[2:] for r in _ledger(sql)] == [(1, 1, len(expected))]


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_an_upsert_of_a_curated_file_with_a_doubled_key_is_refused(
    table_dir, write, sql, warehouse_url, tmp_path
):
    """Ingest never writes a key twice, but the curated file load reads may come from
    elsewhere (another engine, a file put back by hand): upsert checks its staged keys,
    refuses the file naming the key, and the target keeps its rows."""
    import pyarrow.parquet as pq

    from handler import lambda_handler
    from steps.shared.errors import RejectedInput

    config = table_dir(MAPPING, load_mode="upsert", primary_key=["code"])
    state = {
        "config": str(config),
        "warehouse": warehouse_url,
        "curated_root": str(tmp_path / "curated"),
    }
    for source, doubled in (("code,n\nAA,1\n", False), ("code,n\nBB,2\nCC,3\n", True)):
        state = {**state, "source": str(write("t.csv", source))}
        for key in ("run_id", "curated_uri"):
            state.pop(key, None)
        state = lambda_handler({**state, "step": "ingest"}, None)
        if doubled:  # BB twice, with two values
            curated = pq.read_table(state["curated_uri"])
            rows = curated.to_pylist()
            rows[1] = {**rows[0], "n": 9}
            pq.write_table(curated.from_pylist(rows, curated.schema), state["curated_uri"])
            with pytest.raises(
                RejectedInput, match=r"duplicate primary key \(code='BB'\) in the incoming rows"
            ):
                lambda_handler({**state, "step": "load"}, None)
        else:
            state = lambda_handler({**state, "step": "load"}, None)
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1)]
    assert sql(
        "SELECT status, error_type FROM etl_audit.run_log WHERE run_id = ? AND step = 'load'",
        state["run_id"],
    ) == [("failed", "RejectedInput")]
