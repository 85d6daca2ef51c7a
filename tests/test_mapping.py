"""Mapping sheets: every transform and data type, seen in the warehouse; sheet errors."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import openpyxl
import pyarrow.parquet as pq
import pytest

from steps.shared.errors import ConfigError
from steps.shared.mapping.sheet import parse_sheet

SHEET_HEAD = "source_column,target_column,data_type,transform,default,nullable,format\n"

TRANSFORMS = [
    ("strip", "  a b  ", "a b"),
    ("upper", "ny", "NY"),
    ("lower", "NY", "ny"),
    ("title", "NEW YORK CITY", "New York City"),
    ("zfill(5)", "501", "00501"),
    ("zfill(5)", "-12", "-0012"),
    ("replace(-,)", "12-34-5", "12345"),
    ('replace(",",".")', "1,5", "1.5"),
    ('regex_replace("[^0-9]+",)', "A1-B2", "12"),
    ("regex_replace(^(\\d+)-(\\d+)$,\\2/\\1)", "12-34", "34/12"),
    ("regex_replace(a|b,x)", "cab", "cxx"),
    ("nullif(N/A)", "N/A", None),
    ("nullif(N/A)", "ok", "ok"),
    ("strip|upper|zfill(4)", " ab ", "00AB"),
]


@pytest.mark.parametrize(
    ("transform", "raw", "expected"), TRANSFORMS, ids=[t for t, _, _ in TRANSFORMS]
)
def test_transform(transform, raw, expected, table_dir, write, run_cli, sql):
    quoted = transform.replace('"', '""')
    config = table_dir(SHEET_HEAD + f'id,id,integer,,,false,\nv,v,string,"{quoted}",,,\n')
    source = write("t.csv", f'id,v\n1,"{raw}"\n')
    code, summary = run_cli(config, source)
    assert code == 0, summary["error"]
    assert sql("SELECT v FROM ref.t_codes") == [(expected,)]


# Each transform is named after a pandas string method and must give what pandas' own
# string dtype gives, on the values where engines tend to differ.
AS_IN_PANDAS = {
    "strip": lambda s: s.str.strip(),
    "upper": lambda s: s.str.upper(),
    "lower": lambda s: s.str.lower(),
    "title": lambda s: s.str.title(),
    "zfill(5)": lambda s: s.str.zfill(5),
    "zfill(1)": lambda s: s.str.zfill(1),
    "replace(o,0)": lambda s: s.str.replace("o", "0", regex=False),
    "regex_replace((\\d),<\\1>)": lambda s: s.str.replace(r"(\d)", r"<\1>", regex=True),
}
AWKWARD_TEXT = [
    "  o'fallon ",
    "-12",
    "+7",
    "-",
    "+-1",
    "12345678",
    "",
    None,
    "\u00c9COLE",
    "stra\u00dfe",
    "\u0130stanbul",
    "no-break\u00a0",
    "\u3000ideographic\u2003",
    "mc donald's 3rd st",
]


@pytest.mark.parametrize("transform", AS_IN_PANDAS)
def test_transform_gives_what_pandas_gives(transform):
    import pandas as pd
    import pyarrow as pa

    from steps.shared.mapping.transforms import apply_transforms, parse_transforms

    ours = apply_transforms(pa.array(AWKWARD_TEXT, pa.string()), parse_transforms(transform))
    theirs = AS_IN_PANDAS[transform](pd.Series(AWKWARD_TEXT, dtype="str"))
    assert ours.to_pylist() == [None if pd.isna(v) else v for v in theirs]


DATA_TYPES = [
    ("string", "", " 02134", "02134"),
    ("varchar(5)", "", "00501", "00501"),
    ("smallint", "", "-32768", -32768),
    ("integer", "", "2147483647", 2147483647),
    ("bigint", "", "9007199254740993", 9007199254740993),
    ("decimal(9,4)", "", "40.8154", Decimal("40.8154")),
    ("decimal(9,4)", "", "-73.04515", Decimal("-73.0452")),
    (
        "decimal(38,10)",
        "",
        "1234567890123456789012345678.0123456789",
        Decimal("1234567890123456789012345678.0123456789"),
    ),
    ("double", "", "1.5e3", 1500.0),
    ("boolean", "", "Yes", True),
    ("boolean", "", "0", False),
    ("date", "", "2024-02-29", dt.date(2024, 2, 29)),
    ("date", "%m/%d/%Y", "02/29/2024", dt.date(2024, 2, 29)),
    ("timestamp", "", "2024-02-29 13:45:01.123456", dt.datetime(2024, 2, 29, 13, 45, 1, 123456)),
    ("timestamp", "%d.%m.%Y %H:%M", "29.02.2024 13:45", dt.datetime(2024, 2, 29, 13, 45)),
]
# information_schema's name for each mapping type, per warehouse
SQL_TYPES = {
    "duckdb": {
        "string": "VARCHAR",
        "varchar(5)": "VARCHAR",
        "smallint": "SMALLINT",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "decimal(9,4)": "DECIMAL(9,4)",
        "decimal(38,10)": "DECIMAL(38,10)",
        "double": "DOUBLE",
        "boolean": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
    },
    "postgresql": {
        "string": "text",
        "varchar(5)": "character varying",
        "smallint": "smallint",
        "integer": "integer",
        "bigint": "bigint",
        "decimal(9,4)": "numeric",
        "decimal(38,10)": "numeric",
        "double": "double precision",
        "boolean": "boolean",
        "date": "date",
        "timestamp": "timestamp without time zone",
    },
}
SQL_TYPES["redshift"] = {**SQL_TYPES["postgresql"], "string": "character varying"}


@pytest.mark.parametrize(
    ("data_type", "fmt", "raw", "expected"),
    DATA_TYPES,
    ids=[f"{t}-{r}" for t, _, r, _ in DATA_TYPES],
)
def test_data_type(data_type, fmt, raw, expected, table_dir, write, run_cli, sql, dialect):
    config = table_dir(SHEET_HEAD + f'id,id,integer,,,false,\nv,v,"{data_type}",strip,,,{fmt}\n')
    source = write("t.csv", f'id,v\n1,"{raw}"\n2,\n')
    code, summary = run_cli(config, source)
    assert code == 0, summary["error"]
    assert sql("SELECT v FROM ref.t_codes ORDER BY id") == [(expected,), (None,)]
    assert sql(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 't_codes' "
        "AND column_name = 'v'"
    ) == [(SQL_TYPES[dialect][data_type],)]


def test_curated_parquet_is_typed_by_the_mapping(table_dir, write, run_cli):
    config = table_dir(
        SHEET_HEAD + 'a,a,"decimal(9,4)",,,false,\nb,b,timestamp,,,,\nc,c,date,,,,\n'
    )
    code, summary = run_cli(config, write("t.csv", "a,b,c\n1.5,2024-01-02 03:04:05,2024-01-02\n"))
    assert code == 0, summary["error"]
    schema = pq.read_schema(summary["curated_uri"])
    assert [str(schema.field(n).type) for n in "abc"] == [
        "decimal128(9, 4)",
        "timestamp[us]",
        "date32[day]",
    ]
    assert not schema.field("a").nullable


def test_defaults_and_derived_columns(table_dir, write, run_cli, sql, tmp_path):
    config = table_dir(
        SHEET_HEAD
        + (
            "id,id,integer,,,false,\n"
            "country,country,varchar(2),strip,US,false,\n"
            ",load_date,date,,{load_date},false,\n"
            ",run_id,varchar(64),,{run_id},false,\n"
            ",source_key,varchar(512),,{source_key},false,\n"
            ",origin,string,,vendor-x,false,\n"
        )
    )
    source = write("t.csv", "id,country\n1,CA\n2,\n3,   \n")
    code, summary = run_cli(config, source, "--run-id", "run-42")
    assert code == 0, summary["error"]
    rows = sql(
        "SELECT id, country, load_date, run_id, source_key, origin FROM ref.t_codes ORDER BY id"
    )
    today = dt.datetime.now(dt.UTC).date()
    assert rows == [
        (1, "CA", today, "run-42", str(source), "vendor-x"),
        (2, "US", today, "run-42", str(source), "vendor-x"),
        (3, "US", today, "run-42", str(source), "vendor-x"),
    ]


def test_xlsx_mapping_sheet(tmp_path: Path):
    book = openpyxl.Workbook()
    book.active.append(["source_column", "target_column", "data_type", "transform", "nullable"])
    book.active.append(["Code", "code", "varchar(3)", "zfill(3)", False])
    book.active.append(["Rate", "rate", "decimal(10,4)", None, True])
    buffer = io.BytesIO()
    book.save(buffer)
    mapping = parse_sheet(buffer.getvalue(), "m.xlsx")
    assert [(c.source, c.target, str(c.data_type), c.nullable) for c in mapping.columns] == [
        ("Code", "code", "varchar(3)", False),
        ("Rate", "rate", "decimal(10,4)", True),
    ]


SHEET_ERRORS = [
    (
        "a,a,intger,,,,",
        "m.csv, row 2, column 'data_type': unknown data type 'intger' (did you mean 'integer'?)",
    ),
    ("a,a,varchar,,,,", "row 2, column 'data_type': varchar needs one length"),
    ('a,a,"decimal(40,2)",,,,', "decimal(p,s) needs 1 <= p <= 38"),
    ("a,a,integer(4),,,,", "data type 'integer' takes no size"),
    (
        "a,a,string,zfil(5),,,",
        "row 2, column 'transform': unknown transform 'zfil' (did you mean 'zfill'?)",
    ),
    ("a,a,string,zfill,,,", "transform 'zfill' takes 1 argument(s), got 0"),
    ("a,a,string,zfill(x),,,", "zfill needs a whole number"),
    ('a,a,string,"regex_replace(""["",x)",,,', "regex_replace pattern '[' is invalid"),
    # Python's re accepts these; RE2, which runs the transform, does not.
    (
        'a,a,string,"regex_replace(a(?=b),x)",,,',
        "row 2, column 'transform': regex_replace pattern 'a(?=b)' is invalid: invalid perl "
        "operator: (?=",
    ),
    ('a,a,string,"regex_replace((a)\\1,x)",,,', "invalid escape sequence: \\1"),
    (
        'a,a,string,"regex_replace((a),\\2)",,,',
        "Rewrite schema requests 2 matches, but the regexp only has 1",
    ),
    (
        "a,a,integer,,abc,,",
        "row 2, column 'default': default does not fit integer: is not a "
        "valid integer (value 'abc')",
    ),
    (
        ",a,string,,,,",
        "row 2, column 'default': a derived column (no source_column) needs a default",
    ),
    ("a,,string,,,,", "row 2, column 'target_column': target_column is empty"),
    ("a,Zip Code,string,,,,", "identifier 'Zip Code' must be lower-case"),
    ("a,a,string,,,maybe,", "row 2, column 'nullable': nullable must be true or false"),
    ("a,a,string,,,,%Y", "format applies to date, timestamp and double columns, not string"),
    (
        "a,a,double,,,,%Y",
        "row 2, column 'format': the only format of a double column is 'allow_nan_inf'",
    ),
    (
        "a,a,string,,,,\nb,a,string,,,,",
        "row 3, column 'target_column': target_column 'a' appears twice (also row 2)",
    ),
]


@pytest.mark.parametrize(("row", "message"), SHEET_ERRORS, ids=[m[-40:] for _, m in SHEET_ERRORS])
def test_sheet_error_names_row_column_value(row, message):
    with pytest.raises(ConfigError) as caught:
        parse_sheet((SHEET_HEAD + row + "\n").encode(), "m.csv")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "source_column,target_column,data_type,nulable\na,a,string,true\n",
            "m.csv, row 1: unknown mapping sheet column 'nulable' (did you mean 'nullable'?)",
        ),
        (
            "source_column,target_column\na,a\n",
            "m.csv, row 1: mapping sheet has no 'data_type' column",
        ),
        ("", "m.csv: mapping sheet is empty"),
        (SHEET_HEAD, "m.csv: mapping sheet has no column rows"),
    ],
)
def test_sheet_structure_errors(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_sheet(text.encode(), "m.csv")
    assert str(caught.value).startswith(message)


def test_a_38_digit_decimal_beside_a_bad_value_still_loads(table_dir, write, run_cli, sql):
    # One bad value makes the column cast value by value; that path must hold 38 digits too.
    config = table_dir(
        SHEET_HEAD + 'id,id,integer,,,false,\nv,v,"decimal(38,10)",,,,\n', max_reject_pct=50
    )
    source = write("t.csv", "id,v\n1,1234567890123456789012345678.0123456789\n2,x\n")
    code, summary = run_cli(config, source)
    assert code == 0, summary["error"]
    assert (summary["rows_loaded"], summary["rows_rejected"]) == (1, 1)
    assert sql("SELECT v FROM ref.t_codes") == [
        (Decimal("1234567890123456789012345678.0123456789"),)
    ]


def test_a_mapping_workbook_with_a_stray_far_cell_is_refused_before_it_is_read(
    table_dir, write, run_cli, sql
):
    from tests.test_bad_input import stray_cell_workbook

    config = table_dir(SHEET_HEAD, mapping_file="m.xlsx")
    (config.parent / "m.xlsx").write_bytes(stray_cell_workbook())

    code, summary = run_cli(config, write("t.csv", "code,n\nAA,1\n"))

    assert code == 2, summary["error"]
    assert summary["error"]["type"] == "ConfigError"
    assert summary["error"]["message"].startswith(
        f"{config.parent}/m.xlsx: sheet 'S' spans A1:XFD1048576 (1,048,576 rows x 16,384 "
        "columns), more than the 20,000,000 cells refload reads"
    )
    assert sql(
        "SELECT status, error_type FROM etl_audit.run_log WHERE run_id = ?", summary["run_id"]
    ) == [("failed", "ConfigError")]
