"""`python -m handler init`: from a sample file to a config that `run` loads."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from handler.cli import main
from tests.conftest import ROOT, SAMPLES, workbook


@pytest.fixture
def init(tmp_path, capsys):
    """`python -m handler init SOURCE --table NAME --out DIR ...`: (exit code, stdout, stderr)."""

    def run(source: Path, table: str, *extra: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["init", str(source), "--table", table, "--out", str(tmp_path / "cfg"), *extra])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _columns(sql, table: str) -> dict[str, str]:
    rows = sql(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = ? ORDER BY ordinal_position",
        table,
    )
    return dict(rows)


def _sheet(tmp_path: Path, table: str) -> list[dict[str, str]]:
    path = tmp_path / "cfg" / "mappings" / f"{table}_mapping.csv"
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


SHIPPED = sorted(SAMPLES.glob("*/*/*"))


@pytest.mark.parametrize("source", SHIPPED, ids=[p.parent.parent.name for p in SHIPPED])
def test_init_then_run_loads_every_shipped_sample(source, init, run_cli, tmp_path):
    table = f"dim_{source.parent.parent.name}"
    code, out, err = init(source, table)
    assert code == 0, err
    config = tmp_path / "cfg" / f"{table}.json"
    assert f"wrote {config}" in out
    assert f"python -m handler run --config {config} --source {source}" in out
    code, summary = run_cli(config, source)
    assert code == 0, summary["error"]
    assert summary["rows_rejected"] == 0
    assert all(c["status"] == "pass" for c in summary["checks"])


def test_zip_codes_stay_text_and_the_key_is_proposed(init, run_cli, sql, tmp_path):
    source = SAMPLES / "zipcode" / "2026-11-01" / "us_zipcodes.csv"
    code, out, _ = init(source, "dim_zip")
    assert code == 0
    assert "zip       varchar(5)" in out and "code with leading zeros ('00501')" in out
    assert "primary key: zip (unique and never empty" in out
    config = json.loads((tmp_path / "cfg" / "dim_zip.json").read_text())
    assert config["primary_key"] == ["zip"]
    assert config["source_prefix"] == "zipcode/"
    assert config["quality_tests"][:2] == [
        {"type": "row_count_match", "tolerance_pct": 0},
        {"type": "uniqueness", "columns": ["zip"]},
    ]
    assert run_cli(tmp_path / "cfg" / "dim_zip.json", source)[0] == 0
    assert _columns(sql, "dim_zip") == {
        "zip": "VARCHAR",
        "type": "VARCHAR",
        "active": "BOOLEAN",
        "city": "VARCHAR",
        "state": "VARCHAR",
        "county": "VARCHAR",
        "timezone": "VARCHAR",
        "lat": "DECIMAL(6,4)",
        "long": "DECIMAL(7,4)",
    }
    assert sql("SELECT city FROM public.dim_zip WHERE zip = '00501'") == [("Holtsville",)]


def test_excel_numbers_in_a_code_column_are_flagged(init):
    source = SAMPLES / "country" / "2026-11-01" / "iso3166_countries.xlsx"
    code, out, _ = init(source, "dim_country")
    assert code == 0
    assert "numeric        smallint" in out
    assert (
        "warning: numeric: Excel keeps codes as numbers (004 arrives as 4); if it is a code, "
        "make it varchar(n) with zfill(n)"
    ) in out


CP1252_PREAMBLE = (
    "# exported 2026-11-24\n"
    "Country Code;Name;Rate %;Valid From;Updated At;Price\n"
    "004;  Afghanistan ;1.5;31.12.2024;2024-12-31 10:15:00;1,5\n"
    "248;Åland;12.25;01.02.2025;2025-02-01 08:00:00;12\n"
    "250;Côte d\u2019Ivoire;-0.125;15.03.2025;2025-03-15 23:59:59;-0,25\n"
).encode("cp1252")

JSON_LINES = "".join(
    json.dumps(r) + "\n"
    for r in [
        {
            "ZipCode": "00501",
            "isActive": "yes",
            "seen": "2024-01-05T10:00:00.5",
            "n": 70000,
            "since": "2024-01-05 00:00:00",
        },
        {
            "ZipCode": "02134",
            "isActive": "no",
            "seen": "2024-02-06T11:00:00",
            "n": -3,
            "since": "2024-02-06 00:00:00",
        },
        {
            "ZipCode": "A1B2C",
            "isActive": "yes",
            "seen": "2024-03-07T12:00:00",
            "n": 4,
            "since": "2024-03-07 00:00:00",
        },
    ]
).encode()

AMBIGUOUS = b"id,day\n1,01/02/2024\n2,03/04/2024\n3,12/11/2024\n"
DAY_FIRST = b"id,day\n1,01/02/2024\n2,13/04/2024\n3,12/11/2024\n"
TSV_GZ = gzip.compress(b"code\tlabel\n007\tBond\n042\tAnswer\n1A\tMixed\n")

# (case, file name, content, {column: (data_type, format, nullable)}, warehouse types)
AWKWARD = [
    (
        "cp1252 semicolon with a preamble",
        "rates.csv",
        CP1252_PREAMBLE,
        {
            "country_code": ("varchar(3)", "", "false"),
            "name": ("varchar(32)", "", "false"),
            "rate": ("decimal(5,3)", "", "false"),
            "valid_from": ("date", "%d.%m.%Y", "false"),
            "updated_at": ("timestamp", "%Y-%m-%d %H:%M:%S", "false"),
            "price": ("decimal(4,2)", "", "false"),
        },
        {"country_code": "VARCHAR", "rate": "DECIMAL(5,3)", "valid_from": "DATE"},
    ),
    (
        "excel title row on the second sheet",
        "export.xlsx",
        workbook(
            {
                "Notes": [["read me"]],
                "Data": [
                    ["Vendor export"],
                    ["ID", "Start Date", "Amount", "Flag"],
                    [1, dt.datetime(2024, 2, 29), 1.25, True],
                    [2, dt.datetime(2024, 3, 1), 3, False],
                    [3, None, 4.5, True],
                ],
            }
        ),
        {
            "id": ("smallint", "", "false"),
            "start_date": ("date", "%Y-%m-%d", "true"),
            "amount": ("decimal(3,2)", "", "false"),
            "flag": ("boolean", "", "false"),
        },
        {"id": "SMALLINT", "start_date": "DATE", "flag": "BOOLEAN"},
    ),
    (
        "json lines",
        "feed.jsonl",
        JSON_LINES,
        {
            "zip_code": ("varchar(5)", "", "false"),
            "is_active": ("boolean", "", "false"),
            "seen": ("timestamp", "", "false"),
            "n": ("integer", "", "false"),
            "since": ("date", "%Y-%m-%d %H:%M:%S", "false"),
        },
        {"zip_code": "VARCHAR", "seen": "TIMESTAMP", "n": "INTEGER", "since": "DATE"},
    ),
    (
        "gzip tsv",
        "codes.tsv.gz",
        TSV_GZ,
        {"code": ("varchar(32)", "", "false"), "label": ("varchar(32)", "", "false")},
        {"code": "VARCHAR"},
    ),
    (
        "trailing delimiter on every line",
        "trailing.csv",
        b"Vendor list;;\nid;label;\n1;x;\n2;y;\n3;z;\n",
        {"id": ("smallint", "", "false"), "label": ("varchar(1)", "", "false")},
        {"id": "SMALLINT"},
    ),
    (
        "only date column ambiguous",
        "days.csv",
        AMBIGUOUS,
        {"id": ("smallint", "", "false"), "day": ("date", "%m/%d/%Y", "false")},
        {"day": "DATE"},
    ),
    (
        "day first, told by a day above 12",
        "days.csv",
        DAY_FIRST,
        {"id": ("smallint", "", "false"), "day": ("date", "%d/%m/%Y", "false")},
        {"day": "DATE"},
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "sheet", "types"), [c[1:5] for c in AWKWARD], ids=[c[0] for c in AWKWARD]
)
def test_init_then_run_loads_awkward_files(
    name, content, sheet, types, init, run_cli, sql, write, tmp_path
):
    source = write(name, content)
    code, out, err = init(source, "t_awkward")
    assert code == 0, err
    rows = _sheet(tmp_path, "t_awkward")
    assert {
        r["target_column"]: (r["data_type"], r["format"], r["nullable"]) for r in rows
    } == sheet, out
    code, summary = run_cli(tmp_path / "cfg" / "t_awkward.json", source)
    assert code == 0, summary["error"]
    assert summary["rows_loaded"] == 3
    columns = _columns(sql, "t_awkward")
    assert {k: columns[k] for k in types} == types


def test_cp1252_layout_is_explained(init, write, tmp_path):
    code, out, _ = init(write("rates.csv", CP1252_PREAMBLE), "t_rates")
    assert code == 0
    assert "encoding cp1252: not UTF-8 (byte b'\\xc5' on line 4); cp1252 reads every byte" in out
    assert "delimiter semicolon: splits the lines into 6 fields" in out
    assert "header on line 2: line(s) above are preamble (line 1: '# exported 2026-11-24')" in out
    assert "name" in out and "padded values: strip" in out
    config = json.loads((tmp_path / "cfg" / "t_rates.json").read_text())
    assert (config["encoding"], config["delimiter"], config["header_row"]) == ("cp1252", ";", 2)
    transforms = [r["transform"] for r in _sheet(tmp_path, "t_rates")]
    assert transforms == ["", "strip", "", "", "", 'replace(",",".")']


def test_excel_sheet_and_title_row_are_explained(init, write, tmp_path):
    source = write("export.xlsx", AWKWARD[1][2])
    code, out, _ = init(source, "t_export")
    assert code == 0
    assert "sheet 'Data': the one with most cells of ['Notes', 'Data']" in out
    assert "header on row 2: row(s) above are a title (['Vendor export'])" in out
    config = json.loads((tmp_path / "cfg" / "t_export.json").read_text())
    assert (config["sheet_name"], config["header_row"]) == ("Data", 2)
    code, _, err = init(source, "t_notes", "--sheet-name", "Note")
    assert code == 2
    assert "unknown sheet 'Note' (did you mean 'Notes'?)" in err


def test_ambiguous_dates_are_reported(init, write):
    code, out, _ = init(write("days.csv", AMBIGUOUS), "t_days")
    assert code == 0
    assert (
        "warning: day: ambiguous dates: every value fits %m/%d/%Y and %d/%m/%Y (no day above "
        "12); chose %m/%d/%Y, edit 'format' in the mapping sheet if the days come first"
    ) in out
    code, out, _ = init(write("days2.csv", DAY_FIRST), "t_days2")
    assert "every value fits %d/%m/%Y, not %m/%d/%Y ('13/04/2024')" in out


def test_init_refuses_to_overwrite_without_force(init, write, tmp_path):
    source = write("days.csv", DAY_FIRST)
    assert init(source, "t_days")[0] == 0
    config = tmp_path / "cfg" / "t_days.json"
    config.write_text("{}")
    code, out, err = init(source, "t_days")
    assert code == 2 and out == ""
    assert f"ConfigError: {config} and {tmp_path}/cfg/mappings/t_days_mapping.csv already" in err
    assert config.read_text() == "{}"
    assert init(source, "t_days", "--force")[0] == 0
    assert json.loads(config.read_text())["table_name"] == "t_days"


def test_xlsx_sheet_primary_key_and_json(init, write, run_cli, tmp_path):
    source = write("days.csv", DAY_FIRST)
    code, out, _ = init(source, "t_days", "--sheet", "xlsx", "--primary-key", "day", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["mapping"] == str(tmp_path / "cfg" / "mappings" / "t_days_mapping.xlsx")
    assert result["primary_key"] == ["day"]
    assert result["primary_key_reason"] == "given with --primary-key"
    assert [c["target_column"] for c in result["columns"]] == ["id", "day"]
    assert result["next"][1].startswith("python -m handler run --config ")
    assert run_cli(tmp_path / "cfg" / "t_days.json", source)[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--table", "Dim Days"],
            "--table: identifier 'Dim Days' must be lower-case letters, digits and underscores",
        ),
        (["--primary-key", "dy"], "--primary-key: unknown column 'dy' (did you mean 'day'?)"),
        (["--format", "xml"], "unknown --format 'xml'"),
        (
            ["--primary-key", "day", "--source", "dup"],
            "--primary-key day: repeated key day=2024-04-13 on lines 3, 5;",
        ),
    ],
)
def test_init_bad_arguments_exit_2(args, message, write, tmp_path, capsys):
    content = DAY_FIRST + (b"4,13/04/2024\n" if "dup" in args else b"")
    args = [a for a in args if a not in ("--source", "dup")]
    table = [] if "--table" in args else ["--table", "t_days"]
    code = main(["init", str(write("days.csv", content)), *table, *args, "--out", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err


def test_init_from_s3_takes_the_prefix_above_the_date(s3, init, run_cli, tmp_path):
    s3.put_object(Bucket="raw", Key="vendor/zip/2026-11-01/z.csv", Body=b"zip,city\n00501,X\n")
    source = "s3://raw/vendor/zip/2026-11-01/z.csv"
    code, out, err = init(source, "t_zip")
    assert code == 0, err
    assert "source_prefix: vendor/zip/ (the file sits in vendor/zip/<date>/" in out
    config = tmp_path / "cfg" / "t_zip.json"
    assert json.loads(config.read_text())["source_prefix"] == "vendor/zip/"
    assert run_cli(config, source)[0] == 0


# (case, file name, content, message on stderr)
UNREADABLE = [
    ("empty", "e.csv", b"", "e.csv: file is empty"),
    ("header only", "h.csv", b"a,b\n", "h.csv: file has a header but no data rows"),
    ("binary", "b.csv", b"a,b\n1,\x00\r2\n", "b.csv, line 2: cannot read as text lines: "),
    ("corrupt gzip", "c.csv.gz", b"\x1f\x8b\x08\x00garbage", "c.csv.gz: gzip data is corrupt"),
    ("ragged row", "r.csv", b"a,b\n1,2\n3,4,5\n6,7\n", "r.csv, line 3: has 3 field(s)"),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE]
)
def test_init_on_an_unreadable_sample_exits_2(name, content, message, init, write, tmp_path):
    code, out, err = init(write(name, content), "t_bad")
    assert code == 2 and out == ""
    assert f"RejectedInput: {tmp_path}/in/{message}" in err
    assert not (tmp_path / "cfg").exists()


def test_decimal_commas_load_as_decimals(init, run_cli, sql, write, tmp_path):
    source = write("rates.csv", CP1252_PREAMBLE)
    assert init(source, "t_rates")[0] == 0
    assert run_cli(tmp_path / "cfg" / "t_rates.json", source)[0] == 0
    assert sql("SELECT name, price FROM public.t_rates ORDER BY price") == [
        ("Côte d\u2019Ivoire", Decimal("-0.25")),
        ("Afghanistan", Decimal("1.50")),
        ("Åland", Decimal("12.00")),
    ]


def test_a_pair_of_columns_is_proposed_when_no_column_is_unique(init, run_cli, write, tmp_path):
    source = write(
        "holidays.csv",
        b"Country Code,Holiday Date,Name\n"
        b"US,2024-01-01,New Year\nDE,2024-01-01,New Year\nUS,2024-07-04,Independence Day\n",
    )
    code, out, _ = init(source, "t_holidays")
    assert code == 0
    assert (
        "primary key: country_code, holiday_date (unique and never empty, named like a key, "
        "narrowest (6 byte(s)); also unique: country_code, name)"
    ) in out
    assert run_cli(tmp_path / "cfg" / "t_holidays.json", source)[0] == 0


def test_a_csv_named_xls_is_read_as_csv(init, run_cli, write, tmp_path):
    source = write("export.xls", b"code,name\n004,Afghanistan\n248,Aland\n")
    code, out, _ = init(source, "t_export")
    assert code == 0
    assert "format csv: from the file's first bytes" in out
    assert json.loads((tmp_path / "cfg" / "t_export.json").read_text())["source_format"] == "csv"
    assert run_cli(tmp_path / "cfg" / "t_export.json", source)[0] == 0


def test_the_lambda_entry_point_does_not_import_the_fleet_commands():
    code = (
        "import sys, handler\n"
        "print(sorted(m for m in sys.modules if m in "
        "('handler.cli', 'handler.cli.commands.init.onboard', "
        "'handler.cli.commands.init.infer_columns', 'handler.cli.commands.check')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_null_tokens_become_null_values(init, run_cli, sql, write, tmp_path):
    source = write(
        "nulls.csv",
        b"id,amount,since,country\n1,N/A,2024-01-05,NA\n2,12,NULL,DE\n3,7,2024-02-01,\n",
    )
    code, out, _ = init(source, "t_nulls")
    assert code == 0
    assert "null_values ['', 'NULL', 'N/A']: ['NULL', 'N/A'] stand for empty" in out
    config = json.loads((tmp_path / "cfg" / "t_nulls.json").read_text())
    assert config["null_values"] == ["", "NULL", "N/A"]
    assert [(r["target_column"], r["data_type"]) for r in _sheet(tmp_path, "t_nulls")] == [
        ("id", "smallint"),
        ("amount", "smallint"),
        ("since", "date"),
        ("country", "varchar(2)"),
    ]
    assert run_cli(tmp_path / "cfg" / "t_nulls.json", source)[0] == 0
    assert sql("SELECT id, amount, since, country FROM public.t_nulls ORDER BY id") == [
        (1, None, dt.date(2024, 1, 5), "NA"),
        (2, 12, None, "DE"),
        (3, 7, dt.date(2024, 2, 1), None),
    ]


def _names(rows: int, stray_line: int | None = None) -> bytes:
    """A UTF-8 file of accented names; `stray_line` holds 'Zoë' in cp1252 instead."""
    data = "id,name\n" + "".join(f"{i},Zoë {i}\n" for i in range(1, rows + 1))
    if stray_line is None:
        return data.encode()
    bad = f"\n{stray_line - 1},Zoë".encode()
    return data.encode().replace(bad, bad.replace("ë".encode(), "ë".encode("cp1252")))


def test_a_utf8_sample_with_one_stray_cp1252_byte_is_refused_naming_its_line(
    init, run_cli, sql, write, tmp_path
):
    source = write("names.csv", _names(2000, stray_line=1501))
    code, out, err = init(source, "t_names")
    assert code == 2 and out == ""
    assert (
        f"RejectedInput: {source}, line 1501: byte b'\\xeb' is not UTF-8, but the file's other "
        "1,999 non-ASCII character(s) are (read as cp1252, 'ë' would load as 'Ã«'): the file "
        "mixes encodings; write this line as UTF-8 and run init again"
    ) in err
    assert not (tmp_path / "cfg").exists()
    # Fixed, the sample gives a UTF-8 config; run names the line when the byte comes back.
    fixed = write("fixed.csv", _names(2000))
    code, out, _ = init(fixed, "t_names")
    assert code == 0 and "encoding utf-8: UTF-8" in out
    config = tmp_path / "cfg" / "t_names.json"
    assert run_cli(config, fixed)[0] == 0
    code, summary = run_cli(config, source)
    assert code == 2
    assert summary["error"]["message"] == (
        f"{source}, line 1501: cannot decode byte(s) b'\\xeb' as utf-8 at character 8; set "
        "'encoding' in the config"
    )
    assert sql("SELECT COUNT(*), MIN(name) FROM public.t_names") == [(2000, "Zoë 1")]


def test_a_cp1252_sample_with_one_accent_is_still_cp1252(init, run_cli, sql, write, tmp_path):
    # One lone accent, no UTF-8 anywhere: cp1252, as before (and the same for many).
    source = write("one.csv", "id,name\n1,Zoë\n2,Ann\n".encode("cp1252"))
    code, out, _ = init(source, "t_one")
    assert code == 0
    assert "encoding cp1252: not UTF-8 (byte b'\\xeb' on line 2)" in out
    assert run_cli(tmp_path / "cfg" / "t_one.json", source)[0] == 0
    assert sql("SELECT name FROM public.t_one ORDER BY id") == [("Zoë",), ("Ann",)]


WIDE_HEADER = ",".join(f"{'column ' * 146}{i}" for i in range(150))  # ~1 KB a name


# (case, file name, content, message on stderr after '<tmp>/in/')
NOT_A_SAMPLE = [
    (
        "repeated column name",
        "d.csv",
        b"id,name,name\n1,a,b\n2,c,d\n",
        "d.csv, line 1: header names column 'name' twice (columns 2 and 3): a repeated column "
        "name; rename one",
    ),
    (
        "repeated column name, one data row",
        "d.csv",
        b"id,name,name\n1,a,b\n",
        "d.csv, line 1: header names column 'name' twice (columns 2 and 3)",
    ),
    (
        "repeated column name below a title",
        "d.csv",
        b"Vendor list;;\nid;name;name\n1;a;b\n2;c;d\n",
        "d.csv, line 2: header names column 'name' twice (columns 2 and 3)",
    ),
    (
        "pdf",
        "p.csv",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "p.csv: not a text file (looks like: pdf)",
    ),
    (
        "png",
        "i.csv",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(20),
        "i.csv: not a text file (looks like: png)",
    ),
    (
        "jpeg",
        "j.json",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20),
        "j.json: not a text file (looks like: jpeg)",
    ),
    ("zip", "z.csv", b"PK\x03\x04\x14\x00" + bytes(40), "z.csv: not a text file (looks like: zip)"),
    ("no extension", "export", b"%PDF-1.7\n", "export: not a text file (looks like: pdf)"),
    (
        "gzip of a pdf",
        "p.csv.gz",
        gzip.compress(b"%PDF-1.4\nx\n"),
        "p.csv.gz: not a text file (looks like: pdf)",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), [c[1:] for c in NOT_A_SAMPLE], ids=[c[0] for c in NOT_A_SAMPLE]
)
def test_init_names_what_a_sample_is_when_it_cannot_be_one(
    name, content, message, init, write, tmp_path
):
    code, out, err = init(write(name, content), "t_bad")
    assert code == 2 and out == ""
    assert f"RejectedInput: {tmp_path}/in/{message}" in err
    assert not (tmp_path / "cfg").exists()


@pytest.fixture
def fresh_csv_limit():
    """The csv module's field limit of a fresh process (refload raises it, process-wide)."""
    before = csv.field_size_limit(128 << 10)
    yield
    csv.field_size_limit(before)


