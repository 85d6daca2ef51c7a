"""Bad input: exit 2, one message naming file, line, column and value; target untouched;
the failed run recorded and alerted."""

from __future__ import annotations

import datetime as dt
import errno
import gzip
import io
import json
import math
import random
import re
import tempfile
import zipfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from handler.cli import main
from steps.shared.errors import InfrastructureError, StorageUnavailable
from steps.shared.io import storage

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\nn,n,integer,strip,,,\n"
)
GOOD = "code,n\nAA,1\nBB,2\n"

BAD_INPUTS = [
    ("empty file", b"", "t.csv: file is empty"),
    ("blank lines only", b"\n\n  \n", "t.csv: file is empty"),
    ("header only", b"code,n\n", "t.csv: file has a header but no data rows"),
    (
        "missing mapped column",
        b"label,n\nZZ,1\n",  # values unlike code's: not a rename (tests/test_renames.py)
        "t.csv, line 1, column 'code': mapped source column 'code' is not in the header; "
        "header: label, n",
    ),
    ("misspelt header", b"cod,n\nZZ,1\n", "is not in the header (did you mean 'cod'?)"),
    (
        "ragged row, too many",
        b"code,n\nAA,1\nBB,2,extra\nCC,3\n",
        "t.csv, line 3: has 3 field(s), the header has 2 (value 'BB,2,extra')",
    ),
    (
        "ragged row, too few",
        b"code,n\nAA,1\nBB\n",
        "t.csv, line 3: has 1 field(s), the header has 2 (value 'BB')",
    ),
    (
        "undecodable bytes",
        b"code,n\nAA,1\nB\xffB,2\n",
        "t.csv, line 3: cannot decode byte(s) b'\\xff' as utf-8 at character 2; set 'encoding' in "
        "the config",
    ),
    (
        "cast failure",
        b"code,n\nAA,1\nBB,x1\n",
        "t.csv, line 3, column 'n': is not a valid integer (value 'x1')",
    ),
    (
        "integer out of range",
        b"code,n\nAA,99999999999\n",
        "t.csv, line 2, column 'n': is out of range for integer (value '99999999999')",
    ),
    (
        "null in non-nullable column",
        b"code,n\nAA,1\n  ,2\n",
        "t.csv, line 3, column 'code': is empty, and the column is not nullable (value '  ')",
    ),
    (
        "too long for varchar",
        "code,n\nAA,1\nÅÅÅ,2\n".encode(),
        "t.csv, line 3, column 'code': is 6 bytes, longer than varchar(3) (value 'ÅÅÅ')",
    ),
    (
        "line numbers count quoted newlines",
        b'code,n\n"A\nA",1\nBB,zz\n',
        "t.csv, line 4, column 'n': is not a valid integer (value 'zz')",
    ),
    ("not gzip after all", b"\x1f\x8b\x08garbage", "t.csv: gzip data is corrupt"),
    ("every row ragged", b"code,n\nAA\n", "t.csv, line 2: has 1 field(s), the header has 2"),
]


