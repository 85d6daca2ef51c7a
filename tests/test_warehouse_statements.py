"""The load layer's round trips: a warm run sends a bounded number of statements
(docs/architecture.md "Warehouse round trips"), counted on the driver connection itself."""

from __future__ import annotations

from typing import Any

import pytest

# A warm `run` of a replace table with a primary key and five quality tests: at most 15
# statements (docs/architecture.md), whatever the dialect. Redshift's statement bound is a
# SET after connecting (no startup options), and its session statement_timeout also bounds
# the lock wait (no lock_timeout, no SET LOCAL) where PostgreSQL sends one SET LOCAL.
STATEMENT_BUDGET = {"duckdb": 15, "postgresql": 15, "redshift": 15}
MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\n"
    "name,name,varchar(20),strip,,true,\n"
    "n,n,integer,,,true,\n"
)
TESTS = [
    {"type": "row_count_match", "tolerance_pct": 0},
    {"type": "uniqueness", "columns": ["code"]},
    {"type": "not_null", "columns": ["code", "name"]},
    {"type": "accepted_values", "column": "n", "values": [1, 2, 3, 20, 30]},
    {"type": "range", "column": "n", "min": 0, "max": 100},
]


class _Counting:
    """A DB-API connection (or cursor) that counts what it sends: each execute, executemany
    and COPY is one statement (COPY's data stream is not)."""

    def __init__(self, inner: Any, sent: list[str]) -> None:
        self._inner, self._sent = inner, sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_inner", "_sent"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)

    def __enter__(self) -> _Counting:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._inner.__exit__(*exc)

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._sent.append(sql)
        result = self._inner.execute(sql, *args, **kwargs)
        return self if result is self._inner else result

    def copy(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._sent.append(sql)
        return self._inner.copy(sql, *args, **kwargs)

    def cursor(self, *args: Any, **kwargs: Any) -> _Counting:
        return _Counting(self._inner.cursor(*args, **kwargs), self._sent)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement any warehouse connection sends from now on."""
    statements: list[str] = []
    for cls in _dialect_classes():

        def connect(self: Any, _connect: Any = cls._connect) -> Any:
            return _Counting(_connect(self), statements)

        monkeypatch.setattr(cls, "_connect", connect)
    return statements


def _dialect_classes() -> list[type]:
    from steps.shared.warehouse.duckdb_dialect import DuckDBClient
    from steps.shared.warehouse.postgres import PostgresClient
    from steps.shared.warehouse.redshift import RedshiftClient

    return [DuckDBClient, PostgresClient, RedshiftClient]


@pytest.mark.all_warehouses
def test_a_warm_run_sends_at_most_fifteen_statements(table_dir, write, run_cli, sent, dialect):
    config = table_dir(
        MAPPING, truncate_before_load=True, primary_key=["code"], quality_tests=TESTS
    )
    code, summary = run_cli(config, write("a.csv", "code,name,n\nAA,Alpha,1\nBB,Beta,2\n"))
    assert code == 0, summary
    sent.clear()
    code, summary = run_cli(config, write("b.csv", "code,name,n\nBB,Bravo,20\nCC,Gamma,30\n"))
    assert code == 0, summary
    assert summary["rows_loaded"] == 2 and summary["checks_failed"] == 0
    assert len(sent) <= STATEMENT_BUDGET[dialect], "\n".join(sent)


def test_only_the_audit_store_reads_or_writes_etl_audit():
    """History, rollback, recovery, freshness and status read etl_audit through the audit
    store (steps/shared/warehouse/audit*.py); no other module names its tables in SQL."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sql_on_audit = re.compile(
        r"table\(AUDIT_SCHEMA|etl_audit\.\w+ (WHERE|SET|VALUES)|FROM etl_audit"
    )
    offenders = [
        str(path.relative_to(root))
        for folder in ("handler", "steps")
        for path in sorted((root / folder).rglob("*.py"))
        if not path.name.startswith("audit") and sql_on_audit.search(path.read_text())
    ]
    assert offenders == []