def test_a_header_of_long_names_is_read(init, run_cli, write, tmp_path, fresh_csv_limit):
    source = write("wide.csv", f"{WIDE_HEADER}\n{','.join(map(str, range(150)))}\n".encode())
    code, out, err = init(source, "t_wide")
    assert code == 0, err
    assert "delimiter comma: splits the lines into 150 fields" in out
    assert len(_sheet(tmp_path, "t_wide")) == 150
    assert run_cli(tmp_path / "cfg" / "t_wide.json", source)[0] == 0


def test_a_workbook_named_csv_is_read_as_one_and_a_text_format_refuses_it(
    init, run_cli, sql, write, tmp_path
):
    source = write("export.csv", workbook({"Data": [["code", "name"], ["004", "Afghanistan"]]}))
    code, out, err = init(source, "t_export")
    assert code == 0, err
    assert "format xlsx: from the file's first bytes (the name says csv)" in out
    assert run_cli(tmp_path / "cfg" / "t_export.json", source)[0] == 0
    assert sql("SELECT code, name FROM public.t_export") == [("004", "Afghanistan")]
    code, _, err = init(source, "t_export2", "--format", "csv")
    assert code == 2
    assert (
        f"{source}: not a text file (looks like: xlsx), but source_format is csv; set "
        "source_format to xlsx"
    ) in err