@pytest.mark.parametrize(
    ("content", "message"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_rejected_and_nothing_changes(
    content, message, table_dir, write, run_cli, sql, tmp_path: Path
):
    config = table_dir(MAPPING)
    code, _ = run_cli(config, write("good.csv", GOOD))
    assert code == 0
    source = write("t.csv", content)

    code, summary = run_cli(config, source)

    assert code == 2
    assert summary["status"] == "rejected"
    assert summary["error"]["type"] in ("RejectedInput", "ConfigError")
    assert message in summary["error"]["message"]
    assert summary["error"]["message"].startswith(str(source))
    # the target keeps its rows, the raw file stays, the run is recorded and alerted
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]
    assert source.read_bytes() == content
    assert sql(
        "SELECT status, error_type FROM etl_audit.run_log WHERE run_id = ?", summary["run_id"]
    ) == [("failed", summary["error"]["type"])]
    alerts = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.alert.json")]
    assert [a["error"]["message"] for a in alerts] == [summary["error"]["message"]]
    assert alerts[0]["failed_step"] == "ingest"


def test_every_rejected_row_is_listed_in_the_rejects_file(table_dir, write, run_cli):
    config = table_dir(MAPPING)
    code, summary = run_cli(config, write("t.csv", "code,n\nAA,1\nBB,x\nCC,3\n,y\n"))
    assert code == 2
    assert "2 of 4 row(s) rejected (50.00% > max_reject_pct 0)" in summary["error"]["message"]
    rejects = pq.read_table(summary["error"]["message"].rsplit(" ", 1)[-1]).to_pylist()
    assert rejects == [
        {"line": 3, "column": "n", "value": "x", "reason": "is not a valid integer"},
        {
            "line": 5,
            "column": "code",
            "value": None,
            "reason": "is empty, and the column is not nullable",
        },
        {"line": 5, "column": "n", "value": "y", "reason": "is not a valid integer"},
    ]


def test_bad_rows_within_max_reject_pct_go_to_rejects_and_the_rest_loads(
    table_dir, write, run_cli, sql
):
    config = table_dir(MAPPING, max_reject_pct=30)
    code, summary = run_cli(config, write("t.csv", "code,n\nAA,1\nBB,x\nCC,3\nDD,4\n"))
    assert code == 0, summary["error"]
    assert (summary["rows_read"], summary["rows_rejected"], summary["rows_loaded"]) == (4, 1, 3)
    assert sql("SELECT code FROM ref.t_codes ORDER BY code") == [("AA",), ("CC",), ("DD",)]
    assert pq.read_table(summary["rejects_uri"]).to_pylist() == [
        {"line": 3, "column": "n", "value": "x", "reason": "is not a valid integer"}
    ]


IMPOSSIBLE_DAYS = [(2023, 2, 29), (2024, 2, 30), (2024, 2, 31), (2024, 4, 31), (2024, 6, 31)]
IMPOSSIBLE_DAYS += [(2024, 9, 31), (2024, 11, 31)]
# the days those roll into (Arrow's strptime turns 04/31 into 05/01), and one beside them
REAL_DAYS = [(2024, 2, 29), (2023, 3, 1), (2023, 3, 3), (2024, 5, 1), (2024, 7, 1)]
REAL_DAYS += [(2024, 10, 1), (2024, 12, 1), (2024, 1, 1)]


@pytest.mark.parametrize(
    ("data_type", "fmt", "written"),
    [
        ("date", "%m/%d/%Y", "{m:02d}/{d:02d}/{y}"),
        ("date", "%d.%m.%Y", "{d:02d}.{m:02d}.{y}"),
        ("date", "%Y-%m-%d", "{y}-{m:02d}-{d:02d}"),
        ("timestamp", "%Y-%m-%d %H:%M:%S", "{y}-{m:02d}-{d:02d} 23:59:59"),
    ],
)
def test_every_impossible_day_is_rejected_and_the_days_it_rolls_into_load(
    data_type, fmt, written, table_dir, write, run_cli, sql
):
    days = [*IMPOSSIBLE_DAYS, *REAL_DAYS]
    text = "".join(f"{i},{written.format(y=y, m=m, d=d)}\n" for i, (y, m, d) in enumerate(days))
    mapping = "source_column,target_column,data_type,format\ncode,code,integer,\n"
    config = table_dir(mapping + f"day,day,{data_type},{fmt}\n", max_reject_pct=50)
    code, summary = run_cli(config, write("t.csv", "code,day\n" + text))
    assert code == 0, summary["error"]
    assert pq.read_table(summary["rejects_uri"]).to_pylist() == [
        {
            "line": line,
            "column": "day",
            "value": written.format(y=y, m=m, d=d),
            "reason": f"is not a real {data_type} (format '{fmt}')",
        }
        for line, (y, m, d) in enumerate(IMPOSSIBLE_DAYS, start=2)
    ]
    loaded = [dt.datetime(y, m, d, 23, 59, 59) for y, m, d in REAL_DAYS]
    if data_type == "date":
        loaded = [moment.date() for moment in loaded]
    assert sql("SELECT day FROM ref.t_codes ORDER BY code") == [(day,) for day in loaded]


def test_duplicate_primary_key_in_the_file_names_the_key_and_lines(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, load_mode="upsert", primary_key=["code"])
    code, summary = run_cli(config, write("t.csv", "code,n\nAA,1\nBB,2\nAA,3\n"))
    assert code == 2
    assert (
        "t.csv, column 'code': duplicate primary key (code='AA') on lines 2, 4; 1 key(s) "
        "appear more than once in this file"
    ) in summary["error"]["message"]
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_codes'") == [
        (0,)
    ]


TYPED_KEY_MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "day,day,date,,,false,%d.%m.%Y\n"
    'rate,rate,"decimal(9,4)",,,false,\n'
    "ok,ok,boolean,,,false,\n"
    "n,n,integer,,,,\n"
)


