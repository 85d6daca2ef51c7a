"""Early staging (steps/ingest/early.py): in the local pipeline on PostgreSQL, the rows
of a large file go to staging while ingest writes the curated file. What is published is
what the file alone would publish; when the early table is not exactly the curated rows,
load stages the curated file as on AWS."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

import steps.ingest
import steps.ingest.early
from steps.shared.errors import StorageUnavailable, WarehouseUnavailable
from steps.shared.warehouse.postgres import PostgresCatalog

pytestmark = pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(6),strip,,false,\n"
    "n,n,integer,,,true,\n"
    'price,price,"decimal(9,2)",,,true,\n'
    "day,day,date,,,true,%m/%d/%Y\n"
)
ROWS = 3_000


def _file(rows: int = ROWS) -> str:
    """`rows` keyed rows, then 30 exact duplicates of earlier ones (dropped by ingest)."""
    lines = [
        f"C{i:05d},{i},{i % 997}.25,{1 + i % 12:02d}/{1 + i % 28:02d}/2024" for i in range(rows)
    ]
    lines += [lines[i * (rows // 31)] for i in range(30)]
    return "code,n,price,day\n" + "\n".join(lines) + "\n"


@pytest.fixture
def staged(monkeypatch: pytest.MonkeyPatch, sql: Any) -> dict[str, int]:
    """Early staging from 1,000 rows, into targets that exist (empty: a new target is
    filled from its curated file in the publish, with nothing to stage); how often each
    way of staging ran."""
    sql("CREATE SCHEMA IF NOT EXISTS ref")
    for table in ("t_codes", "t_other", "t_first", "t_second"):
        sql(
            f"CREATE TABLE ref.{table} (code varchar(6) NOT NULL, n integer, "
            "price decimal(9,2), day date)"
        )
    monkeypatch.setattr(steps.ingest.early, "EARLY_FROM_ROWS", 1_000)
    calls = {"early": 0, "file": 0}
    stage, stage_rows = PostgresCatalog.stage, PostgresCatalog.stage_rows

    def from_file(self: Any, *args: Any) -> None:
        calls["file"] += 1
        stage(self, *args)

    def from_memory(self: Any, *args: Any) -> int:
        calls["early"] += 1
        return stage_rows(self, *args)

    monkeypatch.setattr(PostgresCatalog, "stage", from_file)
    monkeypatch.setattr(PostgresCatalog, "stage_rows", from_memory)
    return calls


@pytest.fixture
def staged_instead(table_dir, write, run_cli, sql, staged, monkeypatch):
    """Run the big file with `stage_rows` replaced: the run must pass, load having staged
    the curated file once, with every row published. Returns the summary."""

    def run(stage_rows: Any) -> dict[str, Any]:
        monkeypatch.setattr(PostgresCatalog, "stage_rows", stage_rows)
        config = table_dir(MAPPING, truncate_before_load=True, primary_key=["code"])
        code, summary = run_cli(config, write("big.csv", _file()))
        assert code == 0, summary["error"]
        assert staged["file"] == 1
        assert len(_published(sql)) == ROWS == summary["rows_loaded"]
        return summary

    return run


def _published(sql: Any, table: str = "t_codes") -> list[tuple[Any, ...]]:
    return sql(f"SELECT code, n, price, day FROM ref.{table} ORDER BY code")


def test_a_large_file_staged_while_written_publishes_what_the_file_holds(
    table_dir, write, run_cli, sql, staged, monkeypatch
):
    source = write("big.csv", _file())
    config = table_dir(MAPPING, truncate_before_load=True, primary_key=["code"])
    code, summary = run_cli(config, source)
    assert code == 0, summary["error"]
    assert staged == {"early": 1, "file": 0}
    assert (summary["rows_loaded"], summary["duplicates_dropped"]) == (ROWS, 30)
    assert summary["changes"] == {"added": ROWS, "removed": 0, "changed": 0}
    # The same file staged from its curated file, as on AWS, publishes the same rows.
    monkeypatch.setattr(steps.ingest.early, "EARLY_FROM_ROWS", 10**9)
    other = table_dir(MAPPING, name="t_other", truncate_before_load=True, primary_key=["code"])
    assert run_cli(other, source)[0] == 0
    assert staged == {"early": 1, "file": 1}
    assert _published(sql) == _published(sql, "t_other")
    assert len(_published(sql)) == ROWS
    assert sql("SELECT rows_loaded, rows_after FROM etl_audit.load_ledger") == [
        (ROWS, ROWS),
        (ROWS, ROWS),
    ]


def test_a_new_target_is_not_staged_early_but_filled_in_the_publish(
    table_dir, write, run_cli, sql, staged, monkeypatch
):
    """Nothing to stage for a target that does not exist yet: the publish creates it and
    COPYs the curated file into it (ADR 23), whichever way the rows would have gone."""
    from steps.shared.warehouse.publish import Publisher

    fills: list[str] = []
    fill = Publisher._fill_new_target
    monkeypatch.setattr(
        Publisher,
        "_fill_new_target",
        lambda self, entry, *args: fills.append(entry.target) or fill(self, entry, *args),
    )
    sql("DROP TABLE ref.t_codes")
    config = table_dir(MAPPING, truncate_before_load=True, primary_key=["code"])
    code, summary = run_cli(config, write("big.csv", _file()))
    assert code == 0, summary["error"]
    assert (staged, fills) == ({"early": 0, "file": 0}, ["ref.t_codes"])
    assert len(_published(sql)) == ROWS == summary["rows_loaded"]


def test_an_early_staging_without_every_curated_row_is_not_published(staged_instead):
    """A COPY that loaded other rows than the curated file holds (here: its first batch
    lost) is dropped, and load stages the curated file."""
    stage_rows = PostgresCatalog.stage_rows

    def losing_a_batch(self: Any, staging: str, mapping: Any, batches: Any) -> int:
        next(batches)
        return stage_rows(self, staging, mapping, batches)

    staged_instead(losing_a_batch)


def test_a_failed_early_copy_leaves_the_staging_to_load(staged_instead):
    def unavailable(self: Any, *args: Any) -> int:
        raise WarehouseUnavailable("connection reset")

    staged_instead(unavailable)


def test_ingest_failing_while_staging_early_publishes_nothing(
    table_dir, write, run_cli, sql, staged, monkeypatch
):
    """The curated file cannot be written: the run fails as it would without early
    staging, the COPY under way is stopped, and the target keeps its rows."""
    config = table_dir(MAPPING, truncate_before_load=True, primary_key=["code"])
    assert run_cli(config, write("small.csv", "code,n,price,day\nA,1,1.00,01/01/2024\n"))[0] == 0

    def full(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("curated store: no space left on device")

    monkeypatch.setattr(steps.ingest, "write_parts", full)
    monkeypatch.setattr(steps.ingest, "write_curated", full)
    code, summary = run_cli(config, write("big.csv", _file()))
    assert code == 3
    assert summary["error"]["type"] == "StorageUnavailable"
    assert "no space left on device" in summary["error"]["message"]
    assert staged["early"] == 1
    assert _published(sql) == [("A", 1, 1, dt.date(2024, 1, 1))]
    assert sql(
        "SELECT step, status FROM etl_audit.run_log WHERE run_id = ? ORDER BY step",
        summary["run_id"],
    ) == [("ingest", "failed")]


def test_group_members_staged_early_publish_together(
    tmp_path, warehouse_url, write, sql, staged, capsys
):
    root = _group_root(tmp_path / "cfg")
    code, summary = _group_run(tmp_path, warehouse_url, write, capsys, root)
    assert code == 0, summary
    assert staged == {"early": 2, "file": 0}
    assert len(_published(sql, "t_first")) == ROWS
    assert len(_published(sql, "t_second")) == 2_000


def test_an_early_copy_cut_off_with_its_connection_leaves_the_run_to_a_new_one(sql, staged_instead):
    """The session the early COPY ran on ends under it (a restart, a DBA's
    pg_terminate_backend): without early staging ingest never touched the warehouse, so
    the run must not fail for it; load opens a new session and stages the curated file."""
    stage_rows = PostgresCatalog.stage_rows

    def terminated(self: Any, staging: str, mapping: Any, batches: Any) -> int:
        pid = self.sql.conn.info.backend_pid

        def cut_off() -> Any:  # once the COPY is under way
            sql("SELECT pg_terminate_backend(?::int)", pid)
            yield from batches

        return stage_rows(self, staging, mapping, cut_off())

    summary = staged_instead(terminated)
    assert sql(
        "SELECT step, status FROM etl_audit.run_log WHERE run_id = ? ORDER BY step",
        summary["run_id"],
    ) == [("ingest", "ok"), ("load", "ok"), ("validate", "passed")]


def _group_root(root: Any) -> Any:
    root.mkdir()
    (root / "groups").mkdir()
    for name in ("t_first", "t_second"):
        (root / f"{name}_mapping.csv").write_text(MAPPING, encoding="utf-8")
        config = {
            "table_name": name,
            "redshift_schema": "ref",
            "mapping_file": f"{name}_mapping.csv",
            "truncate_before_load": True,
            "primary_key": ["code"],
        }
        (root / f"{name}.json").write_text(json.dumps(config), encoding="utf-8")
    (root / "groups" / "pair.json").write_text(
        json.dumps({"group": "pair", "tables": ["t_first", "t_second"], "checks": []})
    )
    return root


def _group_run(
    tmp_path: Any, url: str, write: Any, capsys: Any, root: Any, second_rows: int = 2_000
) -> tuple[int, dict[str, Any]]:
    """`group run pair --json`: the first member ROWS rows, the second `second_rows`."""
    from handler.cli import main

    capsys.readouterr()
    code = main(
        [
            *("group", "run", "pair", "--config-root", str(root), "--json", "--quiet"),
            *("--source", f"t_first={write('a.csv', _file())}"),
            *("--source", f"t_second={write('b.csv', _file(second_rows))}"),
            *("--warehouse", url, "--curated-root", str(tmp_path / "curated")),
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def test_a_group_member_whose_early_copy_loses_the_session_takes_the_others_with_it(
    tmp_path, warehouse_url, write, sql, staged, capsys, monkeypatch
):
    """The first member's table was staged early on the session the second member's COPY
    lost: both members are staged from their curated files, and the group publishes."""
    stage_rows = PostgresCatalog.stage_rows

    def second_terminated(self: Any, staging: str, mapping: Any, batches: Any) -> int:
        pid = self.sql.conn.info.backend_pid

        def cut_off() -> Any:  # once the second member's COPY is under way
            if staged["early"] == 2:
                sql("SELECT pg_terminate_backend(?::int)", pid)
            yield from batches

        return stage_rows(self, staging, mapping, cut_off())

    monkeypatch.setattr(PostgresCatalog, "stage_rows", second_terminated)
    root = _group_root(tmp_path / "cfg")
    code, summary = _group_run(tmp_path, warehouse_url, write, capsys, root)
    assert code == 0, summary["error"]
    assert staged == {"early": 2, "file": 2}
    assert len(_published(sql, "t_first")) == ROWS
    assert len(_published(sql, "t_second")) == 2_000


def test_a_session_the_server_ends_while_a_group_ingests_is_replaced_for_the_publish(
    tmp_path, warehouse_url, write, sql, staged, capsys, monkeypatch
):
    """The first member's table was staged early; the session then sat idle while the
    second member was ingested, and the server ended it (idle_session_timeout here; a
    restart alike). Without early staging the publish would have opened
    its session only then: it gets a new one, and stages both members' files."""
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "slowhook.py").write_text(
        "import time\n\n\ndef shape(rows):\n    time.sleep(0.8)\n    return rows\n"
    )
    monkeypatch.syspath_prepend(str(code_dir))
    root = _group_root(tmp_path / "cfg")
    second = json.loads((root / "t_second.json").read_text())
    (root / "t_second.json").write_text(
        json.dumps({**second, "python_transform": "slowhook:shape"})
    )
    sep = "&" if "?" in warehouse_url else "?"
    url = f"{warehouse_url}{sep}options=-c%20idle_session_timeout%3D300"
    code, summary = _group_run(tmp_path, url, write, capsys, root, second_rows=500)
    assert code == 0, summary["error"]
    assert staged == {"early": 1, "file": 2}
    assert len(_published(sql, "t_first")) == ROWS
    assert len(_published(sql, "t_second")) == 500


def test_a_target_dropped_while_the_file_is_ingested_is_created_again(
    table_dir, write, run_cli, sql, staged, monkeypatch
):
    """Ingest looks whether the target exists (a new one is not staged early); load looks
    again, as the catalog then is: a target dropped out of band meanwhile is created and
    published into, as after a drop between two runs."""
    import steps.load

    load = steps.load.run

    def dropped_first(payload: dict[str, Any]) -> dict[str, Any]:
        sql("DROP TABLE ref.t_codes")
        return load(payload)

    monkeypatch.setattr(steps.load, "run", dropped_first)
    config = table_dir(MAPPING, truncate_before_load=True, primary_key=["code"])
    code, summary = run_cli(config, write("big.csv", _file()))
    assert code == 0, summary["error"]
    assert staged == {"early": 1, "file": 0}
    assert len(_published(sql)) == ROWS == summary["rows_loaded"]
