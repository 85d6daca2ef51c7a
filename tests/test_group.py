"""Table groups: `group run` publishes every member in one transaction, or none; `check`
validates group files (handler/cli/commands/group.py, steps/group.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from handler.cli import main

COUNTRY = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "alpha_2,alpha_2,varchar(2),strip|upper,,false,\nname,name,varchar(64),strip,,false,\n"
)
SUBDIVISION = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,subdivision_code,varchar(8),strip|upper,,false,\n"
    "country,country_code,varchar(2),strip|upper,,false,\n"
)
RELATIONSHIP = {
    "type": "relationships",
    "column": "dim_subdivision.country_code",
    "to": "dim_country.alpha_2",
}
RELATIONSHIP_NAME = "relationships_dim_subdivision_country_code_to_dim_country_alpha_2"
MODES: dict[str, dict[str, Any]] = {
    "replace": {"truncate_before_load": True},
    "append": {"load_mode": "append"},
    "upsert": {"load_mode": "upsert"},
    "scd2": {"load_mode": "scd2"},
}


def _configs(
    root: Path, mode: dict[str, Any], checks: list[dict[str, Any]], **modes: dict[str, Any]
) -> Path:
    """dim_country and dim_subdivision in `mode` (or `modes[table]`), and the group `iso`."""
    root.mkdir(exist_ok=True)
    for name, mapping, key in (
        ("dim_country", COUNTRY, "alpha_2"),
        ("dim_subdivision", SUBDIVISION, "subdivision_code"),
    ):
        mode = modes.get(name, mode)
        (root / f"{name}.csv").write_text(mapping, encoding="utf-8")
        keyed = {"primary_key": [key]} if mode.get("load_mode") in ("upsert", "scd2") else {}
        config = {
            "table_name": name,
            "redshift_schema": "ref",
            "mapping_file": f"{name}.csv",
            **mode,
            **keyed,
        }
        (root / f"{name}.json").write_text(json.dumps(config), encoding="utf-8")
    _group(root, "iso", ["dim_country", "dim_subdivision"], checks)
    return root


def _group(root: Path, name: str, tables: list[str], checks: list[dict[str, Any]]) -> Path:
    (root / "groups").mkdir(exist_ok=True)
    path = root / "groups" / f"{name}.json"
    path.write_text(json.dumps({"group": name, "tables": tables, "checks": checks}))
    return path


@pytest.fixture
def group_run(warehouse_url, tmp_path, write, capsys):
    """`group run iso --json` on a country and a subdivision file: (exit code, summary)."""

    def run(
        countries: str, subdivisions: str, root: Path, country_written: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        country = write(f"c{len(list(tmp_path.glob('in/*')))}.csv", "alpha_2,name\n" + countries)
        if country_written is not None:  # the country file's modification time
            os.utime(country, (country_written, country_written))
        subdivision = write(
            f"s{len(list(tmp_path.glob('in/*')))}.csv", "code,country\n" + subdivisions
        )
        capsys.readouterr()
        code = main(
            [
                *("group", "run", "iso", "--config-root", str(root)),
                *("--source", f"dim_country={country}"),
                *("--source", f"dim_subdivision={subdivision}"),
                *("--warehouse", warehouse_url, "--curated-root", str(tmp_path / "curated")),
                "--json",
            ]
        )
        return code, json.loads(capsys.readouterr().out)

    return run


def _checksum(sql: Any, table: str) -> str:
    rows = sql(f"SELECT * FROM ref.{table}")
    return hashlib.sha256(repr(sorted(map(repr, rows))).encode()).hexdigest()


def _arrive_one_execution_each(
    files: dict[str, Any], root: Any, warehouse_url: str, tmp_path: Any
) -> dict[str, dict[str, Any]]:
    """Each member's file through the handler's steps, one execution per file as they
    arrive on AWS: the last state of each (a member's file is held for its group)."""
    from handler import lambda_handler

    states = {}
    for table, source in files.items():
        state: dict[str, Any] = {
            "config": str(root / f"{table}.json"),
            "source": str(source),
            "warehouse": warehouse_url,
            "curated_root": str(tmp_path / "curated"),
            # As the state machine passes it: a member's file is then held for its group.
            "execution_id": f"arn:aws:states:us-east-1:1:execution:refload:{table}",
        }
        for step in ("ingest", "load", "validate"):
            if state.get("held"):
                break
            state = lambda_handler({**state, "step": step}, None)
        states[table] = state
    return states


def _published_nothing(sql, summary, before):
    """Every member exactly as it was, and each member's load recorded as failed."""
    assert {t: _checksum(sql, t) for t in before} == before
    assert sql(
        "SELECT table_name, status FROM etl_audit.run_log WHERE run_id = ? AND step = 'load' "
        "ORDER BY table_name",
        summary["group_run_id"],
    ) == [("dim_country", "failed"), ("dim_subdivision", "failed")]


def _current(sql: Any, table: str, column: str, history: bool) -> list[tuple[Any, ...]]:
    where = " WHERE valid_to IS NULL" if history else ""
    return sql(f"SELECT {column} FROM ref.{table}{where} ORDER BY {column}")


@pytest.mark.parametrize(
    ("warehouse_url", "mode"),
    # Every mode on DuckDB and PostgreSQL; Redshift (through the proxy): replace and scd2.
    [(w, m) for w in ("duckdb", "postgresql") for m in MODES]
    + [("redshift", "replace"), ("redshift", "scd2")],
    indirect=["warehouse_url"],
)
def test_group_run_publishes_every_member_with_one_group_run_id(group_run, sql, tmp_path, mode):
    root = _configs(tmp_path / "cfg", MODES[mode], [RELATIONSHIP])
    code, first = group_run("FR,France\n", "FR-75,FR\n", root)
    assert code == 0, first
    code, second = group_run("DE,Germany\nFR,France\n", "DE-BY,DE\nFR-75,FR\n", root)
    assert code == 0, second
    assert second["status"] == "passed"
    assert [c["status"] for c in second["checks"]] == ["pass"]
    history = mode == "scd2"
    expected = {
        "append": [("DE",), ("FR",), ("FR",)],
    }.get(mode, [("DE",), ("FR",)])
    assert _current(sql, "dim_country", "alpha_2", history) == expected
    assert len(_current(sql, "dim_subdivision", "subdivision_code", history)) == len(expected)
    ledger = sql(
        "SELECT table_name, run_id, group_run_id FROM etl_audit.load_ledger "
        "WHERE group_run_id = ? ORDER BY table_name",
        second["group_run_id"],
    )
    gid = second["group_run_id"]
    assert ledger == [("dim_country", gid, gid), ("dim_subdivision", gid, gid)]
    assert {t: m["rows_loaded"] for t, m in second["members"].items()} == {
        "dim_country": 2,
        "dim_subdivision": 2,
    }


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_failing_group_check_leaves_every_member_exactly_as_it_was(group_run, sql, tmp_path):
    sums = {
        "type": "custom_sql",
        "name": "every_country_has_a_subdivision",
        "sql": "SELECT alpha_2 FROM {dim_country} c WHERE NOT EXISTS "
        "(SELECT 1 FROM {dim_subdivision} s WHERE s.country_code = c.alpha_2)",
    }
    root = _configs(tmp_path / "cfg", MODES["upsert"], [RELATIONSHIP, sums])
    assert group_run("FR,France\n", "FR-75,FR\n", root)[0] == 0
    before = {t: _checksum(sql, t) for t in ("dim_country", "dim_subdivision")}
    ledger = sql("SELECT COUNT(*) FROM etl_audit.load_ledger")
    # The new country is fine alone; its subdivision names a country no member has.
    code, summary = group_run("FR,Francia\nIT,Italy\n", "FR-75,FR\nXX-01,XX\n", root)
    assert code == 1
    assert summary["status"] == "failed"
    checks = {c["name"]: (c["status"], c["observed"]) for c in summary["checks"]}
    assert checks == {
        "relationships_dim_subdivision_country_code_to_dim_country_alpha_2": ("fail", 1),
        "every_country_has_a_subdivision": ("fail", 1),
    }
    assert "no member was published" in summary["error"]["message"]
    _published_nothing(sql, summary, before)
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == ledger
    assert sql(
        "SELECT table_name, test_name, status FROM etl_audit.data_quality_tests "
        "WHERE run_id = ? ORDER BY test_name",
        summary["group_run_id"],
    ) == [
        ("iso", "every_country_has_a_subdivision", "fail"),
        ("iso", "relationships_dim_subdivision_country_code_to_dim_country_alpha_2", "fail"),
    ]
    assert list((tmp_path / "outbox").glob("*")), "an alert was written"


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_a_failing_group_check_on_a_first_load_creates_no_member(group_run, sql, tmp_path):
    """The members' targets are new: created and filled in the group's one transaction
    (on PostgreSQL straight from the curated files, ADR 23), then rolled back together."""
    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    code, summary = group_run("FR,France\n", "FR-75,FR\nXX-01,XX\n", root)
    assert code == 1, summary
    assert "no member was published" in summary["error"]["message"]
    assert sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'ref'") == []
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == [(0,)]
    assert group_run("FR,France\n", "FR-75,FR\n", root)[0] == 0
    assert sql("SELECT alpha_2 FROM ref.dim_country") == [("FR",)]


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_members_another_run_creates_meanwhile_are_staged_after_all(
    group_run, sql, tmp_path, monkeypatch
):
    """Missing when looked up, there when the group's transaction would create them:
    it rolls back, stages those members' files, and publishes the group over them."""
    from steps.shared.warehouse.catalog import Catalog

    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    assert group_run("FR,France\n", "FR-75,FR\n", root)[0] == 0
    look = Catalog.check_target
    monkeypatch.setattr(Catalog, "check_target", lambda self, target: look(self, target) and {})
    code, summary = group_run("DE,Germany\n", "DE-BY,DE\n", root)
    assert code == 0, summary
    assert sql("SELECT alpha_2 FROM ref.dim_country") == [("DE",)]
    assert sql("SELECT subdivision_code FROM ref.dim_subdivision") == [("DE-BY",)]


def test_bad_input_in_one_member_publishes_no_member(group_run, sql, tmp_path):
    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    assert group_run("FR,France\n", "FR-75,FR\n", root)[0] == 0
    before = {t: _checksum(sql, t) for t in ("dim_country", "dim_subdivision")}
    # An empty country code where the mapping says not null.
    code, summary = group_run("DE,Germany\n", "DE-BY,DE\n,DE\n", root)
    assert code == 2, summary
    assert summary["status"] == "rejected"
    assert "subdivision" in summary["error"]["message"]
    assert {t: _checksum(sql, t) for t in before} == before


def test_member_before_publish_test_failure_rolls_back_the_group(
    group_run, sql, tmp_path, table_dir
):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    config = json.loads((root / "dim_country.json").read_text())
    config["quality_tests"] = [
        {"type": "row_count_between", "min": 1, "max": 1, "when": "before_publish"}
    ]
    (root / "dim_country.json").write_text(json.dumps(config))
    assert group_run("FR,France\n", "FR-75,FR\n", root)[0] == 0
    before = {t: _checksum(sql, t) for t in ("dim_country", "dim_subdivision")}
    code, summary = group_run("FR,France\nDE,Germany\n", "DE-BY,DE\n", root)
    assert code == 1
    assert summary["members"]["dim_country"]["checks"][0]["status"] == "fail"
    assert {t: _checksum(sql, t) for t in before} == before


def test_group_run_names_a_missing_or_unknown_member(group_run, tmp_path, capsys):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    source = tmp_path / "c.csv"
    source.write_text("alpha_2,name\nFR,France\n")
    args = ["group", "run", "iso", "--config-root", str(root)]
    assert main([*args, "--source", f"dim_country={source}"]) == 2
    err = capsys.readouterr().err
    assert "no --source for member(s) dim_subdivision" in err
    assert str(root / "groups" / "iso.json") in err
    assert main([*args, "--source", f"dim_countri={source}"]) == 2
    assert "unknown member 'dim_countri' (did you mean 'dim_country'?)" in capsys.readouterr().err
    assert main(["group", "run", "isso", "--config-root", str(root), "--source", "a=b"]) == 2
    assert "unknown group 'isso'" in capsys.readouterr().err


def test_check_validates_group_files(tmp_path, capsys):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    _group(
        root,
        "broken",
        ["dim_country", "dim_zipcode"],
        [
            {"type": "relationships", "column": "dim_country.alpha_3", "to": "dim_country.alpha_2"},
            {"type": "custom_sql", "sql": "SELECT 1 FROM {dim_currency}"},
        ],
    )
    assert main(["check", str(root)]) == 2
    out = capsys.readouterr().out
    broken = root / "groups" / "broken.json"
    iso = root / "groups" / "iso.json"
    assert f"{broken}: tables: unknown table 'dim_zipcode'" in out
    # dim_country is in iso and in broken: whichever file comes second is in the wrong.
    assert (
        f"{iso}: tables: 'dim_country' is also a member of {broken}: a table belongs to one "
        "group at most"
    ) in out
    assert (
        f"{broken}: checks[0] (relationships_dim_country_alpha_3_to_dim_country_alpha_2): "
        "'dim_country.alpha_3': dim_country's mapping sheet has no column 'alpha_3' "
        "(it has alpha_2, name)"
    ) in out
    assert f"{broken}: checks (custom_sql): '{{dim_currency}}' is not a member" in out
    _group(root, "iso2", [], []).write_text(json.dumps({"group": "iso", "tables": ["dim_x"]}))
    assert main(["check", str(root)]) == 2
    assert f"{root / 'groups' / 'iso2.json'}: group: 'iso' is also the name of {iso}" in (
        capsys.readouterr().out
    )


def test_check_refuses_a_group_file_that_does_not_validate(tmp_path, capsys):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    (root / "groups" / "bad.json").write_text(
        json.dumps(
            {
                "group": "bad",
                "tables": ["dim_country"],
                "checks": [
                    {"type": "relationships", "column": "alpha_2", "to": "dim_country.alpha_2"}
                ],
            }
        )
    )
    assert main(["check", str(root)]) == 2
    out = capsys.readouterr().out
    assert f"{root / 'groups' / 'bad.json'}: checks.0.relationships.column" in out
    assert "'alpha_2' must be 'member.column'" in out


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql", "redshift"], indirect=True)
def test_rollback_group_puts_every_member_back_to_what_it_held(
    group_run, sql, tmp_path, warehouse_url, capsys
):
    # A replace member goes back to its file, an scd2 member by its validity columns.
    root = _configs(tmp_path / "cfg", MODES["replace"], [], dim_subdivision=MODES["scd2"])
    code, first = group_run("FR,France\n", "FR-75,FR\n", root)
    assert code == 0, first
    (at,) = sql(
        "SELECT MAX(loaded_at) FROM etl_audit.load_ledger WHERE group_run_id = ?",
        first["group_run_id"],
    )[0]
    assert group_run("DE,Germany\nFR,France\n", "DE-BY,DE\nFR-75,FR\n", root)[0] == 0
    rollback = ["rollback", "--group", "iso", "--config-root", str(root)]
    capsys.readouterr()
    code = main([*rollback, "--to", at.isoformat(), "--warehouse", warehouse_url, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary
    assert summary["status"] == "passed"
    assert {t: m["restored_run"] for t, m in summary["members"].items()} == {
        "dim_country": first["group_run_id"],
        "dim_subdivision": first["group_run_id"],
    }
    assert sql("SELECT alpha_2 FROM ref.dim_country") == [("FR",)]
    assert _current(sql, "dim_subdivision", "subdivision_code", True) == [("FR-75",)]
    # History is kept: Bavaria's version is closed, not deleted.
    assert sql("SELECT COUNT(*) FROM ref.dim_subdivision") == [(2,)]
    gid = summary["group_run_id"]
    assert sql(
        "SELECT table_name, load_mode, group_run_id FROM etl_audit.load_ledger "
        "WHERE run_id = ? ORDER BY table_name",
        gid,
    ) == [("dim_country", "rollback", gid), ("dim_subdivision", "scd2", gid)]


def test_rollback_group_refuses_a_member_with_nothing_to_go_back_to(
    group_run, sql, tmp_path, warehouse_url, capsys
):
    root = _configs(tmp_path / "cfg", MODES["replace"], [], dim_subdivision=MODES["upsert"])
    assert group_run("FR,France\n", "FR-75,FR\n", root)[0] == 0
    before = {t: _checksum(sql, t) for t in ("dim_country", "dim_subdivision")}
    rollback = ["rollback", "--group", "iso", "--config-root", str(root)]
    capsys.readouterr()
    assert main([*rollback, "--to", "2020-01-01T00:00:00Z", "--warehouse", warehouse_url]) == 2
    err = capsys.readouterr().err
    assert str(root / "groups" / "iso.json") in err
    assert "dim_country has no publish at or before 2020-01-01T00:00:00" in err
    assert "dim_subdivision has load_mode 'upsert': only replace and scd2 members" in err
    assert main([*rollback, "--to", "yesterday", "--warehouse", warehouse_url]) == 2
    assert "--to: not an ISO timestamp" in capsys.readouterr().err
    assert {t: _checksum(sql, t) for t in before} == before


def test_status_shows_each_group_its_last_run_and_pending_members(
    group_run, tmp_path, warehouse_url, capsys, sql
):
    sql("SELECT 1")  # the warehouse is there (DuckDB's file too), no run yet
    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    status = ["status", "--config-root", str(root), "--warehouse", warehouse_url]

    def groups() -> list[dict[str, Any]]:
        capsys.readouterr()
        assert main([*status, "--json"]) == 0
        return json.loads(capsys.readouterr().out)["groups"]

    assert groups() == [
        {
            "group": "iso",
            "members": ["dim_country", "dim_subdivision"],
            "last_group_run": None,
            "pending": [],
            "waiting_since": None,
            "waiting_for": [],
        }
    ]
    code, passed = group_run("FR,France\n", "FR-75,FR\n", root)
    assert code == 0
    # A failed group run leaves both files ingested and not published: pending.
    assert group_run("FR,France\n", "XX-01,XX\n", root)[0] == 1
    (group,) = groups()
    assert group["last_group_run"]["run_id"] == passed["group_run_id"]
    assert group["pending"] == ["dim_country", "dim_subdivision"]
    assert group["waiting_since"] is not None
    page = tmp_path / "status.html"
    assert main([*status, "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert (
        f"group iso          members dim_country, dim_subdivision; last group run "
        f"{passed['group_run_id']} at {group['last_group_run']['published_at']}; pending "
        f"dim_country, dim_subdivision since {group['waiting_since']}"
    ) in out
    text = page.read_text()
    assert '<h2 style="font-size:16px;margin:20px 0 6px">Groups</h2>' in text
    assert 'data-group="iso" data-pending="dim_country,dim_subdivision"' in text
    code, fixed = group_run("FR,France\nDE,Germany\n", "FR-75,FR\n", root)
    assert code == 0
    (group,) = groups()
    assert (group["last_group_run"]["run_id"], group["pending"]) == (fixed["group_run_id"], [])


def test_a_stale_member_file_holds_the_whole_group_back(group_run, sql, tmp_path):
    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    assert group_run("FR,France\n", "FR-75,FR\n", root)[0] == 0
    before = {t: _checksum(sql, t) for t in ("dim_country", "dim_subdivision")}
    # New files, but the country one was written in 2000: older than what its table holds.
    code, summary = group_run(
        "FR,France\nDE,Germany\n", "FR-75,FR\nDE-BY,DE\n", root, country_written=946684800
    )
    assert (code, summary["status"]) == (0, "stale")
    reasons = {t: m["skipped_reason"] for t, m in summary["members"].items()}
    assert reasons["dim_country"].startswith("stale: the file was written at 2000-01-01")
    assert reasons["dim_subdivision"] == "not published: the file of dim_country is stale"
    assert {t: _checksum(sql, t) for t in before} == before


def test_a_broken_group_file_is_named_not_an_unknown_group(tmp_path, warehouse_url, capsys):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    broken = root / "groups" / "iso.json"
    broken.write_text('{"group": "iso", "tables": ["dim_country"')  # a save cut short
    source = tmp_path / "c.csv"
    source.write_text("alpha_2,name\nFR,France\n")
    capsys.readouterr()
    run = ["group", "run", "iso", "--config-root", str(root), "--warehouse", warehouse_url]
    assert main([*run, "--source", f"dim_country={source}"]) == 2
    err = capsys.readouterr().err
    assert f"{broken}" in err and "not valid JSON" in err and "unknown group" not in err
    rollback = ["rollback", "--group", "iso", "--config-root", str(root)]
    assert main([*rollback, "--to", "2026-01-01T00:00:00Z", "--warehouse", warehouse_url]) == 2
    err = capsys.readouterr().err
    assert f"{broken}" in err and "not valid JSON" in err and "unknown group" not in err


def test_a_refused_member_file_ends_every_member_run_rejected_not_running(
    group_run, tmp_path, warehouse_url, capsys
):
    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    # The first day: the country file ingests, the subdivision file breaks its mapping.
    code, summary = group_run("FR,France\n", "FR-75,FR\n,FR\n", root)
    assert code == 2, summary
    capsys.readouterr()
    assert main(["history", "dim_country", "--warehouse", warehouse_url, "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert run["run_id"] == summary["group_run_id"]
    assert run["status"] == summary["status"] == "rejected"
    assert main(["status", "--config-root", str(root), "--warehouse", warehouse_url]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("dim_country"))
    assert "RUNNING" not in line and "REJECTED" in line


def test_status_names_a_group_file_that_does_not_validate(tmp_path, warehouse_url, capsys, sql):
    sql("SELECT 1")  # the warehouse is there (DuckDB's file too), no run yet
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    broken = root / "groups" / "iso.json"
    broken.write_text('{"group": "iso", "tables": "dim_country"}')
    status = ["status", "--config-root", str(root), "--warehouse", warehouse_url]
    capsys.readouterr()
    assert main([*status, "--json"]) == 0
    [group] = json.loads(capsys.readouterr().out)["groups"]
    assert group["group"] == "iso" and group["config"] == str(broken)
    assert "tables: Input should be a valid list" in group["error"]["message"]
    assert main(status) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("group iso"))
    assert "INVALID_CONFIG" in line and str(broken) in line


def test_a_config_root_that_is_not_there_is_named_not_an_unknown_group(tmp_path, capsys):
    missing = tmp_path / "confgs"  # a typo
    capsys.readouterr()
    args = ["--config-root", str(missing), "--warehouse", f"duckdb:///{tmp_path / 'w.duckdb'}"]
    assert main(["group", "run", "iso", "--source", "dim_country=c.csv", *args]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: config folder does not exist" in err and "unknown group" not in err
    assert main(["rollback", "--group", "iso", "--to", "2026-01-01T00:00:00Z", *args]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: config folder does not exist" in err and "unknown group" not in err


def test_rollback_group_to_a_time_past_the_calendar_is_exit_2(tmp_path, capsys):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    args = ["--config-root", str(root), "--warehouse", f"duckdb:///{tmp_path / 'w.duckdb'}"]
    capsys.readouterr()
    # In UTC this is year 10000: no datetime holds it.
    assert main(["rollback", "--group", "iso", "--to", "9999-12-31T23:59:59-05:00", *args]) == 2
    err = capsys.readouterr().err
    assert "--to: not an ISO timestamp" in err and "'9999-12-31T23:59:59-05:00'" in err
    assert "OverflowError" not in err


def test_a_member_listed_twice_is_named_by_check_and_group_run(tmp_path, capsys):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    iso = _group(root, "iso", ["dim_country", "dim_subdivision", "dim_country"], [])
    capsys.readouterr()
    assert main(["check", str(root)]) == 2
    assert f"{iso}: tables: 'dim_country' is listed twice" in capsys.readouterr().out
    source = tmp_path / "c.csv"
    source.write_text("alpha_2,name\nFR,France\n")
    run = ["group", "run", "iso", "--config-root", str(root), "--source", f"dim_country={source}"]
    assert main([*run, "--warehouse", f"duckdb:///{tmp_path / 'w.duckdb'}"]) == 2
    assert f"{iso}: tables: 'dim_country' is listed twice" in capsys.readouterr().err


def test_group_run_json_prints_one_object_for_a_broken_group_file(tmp_path, capsys):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    broken = root / "groups" / "iso.json"
    broken.write_text('{"group": "iso", "tables": ["dim_country"')  # a save cut short
    source = tmp_path / "c.csv"
    source.write_text("alpha_2,name\nFR,France\n")
    run = ["group", "run", "iso", "--config-root", str(root), "--source", f"dim_country={source}"]
    capsys.readouterr()
    assert main([*run, "--warehouse", f"duckdb:///{tmp_path / 'w.duckdb'}", "--json"]) == 2
    summary = json.loads(capsys.readouterr().out)
    assert summary["group"] == "iso" and summary["status"] == "rejected"
    assert summary["error"]["type"] == "ConfigError"
    assert (
        f"{broken}" in summary["error"]["message"]
        and "not valid JSON" in summary["error"]["message"]
    )


def test_a_groups_file_where_the_folder_belongs_is_named_by_check_status_and_group_run(
    tmp_path, capsys
):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    groups = root / "groups"
    for group_file in groups.iterdir():
        group_file.unlink()
    groups.rmdir()
    groups.write_text('{"group": "iso", "tables": ["dim_country", "dim_subdivision"]}')
    line = f"{groups}: is a file, not a folder: group files are groups/NAME.json"
    warehouse = ["--warehouse", f"duckdb:///{tmp_path / 'w.duckdb'}"]
    import duckdb

    duckdb.connect(str(tmp_path / "w.duckdb")).close()  # status reads an existing one
    capsys.readouterr()
    assert main(["check", str(root)]) == 2
    assert line in capsys.readouterr().out.splitlines()
    assert main(["status", "--config-root", str(root), *warehouse]) == 2
    assert capsys.readouterr().err.strip() == f"ConfigError: {line}"
    source = tmp_path / "c.csv"
    source.write_text("alpha_2,name\nFR,France\n")
    run = ["group", "run", "iso", "--config-root", str(root), "--source", f"dim_country={source}"]
    assert main([*run, *warehouse]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"ConfigError: {line}" and "Traceback" not in err


def test_each_member_of_a_group_published_on_arrival_has_its_validate_in_run_log(
    tmp_path, warehouse_url, write, sql, monkeypatch
):
    """On AWS, the execution that completes the group runs the other member's after-publish
    tests: that member's run records its validate step as a run of its own would."""

    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    config = json.loads((root / "dim_country.json").read_text())
    config["quality_tests"] = [{"type": "row_count_between", "min": 5, "max": 10}]
    (root / "dim_country.json").write_text(json.dumps(config))
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(root))
    files = {
        "dim_country": write("c.csv", "alpha_2,name\nFR,France\n"),
        "dim_subdivision": write("s.csv", "code,country\nFR-75,FR\n"),
    }
    states = _arrive_one_execution_each(files, root, warehouse_url, tmp_path)
    assert states["dim_country"]["held"] is True
    assert states["dim_subdivision"]["validation"] == "failed"  # the country's test failed
    country_run = states["dim_country"]["run_id"]
    ((status, details),) = sql(
        "SELECT status, details FROM etl_audit.run_log WHERE run_id = ? "
        "AND table_name = 'dim_country' AND step = 'validate'",
        country_run,
    )
    assert status == "failed"
    assert [(c["name"], c["status"]) for c in json.loads(details)["checks"]] == [
        ("row_count_between", "fail")
    ]
    assert sql(
        "SELECT test_name, status FROM etl_audit.data_quality_tests WHERE run_id = ? "
        "AND table_name = 'dim_country'",
        country_run,
    ) == [("row_count_between", "fail")]


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_a_group_check_whose_sql_fails_is_a_failed_check_and_publishes_nothing(
    group_run, sql, tmp_path
):
    # A bad cast: on DuckDB it aborts the publish transaction (no savepoint), which runs
    # again with the check's error as its result; on PostgreSQL a savepoint undoes it.
    bad = {
        "type": "custom_sql",
        "name": "country_names_are_numbers",
        "sql": "SELECT alpha_2 FROM {dim_country} WHERE CAST(name AS INTEGER) > 0",
    }
    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    assert group_run("FR,France\n", "FR-75,FR\n", root)[0] == 0
    before = {t: _checksum(sql, t) for t in ("dim_country", "dim_subdivision")}
    _group(root, "iso", ["dim_country", "dim_subdivision"], [bad, RELATIONSHIP])
    code, summary = group_run("DE,Germany\n", "DE-BY,DE\n", root)
    assert code == 1, summary
    assert summary["status"] == "failed"
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["country_names_are_numbers"]["status"] == "error"
    assert "germany" in checks["country_names_are_numbers"]["details"]["error"].lower()
    # The check after it ran on a usable transaction, not "current transaction is aborted".
    assert checks[RELATIONSHIP_NAME]["status"] == "pass"
    # The failure names the check and the database's message.
    message = summary["error"]["message"]
    assert "country_names_are_numbers (" in message and "germany" in message.lower()
    _published_nothing(sql, summary, before)
    assert sql(
        "SELECT test_name, status FROM etl_audit.data_quality_tests WHERE run_id = ? "
        "AND table_name = 'iso' ORDER BY test_name",
        summary["group_run_id"],
    ) == [("country_names_are_numbers", "error"), (RELATIONSHIP_NAME, "pass")]


def test_a_member_published_on_arrival_has_its_load_under_its_own_run(
    tmp_path, warehouse_url, write, sql, monkeypatch, capsys
):
    """The execution that completes the group records the other member's load under the
    run that ingested its file, as that member's ledger row and validate row: `history`
    shows one run per member with ingest, load and validate, none with a lone load."""

    root = _configs(tmp_path / "cfg", MODES["replace"], [RELATIONSHIP])
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(root))
    files = {
        "dim_country": write("c.csv", "alpha_2,name\nFR,France\n"),
        "dim_subdivision": write("s.csv", "code,country\nFR-75,FR\n"),
    }
    runs = {
        table: state["run_id"]
        for table, state in _arrive_one_execution_each(files, root, warehouse_url, tmp_path).items()
    }
    rows = sql(
        "SELECT table_name, run_id, status, details FROM etl_audit.run_log "
        "WHERE step = 'load' ORDER BY logged_at"
    )
    by_table: dict[str, list[tuple[str, str]]] = {}
    for table, run_id, status, _details in rows:
        by_table.setdefault(table, []).append((run_id, status))
    # The country's file was held by its own run, then published under that run too.
    assert by_table == {
        "dim_country": [(runs["dim_country"], "held"), (runs["dim_country"], "ok")],
        "dim_subdivision": [(runs["dim_subdivision"], "ok")],
    }
    details = json.loads(next(d for t, _r, st, d in rows if t == "dim_country" and st == "ok"))
    assert details["run_id"] == runs["dim_country"] and details["published"] is True
    assert details["group"] == "iso" and details["rows_loaded"] == 1
    for table, run_id in runs.items():
        capsys.readouterr()
        assert main(["history", table, "--warehouse", warehouse_url, "--json"]) == 0
        [run] = json.loads(capsys.readouterr().out)
        assert run["run_id"] == run_id and run["status"] == "passed"
        assert {s["step"] for s in run["steps"]} == {"ingest", "load", "validate"}
        assert run["rows_published"] == 1


def test_an_unknown_group_where_none_is_defined_says_so(group_run, tmp_path, capsys):
    root = _configs(tmp_path / "cfg", MODES["replace"], [])
    (root / "groups" / "iso.json").unlink()
    code = main(["group", "run", "iso", "--config-root", str(root), "--source", "a=b"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown group 'iso'; none is defined" in err
    assert "known:" not in err