@pytest.mark.parametrize("chunk", [None, 64], ids=["in-memory", "streamed"])
def test_a_typed_primary_key_is_checked_on_its_values(
    chunk, table_dir, write, run_cli, sql, monkeypatch
):
    if chunk:  # a few rows per chunk: the rows spill and DuckDB looks for repeats
        monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(chunk))
    config = table_dir(TYPED_KEY_MAPPING, primary_key=["day", "rate", "ok"])
    rows = "day,rate,ok,n\n01.02.2024,1.5,yes,1\n01.02.2024,1.50,true,1\n01.02.2024,1.5,no,3\n"
    code, summary = run_cli(config, write("t.csv", rows))
    assert code == 0, summary["error"]  # 1.5 = 1.50 and yes = true: an exact duplicate
    assert summary["duplicates_dropped"] == 1
    assert sql("SELECT CAST(rate AS VARCHAR), ok, n FROM ref.t_codes ORDER BY ok") == [
        ("1.5000", False, 3),
        ("1.5000", True, 1),
    ]
    code, summary = run_cli(config, write("u.csv", rows + "01.02.2024,1.5000,y,9\n"))
    assert code == 2
    assert (
        "duplicate primary key (day=datetime.date(2024, 2, 1), rate=Decimal('1.5000'), ok=True) "
        "on lines 2, 5"
    ) in summary["error"]["message"]


def test_exact_duplicate_rows_are_dropped_and_counted(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, primary_key=["code"])
    code, summary = run_cli(config, write("t.csv", "code,n\nAA,1\nBB,2\nAA,1\n AA ,1\n"))
    assert code == 0, summary["error"]
    assert summary["duplicates_dropped"] == 2
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]


def test_dedupe_off_keeps_duplicates(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, dedupe=False, load_mode="append")
    code, summary = run_cli(config, write("t.csv", "code,n\nAA,1\nAA,1\n"))
    assert code == 0, summary["error"]
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(2,)]


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        (
            '{"table_name": "t_codes", "mapping_file": "t_codes_mapping.csv", "delimeter": ";"}',
            "delimeter: unknown key 'delimeter' (did you mean 'delimiter'?)",
        ),
        ('{"table_name": "t_codes", "mapping_file": "nope.csv"}', "nope.csv: file does not exist"),
        ("{not json", "line 1: not valid JSON"),
        (
            '{"table_name": "t_codes", "mapping_file": "t_codes_mapping.csv", "engine": "auto"}',
            "engine 'auto' needs spark_above_bytes",
        ),
        (
            '{"table_name": "t_codes", "mapping_file": "t_codes_mapping.csv", "engine": "sprak"}',
            "engine: Input should be 'lambda', 'spark' or 'auto'",
        ),
    ],
)
def test_invalid_config_exits_2(config_text, message, table_dir, write, run_cli):
    config = table_dir(MAPPING)
    config.write_text(config_text)
    code, summary = run_cli(config, write("t.csv", GOOD))
    assert code == 2
    assert message in summary["error"]["message"]


def test_malformed_sheet_exits_2(table_dir, write, run_cli):
    config = table_dir("source_column,target_column,data_type\ncode,code,strnig\n")
    code, summary = run_cli(config, write("t.csv", GOOD))
    assert code == 2
    assert (
        "t_codes_mapping.csv, row 2, column 'data_type': unknown data type 'strnig' "
        "(did you mean 'string'?)"
    ) in summary["error"]["message"]


def test_missing_source_file_exits_2(table_dir, run_cli, tmp_path):
    code, summary = run_cli(table_dir(MAPPING), tmp_path / "missing.csv")
    assert code == 2
    assert summary["error"]["message"] == f"{tmp_path / 'missing.csv'}: file does not exist"


# --- nasty files: each is a rejected input naming file, line or cell, column and value ----

FILES = Path(__file__).parent / "files"
ANY_TEXT = "source_column,target_column,data_type\ncode,code,string\nn,n,string\n"
DATES = "source_column,target_column,data_type,format\ncode,code,string,\nday,day,date,%m/%d/%Y\n"
OFFSET_TIMES = (
    "source_column,target_column,data_type,format\n"
    "code,code,string,\nat,at,timestamp,%Y-%m-%dT%H:%M:%S%z\n"
)
DOUBLES = "source_column,target_column,data_type\ncode,code,string\nx,x,double\n"
EXCEL = {"source_format": "excel"}


