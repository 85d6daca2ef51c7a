"""`diff` and `why`: what changed between two publishes, and where a row came from.

On real reference data (pycountry's countries), through the CLI, on DuckDB and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pycountry
import pytest

from handler.cli import main

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "alpha_2,alpha_2,varchar(2),,,false,\n"
    "alpha_3,alpha_3,varchar(3),,,false,\n"
    "name,name,varchar(100),,,,\n"
)
# `loaded_by` differs on every load (a placeholder's value): never a change.
STAMPED = MAPPING + ",loaded_by,string,,{run_id},,\n"
WITH_NUMERIC = STAMPED + "numeric,numeric,integer,,,,\n"
COUNTRIES = sorted(pycountry.countries, key=lambda c: c.alpha_2)


def _csv(countries: list, rename: dict[str, str] | None = None, numeric: bool = False) -> str:
    rename = rename or {}
    header = "alpha_2,alpha_3,name" + (",numeric" if numeric else "")
    lines = [header]
    for c in countries:
        name = rename.get(c.alpha_2, c.name).replace('"', "")
        lines.append(
            f'{c.alpha_2},{c.alpha_3},"{name}"' + (f",{int(c.numeric)}" if numeric else "")
        )
    return "\n".join(lines) + "\n"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_diff_shows_the_columns_and_keys_two_publishes_changed(
    table_dir, write, run_cli, warehouse_url, capsys, sql
):
    config = table_dir(STAMPED, name="countries", primary_key=["alpha_2"])
    code, first = run_cli(config, write("a.csv", _csv(COUNTRIES)))
    assert code == 0, first.get("error")
    # The vendor drops Germany, renames France, and adds the numeric code as a column.
    kept = [c for c in COUNTRIES if c.alpha_2 != "DE"]
    config = table_dir(WITH_NUMERIC, name="countries", primary_key=["alpha_2"])
    sql("ALTER TABLE ref.countries ADD COLUMN numeric INTEGER")  # as the drift error asks
    source = write("b.csv", _csv(kept, {"FR": "French Republic"}, numeric=True))
    code, second = run_cli(config, source)
    assert code == 0, second["error"]
    root = str(Path(config).parent)

    code, out, err = _cli(
        capsys, "diff", "countries", "--config-root", root, "--warehouse", warehouse_url, "--json"
    )

    assert code == 0, err
    result = json.loads(out)
    assert result["table"] == "countries"
    assert (result["run"], result["against"]) == (second["run_id"], first["run_id"])
    assert result["columns"] == {"added": ["numeric"], "removed": []}
    assert result["keys"] == {"added": 0, "removed": 1, "changed": 1}
    germany = pycountry.countries.get(alpha_2="DE")
    assert result["samples"]["removed"] == [
        {"alpha_2": "DE", "alpha_3": "DEU", "name": germany.name, "loaded_by": first["run_id"]}
    ]
    assert result["samples"]["changed"] == [
        {
            "key": {"alpha_2": "FR"},
            "before": {"name": "France"},
            "after": {"name": "French Republic"},
        }
    ]
    # The same, for a person; and --against names the runs the other way round.
    code, out, _ = _cli(
        capsys, "diff", "countries", "--config-root", root, "--warehouse", warehouse_url
    )
    assert code == 0
    assert "removed 1" in out and "FR" in out and "'France' -> 'French Republic'" in out
    code, out, _ = _cli(
        capsys,
        "diff", "countries", "--run", first["run_id"], "--against", second["run_id"],
        "--config-root", root, "--warehouse", warehouse_url, "--json",
    )  # fmt: skip
    assert code == 0
    back = json.loads(out)
    assert back["columns"] == {"added": [], "removed": ["numeric"]}
    assert back["keys"] == {"added": 1, "removed": 0, "changed": 1}


def test_diff_of_an_unknown_run_or_a_gone_curated_file_is_exit_2(
    table_dir, write, run_cli, warehouse_url, capsys, tmp_path
):
    config = table_dir(MAPPING, name="countries", primary_key=["alpha_2"])
    root = str(Path(config).parent)
    assert run_cli(config, write("a.csv", _csv(COUNTRIES[:50])))[0] == 0
    code, second = run_cli(config, write("b.csv", _csv(COUNTRIES[:60])))
    assert code == 0
    args = ["--config-root", root, "--warehouse", warehouse_url]

    code, out, err = _cli(capsys, "diff", "countries", "--run", "nope", *args)
    assert code == 2 and out == ""
    assert "run nope published nothing into countries" in err

    Path(second["curated_uri"]).unlink()  # past CuratedRetentionDays
    code, out, err = _cli(capsys, "diff", "countries", *args)
    assert code == 2
    assert f"the curated file of run {second['run_id']} (countries) is gone" in err
    assert "Traceback" not in err


def test_a_changes_within_alert_gives_the_diff_that_lists_every_change(
    table_dir, write, run_cli, warehouse_url, capsys, tmp_path
):
    guard = {"type": "changes_within", "max_removed_pct": 1, "when": "before_publish"}
    config = table_dir(MAPPING, name="countries", primary_key=["alpha_2"], quality_tests=[guard])
    assert run_cli(config, write("a.csv", _csv(COUNTRIES)))[0] == 0
    # A vendor file that lost every country from S on: blocked before the publish.
    code, blocked = run_cli(config, write("b.csv", _csv([c for c in COUNTRIES if c.alpha_2 < "S"])))
    assert code == 1
    alert = json.loads(next((tmp_path / "outbox").glob("*.alert.json")).read_text())
    command = f"python -m handler diff countries --run {blocked['run_id']}"
    assert f"  every change: {command}" in alert["text"]
    assert command in alert["html"]

    code, out, err = _cli(
        capsys,
        *command.split()[3:],
        "--config-root", str(Path(config).parent), "--warehouse", warehouse_url, "--json",
    )  # fmt: skip

    assert code == 0, err
    result = json.loads(out)
    gone = [c.alpha_2 for c in COUNTRIES if c.alpha_2 >= "S"]
    assert result["run"] == blocked["run_id"]
    assert result["keys"] == {"added": 0, "removed": len(gone), "changed": 0}
    assert [r["alpha_2"] for r in result["samples"]["removed"]] == gone[:20]


def _why(capsys, table: str, row: str, root: Path, warehouse_url: str) -> dict:
    code, out, err = _cli(
        capsys, "why", table, row, "--config-root", str(root), "--warehouse", warehouse_url,
        "--json",
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)


def test_why_names_the_source_line_of_a_row_in_csv_gzip_and_excel(
    table_dir, write, run_cli, warehouse_url, capsys
):
    import gzip

    from tests.conftest import workbook

    config = table_dir(MAPPING, name="countries", primary_key=["alpha_2"], header_row=3)
    rows = _csv(COUNTRIES).splitlines()
    # A preamble of two lines above the header.
    preamble = "\n".join(["Export of ISO 3166-1", "vendor: pycountry", *rows]) + "\n"
    france = 3 + [r.split(",")[0] for r in rows[1:]].index("FR") + 1
    assert preamble.splitlines()[france - 1].startswith("FR,")
    assert run_cli(config, write("a.csv", preamble))[0] == 0
    # gzip, with a blank line and a quoted line break above France: its line moves down 2.
    rows_gz = [*rows[:3], "", rows[3].replace('"', '"Two\nlines ', 1), *rows[4:]]
    text_gz = "\n".join(["Export of ISO 3166-1", "vendor: pycountry", *rows_gz]) + "\n"
    assert run_cli(config, write("b.csv.gz", gzip.compress(text_gz.encode())))[0] == 0
    # Excel: a title row, the header on row 2, an empty row above the data.
    sheet = [["Export of ISO 3166-1"], ["alpha_2", "alpha_3", "name"], [None, None, None]]
    sheet += [[c.alpha_2, c.alpha_3, c.name] for c in COUNTRIES]
    excel = table_dir(
        MAPPING, name="countries", primary_key=["alpha_2"], header_row=2, source_format="excel"
    )
    code, last = run_cli(excel, write("c.xlsx", workbook({"Countries": sheet})))
    assert code == 0, last["error"]

    result = _why(capsys, "countries", "alpha_2=FR", Path(config).parent, warehouse_url)

    assert result["table"] == "countries" and result["key"] == {"alpha_2": "FR"}
    assert [(Path(v["source"]).name, v["line"]) for v in result["versions"]] == [
        ("c.xlsx", 3 + [c.alpha_2 for c in COUNTRIES].index("FR") + 1),
        ("b.csv.gz", france + 2),
        ("a.csv", france),
    ]
    assert result["versions"][0]["run_id"] == last["run_id"]
    assert result["versions"][0]["values"] == {"alpha_2": "FR", "alpha_3": "FRA", "name": "France"}
    published = [v["published_at"] for v in result["versions"]]
    assert published == sorted(published, reverse=True)


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_why_gives_every_version_of_an_scd2_row(table_dir, write, run_cli, warehouse_url, capsys):
    config = table_dir(MAPPING, name="countries", primary_key=["alpha_2"], load_mode="scd2")
    code, first = run_cli(config, write("a.csv", _csv(COUNTRIES)))
    assert code == 0, first["error"]
    code, second = run_cli(config, write("b.csv", _csv(COUNTRIES, {"FR": "French Republic"})))
    assert code == 0, second["error"]
    line = 1 + [c.alpha_2 for c in COUNTRIES].index("FR") + 1
    root = Path(config).parent

    result = _why(capsys, "countries", "alpha_2=FR", root, warehouse_url)

    assert [(v["run_id"], v["line"], v["values"]["name"]) for v in result["versions"]] == [
        (second["run_id"], line, "French Republic"),
        (first["run_id"], line, "France"),
    ]
    # The first run's curated file is gone: its version stays, without a line.
    Path(first["curated_uri"]).unlink()
    result = _why(capsys, "countries", "alpha_2=FR", root, warehouse_url)
    assert [(v["run_id"], v["line"]) for v in result["versions"]] == [
        (second["run_id"], line),
        (first["run_id"], None),
    ]
    code, out, _ = _cli(
        capsys, "why", "countries", "alpha_2=FR", "--config-root", str(root),
        "--warehouse", warehouse_url,
    )  # fmt: skip
    assert code == 0 and f"b.csv, line {line}" in out and "a.csv, line ?" in out


def test_why_of_a_column_the_table_lacks_is_exit_2(
    table_dir, write, run_cli, warehouse_url, capsys
):
    config = table_dir(MAPPING, name="countries", primary_key=["alpha_2"])
    assert run_cli(config, write("a.csv", _csv(COUNTRIES[:5])))[0] == 0
    code, out, err = _cli(
        capsys, "why", "countries", "alpha2=FR", "--config-root", str(Path(config).parent),
        "--warehouse", warehouse_url,
    )  # fmt: skip
    assert code == 2 and out == ""
    assert "alpha2" in err and "alpha_2" in err


@pytest.mark.parametrize("quoted_break", [False, True])
def test_why_counts_windows_line_ends_once(
    quoted_break, table_dir, write, run_cli, warehouse_url, capsys
):
    config = table_dir(MAPPING, name="countries", primary_key=["alpha_2"])
    rows = _csv(COUNTRIES[:30]).splitlines()
    if quoted_break:  # the second record spans two lines: every later line moves down one
        rows[2] = rows[2].replace('"', '"Two\r\nlines ', 1)
    assert run_cli(config, write("a.csv", "\r\n".join(rows) + "\r\n"))[0] == 0
    last = COUNTRIES[29].alpha_2

    result = _why(capsys, "countries", f"alpha_2={last}", Path(config).parent, warehouse_url)

    assert [v["line"] for v in result["versions"]] == [31 + quoted_break]


def test_why_finds_a_value_holding_commas_and_refuses_a_column_twice(
    table_dir, write, run_cli, warehouse_url, capsys
):
    config = table_dir(MAPPING, name="countries", primary_key=["alpha_2"])
    assert run_cli(config, write("a.csv", _csv(COUNTRIES)))[0] == 0
    root = Path(config).parent
    iran = pycountry.countries.get(alpha_2="IR")
    assert "," in iran.name

    result = _why(capsys, "countries", f"name={iran.name}", root, warehouse_url)
    assert [v["values"]["alpha_2"] for v in result["versions"]] == ["IR"]
    result = _why(capsys, "countries", f"alpha_2=IR,name={iran.name}", root, warehouse_url)
    assert result["key"] == {"alpha_2": "IR", "name": iran.name}
    assert len(result["versions"]) == 1

    code, out, err = _cli(
        capsys, "why", "countries", "alpha_2=IR,alpha_2=FR", "--config-root", str(root),
        "--warehouse", warehouse_url,
    )  # fmt: skip
    assert code == 2 and out == ""
    assert "column 'alpha_2' is given twice" in err


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_why_diff_and_digest_on_the_first_day_before_any_run(
    table_dir, warehouse_url, capsys, tmp_path, sql
):
    sql("SELECT 1")  # the warehouse is there (DuckDB's file too), no run yet
    config = table_dir(MAPPING, name="countries", primary_key=["alpha_2"], load_mode="scd2")
    root = str(Path(config).parent)
    argv = ["--config-root", root, "--warehouse", warehouse_url]

    code, out, err = _cli(capsys, "why", "countries", "alpha_2=FR", *argv, "--json")
    assert code == 0, err
    assert json.loads(out) == {"table": "countries", "key": {"alpha_2": "FR"}, "versions": []}
    code, out, err = _cli(capsys, "diff", "countries", *argv)
    assert code == 2 and "countries has no publish in etl_audit.load_ledger" in err
    code, out, err = _cli(capsys, "digest", *argv, "--outbox", str(tmp_path / "outbox"), "--json")
    assert code == 0, err
    assert json.loads(out)["tables"] == []
