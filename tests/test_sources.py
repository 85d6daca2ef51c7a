"""Source formats and their options, seen as rows in the warehouse."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import gzip
import io
import json

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from handler.cli import main
from tests.conftest import workbook

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(5),strip|zfill(3),,false,\nname,name,string,strip,,,\n"
)
EXPECTED = [("004", "Afghanistan"), ("248", 'Åland; "Islands"')]


def _csv(delimiter: str = ",", quote: str = '"') -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, quotechar=quote, lineterminator="\n")
    writer.writerows([["code", "name"], ["004", "Afghanistan"], ["248", 'Åland; "Islands"']])
    return out.getvalue()


CSV_CASES = [
    ("comma", {}, _csv().encode()),
    ("semicolon", {"delimiter": ";"}, _csv(";").encode()),
    ("tab", {"delimiter": "\t"}, _csv("\t").encode()),
    ("pipe and single quotes", {"delimiter": "|", "quote_char": "'"}, _csv("|", "'").encode()),
    (
        "preamble above header_row",
        {"header_row": 3},
        ("Vendor export 2026-11-01\nconfidential\n" + _csv()).encode(),
    ),
    ("cp1252", {"encoding": "cp1252"}, _csv().encode("cp1252")),
    ("utf-8 with BOM", {}, b"\xef\xbb\xbf" + _csv().encode()),
    ("gzip", {}, gzip.compress(_csv().encode())),
    ("CRLF line ends", {}, _csv().replace("\n", "\r\n").encode()),
]


@pytest.mark.parametrize(
    ("options", "content"), [c[1:] for c in CSV_CASES], ids=[c[0] for c in CSV_CASES]
)
def test_csv_variants(options, content, table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, **options)
    code, summary = run_cli(config, write("t.csv", content))
    assert code == 0, summary["error"]
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == EXPECTED


def test_csv_value_with_newline_and_null_values(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, null_values=["", "NULL", "-"])
    source = write("t.csv", 'code,name\n1,"two\nlines"\n2,NULL\n3,-\n')
    code, summary = run_cli(config, source)
    assert code == 0, summary["error"]
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == [
        ("001", "two\nlines"),
        ("002", None),
        ("003", None),
    ]


def _workbook_bytes(rows: list[list[object]]) -> bytes:
    return workbook({"S": rows})


def _workbook_with_hidden_first() -> bytes:
    book = openpyxl.Workbook()
    scratch = book.active
    scratch.title, scratch.sheet_state = "Scratch", "hidden"
    scratch.append(["code", "name"])
    scratch.append(["999", "not the data"])
    visible = book.create_sheet("Countries")
    visible.append(["code", "name"])
    visible.append(["004", "Afghanistan"])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


COUNTRY_ROWS = [
    ["Export of 2026-11-01"],
    ["code", "name"],
    [4, "Afghanistan"],
    [248, 'Åland; "Islands"'],
]


@pytest.mark.parametrize("sheet_name", ["Countries", 1])
def test_excel_sheet_by_name_or_index_with_numeric_codes(
    sheet_name, table_dir, write, run_cli, sql
):
    data = workbook({"Notes": [["ignore me"]], "Countries": COUNTRY_ROWS})
    config = table_dir(MAPPING, source_format="excel", sheet_name=sheet_name, header_row=2)
    code, summary = run_cli(config, write("t.xlsx", data))
    assert code == 0, summary["error"]
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == EXPECTED


def test_excel_dates_numbers_and_error_rows(table_dir, write, run_cli, sql):
    data = workbook(
        {
            "S": [
                ["id", "day", "rate"],
                [1, dt.datetime(2024, 2, 29), 1.25],
                [2, dt.date(2024, 3, 1), 3],
                [None, None, None],
                [3, None, None],
            ]
        }
    )
    config = table_dir(
        "source_column,target_column,data_type\nid,id,integer\nday,day,date\nrate,rate,double\n",
        source_format="excel",
    )
    code, summary = run_cli(config, write("t.xlsx", data))
    assert code == 0, summary["error"]
    assert sql("SELECT id, day, rate FROM ref.t_codes ORDER BY id") == [
        (1, dt.date(2024, 2, 29), 1.25),
        (2, dt.date(2024, 3, 1), 3.0),
        (3, None, None),
    ]


def test_excel_unknown_sheet_lists_the_sheets(table_dir, write, run_cli):
    config = table_dir(MAPPING, source_format="excel", sheet_name="Countrys")
    code, summary = run_cli(config, write("t.xlsx", workbook({"Countries": COUNTRY_ROWS})))
    assert code == 2
    assert (
        "workbook has no sheet 'Countrys' (did you mean 'Countries'?)"
        in (summary["error"]["message"])
    )


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_json_lines_and_array(layout, table_dir, write, run_cli, sql):
    records = [{"code": 4, "name": "Afghanistan"}, {"code": "248", "name": 'Åland; "Islands"'}]
    text = (
        "\n".join(json.dumps(r) for r in records) + "\n"
        if layout == "lines"
        else json.dumps(records, indent=1)
    )
    config = table_dir(MAPPING, source_format="json")
    code, summary = run_cli(config, write("t.json", text))
    assert code == 0, summary["error"]
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == EXPECTED


def test_parquet_source_is_read_as_text(table_dir, write, run_cli, sql):
    table = pa.table(
        {"code": pa.array([4, 248], pa.int64()), "name": ["Afghanistan", 'Åland; "Islands"']}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    config = table_dir(MAPPING, source_format="parquet")
    code, summary = run_cli(config, write("t.parquet", buffer.getvalue()))
    assert code == 0, summary["error"]
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == EXPECTED


def _parquet_bytes(**columns: pa.Array) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


TEXT_MAPPING = "source_column,target_column,data_type\ncode,code,string\nname,name,string\n"
STAMPS = "source_column,target_column,data_type\ncode,code,string\nat,at,timestamp\n"
# id, file name, content, config options, mapping sheet, rows loaded (ordered by code)
ACCEPTED_FILES = [
    (
        "lone CR line ends",
        "t.csv",
        b"code,name\r004,Afghanistan\r248,Aland\r",
        {},
        TEXT_MAPPING,
        [("004", "Afghanistan"), ("248", "Aland")],
    ),
    (
        "two trailing delimiters on every line",
        "t.csv",
        b"code,name,,\n004,Afghanistan,,\n",
        {},
        TEXT_MAPPING,
        [("004", "Afghanistan")],
    ),
    (
        "array under one key",
        "t.json",
        json.dumps({"data": [{"code": "004", "name": "Afghanistan"}]}, indent=1).encode(),
        {"source_format": "json"},
        TEXT_MAPPING,
        [("004", "Afghanistan")],
    ),
    (
        "hidden first sheet is skipped",
        "t.xlsx",
        _workbook_with_hidden_first(),
        {"source_format": "excel"},
        TEXT_MAPPING,
        [("004", "Afghanistan")],
    ),
    (
        "a 10 MB field",
        "t.csv",
        b"code,name\n004," + b"x" * (10 << 20) + b"\n248,Aland\n",
        {},
        "source_column,target_column,data_type\ncode,code,string\n",
        [("004",), ("248",)],
    ),
    (
        "Parquet binary holding text",
        "t.parquet",
        _parquet_bytes(code=pa.array([b"004"], pa.binary()), name=pa.array(["Afghanistan"])),
        {"source_format": "parquet"},
        TEXT_MAPPING,
        [("004", "Afghanistan")],
    ),
    (
        "UTC offsets are converted to UTC",
        "t.csv",
        b"code,at\n1,2024-01-01 10:00+05:00\n2,2024-01-01T10:00:00Z\n3,2024-01-01 10:00\n",
        {},
        STAMPS,
        [
            ("1", dt.datetime(2024, 1, 1, 5, 0)),
            ("2", dt.datetime(2024, 1, 1, 10, 0)),
            ("3", dt.datetime(2024, 1, 1, 10, 0)),
        ],
    ),
    (
        "every value with an offset",
        "t.csv",
        b"code,at\n1,2024-01-01 10:00+05:00\n2,2023-12-31T23:30:00-01:00\n",
        {},
        STAMPS,
        [("1", dt.datetime(2024, 1, 1, 5, 0)), ("2", dt.datetime(2024, 1, 1, 0, 30))],
    ),
    (
        "an offset with a format",
        "t.csv",
        b"code,at\n1,01.01.2024 10:00 +0500\n",
        {},
        "source_column,target_column,data_type,format\ncode,code,string,\n"
        "at,at,timestamp,%d.%m.%Y %H:%M %z\n",
        [("1", dt.datetime(2024, 1, 1, 5, 0))],
    ),
    (
        "NaN and infinity where the mapping allows them",
        "t.csv",
        b"code,x\n1,NaN\n2,1e400\n",
        {},
        "source_column,target_column,data_type,format\ncode,code,string,\n"
        "x,x,double,allow_nan_inf\n",
        [("1", "nan"), ("2", "inf")],
    ),
    (
        "a long Excel number into a double",
        "t.xlsx",
        _workbook_bytes([["code", "x"], ["1", 1234567890123456789]]),
        {"source_format": "excel"},
        "source_column,target_column,data_type\ncode,code,string\nx,x,double\n",
        [("1", 1.234567890123457e18)],
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "options", "mapping", "expected"),
    [c[1:] for c in ACCEPTED_FILES],
    ids=[c[0] for c in ACCEPTED_FILES],
)
def test_awkward_but_valid_files_load(
    name, content, options, mapping, expected, table_dir, write, run_cli, sql
):
    code, summary = run_cli(table_dir(mapping, **options), write(name, content))
    assert code == 0, summary["error"]
    rows = sql("SELECT * FROM ref.t_codes ORDER BY code")
    if mapping.endswith("allow_nan_inf\n"):  # NaN is not equal to itself
        rows = [(c, str(x)) for c, x in rows]
    assert rows == expected


def test_a_skipped_hidden_sheet_is_logged(warehouse_url, table_dir, write, tmp_path, capsys):
    config = table_dir(TEXT_MAPPING, source_format="excel")
    source = write("t.xlsx", _workbook_with_hidden_first())
    capsys.readouterr()
    code = main(
        [
            *("run", "--config", str(config), "--source", str(source)),
            *("--warehouse", warehouse_url, "--curated-root", str(tmp_path / "c")),
        ]
    )
    assert code == 0
    [record] = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if "hidden sheets skipped" in line
    ]
    assert (record["skipped"], record["sheet"]) == (["Scratch"], "Countries")


# (case, file name, content, config options, message after '<tmp>/in/')
NOT_TEXT = [
    (
        "pdf",
        "t.csv",
        b"%PDF-1.4\n1 0 obj\n",
        {},
        "t.csv: not a text file (looks like: pdf), but source_format is csv",
    ),
    (
        "png as tsv",
        "t.tsv",
        b"\x89PNG\r\n\x1a\n" + bytes(20),
        {},
        "t.tsv: not a text file (looks like: png), but source_format is tsv",
    ),
    (
        "jpeg as json",
        "t.json",
        b"\xff\xd8\xff\xe0" + bytes(20),
        {},
        "t.json: not a text file (looks like: jpeg), but source_format is json",
    ),
    (
        "plain zip",
        "t.csv",
        b"PK\x03\x04\x14\x00" + bytes(40),
        {},
        "t.csv: not a text file (looks like: zip), but source_format is csv",
    ),
    (
        "gzip of a pdf",
        "t.csv.gz",
        gzip.compress(b"%PDF-1.4\n"),
        {},
        "t.csv.gz: not a text file (looks like: pdf)",
    ),
    (
        "a workbook, configured as csv",
        "t.csv",
        workbook({"S": [["code", "name"], ["004", "Afghanistan"]]}),
        {"source_format": "csv"},
        "t.csv: not a text file (looks like: xlsx), but source_format is csv; set source_format "
        "to xlsx",
    ),
    (
        "parquet named csv",
        "t.csv",
        b"PAR1" + bytes(20),
        {},
        "t.csv: not a text file (looks like: parquet), but source_format is csv; set "
        "source_format to parquet",
    ),
    (
        "tar",
        "t.csv",
        b"a.csv".ljust(257, b"\x00") + b"ustar\x0000" + bytes(40),
        {},
        "t.csv: not a text file (looks like: tar)",
    ),
    (
        "a repeated column name",
        "t.csv",
        b"code,name,name\n004,a,b\n",
        {},
        "t.csv, line 1: header names column 'name' twice (columns 2 and 3): a repeated column "
        "name; rename one",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "options", "message"),
    [c[1:] for c in NOT_TEXT],
    ids=[c[0] for c in NOT_TEXT],
)
def test_a_file_that_is_not_text_is_named_for_what_it_is(
    name, content, options, message, table_dir, write, run_cli, sql, tmp_path
):
    config = table_dir(TEXT_MAPPING, **options)
    good = write("good.csv", b"code,name\n004,Afghanistan\n")
    assert run_cli(config, good)[0] == 0
    source = write(name, content)
    code, summary = run_cli(config, source)
    assert code == 2
    assert summary["error"]["message"].startswith(f"{tmp_path}/in/{message}")
    assert sql("SELECT code, name FROM ref.t_codes") == [("004", "Afghanistan")]
    assert source.read_bytes() == content
    assert sql(
        "SELECT status, error_type FROM etl_audit.run_log WHERE run_id = ?", summary["run_id"]
    ) == [("failed", "RejectedInput")]


def test_a_csv_whose_header_starts_like_a_signature_is_text(table_dir, write, run_cli, sql):
    # 'PAR1' opens a Parquet file too; there, bytes no text has follow it.
    mapping = "source_column,target_column,data_type\nPAR1,par1,string\nPAR2,par2,string\n"
    source = write("t.csv", b"PAR1,PAR2\n0.5,1.5\n")
    code, summary = run_cli(table_dir(mapping), source)
    assert code == 0, summary["error"]
    assert sql("SELECT par1, par2 FROM ref.t_codes") == [("0.5", "1.5")]


@pytest.fixture
def fresh_csv_limit():
    """The csv module's field limit of a fresh process (refload raises it, process-wide)."""
    before = csv.field_size_limit(128 << 10)
    yield
    csv.field_size_limit(before)