def test_learned_bounds_read_the_ledger_in_one_statement(table_dir, write, run_cli, sent, dialect):
    # `"auto": true` reads the table's recent publishes: one statement for both tests,
    # and only where a test asks (the run above, without `auto`, sends none).
    auto = [{"type": "row_count_change", "auto": True}, {"type": "changes_within", "auto": True}]
    config = table_dir(
        MAPPING, truncate_before_load=True, primary_key=["code"], quality_tests=TESTS[:3] + auto
    )
    assert run_cli(config, write("a.csv", "code,name,n\nAA,Alpha,1\nBB,Beta,2\n"))[0] == 0
    sent.clear()
    code, summary = run_cli(config, write("b.csv", "code,name,n\nBB,Bravo,20\nCC,Gamma,30\n"))
    assert code == 0, summary
    assert [c["status"] for c in summary["checks"][-2:]] == ["learning", "learning"]
    history = [s for s in sent if "rows_before, rows_after, keys_added" in s]
    assert len(history) == 1
    assert len(sent) <= STATEMENT_BUDGET[dialect] + 1, "\n".join(sent)


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_postgresql_session_settings_cost_no_statement(warehouse_url, sent):
    """The statement bound and room for staging in the session's temporary buffers are
    startup options; the URL's own options are kept, and may lower temp_buffers but not
    lift the statement bound."""
    from steps.shared.warehouse import open_warehouse

    with open_warehouse(warehouse_url) as warehouse:
        assert warehouse.query("SHOW temp_buffers") == [("256MB",)]
        assert warehouse.query("SHOW statement_timeout") == [("10min",)]
    assert sent == ["SHOW temp_buffers", "SHOW statement_timeout"]
    sep = "&" if "?" in warehouse_url else "?"
    url = f"{warehouse_url}{sep}options=-c%20temp_buffers%3D16MB%20-c%20statement_timeout%3D0"
    with open_warehouse(url) as warehouse:
        assert warehouse.query("SHOW temp_buffers") == [("16MB",)]
        assert warehouse.query("SHOW statement_timeout") == [("10min",)]


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_first_load_copies_into_the_new_target_with_no_staging_table(
    table_dir, write, run_cli, sent, sql
):
    """The target does not exist: the publish creates it and COPYs the curated file into it,
    in one transaction, instead of filling a staging table and inserting from it (ADR 23).
    A second run, the target now there, stages as before."""
    config = table_dir(MAPPING, truncate_before_load=True, primary_key=["code"])
    code, summary = run_cli(config, write("a.csv", "code,name,n\nAA,Alpha,1\nBB,Beta,2\n"))
    assert code == 0, summary
    copies = [s for s in sent if s.startswith("COPY ")]
    assert [c.split(" (", 1)[0] for c in copies] == ['COPY "ref"."t_codes"']
    assert not [s for s in sent if "TEMPORARY" in s or s.startswith('INSERT INTO "ref"')]
    assert sql("SELECT code, name, n FROM ref.t_codes ORDER BY code") == [
        ("AA", "Alpha", 1),
        ("BB", "Beta", 2),
    ]
    sent.clear()
    assert run_cli(config, write("b.csv", "code,name,n\nCC,Gamma,3\n"))[0] == 0
    copies = [s for s in sent if s.startswith("COPY ")]
    assert len(copies) == 1 and copies[0].startswith('COPY "refload_stage_'), copies
    assert sql("SELECT code FROM ref.t_codes") == [("CC",)]


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_a_change_set_joins_staging_with_the_target_once(table_dir, write, run_cli, sent):
    """Into a target that exists, the change set's join is one materialised CTE read for
    each kind's sample and the counts, not written out four times (a 1M-row replace on
    PostgreSQL: 1.1 s against 4.4 s, docs/performance.md)."""
    config = table_dir(MAPPING, truncate_before_load=True, primary_key=["code"])
    assert run_cli(config, write("a.csv", "code,name,n\nAA,Alpha,1\nBB,Beta,2\n"))[0] == 0
    sent.clear()
    code, summary = run_cli(config, write("b.csv", "code,name,n\nBB,Bravo,2\nCC,Gamma,3\n"))
    assert code == 0, summary
    assert summary["changes"] == {"added": 1, "removed": 1, "changed": 1}
    joins = [s for s in sent if "FULL OUTER JOIN" in s]
    assert len(joins) == 1 and joins[0].count("FULL OUTER JOIN") == 1, joins
    assert joins[0].startswith("WITH refload_diff AS MATERIALIZED (")


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_a_large_replayed_file_is_never_joined_with_its_target(
    table_dir, write, run_cli, sent, monkeypatch
):
    """From STATE_FIRST_FROM_ROWS staged rows, the target's state comes first: a replay is
    skipped without the change set's join (1M rows: 3 s), and a new file still gets its
    change set, one statement later."""
    from steps.shared.warehouse import publish

    monkeypatch.setattr(publish, "STATE_FIRST_FROM_ROWS", 2)
    config = table_dir(MAPPING, truncate_before_load=True, primary_key=["code"])
    assert run_cli(config, write("a.csv", "code,name,n\nAA,Alpha,1\nBB,Beta,2\n"))[0] == 0
    source = write("b.csv", "code,name,n\nBB,Bravo,2\nCC,Gamma,3\n")
    code, summary = run_cli(config, source)
    assert code == 0, summary
    assert summary["changes"] == {"added": 1, "removed": 1, "changed": 1}
    sent.clear()
    code, summary = run_cli(config, source, "--force")
    assert code == 0 and summary["changes"] == {"added": 0, "removed": 0, "changed": 0}
    sent.clear()
    code, summary = run_cli(config, source)
    assert code == 0 and summary["published"] is False, summary
    assert summary["skipped_reason"].startswith("already published by run")
    assert not [s for s in sent if "JOIN" in s and "refload_stage_" in s], sent