def _gzip(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def _numbered(rows: int) -> str:
    """Enough rows that a gzip of it is larger than the 64 KB read to sniff the file."""
    rng = random.Random(7)
    return "code,n\n" + "".join(f"C{i},{rng.random()}\n" for i in range(rows))


def _workbook(rows: list[list[object]], hidden_first: list[list[object]] | None = None) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    if hidden_first is not None:
        sheet.title, sheet.sheet_state = "Scratch", "hidden"
        for row in hidden_first:
            sheet.append(row)
        sheet = book.create_sheet("S")
    else:
        sheet.title = "S"
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _rewrite_sheet(data: bytes, change: Callable[[bytes], bytes]) -> bytes:
    """The workbook with its first sheet's XML changed, as another tool might write it."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for member in source.infolist():
            content = source.read(member.filename)
            if member.filename == "xl/worksheets/sheet1.xml":
                content = change(content)
            target.writestr(member, content)
    return out.getvalue()


def _excel_errors() -> bytes:
    """Cells as Excel saves them: an error result with its formula, an error value typed."""
    data = _workbook([["code", "n"], ["AA", "=1/0"], ["BB", "x"]])
    return _rewrite_sheet(
        data,
        lambda xml: re.sub(
            rb'<c r="B2"><f>1/0</f><v\s*/?>(</v>)?</c>',
            b'<c r="B2" t="e"><f>1/0</f><v>#DIV/0!</v></c>',
            xml,
        ).replace(
            b'<c r="B3" t="inlineStr"><is><t>x</t></is></c>', b'<c r="B3" t="e"><v>#N/A</v></c>'
        ),
    )


def _long_number() -> bytes:
    """1234567890123456789 written with all its digits, as some exporters do."""
    data = _workbook([["code", "n"], ["AA", 1]])
    return _rewrite_sheet(data, lambda xml: xml.replace(b"<v>1</v>", b"<v>1234567890123456789</v>"))


def _parquet(row_group_size: int | None = None, **columns: pa.Array) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, row_group_size=row_group_size)
    return buffer.getvalue()


# id, file name, content, config options, mapping sheet, environment, message
NASTY_FILES = [
    (
        "impossible day 02/30",
        "t.csv",
        b"code,day\nAA,02/29/2024\nBB,02/30/2024\n",
        {},
        DATES,
        {},
        "t.csv, line 3, column 'day': is not a real date (format '%m/%d/%Y') (value '02/30/2024')",
    ),
    (
        "impossible day 04/31",
        "t.csv",
        b"code,day\nAA,04/31/2024\n",
        {},
        DATES,
        {},
        "t.csv, line 2, column 'day': is not a real date (format '%m/%d/%Y') (value '04/31/2024')",
    ),
    (
        "29 February of a common year",
        "t.csv",
        b"code,day\nAA,02/29/2023\n",
        {},
        DATES,
        {},
        "t.csv, line 2, column 'day': is not a real date (format '%m/%d/%Y') (value '02/29/2023')",
    ),
    (
        # rolled into 1 May 20:00 at UTC-5, which is 2 May in UTC
        "impossible day 04/31 at an offset behind UTC",
        "t.csv",
        b"code,at\nAA,2024-04-30T20:00:00-0500\nBB,2024-04-31T20:00:00-0500\n",
        {},
        OFFSET_TIMES,
        {},
        "t.csv, line 3, column 'at': is not a real timestamp (format '%Y-%m-%dT%H:%M:%S%z') "
        "(value '2024-04-31T20:00:00-0500')",
    ),
    (
        # rolled into 1 May 01:00 at UTC+5, which is 30 April in UTC
        "impossible day 04/31 at an offset ahead of UTC",
        "t.csv",
        b"code,at\nAA,2024-05-01T01:00:00+0500\nBB,2024-04-31T01:00:00+0500\n",
        {},
        OFFSET_TIMES,
        {},
        "t.csv, line 3, column 'at': is not a real timestamp (format '%Y-%m-%dT%H:%M:%S%z') "
        "(value '2024-04-31T01:00:00+0500')",
    ),
    (
        "double overflows to infinity",
        "t.csv",
        b"code,x\nAA,1.5\nBB,1e400\n",
        {},
        DOUBLES,
        {},
        "t.csv, line 3, column 'x': is NaN or infinite as a double; set format 'allow_nan_inf' "
        "to keep such values (value '1e400')",
    ),
    (
        "NaN in a double column",
        "t.csv",
        b"code,x\nAA,NaN\n",
        {},
        DOUBLES,
        {},
        "t.csv, line 2, column 'x': is NaN or infinite as a double",
    ),
    (
        "Excel formula saved without its value",
        "t.xlsx",
        _workbook([["code", "n"], ["AA", "=1+1"]]),
        EXCEL,
        ANY_TEXT,
        {},
        "t.xlsx, row 2, column 'n': sheet 'S' cell B2 has a formula saved without its value; "
        "open the workbook in Excel, let it calculate, and save it (value '=1+1')",
    ),
    (
        "Excel error results",
        "t.xlsx",
        _excel_errors(),
        EXCEL,
        ANY_TEXT,
        {},
        "t.xlsx, row 2, column 'n': sheet 'S' cell B2 holds the Excel error #DIV/0! "
        "(value '#DIV/0!'); 2 of 2 row(s) rejected",
    ),
    (
        "Excel number beyond a double's digits, to bigint",
        "t.xlsx",
        _long_number(),
        EXCEL,
        "source_column,target_column,data_type\ncode,code,string\nn,n,bigint\n",
        {},
        "t.xlsx, row 2, column 'n': is a whole number larger than 2**53, which a double "
        "(Excel's number, a float column) cannot hold exactly; store it as text "
        "(value '1.2345678901234568e+18')",
    ),
    (
        "Excel number beyond a double's digits, to text",
        "t.xlsx",
        _long_number(),
        EXCEL,
        ANY_TEXT,
        {},
        "t.xlsx, row 2, column 'n': is a whole number larger than 2**53",
    ),
    (
        "Parquet binary that is not text",
        "t.parquet",
        _parquet(code=pa.array(["AA", "BB"]), n=pa.array([b"ok", b"\xff\xfe"], pa.binary())),
        {"source_format": "parquet"},
        ANY_TEXT,
        {},
        "t.parquet, row 2, column 'n': is binary data, not UTF-8 text "
        "(value \"b'\\\\xff\\\\xfe'\")",
    ),
    (
        "Parquet text that is not UTF-8",
        "t.parquet",
        # A string column holding bytes that are not UTF-8: Arrow reads them unchecked.
        _parquet(code=pa.array(["AA", "BB"]), n=pa.array([b"ok", b"\xff\xfe"]).view(pa.string())),
        {"source_format": "parquet"},
        ANY_TEXT,
        {},
        "t.parquet, row 2, column 'n': is not UTF-8 text, though the file marks it as text "
        "(value \"b'\\\\xff\\\\xfe'\")",
    ),
    (
        # each row group is a chunk of the column, mapped on its own
        "Parquet: a bad value in the third row group",
        "t.parquet",
        _parquet(
            2, code=pa.array(["AA", "BB", "CC", "DD", "EE"]), n=pa.array(["1", "2", "3", "4", "x"])
        ),
        {"source_format": "parquet"},
        MAPPING,
        {},
        "t.parquet, row 5, column 'n': is not a valid integer (value 'x')",
    ),
    (
        "Parquet NaN",
        "t.parquet",
        _parquet(code=pa.array(["AA"]), x=pa.array([math.nan])),
        {"source_format": "parquet"},
        DOUBLES,
        {},
        "t.parquet, row 1, column 'x': is NaN or infinite as a double",
    ),
    (
        "Parquet date in year 0",
        "t.parquet",
        _parquet(
            code=pa.array(["AA", "BB"]),
            n=pa.array([19_000, -719_163], pa.int32()).view(pa.date32()),
        ),
        {"source_format": "parquet"},
        MAPPING.replace("n,n,integer", "n,n,date"),
        {},
        "t.parquet, row 2, column 'n': is outside years 1 to 9999 (in UTC), which not every "
        "tool can read (value '0000-12-31')",
    ),
    (
        "gzip truncated",
        "t.csv.gz",
        _gzip(_numbered(40_000))[:150_000],
        {},
        ANY_TEXT,
        {},
        "t.csv.gz: gzip data is corrupt: Truncated compressed stream",
    ),
    (
        "gzip with a bad checksum",
        "t.csv.gz",
        (lambda z: z[:-8] + b"\0\0\0\0" + z[-4:])(_gzip(_numbered(40_000))),
        {},
        ANY_TEXT,
        {},
        "t.csv.gz: gzip data is corrupt: zlib inflate failed: incorrect data check",
    ),
    (
        "xlsx with broken sheet XML",
        "t.xlsx",
        _rewrite_sheet(_workbook([["code", "n"], ["AA", 1]]), lambda xml: xml[: len(xml) // 2]),
        EXCEL,
        ANY_TEXT,
        {},
        "t.xlsx: cannot read sheet 'S': ",
    ),
    (
        # made with msoffcrypto-tool (OOXMLFile.encrypt, password "secret")
        "encrypted xlsx",
        "t.xlsx",
        (FILES / "encrypted.xlsx").read_bytes(),
        EXCEL,
        ANY_TEXT,
        {},
        "t.xlsx: workbook is encrypted (password-protected); save a copy without a password",
    ),
    ("only a BOM", "t.csv", b"\xef\xbb\xbf", {}, ANY_TEXT, {}, "t.csv: file is empty"),
    (
        "only a BOM and a line end",
        "t.csv",
        b"\xef\xbb\xbf\r\n",
        {},
        ANY_TEXT,
        {},
        "t.csv: file is empty",
    ),
    (
        "JSON object with several keys",
        "t.json",
        json.dumps({"meta": {"count": 1}, "data": [{"code": "AA", "n": 1}]}, indent=1).encode(),
        {"source_format": "json"},
        ANY_TEXT,
        {},
        "t.json: is one JSON object with keys 'meta', 'data'; expected JSON Lines (one object "
        "per line), an array of objects, or one object whose only key holds that array",
    ),
    (
        "gzip bomb (CSV)",
        "t.csv.gz",
        _gzip("code,n\n" + "AA,1\n" * 2_000_000),
        {},
        ANY_TEXT,
        {"REFLOAD_MAX_SOURCE_BYTES": str(1 << 20)},
        "t.csv.gz: is larger than 1,048,576 bytes once decompressed (REFLOAD_MAX_SOURCE_BYTES)",
    ),
    (
        "gzip bomb (JSON)",
        "t.json.gz",
        _gzip('{"code": "AA", "n": 1}\n' * 500_000),
        {"source_format": "json"},
        ANY_TEXT,
        {"REFLOAD_MAX_WHOLE_SOURCE_BYTES": str(1 << 20)},
        "t.json.gz: is larger than 1,048,576 bytes once decompressed "
        "(REFLOAD_MAX_WHOLE_SOURCE_BYTES)",
    ),
    (
        "zip bomb (Excel)",
        "t.xlsx",
        _workbook([["code", "n"]] + [["AA", "x" * 100]] * 20_000),
        EXCEL,
        ANY_TEXT,
        {"REFLOAD_MAX_WHOLE_SOURCE_BYTES": str(1 << 20)},
        "t.xlsx: is larger than 1,048,576 bytes once decompressed (REFLOAD_MAX_WHOLE_SOURCE_BYTES)",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "options", "mapping", "environment", "message"),
    [c[1:] for c in NASTY_FILES],
    ids=[c[0] for c in NASTY_FILES],
)
def test_nasty_file_is_rejected_naming_where(
    name,
    content,
    options,
    mapping,
    environment,
    message,
    table_dir,
    write,
    run_cli,
    sql,
    monkeypatch,
):
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    source = write(name, content)

    code, summary = run_cli(table_dir(mapping, **options), source)

    assert code == 2, summary["error"]
    assert summary["error"]["type"] == "RejectedInput"
    assert summary["error"]["message"].startswith(str(source.parent) + "/" + message)
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_codes'") == [
        (0,)
    ]


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_a_nul_character_is_a_rejected_row_on_every_warehouse(table_dir, write, run_cli, sql):
    source = write("t.csv", b"code,n\nAA,1\nB\x00B,2\n")
    code, summary = run_cli(table_dir(MAPPING), source)
    assert code == 2, summary["error"]
    assert summary["error"]["message"].startswith(
        f"{source}, line 3, column 'code': contains a NUL character (\\x00), which warehouses "
        "cannot store as text (value 'B\\x00B')"
    )
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_codes'") == [
        (0,)
    ]


CALENDAR_MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\non,on,date,strip,,,\nat,at,timestamp,strip,,,\n"
    "stamped,stamped,timestamp,strip,,,%Y-%m-%d %H:%M%z\n"
)
OUTSIDE = "is outside years 1 to 9999 (in UTC), which not every tool can read"


@pytest.mark.parametrize(
    ("line", "column", "value"),
    [
        ("BB,2024-01-01,0001-01-01T00:30:00+01:00,", "at", "0001-01-01T00:30:00+01:00"),
        ("BB,2024-01-01,9999-12-31T23:30:00-01:00,", "at", "9999-12-31T23:30:00-01:00"),
        ("BB,0000-06-01,,", "on", "0000-06-01"),
        ("BB,,0000-06-01T00:00:00,", "at", "0000-06-01T00:00:00"),
        ("BB,,,0001-01-01 00:30+0100", "stamped", "0001-01-01 00:30+0100"),
    ],
    ids=[
        "offset-into-year-0",
        "offset-into-year-10000",
        "date-year-0",
        "timestamp-year-0",
        "format",
    ],
)
@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_a_date_outside_years_1_to_9999_is_a_rejected_row_on_every_warehouse(
    line, column, value, table_dir, write, run_cli, sql
):
    """Arrow reads year 0 and moves a value across year 1 or 9999 by its UTC offset; such
    a value is refused, not loaded as a BC date that Python cannot read back."""
    source = write(
        "t.csv", f"code,on,at,stamped\nAA,2024-01-01,2024-01-01T10:00:00+01:00,\n{line}\n"
    )
    code, summary = run_cli(table_dir(CALENDAR_MAPPING), source)
    assert code == 2, summary["error"]
    assert summary["error"]["message"].startswith(
        f"{source}, line 3, column '{column}': {OUTSIDE} (value '{value}')"
    )
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_codes'") == [
        (0,)
    ]


# --- storage: a clear error, retryable only when it may help, and no .partial left -------


def test_a_curated_root_that_is_not_a_folder_is_a_storage_error(
    table_dir, write, warehouse_url, tmp_path, capsys
):
    not_a_folder = tmp_path / "curated-file"
    not_a_folder.write_text("a file where the curated folder should be")
    capsys.readouterr()
    code = main(
        [
            *("run", "--config", str(table_dir(MAPPING)), "--source", str(write("t.csv", GOOD))),
            *("--warehouse", warehouse_url, "--curated-root", str(not_a_folder), "--json"),
        ]
    )
    output = capsys.readouterr()
    summary = json.loads(output.out)
    assert code == 3
    assert summary["error"]["type"] == "InfrastructureError"
    assert re.fullmatch(
        rf"{not_a_folder}/t_codes/[\w-]+\.parquet: cannot write: Not a directory .*",
        summary["error"]["message"],
    )
    assert "Traceback" not in output.err
    assert not list(tmp_path.rglob("*.partial"))


def test_an_unusable_scratch_folder_is_a_storage_error(
    table_dir, write, run_cli, tmp_path, monkeypatch
):
    not_a_folder = tmp_path / "tmp-file"
    not_a_folder.write_text("TMPDIR points here")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))  # as TMPDIR would
    code, summary = run_cli(table_dir(MAPPING), write("t.csv", GOOD))
    assert code == 3
    assert summary["error"]["type"] == "InfrastructureError"
    assert summary["error"]["message"].startswith(f"{not_a_folder}: cannot write: Not a directory")


def test_temporary_files_are_unique_per_run(table_dir, write, run_cli):
    """Two attempts of one run (a retry) write the same curated file: each through its own
    partial file (one that found the other's in its way used to fail as an internal error)."""
    config, source = table_dir(MAPPING), write("t.csv", GOOD)
    code, summary = run_cli(config, source, "--run-id", "one-run")
    assert code == 0, summary["error"]
    curated = Path(summary["curated_uri"])
    Path(f"{curated}.partial").mkdir()  # where the other attempt's partial file used to be

    code, summary = run_cli(config, source, "--run-id", "one-run")

    assert code == 0, summary["error"]
    assert summary["curated_uri"] == str(curated)
    assert pq.read_table(curated).num_rows == 2


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/c/x"), StorageUnavailable),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/c/x"), StorageUnavailable),
        (
            OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] ..."),
            StorageUnavailable,
        ),
        (OSError(errno.EROFS, "Read-only file system", "/c/x"), InfrastructureError),
        (OSError(errno.EACCES, "Permission denied", "/c/x"), InfrastructureError),
        (OSError(errno.ENOTDIR, "Not a directory", "/c"), InfrastructureError),
    ],
    ids=["full", "quota", "full (pyarrow)", "read-only", "no permission", "not a folder"],
)
def test_local_storage_errors_are_retryable_only_when_it_may_help(error, kind):
    found = storage.local_error(error, "/c/x")
    assert type(found) is kind
    assert found.message.startswith("/c/x: cannot write: ")


