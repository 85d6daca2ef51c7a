"""Faults in the middle of a publish, on PostgreSQL and Redshift (real driver, via the proxy):
the target keeps exactly its previous rows, the ledger has no row for the failed run, and
a re-run succeeds without duplicates."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from steps.errors import InfrastructureError, WarehouseUnavailable
from steps.warehouse import open_warehouse
from tests.conftest import POSTGRES_URL

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
                "AND pid <> pg_backend_pid()"
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
