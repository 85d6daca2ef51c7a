"""Faults in the middle of a publish, on PostgreSQL and Redshift (real driver, via the proxy):
the target keeps exactly its previous rows, the ledger has no row for the failed run, and
a re-run succeeds without duplicates."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from steps.shared.errors import InfrastructureError, WarehouseUnavailable
from steps.shared.warehouse import open_warehouse
from tests.conftest import POSTGRES_URL, run_args

# SQL behaviour differs between warehouses here: every test runs on all three.
pytestmark = pytest.mark.all_warehouses

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\nn,n,integer,,,,\n"
)
BEFORE = [("AA", 1), ("BB", 2)]
SERVER_WAREHOUSES = ["postgresql", "redshift"]


def _prepare(table_dir, write, run_cli, sql, mode):
    options = (
        {"load_mode": "upsert", "primary_key": ["code"]}
        if mode == "upsert"
        else {"load_mode": mode}
    )
    config = table_dir(MAPPING, **options)
    assert run_cli(config, write("a.csv", "code,n\nAA,1\nBB,2\n"))[0] == 0
    return config


def _after_failure(sql, summary, run_cli, config, source, expected):
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == BEFORE
    assert sql(
        "SELECT COUNT(*) FROM etl_audit.load_ledger WHERE run_id = ?", summary["run_id"]
    ) == [(0,)]
    assert sql(
        "SELECT status FROM etl_audit.run_log WHERE run_id = ? AND step = 'load'", summary["run_id"]
    ) == [("failed",)]
    code, again = run_cli(config, source)
    assert code == 0, again["error"]
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == expected
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == [(2,)]


def _on_insert(sql, name: str, body: str) -> None:
    """A real server-side fault: PL/pgSQL run when the publish INSERTs into the target."""
    sql(f"CREATE FUNCTION ref.{name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} END $$")
    sql(
        f"CREATE TRIGGER {name} BEFORE INSERT ON ref.t_codes FOR EACH STATEMENT "
        f"EXECUTE FUNCTION ref.{name}()"
    )


EXPECTED = {"truncate": [("BB", 20), ("CC", 30)], "upsert": [("AA", 1), ("BB", 20), ("CC", 30)]}


@pytest.mark.parametrize("warehouse_url", SERVER_WAREHOUSES, indirect=True)
@pytest.mark.parametrize("mode", ["truncate", "upsert"])
def test_error_after_the_delete_rolls_everything_back(mode, table_dir, write, run_cli, sql):
    config = _prepare(table_dir, write, run_cli, sql, mode)
    _on_insert(sql, "refuse", "RAISE EXCEPTION 'injected failure after DELETE';")
    source = write("b.csv", "code,n\nBB,20\nCC,30\n")

    code, summary = run_cli(config, source)

    assert code == 3
    assert "injected failure after DELETE" in summary["error"]["message"]
    sql("DROP TRIGGER refuse ON ref.t_codes")
    _after_failure(sql, summary, run_cli, config, source, EXPECTED[mode])


@pytest.mark.parametrize("warehouse_url", SERVER_WAREHOUSES, indirect=True)
@pytest.mark.parametrize("mode", ["truncate", "upsert"])
def test_connection_killed_mid_publish(mode, table_dir, write, run_cli, sql):
    config = _prepare(table_dir, write, run_cli, sql, mode)
    # Hold the publish inside its INSERT (after the DELETE) long enough to kill it.
    _on_insert(sql, "stall", "PERFORM pg_sleep(30); RETURN NULL;")
    source = write("b.csv", "code,n\nBB,20\nCC,30\n")
    outcome: dict[str, object] = {}
    loader = threading.Thread(target=lambda: outcome.update(result=run_cli(config, source)))
    loader.start()

    killed = []
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        deadline = time.monotonic() + 20
        while not killed and time.monotonic() < deadline:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE state = 'active' AND query LIKE 'INSERT INTO \"ref\".\"t_codes\"%' "
                "AND pid <> pg_backend_pid() AND datname = current_database()"
            ).fetchall()
            time.sleep(0.05)
    loader.join(timeout=60)

    assert killed == [(True,)]
    code, summary = outcome["result"]  # type: ignore[misc]
    assert code == 3
    assert summary["error"]["type"] == "WarehouseUnavailable"  # transient: Step Functions retries
    sql("DROP TRIGGER stall ON ref.t_codes")
    _after_failure(sql, summary, run_cli, config, source, EXPECTED[mode])


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (psycopg.errors.SerializationFailure("could not serialize access"), WarehouseUnavailable),
        (psycopg.errors.DeadlockDetected("deadlock detected"), WarehouseUnavailable),
        (
            psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
            WarehouseUnavailable,
        ),
        (psycopg.OperationalError("connection refused"), WarehouseUnavailable),
        (psycopg.errors.UndefinedTable('relation "x" does not exist'), InfrastructureError),
    ],
)
def test_postgres_errors_are_classified(error, kind):
    assert type(open_warehouse(POSTGRES_URL).translate_error(error)) is kind


def test_unreachable_server_is_transient():
    warehouse = open_warehouse("postgresql://refload:refload@127.0.0.1:9/refload_test")
    with pytest.raises(WarehouseUnavailable, match="postgresql: connection"):
        warehouse.query("SELECT 1")


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", SERVER_WAREHOUSES, indirect=True)
def test_a_transaction_left_open_on_the_target_fails_the_load_as_retryable(
    table_dir, write, run_cli, sql, monkeypatch, warehouse_url
):
    config = _prepare(table_dir, write, run_cli, sql, "truncate")
    # Redshift has no lock_timeout: its statement bound bounds the wait too.
    setting = (
        "REFLOAD_STATEMENT_TIMEOUT_SECONDS"
        if "redshift" in warehouse_url
        else ("REFLOAD_LOCK_TIMEOUT_SECONDS")
    )
    monkeypatch.setenv(setting, "1")
    source = write("b.csv", "code,n\nBB,20\nCC,30\n")
    outcome: dict[str, object] = {}
    with psycopg.connect(POSTGRES_URL) as holder:  # someone's SQL client, mid-transaction
        holder.execute("LOCK TABLE ref.t_codes IN ACCESS EXCLUSIVE MODE")
        loader = threading.Thread(target=lambda: outcome.update(result=run_cli(config, source)))
        started = time.monotonic()
        loader.start()
        loader.join(timeout=60)
        waited = time.monotonic() - started
        holder.rollback()
    loader.join()

    code, summary = outcome["result"]  # type: ignore[misc]
    assert code == 3
    assert summary["error"]["type"] == "WarehouseUnavailable"  # Step Functions retries it
    assert summary["error"]["message"].startswith(
        f"ref.t_codes is locked by another transaction; gave up after 1 s ({setting}); "
        "a retry may succeed"
    )
    assert waited < 30
    _after_failure(sql, summary, run_cli, config, source, EXPECTED["truncate"])


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", SERVER_WAREHOUSES, indirect=True)
def test_two_first_loads_of_one_table_at_once_both_publish(
    table_dir, write, sql, warehouse_url, tmp_path
):
    # The audit tables and schema exist; each publish then stalls in its transaction,
    # after creating the table and before COMMIT, so the second meets the first's
    # uncommitted CREATE TABLE.
    other = table_dir(MAPPING, name="t_other", load_mode="append")
    assert _cli(other, write("o.csv", "code,n\nZZ,0\n"), warehouse_url, tmp_path) == 0
    sql(
        "CREATE FUNCTION etl_audit.stall() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(1.5); RETURN NEW; END $$"
    )
    sql(
        "CREATE TRIGGER stall BEFORE INSERT ON etl_audit.load_ledger FOR EACH ROW "
        "EXECUTE FUNCTION etl_audit.stall()"
    )
    config = table_dir(MAPPING, load_mode="append")
    codes: dict[str, int] = {}
    loaders = [
        threading.Thread(
            target=lambda n=name: codes.update(
                {
                    n: _cli(
                        config,
                        write(f"{n}.csv", f"code,n\n{n.upper()},1\n"),
                        warehouse_url,
                        tmp_path,
                    )
                }
            )
        )
        for name in ("aa", "bb")
    ]
    for loader in loaders:
        loader.start()
        time.sleep(0.5)
    for loader in loaders:
        loader.join(timeout=60)

    assert codes == {"aa": 0, "bb": 0}
    assert sql("SELECT code FROM ref.t_codes ORDER BY code") == [("AA",), ("BB",)]


def _cli(config, source, warehouse_url, tmp_path) -> int:
    """`python -m handler run` without --json (threads share stdout): the exit code."""
    from handler.cli import main

    return main(run_args(config, source, warehouse_url, curated=tmp_path / "curated"))


@pytest.mark.parametrize("warehouse_url", SERVER_WAREHOUSES, indirect=True)
def test_a_failing_commit_rolls_back_and_is_reported_as_such(table_dir, write, run_cli, sql):
    config = _prepare(table_dir, write, run_cli, sql, "truncate")
    # A deferred constraint trigger fails at COMMIT, as a serialization conflict would.
    sql(
        "CREATE FUNCTION ref.conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION USING ERRCODE = 'serialization_failure', "
        "MESSAGE = 'injected conflict at commit'; END $$"
    )
    sql(
        "CREATE CONSTRAINT TRIGGER conflict AFTER INSERT ON ref.t_codes "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ref.conflict()"
    )
    source = write("b.csv", "code,n\nBB,20\nCC,30\n")

    code, summary = run_cli(config, source)

    assert code == 3
    assert summary["error"]["type"] == "WarehouseUnavailable"  # found by its SQLSTATE
    assert summary["error"]["message"].startswith(
        "COMMIT failed, the transaction was rolled back: "
    )
    assert "injected conflict at commit" in summary["error"]["message"]
    sql("DROP TRIGGER conflict ON ref.t_codes")
    _after_failure(sql, summary, run_cli, config, source, EXPECTED["truncate"])


LIMITED_ROLE = "refload_limited"  # made by scripts/start_postgres.sh, with no privileges


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_user_without_privileges_on_the_target_is_told_so(
    table_dir, write, run_cli, sql, tmp_path
):
    config = _prepare(table_dir, write, run_cli, sql, "truncate")
    sql(f"GRANT USAGE ON SCHEMA ref, etl_audit TO {LIMITED_ROLE}")
    sql(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA etl_audit TO {LIMITED_ROLE}")
    limited = POSTGRES_URL.replace("refload:refload@", f"{LIMITED_ROLE}:{LIMITED_ROLE}@")

    from handler.cli import main

    code = main(
        [
            "run",
            "--config",
            str(config),
            "--source",
            str(write("b.csv", "code,n\nCC,3\n")),
            "--warehouse",
            limited,
            "--curated-root",
            str(tmp_path / "curated"),
            "--json",
        ]
    )

    assert code == 3
    [row] = sql(
        "SELECT error_type, error_message FROM etl_audit.run_log WHERE step = 'load' "
        "AND status = 'failed'"
    )
    assert row == (
        "InfrastructureError",
        "permission denied on ref.t_codes: the warehouse user lacks SELECT, INSERT, DELETE "
        "on it; grant them or load as a user that has them",
    )
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == BEFORE


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"S": "ERROR", "C": "40001", "M": "could not serialize access"}, WarehouseUnavailable),
        ({"S": "ERROR", "C": "40P01", "M": "deadlock detected"}, WarehouseUnavailable),
        ({"S": "ERROR", "C": "55P03", "M": "lock not available"}, WarehouseUnavailable),
        ({"S": "FATAL", "C": "57P01", "M": "terminating connection"}, WarehouseUnavailable),
        ({"S": "FATAL", "C": "53300", "M": "too many connections"}, WarehouseUnavailable),
        ({"S": "FATAL", "C": "08006", "M": "connection failure"}, WarehouseUnavailable),
        (
            {"S": "ERROR", "C": "XX000", "M": "1023", "D": "Serializable isolation violation"},
            WarehouseUnavailable,
        ),
        # Words that once marked an error transient, in errors a retry cannot fix.
        (
            {"S": "ERROR", "C": "42P01", "M": 'relation "connection_log" does not exist'},
            InfrastructureError,
        ),
        ({"S": "ERROR", "C": "42703", "M": 'column "timeout" does not exist'}, InfrastructureError),
        ({"S": "FATAL", "C": "28P01", "M": "password authentication failed"}, InfrastructureError),
    ],
)
def test_redshift_errors_are_classified_by_their_code(fields, kind):
    import redshift_connector

    from steps.shared.warehouse.redshift import RedshiftWarehouse

    error = redshift_connector.ProgrammingError(fields)
    assert type(RedshiftWarehouse("redshift://u:p@h/db").translate_error(error)) is kind


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_the_same_file_twice_at_once_is_published_once(
    table_dir, write, sql, warehouse_url, tmp_path
):
    # Large enough that the two runs overlap in ingest (same curated file) and load.
    config = table_dir(MAPPING.replace("varchar(3)", "varchar(8)"))
    source = write("a.csv", "code,n\n" + "".join(f"K{i},{i}\n" for i in range(20_000)))
    for _ in range(3):
        codes: list[int] = []
        loaders = [
            threading.Thread(
                target=lambda done=codes: done.append(_cli(config, source, warehouse_url, tmp_path))
            )
            for _ in range(2)
        ]
        for loader in loaders:
            loader.start()
        for loader in loaders:
            loader.join(timeout=120)
        assert codes == [0, 0]
    assert sql("SELECT COUNT(*), COUNT(DISTINCT code) FROM ref.t_codes") == [(20_000, 20_000)]
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == [(1,)]


WIDE_COLUMNS = 1601  # PostgreSQL and Redshift allow 1,600 columns in a table


@pytest.mark.parametrize("warehouse_url", SERVER_WAREHOUSES, indirect=True)
def test_a_table_wider_than_the_warehouse_allows_is_refused_before_staging(
    table_dir, write, run_cli, sql, dialect, warehouse_url, capsys
):
    from handler.cli import main

    columns = [f"c{i:04d}" for i in range(WIDE_COLUMNS)]
    mapping = "source_column,target_column,data_type\n" + "".join(
        f"{c},{c},varchar(4)\n" for c in columns
    )
    config = table_dir(mapping)
    sheet = config.parent / "t_codes_mapping.csv"
    message = (
        f"the table would have 1,601 columns; {dialect} allows at most 1,600: split the "
        "table or leave columns out of the mapping sheet"
    )

    capsys.readouterr()
    code = main(["check", str(config.parent), "--warehouse", warehouse_url])
    assert code == 2
    assert f"{sheet}: {message}" in capsys.readouterr().out.splitlines()

    source = write("wide.csv", ",".join(columns) + "\n" + ",".join("x" for _ in columns) + "\n")
    code, summary = run_cli(config, source)
    assert code == 2
    assert summary["error"] == {"type": "ConfigError", "message": f"{sheet}: {message}"}
    assert sql("SELECT 1 FROM information_schema.tables WHERE table_schema = 'ref'") == []
    assert sql("SELECT step, status FROM etl_audit.run_log WHERE step = 'load'") == [
        ("load", "failed")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", SERVER_WAREHOUSES, indirect=True)
def test_a_statement_over_the_statement_timeout_fails_fast_and_changes_nothing(
    table_dir, write, run_cli, sql, monkeypatch
):
    config = _prepare(table_dir, write, run_cli, sql, "truncate")
    _on_insert(sql, "crawl", "PERFORM pg_sleep(30);")  # a runaway statement, holding the lock
    monkeypatch.setenv("REFLOAD_STATEMENT_TIMEOUT_SECONDS", "1")
    source = write("b.csv", "code,n\nBB,20\nCC,30\n")

    started = time.monotonic()
    code, summary = run_cli(config, source)

    assert time.monotonic() - started < 20
    assert code == 3
    # Terminal: a retry would run the same statement as long again, under the same lock.
    assert summary["error"]["type"] == "InfrastructureError"
    assert (
        "statement ran longer than 1 s (REFLOAD_STATEMENT_TIMEOUT_SECONDS) and was cancelled; "
        "its transaction was rolled back, the target is unchanged"
    ) in summary["error"]["message"]
    assert not sql(
        # This test session's database only: other pytest workers load tables named alike.
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'active' AND query LIKE 'INSERT INTO \"ref\"%'"
    )
    sql("DROP TRIGGER crawl ON ref.t_codes")
    _after_failure(sql, summary, run_cli, config, source, EXPECTED["truncate"])