def stray_cell_workbook() -> bytes:
    """A 5 KB workbook with one cell at XFD1048576: calamine would allocate 512 GiB."""
    data = _workbook([["code", "n"], ["AA", 1]])
    return _rewrite_sheet(
        data,
        lambda xml: xml.replace(
            b"</sheetData>",
            b'<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>'
            b"</sheetData>",
        ),
    )


NUMBERS = (
    "source_column,target_column,data_type\ncode,code,string\nn,n,integer\n"
    'x,x,double\nd,d,"decimal(10,2)"\n'
)
ISO_DAYS = "source_column,target_column,data_type\ncode,code,string\nday,day,date\nat,at,timestamp"
SHORT_YEARS = DATES.replace("%m/%d/%Y", "%m/%d/%y")
ORDINAL_DAYS = DATES.replace("%m/%d/%Y", "%Y-%j")

# id, file name, content, config options, mapping sheet, message after the file's name
STRICT_READS = [
    (
        "stray cell at XFD1048576",
        "t.xlsx",
        stray_cell_workbook(),
        EXCEL,
        ANY_TEXT,
        "t.xlsx: sheet 'S' spans A1:XFD1048576 (1,048,576 rows x 16,384 columns), more than "
        "the 20,000,000 cells refload reads (REFLOAD_MAX_SHEET_CELLS)",
    ),
    (
        "decimal with an underscore",
        "t.csv",
        b"code,n,x,d\nAA,1,1,1\nBB,1,1,1_000\n",
        {},
        NUMBERS,
        "t.csv, line 3, column 'd': is not a valid decimal(10,2) (value '1_000')",
    ),
    (
        "integer in Arabic-Indic digits",
        "t.csv",
        "code,n,x,d\nAA,1,1,1\nBB,\u0661\u0662,1,1\n".encode(),
        {},
        NUMBERS,
        "t.csv, line 3, column 'n': is not a valid integer (value '\u0661\u0662')",
    ),
    (
        "double with an underscore",
        "t.csv",
        b"code,n,x,d\nAA,1,1.5,1\nBB,1,1_0.5,1\n",
        {},
        NUMBERS,
        "t.csv, line 3, column 'x': is not a valid double (value '1_0.5')",
    ),
    (
        "decimal in Arabic-Indic digits",
        "t.csv",
        "code,n,x,d\nAA,1,1,1.5\nBB,1,1,\u0661.\u0665\n".encode(),
        {},
        NUMBERS,
        "t.csv, line 3, column 'd': is not a valid decimal(10,2) (value '\u0661.\u0665')",
    ),
    (
        "ISO week date as a date",
        "t.csv",
        b"code,day,at\nAA,2024-01-01,2024-01-01 10:00\nBB,2024-W01-1,2024-01-01 10:00\n",
        {},
        ISO_DAYS,
        "t.csv, line 3, column 'day': is not a valid date (value '2024-W01-1')",
    ),
    (
        "ISO week date as a timestamp",
        "t.csv",
        b"code,day,at\nAA,2024-01-01,2024-01-01 10:00\nBB,2024-01-01,2024-W01-1T10:00\n",
        {},
        ISO_DAYS,
        "t.csv, line 3, column 'at': is not a valid timestamp (value '2024-W01-1T10:00')",
    ),
    (
        "one-digit %y",
        "t.csv",
        b"code,day\nAA,01/02/24\nBB,01/02/4\n",
        {},
        SHORT_YEARS,
        "t.csv, line 3, column 'day': does not match format '%m/%d/%y' (value '01/02/4')",
    ),
    (
        "%j 366 in a common year",
        "t.csv",
        b"code,day\nAA,2024-366\nBB,2023-366\n",
        {},
        ORDINAL_DAYS,
        "t.csv, line 3, column 'day': is not a real date (format '%Y-%j') (value '2023-366')",
    ),
    (
        "JSON Lines record with a key twice",
        "t.jsonl",
        b'{"code": "AA", "n": "1"}\n{"code": "BB", "n": "2", "code": "CC"}\n',
        {},
        ANY_TEXT,
        "t.jsonl, line 2, column 'code': record has the key 'code' twice",
    ),
    (
        "JSON array record with a nested key twice",
        "t.json",
        b'[{"code": "AA", "n": "1"},\n {"code": "BB", "n": {"a": 1, "a": 2}}]',
        {},
        ANY_TEXT,
        "t.json, row 2: an object in the record has the key 'a' twice",
    ),
    (
        "wrapped JSON array with a key twice",
        "t.json",
        b'{"data": [{"code": "AA", "n": "1", "n": "2"}]}',
        {},
        ANY_TEXT,
        "t.json, row 1, column 'n': record has the key 'n' twice",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "options", "mapping", "message"),
    [c[1:] for c in STRICT_READS],
    ids=[c[0] for c in STRICT_READS],
)
def test_what_arrow_or_calamine_would_read_loosely_is_refused(
    name, content, options, mapping, message, table_dir, write, run_cli, sql
):
    config = table_dir(mapping, **options)
    source = write(name, content)

    code, summary = run_cli(config, source)

    assert code == 2, summary["error"]
    assert summary["error"]["type"] == "RejectedInput"
    assert summary["error"]["message"].startswith(f"{source.parent}/{message}")
    assert source.read_bytes() == content
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_codes'") == [
        (0,)
    ]
    assert sql(
        "SELECT status, error_type FROM etl_audit.run_log WHERE run_id = ?", summary["run_id"]
    ) == [("failed", "RejectedInput")]