def test_init_refuses_a_workbook_with_a_stray_far_cell(init, write, tmp_path):
    from tests.test_bad_input import stray_cell_workbook

    source = write("export.xlsx", stray_cell_workbook())
    code, out, err = init(source, "t_export")
    assert code == 2 and out == ""
    assert (
        f"RejectedInput: {source}: sheet 'S' spans A1:XFD1048576 (1,048,576 rows x 16,384 "
        "columns), more than the 20,000,000 cells refload reads (REFLOAD_MAX_SHEET_CELLS)"
    ) in err
    assert not (tmp_path / "cfg").exists()


def _unicode_text(rows: list[list[str]]) -> bytes:
    """Excel's "Unicode Text" export: UTF-16 LE with a BOM, tab-separated, CRLF."""
    text = "".join("\t".join(row) + "\r\n" for row in rows)
    return b"\xff\xfe" + text.encode("utf-16-le")


CURRENCY_NAMES = [
    ["CLDR currency names (babel)"],
    ["Code", "Name", "Symbol"],
    ["EUR", "Euro", "€"],
    ["JPY", "Japanese Yen", "¥"],
    ["ZAR", "South African Rand", "R"],
]


def test_excel_unicode_text_is_read_and_its_encoding_written(init, run_cli, sql, write, tmp_path):
    source = write("currency_names.txt", _unicode_text(CURRENCY_NAMES))
    code, out, err = init(source, "t_names")
    assert code == 0, err
    assert 'encoding utf-16-le: UTF-16 LE with a byte-order mark (Excel\'s "Unicode Text")' in out
    assert "delimiter tab: splits the lines into 3 fields" in out
    assert "header on line 2" in out
    config = json.loads((tmp_path / "cfg" / "t_names.json").read_text())
    assert (config["encoding"], config["delimiter"], config["header_row"]) == (
        "utf-16-le",
        "\t",
        2,
    )
    code, summary = run_cli(tmp_path / "cfg" / "t_names.json", source)
    assert code == 0, summary["error"]
    assert sql("SELECT code, name, symbol FROM public.t_names ORDER BY code") == [
        tuple(r) for r in CURRENCY_NAMES[2:]
    ]


