"""`python -m handler dbt-sources`: the file it writes, and real dbt (dbt-duckdb,
dbt-postgres; its own venv, .tools/dbt-venv, made by scripts/test.sh) parsing and testing
a warehouse refload loaded: one dbt project run per dialect, for the whole session."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from handler.cli import main
from handler.cli.commands.dbt_sources import DBT_TESTS
from tests.conftest import ROOT

DBT = ROOT / ".tools" / "dbt-venv" / "bin" / "dbt"
HEADER = "source_column,target_column,data_type,transform,default,nullable,format\n"
TABLES: dict[str, tuple[str, str | tuple[str, ...], dict[str, Any]]] = {
    # name: (mapping rows, file(s) loaded in turn, config) -- codes, orders and rates pass
    # their tests; bad_kinds publishes a kind its accepted_values refuses, so refload fails
    # it after publishing. rates keeps history (scd2): its key repeats across versions.
    "codes": (
        "code,code,varchar(3),strip,,false,\nname,name,varchar(20),,,true,\n"
        "kind,kind,varchar(1),,,true,\nlevel,level,integer,,,true,\n"
        ",load_date,date,,{load_date},false,\n",
        "code,name,kind,level\nAA,Alpha,a,1\nBB,Beta,b,2\nCC,,a,1\n",
        {
            "primary_key": ["code"],
            "freshness": {
                "warn_after": {"count": 1, "period": "day"},
                "error_after": {"count": 2, "period": "day"},
            },
            "quality_tests": [
                {"type": "uniqueness", "columns": ["code"]},
                {"type": "not_null", "columns": ["code", "kind"]},
                {"type": "accepted_values", "column": "kind", "values": ["a", "b"]},
                {"type": "accepted_values", "column": "level", "values": [1, 2]},
                {"type": "row_count_between", "min": 1},
            ],
        },
    ),
    "orders": (
        "order_id,order_id,integer,,,false,\ncode,code,varchar(3),,,true,\n",
        "order_id,code\n1,AA\n2,BB\n3,\n",
        {
            "quality_tests": [
                {"type": "uniqueness", "columns": ["order_id"], "severity": "warn"},
                {
                    "type": "referential_integrity",
                    "columns": ["code"],
                    "ref_table": "dbt_ref.codes",
                    "ref_columns": ["code"],
                },
            ]
        },
    ),
    "rates": (
        "code,code,varchar(3),,,false,\nrate,rate,integer,,,false,\n",
        ("code,rate\nAA,1\nBB,1\n", "code,rate\nAA,2\nBB,1\n"),
        {
            "load_mode": "scd2",
            "primary_key": ["code"],
            "quality_tests": [{"type": "uniqueness", "columns": ["code"]}],
        },
    ),
    "bad_kinds": (
        "code,code,varchar(3),,,false,\nkind,kind,varchar(1),,,true,\n",
        "code,kind\nAA,a\nBB,z\n",
        {"quality_tests": [{"type": "accepted_values", "column": "kind", "values": ["a", "b"]}]},
    ),
}


def _configs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, (mapping, _, config) in TABLES.items():
        (folder / f"{name}_mapping.csv").write_text(HEADER + mapping, encoding="utf-8")
        body = {
            "table_name": name,
            "redshift_schema": "dbt_ref",
            "mapping_file": f"{name}_mapping.csv",
        }
        (folder / f"{name}.json").write_text(json.dumps({**body, **config}), encoding="utf-8")
    return folder


def _dbt(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not DBT.exists():
        pytest.fail(f"{DBT} is missing: scripts/test.sh installs dbt there")
    env = {
        **os.environ,
        "DBT_PROFILES_DIR": str(project),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
    }
    return subprocess.run(
        [str(DBT), *args, "--project-dir", str(project), "--no-partial-parse"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _project(folder: Path, profile: dict[str, Any]) -> Path:
    (folder / "models").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text(
        "name: refload_check\nversion: '1.0'\nprofile: refload_check\nconfig-version: 2\n",
        encoding="utf-8",
    )
    profiles = {"refload_check": {"target": "dev", "outputs": {"dev": profile}}}
    (folder / "profiles.yml").write_text(yaml.safe_dump(profiles), encoding="utf-8")
    return folder


def _load_and_run_dbt(base: Path, warehouse: str, profile: dict[str, Any]) -> dict[str, Any]:
    """refload loads the three tables, writes the sources file; dbt parses, tests and checks
    freshness once. What each command returned and reported."""
    configs = _configs(base / "configs")
    codes: dict[str, list[int]] = {}
    for name, (_, contents, _) in TABLES.items():
        for number, content in enumerate([contents] if isinstance(contents, str) else contents):
            source = base / "in" / str(number) / f"{name}.csv"
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(content, encoding="utf-8")
            run = ["run", "--config", str(configs / f"{name}.json"), "--source", str(source)]
            codes.setdefault(name, []).append(
                main(
                    [
                        *run,
                        *("--warehouse", warehouse, "--curated-root", str(base / "curated")),
                        *("--outbox", str(base / "outbox"), "--quiet"),
                    ]
                )
            )
    project = _project(base / "project", profile)
    sources_file = project / "models" / "sources.yml"
    written = main(["dbt-sources", "--config-root", str(configs), "--out", str(sources_file)])
    outcome: dict[str, Any] = {"refload": codes, "written": written, "sources": sources_file}
    for command in (("parse",), ("test",), ("source", "freshness")):
        done = _dbt(project, *command)
        outcome[" ".join(command)] = done
    results = json.loads((project / "target" / "run_results.json").read_text())
    outcome["tests"] = {r["unique_id"]: r["status"] for r in results["results"]}
    freshness = json.loads((project / "target" / "sources.json").read_text())
    outcome["freshness"] = {r["unique_id"]: r["status"] for r in freshness["results"]}
    return outcome


@pytest.fixture(scope="session")
def dbt_on_duckdb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("dbt_duckdb")
    path = base / "warehouse.duckdb"
    return _load_and_run_dbt(
        base, f"duckdb:///{path}", {"type": "duckdb", "path": str(path), "threads": 1}
    )


@pytest.fixture(scope="session")
def dbt_on_postgres(
    tmp_path_factory: pytest.TempPathFactory, postgres_database: str
) -> dict[str, Any]:
    from tests.conftest import _reset_postgres

    _reset_postgres()
    parts = urlsplit(postgres_database)
    profile = {
        "type": "postgres",
        "host": parts.hostname,
        "port": parts.port or 5432,
        "user": parts.username,
        "password": parts.password,
        "dbname": parts.path.lstrip("/"),
        "schema": "public",
        "threads": 1,
    }
    return _load_and_run_dbt(tmp_path_factory.mktemp("dbt_postgres"), postgres_database, profile)


@pytest.fixture(params=["duckdb", "postgres"])
def dbt_run(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.getfixturevalue(f"dbt_on_{request.param}")


def _by_table(statuses: dict[str, str], table: str) -> list[str]:
    """The statuses of the tests on one table (dbt names a source test
    `source_<test>_<source>_<table>_<column>...`)."""
    prefixes = tuple(f"source_{test}_dbt_ref_{table}_" for test in DBT_TESTS.values())
    return [s for test, s in statuses.items() if test.split(".")[2].startswith(prefixes)]


def test_dbt_parses_tests_and_checks_freshness_of_what_refload_loaded(dbt_run):
    assert dbt_run["refload"] == {"codes": [0], "orders": [0], "rates": [0, 0], "bad_kinds": [1]}
    assert dbt_run["written"] == 0
    assert dbt_run["parse"].returncode == 0, dbt_run["parse"].stdout
    assert sorted(_by_table(dbt_run["tests"], "codes")) == ["pass"] * 5
    assert sorted(_by_table(dbt_run["tests"], "orders")) == ["pass"] * 2
    # AA has two versions; its current one is unique, as refload's uniqueness test says.
    assert _by_table(dbt_run["tests"], "rates") == ["pass"]
    # Freshness from refload's own record of the last file, within the config's day.
    assert dbt_run["source freshness"].returncode == 0, dbt_run["source freshness"].stdout
    assert list(dbt_run["freshness"].values()) == ["pass"]


def test_a_table_whose_refload_checks_fail_fails_in_dbt(dbt_run):
    assert dbt_run["refload"]["bad_kinds"] == [1]  # accepted_values failed after publishing
    assert _by_table(dbt_run["tests"], "bad_kinds") == ["fail"]
    assert dbt_run["test"].returncode == 1


def test_the_sources_file_maps_configs_to_sources_and_tests(dbt_on_duckdb):
    written = yaml.safe_load(dbt_on_duckdb["sources"].read_text())
    (source,) = written["sources"]
    assert (source["name"], source["schema"]) == ("dbt_ref", "dbt_ref")
    tables = {t["name"]: t for t in source["tables"]}
    assert sorted(tables) == ["bad_kinds", "codes", "orders", "rates"]
    assert tables["rates"]["columns"] == [
        {"name": "code", "data_tests": [{"unique": {"config": {"where": "valid_to is null"}}}]}
    ]
    codes = tables["codes"]
    assert codes["freshness"] == {
        "warn_after": {"count": 1, "period": "day"},
        "error_after": {"count": 2, "period": "day"},
    }
    assert "etl_audit.load_ledger" in codes["loaded_at_query"]
    tests = {c["name"]: c["data_tests"] for c in codes["columns"]}
    assert tests["code"] == ["unique", "not_null"]
    assert tests["level"] == [
        {"accepted_values": {"arguments": {"values": [1, 2], "quote": False}}}
    ]
    orders = {c["name"]: c["data_tests"] for c in tables["orders"]["columns"]}
    assert orders == {
        "order_id": [{"unique": {"config": {"severity": "warn"}}}],
        "code": [
            {"relationships": {"arguments": {"to": "source('dbt_ref', 'codes')", "field": "code"}}}
        ],
    }
    assert "freshness" not in tables["orders"]


def test_a_broken_config_is_named_and_nothing_is_written(tmp_path, capsys):
    folder = _configs(tmp_path / "configs")
    (folder / "codes.json").write_text('{"table_name": "codes"', encoding="utf-8")
    out = tmp_path / "sources.yml"
    assert main(["dbt-sources", "--config-root", str(folder), "--out", str(out)]) == 2
    assert "codes.json" in capsys.readouterr().err
    assert not out.exists()
