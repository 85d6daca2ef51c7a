"""Ingest's contract at its edges: empty key values and the max_reject_pct threshold."""

from __future__ import annotations

import pytest

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,,\nn,n,integer,,,,\n"
)


def test_an_empty_primary_key_value_rejects_the_file(table_dir, write, run_cli, sql):
    config = table_dir(MAPPING, load_mode="upsert", primary_key=["code"])
    code, summary = run_cli(config, write("t.csv", "code,n\nAA,1\n  ,2\nCC,3\n"))
    assert code == 2
    assert summary["error"]["type"] == "RejectedInput"
    assert "line 3" in summary["error"]["message"]
    assert "code" in summary["error"]["message"]
    assert sql("SELECT COUNT(*) FROM etl_audit.load_ledger") == [(0,)]


@pytest.mark.parametrize(
    ("max_reject_pct", "exit_code"),
    [(25, 0), (24.99, 2)],
    ids=["at-the-threshold-loads", "just-below-rejects"],
)
def test_max_reject_pct_is_inclusive(max_reject_pct, exit_code, table_dir, write, run_cli):
    config = table_dir(MAPPING, max_reject_pct=max_reject_pct)
    code, summary = run_cli(config, write("t.csv", "code,n\nAA,1\nBB,x\nCC,3\nDD,4\n"))
    assert code == exit_code, summary["error"]
    if exit_code == 0:
        assert (summary["rows_rejected"], summary["rows_loaded"]) == (1, 3)
    else:
        assert (
            "1 of 4 row(s) rejected (25.00% > max_reject_pct 24.99)"
            in (summary["error"]["message"])
        )
