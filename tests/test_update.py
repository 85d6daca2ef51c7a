"""`init SOURCE --update CONFIG`: the mapping sheet rewritten for a vendor's new header
(issue #33), then `run` loads the new file."""

from __future__ import annotations

import json
import shutil

import openpyxl
import pycountry
import pytest
from openpyxl.styles import Font, PatternFill

from handler.cli import main
from tests.conftest import CONFIGS, workbook
from tests.test_renames import COUNT, COUNTRY_MAPPING, HEADER, countries


@pytest.fixture
def update(tmp_path, capsys):
    """`python -m handler init SOURCE --update CONFIG --curated-root ...`: (code, out, err)."""

    def run(source, config, *extra: str) -> tuple[int, str, str]:
        capsys.readouterr()
        args = ["init", str(source), "--update", str(config)]
        code = main([*args, "--curated-root", str(tmp_path / "curated"), *extra])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_two_renamed_columns_are_re_pointed_and_the_next_run_loads(
    table_dir, write, run_cli, update, sql
):
    config = table_dir(COUNTRY_MAPPING, name="dim_country", primary_key=["alpha_2"])
    sheet = config.parent / "dim_country_mapping.csv"
    assert run_cli(config, write("countries.csv", countries(HEADER)))[0] == 0
    source = write("v2.csv", countries(["ISO2", "ISO3", "Numeric code", "Name"]))
    assert run_cli(config, source)[0] == 2
    code, out, err = update(source, config)
    assert code == 0, err
    assert (
        f"--- {sheet}\n+++ {sheet}\n@@ -1,5 +1,5 @@\n"
        " source_column,target_column,data_type,transform,default,nullable,format\n"
        "-Alpha-2 code,alpha_2,varchar(2),strip,,false,\n"
        "-Alpha-3 code,alpha_3,varchar(3),strip,,false,\n"
        "+ISO2,alpha_2,varchar(2),strip,,false,\n"
        "+ISO3,alpha_3,varchar(3),strip,,false,\n"
    ) in out
    assert (
        f"renamed: 'Alpha-2 code' -> 'ISO2' (column 'Alpha-2 code' is missing; new column "
        f"'ISO2' matches its values in {COUNT} of {COUNT} rows)"
    ) in out
    # The other rows stay as they were, line for line.
    assert sheet.read_text().splitlines()[3:] == COUNTRY_MAPPING.splitlines()[3:]
    code, summary = run_cli(config, source)
    assert code == 0, summary.get("error")
    assert sql("SELECT COUNT(*) FROM ref.dim_country WHERE alpha_2 = 'NA'") == [(1,)]
    # Run again: the header is the one the sheet maps, nothing is written.
    code, out, _ = update(source, config)
    assert code == 0 and "nothing written" in out


def _country_book(header: list[str], extra: str | None = None) -> bytes:
    rows: list[list[object]] = [["ISO 3166-1 country codes"], header + ([extra] if extra else [])]
    for c in pycountry.countries:
        row = [c.alpha_2, c.alpha_3, int(c.numeric), c.name, getattr(c, "official_name", None)]
        rows.append(row + (["Earth"] if extra else []))
    return workbook({"ISO 3166-1": rows})


def test_a_rename_plus_a_new_column_in_an_xlsx_sheet_keeps_its_formatting(
    tmp_path, write, run_cli, update, sql
):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    config = configs / "dim_country.json"
    sheet = configs / "mappings" / "country_mapping.xlsx"
    book = openpyxl.load_workbook(sheet)
    mapping = book.worksheets[0]
    for cell in mapping[1]:
        cell.font = Font(bold=True)
    mapping["A3"].fill = PatternFill("solid", fgColor="FFFF00")
    mapping.column_dimensions["A"].width = 30
    book.save(sheet)
    before = [[c.value for c in row] for row in mapping.iter_rows()]
    header = ["Alpha-2", "Alpha-3", "Numeric", "Short name", "Official name"]
    assert run_cli(config, write("countries.xlsx", _country_book(header)))[0] == 0
    renamed = ["Alpha-2", "Alpha-3", "Numeric", "Country", "Official name"]
    source = write("v2.xlsx", _country_book(renamed, extra="Region"))
    code, out, err = update(source, config)
    assert code == 0, err
    assert "-Short name,name,varchar(128),strip,,false,\n+Country,name,varchar(128)" in out
    assert (
        " ,source_key,varchar(512),,{source_key},false,\n+Region,region,varchar(32),,,true,\n"
        in out
    )
    assert "added: 'Region' as region varchar(32)" in out
    after = openpyxl.load_workbook(sheet).worksheets[0]
    rows = [[c.value for c in row] for row in after.iter_rows()]
    assert rows[:4] == before[:4] and rows[5:-1] == before[5:]  # order and other rows kept
    assert rows[4][0] == "Country" and rows[-1][:3] == ["Region", "region", "varchar(32)"]
    assert all(c.font.b for c in after[1]) and after["A3"].fill.fgColor.rgb == "00FFFF00"
    assert after.column_dimensions["A"].width == 30
    assert json.loads(config.read_text())["allow_new_columns"] is True
    code, summary = run_cli(config, source)
    assert code == 0, summary.get("error")
    assert sql("SELECT region, name FROM public.dim_country WHERE alpha_2 = 'FR'") == [
        ("Earth", "France")
    ]