def test_utf16_json_and_bomless_utf16_are_detected(init, run_cli, sql, write, tmp_path):
    records = [{"alpha3": "BUR", "name": "Burma"}, {"alpha3": "ZAR", "name": "Zaïre"}]
    for name, data, encoding in (
        ("iso3166_3.json", json.dumps(records, ensure_ascii=False).encode("utf-16"), "utf-16-le"),
        ("nobom.csv", "alpha3,name\nBUR,Burma\nZAR,Zaïre\n".encode("utf-16-be"), "utf-16-be"),
    ):
        source = write(name, data)
        code, _, err = init(source, "t_former", "--force")
        assert code == 0, err
        config = json.loads((tmp_path / "cfg" / "t_former.json").read_text())
        assert config["encoding"] == encoding
        code, summary = run_cli(tmp_path / "cfg" / "t_former.json", source)
        assert code == 0, summary["error"]
        assert sql("SELECT alpha3, name FROM public.t_former ORDER BY alpha3") == [
            ("BUR", "Burma"),
            ("ZAR", "Zaïre"),
        ]


def test_layout_options_win_over_what_init_infers(init, run_cli, sql, write, tmp_path):
    # A preamble line that splits like the header: init would take it for the header.
    source = write("names.txt", "Export;2026-11-01\nCode;Name\nAAA;Alpha\nBBB;Beta\n")
    code, out, err = init(source, "t_given", "--header-row", "2", "--delimiter", "semicolon")
    assert code == 0, err
    assert "delimiter semicolon: --delimiter" in out and "header on line 2: --header-row" in out
    config = json.loads((tmp_path / "cfg" / "t_given.json").read_text())
    assert (config["delimiter"], config["header_row"]) == (";", 2)
    assert run_cli(tmp_path / "cfg" / "t_given.json", source)[0] == 0
    assert sql("SELECT code, name FROM public.t_given ORDER BY code") == [
        ("AAA", "Alpha"),
        ("BBB", "Beta"),
    ]
    # One column of values with commas, and a cp1252 file stated as latin-1.
    source = write("people.txt", "Name\nDoe, John\nRoe, Zoë\n".encode("cp1252"))
    code, out, err = init(
        source, "t_one", "--delimiter", "tab", "--encoding", "latin-1", "--header-row", "1"
    )
    assert code == 0, err
    config = json.loads((tmp_path / "cfg" / "t_one.json").read_text())
    assert (config["encoding"], config["delimiter"]) == ("latin-1", "\t")
    assert run_cli(tmp_path / "cfg" / "t_one.json", source)[0] == 0
    assert sql("SELECT name FROM public.t_one ORDER BY name") == [("Doe, John",), ("Roe, Zoë",)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--encoding", "utf-9"], "ConfigError: --encoding: unknown encoding 'utf-9'"),
        (["--delimiter", "::"], "ConfigError: --delimiter: one character or one of comma"),
        (["--header-row", "0"], "ConfigError: --header-row: lines count from 1"),
        (["--encoding", "utf-8"], "RejectedInput: {source}, line 3: byte(s) b'\\xeb' are not"),
        (["--sheet", "csv", "--format", "xlsx", "--delimiter", ";"], "--delimiter: not used"),
    ],
)
def test_layout_options_bad_values_exit_2(args, message, init, write):
    source = write("people.csv", "Name,Town\nDoe,X\nRoe,Zoë\n".encode("cp1252"))
    if "xlsx" in args:
        source = write("people.xlsx", workbook({"S": [["Name"], ["Doe"]]}))
    code, _, err = init(source, "t_bad", *args)
    assert code == 2
    assert message.format(source=source) in err


