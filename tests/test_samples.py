"""The shipped sample tables, end to end on the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import CONFIGS, ROOT, SAMPLES, ZIP_CSV

# SQL behaviour differs between warehouses here: every test runs on all three.
pytestmark = pytest.mark.all_warehouses

SEED_CONFIG = {
    "table_name": "dim_zipcode",
    "redshift_schema": "public",
    "redshift_table": "dim_zipcode",
    "source_format": "csv",
    "header_row": 1,
    "delimiter": ",",
    "mapping_file": "s3://config-bucket/mappings/zipcode_mapping.xlsx",
    "truncate_before_load": True,
    "quality_tests": [
        {"type": "row_count_match", "tolerance_pct": 0},
        {"type": "uniqueness", "columns": ["zipcode"]},
        {"type": "not_null", "columns": ["zipcode", "city", "state"]},
    ],
}


@pytest.mark.slow
def test_seed_config_with_local_mapping_loads_every_us_zip(tmp_path: Path):
    warehouse_url = f"duckdb:///{tmp_path / 'w.duckdb'}"

    def sql(statement: str) -> list[tuple[object, ...]]:
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
            return con.execute(statement).fetchall()

    # An absolute local path in place of the S3 URI; the sheet lives under the config's
    # folder, as every mapping sheet must.
    sheet = tmp_path / "mappings" / "zipcode_mapping.xlsx"
    sheet.parent.mkdir()
    sheet.write_bytes((CONFIGS / "mappings" / "zipcode_mapping.xlsx").read_bytes())
    config = dict(SEED_CONFIG, mapping_file=str(sheet))
    path = tmp_path / "dim_zipcode.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "handler",
            "run",
            "--config",
            str(path),
            "--source",
            str(ZIP_CSV),
            "--warehouse",
            warehouse_url,
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "passed"
    assert summary["rows_loaded"] == 42789
    assert [c["status"] for c in summary["checks"]] == ["pass", "pass", "pass"]
    assert sql("SELECT COUNT(*) FROM public.dim_zipcode") == [(42789,)]
    assert sql("SELECT city, state FROM public.dim_zipcode WHERE zipcode = '00501'") == [
        ("Holtsville", "NY")
    ]
    # every log line on stderr is JSON carrying the run id
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert all(r["run_id"] == summary["run_id"] for r in records if "step" in r)


@pytest.mark.slow
def test_the_four_sample_tables_load_with_their_tests(run_cli, sql):
    order = ["zipcode", "country", "currency", "subdivision"]
    for name in order:
        source = next((SAMPLES / name).glob("*/*"))
        code, summary = run_cli(CONFIGS / f"dim_{name}.json", source)
        assert code == 0, summary["error"]
        assert all(c["status"] == "pass" for c in summary["checks"]), summary["checks"]
    assert sql("SELECT COUNT(*) FROM public.dim_country") == [(249,)]
    assert sql("SELECT numeric_code, name FROM public.dim_country WHERE alpha_2 = 'AF'") == [
        ("004", "Afghanistan")
    ]
    # cp1252 decoded, three repeated vendor rows dropped
    assert sql("SELECT COUNT(*) FROM public.dim_currency") == [(178,)]
    assert sql("SELECT name FROM public.dim_currency WHERE currency_code = 'TOP'") == [
        ("Pa\u2019anga",)
    ]
    assert sql("SELECT COUNT(*) FROM public.dim_subdivision") == [(5046,)]
    ri = sql(
        "SELECT status, observed_value FROM etl_audit.data_quality_tests "
        "WHERE test_type = 'referential_integrity'"
    )
    assert ri == [("pass", "0")]


@pytest.mark.slow
def test_readme_sample_command_runs_on_a_clean_folder(tmp_path: Path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "run_samples.py"),
            "--warehouse",
            f"duckdb:///{tmp_path / 'demo.duckdb'}",
            "--curated-root",
            str(tmp_path / "curated"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    for table in ("dim_zipcode", "dim_country", "dim_currency", "dim_subdivision"):
        assert f"{table}" in done.stdout
    assert done.stdout.count("PASSED") == 4