def test_a_wide_header_split_on_another_delimiter_is_bad_input(
    table_dir, write, run_cli, fresh_csv_limit
):
    # 300 names of 1 KB, split on ';': one field of 300 KB, beyond the csv module's limit.
    header = ",".join(f"{'c' * 1000}{i}" for i in range(300))
    source = write("t.csv", f"{header}\n{','.join('1' * 300)}\n")
    code, summary = run_cli(table_dir(TEXT_MAPPING, delimiter=";"), source)
    assert code == 2
    assert summary["error"]["message"].startswith(
        f"{source}, line 1, column 'code': mapped source column 'code' is not in the header"
    )


def _wide(text: str, encoding: str, bom: bytes = b"") -> bytes:
    return bom + text.encode(encoding)


# UTF-16/32 text (Excel's "Unicode Text" is UTF-16 LE with a BOM, tab-separated, CRLF).
WIDE_CASES = [
    (
        "utf-16 LE with BOM, tab, CRLF (Excel's Unicode Text)",
        {"delimiter": "\t"},
        _wide(_csv("\t").replace("\n", "\r\n"), "utf-16-le", codecs.BOM_UTF16_LE),
    ),
    (
        "utf-16 BE declared, no BOM, preamble",
        {"encoding": "utf-16-be", "header_row": 2},
        _wide("Vendor export\n" + _csv(), "utf-16-be"),
    ),
    ("utf-16 BOM wins over the default", {}, _wide(_csv(), "utf-16")),
    (
        "utf-32 by its BOM, preamble",
        {"header_row": 2},
        _wide("Vendor export\n" + _csv(), "utf-32"),
    ),
    ("utf-16 gzip", {}, gzip.compress(_wide(_csv(), "utf-16"))),
]