def test_codes_keep_their_width_and_free_text_gets_room(init, run_cli, sql, write, tmp_path):
    source = write("langs.csv", "Code,Name,Note\nabk,Abkhazian,extinct\nace,Achinese,\n")
    code, out, err = init(source, "t_langs")
    assert code == 0, err
    assert "'Code': text, fixed width 3 byte(s)" in out
    assert "'Note': text, longest 7 byte(s), room for twice that" in out
    sheet = {r["target_column"]: r["data_type"] for r in _sheet(tmp_path, "t_langs")}
    assert sheet == {"code": "varchar(3)", "name": "varchar(32)", "note": "varchar(32)"}
    # The next file's note is three times as long as the sample's: it still loads.
    later = write("langs2.csv", "Code,Name,Note\nabk,Abkhazian,extinct since 1992\n")
    code, summary = run_cli(tmp_path / "cfg" / "t_langs.json", later)
    assert code == 0, summary["error"]
    assert sql("SELECT note FROM public.t_langs") == [("extinct since 1992",)]


def test_fixed_width_digit_codes_stay_text(init, run_cli, sql, write, tmp_path):
    # ISO 3166-3: numeric codes written as JSON strings; none has a leading zero here.
    records = [
        {"alpha3": "BUR", "numeric": "104", "year": 1989},
        {"alpha3": "ZAR", "numeric": "180", "year": 1997},
    ]
    source = write("iso3166_3.json", json.dumps(records))
    code, out, err = init(source, "t_former")
    assert code == 0, err
    assert "'numeric': fixed-width digits written as JSON strings" in out
    sheet = {r["target_column"]: r["data_type"] for r in _sheet(tmp_path, "t_former")}
    assert sheet == {"alpha3": "varchar(3)", "numeric": "varchar(3)", "year": "smallint"}
    # In a CSV the name tells a code from an amount (a year stays a number).
    source = write("codes.csv", "Numeric code,Year,Count\n262,2024,10\n104,2025,11\n")
    code, out, err = init(source, "t_codes")
    assert code == 0, err
    assert "'Numeric code': fixed-width digits named like a code" in out
    sheet = {r["target_column"]: r["data_type"] for r in _sheet(tmp_path, "t_codes")}
    assert sheet == {"numeric_code": "varchar(3)", "year": "smallint", "count": "smallint"}
    code, summary = run_cli(
        tmp_path / "cfg" / "t_codes.json",
        write("next.csv", "Numeric code,Year,Count\n048,2026,12\n"),
    )
    assert code == 0, summary["error"]
    assert sql("SELECT numeric_code FROM public.t_codes") == [("048",)]


