"""Bad input: exit 2, one message naming file, line, column and value; target untouched;
the failed run recorded and alerted."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

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
        b"label,n\nAA,1\n",
        "t.csv, line 1, column 'code': mapped source column 'code' is not in the header; "
        "header: label, n",
    ),
    ("misspelt header", b"cod,n\nAA,1\n", "is not in the header (did you mean 'cod'?)"),
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