def test_a_file_that_matches_nothing_is_refused_and_nothing_is_written(
    table_dir, write, run_cli, update
):
    config = table_dir(COUNTRY_MAPPING, name="dim_country", primary_key=["alpha_2"])
    assert run_cli(config, write("countries.csv", countries(HEADER)))[0] == 0
    sheet = config.parent / "dim_country_mapping.csv"
    before = (config.read_bytes(), sheet.read_bytes())
    source = write("zips.csv", "zip,city\n00501,Holtsville\n00544,Holtsville\n")
    code, out, err = update(source, config)
    assert code == 2 and not out
    assert f"RejectedInput: {source}: nothing matches: no column the mapping sheet maps" in err
    assert (config.read_bytes(), sheet.read_bytes()) == before


def test_a_removed_column_is_reported_and_its_row_deleted(table_dir, write, update, run_cli):
    config = table_dir(COUNTRY_MAPPING, name="dim_country", primary_key=["alpha_2"])
    assert run_cli(config, write("countries.csv", countries(HEADER)))[0] == 0
    # The numeric code is gone; Alpha-3 is renamed and recognised by its values.
    rows = [f'{c.alpha_2},{c.alpha_3},"{c.name}"\n' for c in pycountry.countries]
    source = write("v2.csv", "".join(["Alpha-2 code,ISO3,Name\n", *rows]))
    code, out, err = update(source, config)
    assert code == 0, err
    assert "-Numeric code,numeric_code,varchar(3),strip,,false,\n" in out
    assert (
        "removed: 'Numeric code' is not in the file: its row (numeric_code) is deleted; the "
        "target's column numeric_code stays: drop it there, or run is refused as drift"
    ) in out
    sheet = (config.parent / "dim_country_mapping.csv").read_text()
    assert "Numeric code" not in sheet and "ISO3,alpha_3," in sheet


def test_update_with_a_layout_option_is_refused(table_dir, write, update):
    config = table_dir(COUNTRY_MAPPING, name="dim_country")
    code, _, err = update(write("c.csv", countries(HEADER)), config, "--delimiter", ";")
    assert code == 2
    assert "--update reads SOURCE with the config's layout" in err


def test_a_read_only_sheet_is_exit_2_and_leaves_config_and_sheet_as_they_were(
    table_dir, write, update, monkeypatch
):
    import errno
    from pathlib import Path

    config = table_dir(COUNTRY_MAPPING, name="dim_country", primary_key=["alpha_2"])
    sheet = config.parent / "dim_country_mapping.csv"
    before = {config: config.read_bytes(), sheet: sheet.read_bytes()}
    rows = countries(["Alpha-2 code", "ISO3", "Numeric code", "Name"]).splitlines()
    # A rename and a new column: the config would gain allow_new_columns, the sheet a row.
    source = write("v2.csv", "\n".join(f"{r},x" for r in rows) + "\n")
    write_bytes = Path.write_bytes

    def read_only(path: Path, data: bytes) -> int:  # the sheet is read-only (chmod 444)
        if path == sheet:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    code, out, err = update(source, config)
    assert code == 2, out + err
    assert f"{sheet}: --update: cannot write: Permission denied; nothing changed" in err
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in before} == before


def test_update_with_out_is_refused_and_nothing_is_written(table_dir, write, update, tmp_path):
    config = table_dir(COUNTRY_MAPPING, name="dim_country", primary_key=["alpha_2"])
    sheet = config.parent / "dim_country_mapping.csv"
    before = (config.read_bytes(), sheet.read_bytes())
    source = write("v2.csv", countries(["ISO2", "ISO3", "Numeric code", "Name"]))
    out = tmp_path / "elsewhere"
    code, printed, err = update(source, config, "--out", str(out))
    assert code == 2 and not printed
    assert "ConfigError: --update rewrites CONFIG and its mapping sheet where they are: " in err
    assert "leave out --out" in err and len(err.strip().splitlines()) == 1
    assert (config.read_bytes(), sheet.read_bytes()) == before and not out.exists()