@pytest.mark.parametrize(
    ("options", "content"), [c[1:] for c in WIDE_CASES], ids=[c[0] for c in WIDE_CASES]
)
def test_utf16_and_utf32_csv(options, content, table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, **options)
    code, summary = run_cli(config, write("t.txt", content))
    assert code == 0, summary["error"]
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == EXPECTED


def test_utf16_json_lines_and_array(table_dir, write, run_cli, sql):
    records = [{"code": "004", "name": "Afghanistan"}, {"code": "248", "name": 'Åland; "Islands"'}]
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in records)
    for name, text in (("t.jsonl", lines), ("t.json", json.dumps(records, ensure_ascii=False))):
        code, summary = run_cli(table_dir(MAPPING), write(name, text.encode("utf-16")))
        assert code == 0, summary["error"]
        assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == EXPECTED


def test_utf16_bad_input_names_the_line(table_dir, write, run_cli, sql, tmp_path):
    text = _csv("\t").replace("\n", "\r\n") + "999\r\n"
    code, summary = run_cli(
        table_dir(MAPPING, delimiter="\t", max_reject_pct=50),
        write("ragged.txt", text.encode("utf-16")),
    )
    assert code == 0, summary["error"]
    [rejects] = (tmp_path / "curated").rglob("*.rejects.parquet")
    assert [(r["line"], r["value"]) for r in pq.read_table(rejects).to_pylist()] == [(4, "999")]
    # A lone surrogate is no UTF-16 text: named by its line and character.
    data = codecs.BOM_UTF16_LE + _csv().replace("Åland", "Å\ud800land").encode(
        "utf-16-le", "surrogatepass"
    )
    source = write("bad.txt", data)
    code, summary = run_cli(table_dir(MAPPING, name="t_bad"), source)
    assert code == 2
    assert summary["error"]["message"] == (
        f"{source}, line 3: cannot decode byte(s) b'\\x00\\xd8' as utf-16-le at character 7; "
        "set 'encoding' in the config"
    )
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_bad'") == [
        (0,)
    ]


def test_utf16_without_a_bom_is_named_not_loaded_as_nul_bytes(table_dir, write, run_cli):
    source = write("t.csv", _csv().encode("utf-16-le"))
    code, summary = run_cli(table_dir(MAPPING), source)
    assert code == 2
    assert summary["error"]["message"] == (
        f"{source}: looks like UTF-16-LE text without a byte-order mark (every other byte is "
        "NUL), not utf-8; set 'encoding' to utf-16-le in the config"
    )


def test_preview_reads_utf16_as_run_does(table_dir, write, capsys):
    config = table_dir(MAPPING, delimiter="\t")
    source = write("t.txt", WIDE_CASES[0][2])
    capsys.readouterr()
    code = main(["preview", "--config", str(config), "--source", str(source), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "read 2  rejected 0  duplicates 0  would load 2" in out
    assert 'Åland; "Islands"' in out
