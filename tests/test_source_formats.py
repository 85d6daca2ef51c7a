"""`source_format` aliases and formats decided by the source's extension, through `run`."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.conftest import workbook

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(5),strip|zfill(3),,false,\nname,name,string,strip,,,\n"
)
EXPECTED = [("004", "Afghanistan"), ("248", "Åland Islands")]
ROWS = [["code", "name"], ["004", "Afghanistan"], ["248", "Åland Islands"]]


def _xlsx() -> bytes:
    return workbook({"Sheet": ROWS})


def _lines(separator: str) -> bytes:
    return "".join(separator.join(row) + "\n" for row in ROWS).encode()


def _json_lines() -> bytes:
    header, *rows = ROWS
    return "".join(json.dumps(dict(zip(header, r, strict=True))) + "\n" for r in rows).encode()


# (case, config keys, file name, content)
FORMAT_CASES = [
    ("xlsx", {"source_format": "xlsx"}, "t.xlsx", _xlsx()),
    ("xls alias on an xlsx workbook", {"source_format": "xls"}, "t.bin", _xlsx()),
    ("xlsx by extension", {}, "t.xlsx", _xlsx()),
    ("jsonl", {"source_format": "jsonl"}, "t.txt", _json_lines()),
    ("ndjson", {"source_format": "ndjson"}, "t.txt", _json_lines()),
    ("ndjson.gz by extension", {}, "t.ndjson.gz", gzip.compress(_json_lines())),
    ("tsv", {"source_format": "tsv"}, "t.txt", _lines("\t")),
    ("tsv by extension", {}, "t.tsv", _lines("\t")),
    ("tsv.gz by extension", {}, "t.tsv.gz", gzip.compress(_lines("\t"))),
    ("tsv, own delimiter", {"source_format": "tsv", "delimiter": ";"}, "t.tsv", _lines(";")),
    ("unknown extension stays csv", {}, "t.dat", _lines(",")),
    ("psv.gz with a delimiter", {"delimiter": "|"}, "t.psv.gz", gzip.compress(_lines("|"))),
]


@pytest.mark.parametrize(
    ("options", "name", "content"), [c[1:] for c in FORMAT_CASES], ids=[c[0] for c in FORMAT_CASES]
)
def test_source_format_alias_or_extension(options, name, content, table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, **options)
    code, summary = run_cli(config, write(name, content))
    assert code == 0, summary["error"]
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == EXPECTED


def test_explicit_format_wins_over_the_extension(table_dir, write, run_cli):
    config = table_dir(MAPPING, source_format="csv")
    code, summary = run_cli(config, write("t.xlsx", _xlsx()))
    assert code == 2
    assert summary["status"] == "rejected"