def test_the_strict_reads_still_load_what_arrow_reads(table_dir, write, run_cli, sql):
    """One bad row sends a column to the one-by-one casts: its good rows load as Arrow's
    cast reads them (signs, exponents, offsets, unpadded %y and %j days)."""
    mapping = (
        "source_column,target_column,data_type,format\ncode,code,string,\nn,n,integer,\n"
        'x,x,double,\nd,d,"decimal(10,2)",\nat,at,timestamp,\nday,day,date,%m/%d/%y\n'
        "yday,yday,date,%Y-%j\n"
    )
    source = write(
        "t.csv",
        "code,n,x,d,at,day,yday\n"
        "AA,+12,-1.5e3,.5,2024-01-01T10:00:00+01:00,1/2/24,2024-366\n"
        "BB,x,x,x,x,x,x\n",
    )
    code, summary = run_cli(table_dir(mapping, max_reject_pct=50), source)
    assert code == 0, summary["error"]
    assert sql('SELECT code, n, x, d, "at", "day", yday FROM ref.t_codes') == [
        (
            "AA",
            12,
            -1500.0,
            Decimal("0.50"),
            dt.datetime(2024, 1, 1, 9, 0),
            dt.date(2024, 1, 2),
            dt.date(2024, 12, 31),
        )
    ]
