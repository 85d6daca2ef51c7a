"""Quality tests proposed from a sample's profile: `init` writes them, `check --suggest`
prints the ones a config lacks (issue #33)."""

from __future__ import annotations

import csv
import io
import json

import pycountry
import pytest
import zipcodes

from handler.cli import main

ZIP_FIELDS = ["zip_code", "zip_code_type", "active", "city", "state", "county", "timezone"]


def zip_csv() -> str:
    """Every 14th US ZIP code (3,057 rows, 58 states and territories)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ZIP_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(zipcodes.list_all()[::14])
    return out.getvalue()


def country_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Alpha-2 code", "Alpha-3 code", "Numeric code", "Name"])
    writer.writerows([c.alpha_2, c.alpha_3, c.numeric, c.name] for c in pycountry.countries)
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_init_proposes_checks_from_the_profile_and_they_pass_on_their_sample(
    write, run_cli, tmp_path, capsys
):
    source = write("zips.csv", zip_csv())
    assert main(["init", str(source), "--table", "dim_zip", "--out", str(tmp_path / "cfg")]) == 0
    config = tmp_path / "cfg" / "dim_zip.json"
    tests = json.loads(config.read_text())["quality_tests"]
    assert {"type": "uniqueness", "columns": ["zip_code"]} in tests
    assert next(t for t in tests if t["type"] == "not_null")["columns"][0] == "zip_code"
    assert {"type": "row_count_between", "min": 2751, "max": 3363} in tests
    types = sorted({z["zip_code_type"] for z in zipcodes.list_all()[::14]})
    assert {"type": "accepted_values", "column": "zip_code_type", "values": types} in tests
    assert {"type": "regex", "column": "zip_code", "pattern": "^[0-9]{5}$"} in tests
    assert {"type": "regex", "column": "state", "pattern": "^[A-Z]{2}$"} in tests
    # Free text and lists over 20 values (25 time zones) get neither a list nor a shape.
    assert not [t for t in tests if t.get("column") in ("city", "county", "timezone")]
    out = capsys.readouterr().out
    assert "proposed tests (quality_tests; delete the ones you do not want):\n" in out
    assert "  row_count_between 2,751..3,363\n  regex zip_code ^[0-9]{5}$\n" in out
    code, summary = run_cli(config, source)
    assert code == 0, summary.get("error")
    assert summary["checks_total"] == len(tests)
    assert all(c["status"] == "pass" for c in summary["checks"])


def test_check_suggest_prints_only_the_proposals_the_config_lacks(table_dir, write, capsys):
    mapping = (
        "source_column,target_column,data_type,transform,default,nullable,format\n"
        "Alpha-2 code,alpha_2,varchar(2),strip,,false,\n"
        "Alpha-3 code,alpha_3,varchar(3),strip,,false,\n"
        "Numeric code,numeric_code,varchar(3),strip,,false,\n"
        "Name,name,varchar(128),strip,,false,\n"
        ",loaded_on,date,,{load_date},false,\n"
    )
    config = table_dir(
        mapping,
        name="dim_country",
        primary_key=["alpha_2"],
        quality_tests=[
            {"type": "uniqueness", "columns": ["alpha_2"]},
            {"type": "not_null", "columns": ["alpha_2", "alpha_3"]},
            {"type": "regex", "column": "alpha_2", "pattern": "^[A-Z]{2}$"},
        ],
    )
    source = write("countries.csv", country_csv())
    capsys.readouterr()
    assert main(["check", "--suggest", str(config), str(source), "--json"]) == 0
    count = len(pycountry.countries)  # 249: 10% either way is 25 (rounded up)
    assert json.loads(capsys.readouterr().out)["proposed"] == [
        {"type": "not_null", "columns": ["numeric_code", "name"]},
        {"type": "row_count_between", "min": count - 25, "max": count + 25},
        {"type": "regex", "column": "alpha_3", "pattern": "^[A-Z]{3}$"},
        {"type": "regex", "column": "numeric_code", "pattern": "^[0-9]{3}$"},
    ]
    assert main(["check", "--suggest", str(config), str(source)]) == 0
    out = capsys.readouterr().out
    assert f"{config}: 4 test(s) proposed from {source}" in out
    assert '  {"type": "regex", "column": "alpha_3", "pattern": "^[A-Z]{3}$"},' in out


def test_check_suggest_on_a_refused_sample_names_no_rejects_file_it_deleted(
    table_dir, write, capsys
):
    mapping = (
        "source_column,target_column,data_type,transform,default,nullable,format\n"
        "Alpha-2 code,alpha_2,varchar(2),strip,,false,\n"
        "Name,name,varchar(10),strip,,false,\n"  # too narrow for most names
    )
    config = table_dir(mapping, name="dim_country", primary_key=["alpha_2"])
    source = write("countries.csv", country_csv())
    capsys.readouterr()
    assert main(["check", "--suggest", str(config), str(source)]) == 2
    err = capsys.readouterr().err
    assert f"{source}, line " in err and "longer than varchar(10)" in err
    assert "rejects.parquet" not in err
    assert f"`python -m handler preview --config {config} --source {source}`" in err