ISO_639 = [
    ["# ISO 639-3 code set, exported 2026-11-01"],
    ["Id", "Part1", "Ref_Name"],
    ["aar", "aa", "Afar"],
    ["abk", "ab", "Abkhazian"],
    ["zul", "zu", "Zulu"],
]


def test_a_changed_layout_is_named_and_update_layout_rewrites_only_it(
    init, run_cli, sql, write, tmp_path, capsys
):
    first = write("iso-639-3.tab", "".join("\t".join(r) + "\n" for r in ISO_639))
    assert init(first, "t_langs")[0] == 0
    config_path = tmp_path / "cfg" / "t_langs.json"
    before = json.loads(config_path.read_text())
    mapping_before = (tmp_path / "cfg" / "mappings" / "t_langs_mapping.csv").read_bytes()
    assert (before["delimiter"], before["header_row"]) == ("\t", 2)
    # The vendor drops the preamble, moves to commas and UTF-16 (Excel's "Unicode Text").
    rows = ["Id,Part1,Ref_Name", "aar,aa,Afar", "ewe,ee,Ewe"]
    second = write("iso-639-3.csv", ("\r\n".join(rows) + "\r\n").encode("utf-16"))
    code, summary = run_cli(config_path, second)
    assert code == 2
    assert summary["error"]["message"].endswith(
        "; this file's header looks to be on line 1, delimiter ','; the config says line 2, tab"
    )
    capsys.readouterr()
    code = main(["init", str(second), "--update-layout", str(config_path), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["changes"] == {
        "source_format": {"from": "tsv", "to": "csv"},
        "encoding": {"from": "utf-8", "to": "utf-16-le"},
        "delimiter": {"from": "\t", "to": ","},
        "header_row": {"from": 2, "to": 1},
    }
    after = json.loads(config_path.read_text())
    layout = ("source_format", "encoding", "delimiter", "header_row")
    assert {k: v for k, v in after.items() if k not in layout} == {
        k: v for k, v in before.items() if k not in layout
    }
    assert list(after) == list(before)  # the keys stay where they were
    assert (tmp_path / "cfg" / "mappings" / "t_langs_mapping.csv").read_bytes() == mapping_before
    code, summary = run_cli(config_path, second)
    assert code == 0, summary["error"]
    assert sql("SELECT id, ref_name FROM public.t_langs ORDER BY id") == [
        ("aar", "Afar"),
        ("ewe", "Ewe"),
    ]
    # Again: nothing to change, nothing written.
    code = main(["init", str(second), "--update-layout", str(config_path)])
    assert code == 0
    assert f"layout unchanged: {config_path} not written" in capsys.readouterr().out


def test_update_layout_refuses_a_sample_whose_columns_were_renamed(init, write, tmp_path, capsys):
    assert init(write("langs.csv", "Id,Name\naar,Afar\nabk,Abkhazian\n"), "t_langs")[0] == 0
    config_path = tmp_path / "cfg" / "t_langs.json"
    before = config_path.read_bytes()
    renamed = write("langs2.csv", "Code;Name\naar;Afar\n")
    capsys.readouterr()
    code = main(["init", str(renamed), "--update-layout", str(config_path)])
    assert code == 2
    assert capsys.readouterr().err == (
        f"RejectedInput: {renamed}: read as source_format 'csv', encoding 'utf-8', delimiter "
        f"';', header_row 1, its header has no column 'Id' that the mapping sheet maps "
        f"(header: Code, Name); {config_path} is unchanged: map the new names first\n"
    )
    assert config_path.read_bytes() == before
    code = main(["init", str(renamed)])
    assert code == 2
    assert "init: --table is required (or --update-layout CONFIG)" in capsys.readouterr().err
    code = main(["init", str(renamed), "--update-layout", str(tmp_path / "nope.json")])
    assert code == 2
    assert "--update-layout: the config file does not exist" in capsys.readouterr().err


def test_a_config_saying_utf16_for_a_utf8_file_is_named(init, run_cli, write, tmp_path):
    assert init(write("names.txt", _unicode_text(CURRENCY_NAMES)), "t_names")[0] == 0
    rows = "Code\tName\tSymbol\r\nEUR\tEuro\t€\r\n"
    code, summary = run_cli(tmp_path / "cfg" / "t_names.json", write("names2.txt", rows))
    assert code == 2
    assert summary["error"]["message"].endswith(
        "; this file looks to be 8-bit text such as UTF-8 (no byte-order mark, no NUL byte); "
        "the config says utf-16-le"
    )


def test_update_layout_leaves_defaults_left_out(write, tmp_path, capsys):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "m.csv").write_text("source_column,target_column,data_type\nId,id,varchar(3)\n")
    config_path = folder / "t.json"
    config_path.write_text('{"table_name": "t", "mapping_file": "m.csv", "header_row": 2}')
    source = write("langs.csv", "Id,Name\naar,Afar\n")
    code = main(["init", str(source), "--update-layout", str(config_path), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["changes"] == {"header_row": {"from": 2, "to": 1}}
    assert json.loads(config_path.read_text()) == {
        "table_name": "t",
        "mapping_file": "m.csv",
        "header_row": 1,
    }


@pytest.mark.parametrize(
    ("name", "content", "key", "message"),
    [
        (
            "codes.csv",
            # Line 4 repeats line 2 exactly (run drops it); AA's other repeat is line 6.
            b"code,region,n\nAA,north,1\nBB,south,2\nAA,north,1\nCC,west,3\nAA,east,4\nBB,east,5\n",
            "code",
            "--primary-key code: repeated key code='AA' on lines 2, 6; code='BB' on lines 3, 7; "
            "run would reject this file, so choose other columns",
        ),
        (
            "pairs.csv",
            b"code,region,n\nAA,north,1\nAA,south,\nAA,north,3\n",
            "code,region",
            "--primary-key code,region: repeated key code='AA', region='north' on lines 2, 4;",
        ),
        (
            "empty.csv",
            b"code,n\nAA,1\n,2\nBB,3\n",
            "code",
            "--primary-key code: code is empty on line 3;",
        ),
        (
            "many.jsonl",
            b"".join(b'{"k": %d, "n": %d}\n' % (i % 4, i) for i in range(12)),
            "k",
            "--primary-key k: repeated key k=0 on lines 1, 5, 9; k=1 on lines 2, 6, 10; "
            "k=2 on lines 3, 7, 11; and 1 more;",
        ),
    ],
    ids=["csv", "pair", "empty", "json-lines"],
)
def test_init_names_the_repeated_key_values_and_their_lines(
    name, content, key, message, init, write
):
    code, _, err = init(write(name, content), "t_keys", "--primary-key", key)
    assert code == 2
    assert message in err, err


@pytest.mark.parametrize("given", [["--sheet", "xlsx"], ["--force"]])
def test_update_layout_with_sheet_or_force_is_refused_and_nothing_is_written(
    init, write, tmp_path, capsys, given
):
    assert init(write("langs.csv", "Id,Name\naar,Afar\n"), "t_langs")[0] == 0
    folder = tmp_path / "cfg"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    second = write("langs2.csv", "Id;Name\naar;Afar\n")
    capsys.readouterr()
    code = main(["init", str(second), "--update-layout", str(folder / "t_langs.json"), *given])
    captured = capsys.readouterr()
    assert code == 2 and not captured.out
    assert captured.err == (
        "ConfigError: --update-layout rewrites CONFIG's layout keys in place and leaves its "
        f"sheet as it is: leave out {given[0]} (for a new table's files)\n"
    )
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
