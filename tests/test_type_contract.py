"""The type contract, checked before anything is staged, on every warehouse; table drift."""

from __future__ import annotations

import pytest

# SQL behaviour differs between warehouses here: every test runs on all three.
pytestmark = pytest.mark.all_warehouses

HEAD = "source_column,target_column,data_type,transform,default,nullable,format\n"

CONTRACT = [
    ('"varchar(14)"', "Côte d'Ivoire", None),
    ('"varchar(13)"', "Côte d'Ivoire", "is 14 bytes, longer than varchar(13)"),
    ('"decimal(5,2)"', "123.456", None),
    ('"decimal(5,2)"', "1234.5", "has more digits than decimal(5,2)"),
    ("smallint", "32767", None),
    ("smallint", "32768", "is out of range for smallint"),
    ("bigint", "-9223372036854775809", "is out of range for bigint"),
    ("timestamp", "2024-02-29 13:45:01.123456", None),
]


@pytest.mark.parametrize(
    ("data_type", "value", "problem"), CONTRACT, ids=[f"{t}-{v}" for t, v, _ in CONTRACT]
)
def test_type_contract(data_type, value, problem, table_dir, write, run_cli, sql):
    config = table_dir(HEAD + f"v,v,{data_type},,,,\n")
    source = write("t.csv", f'v\n"{value}"\n')
    code, summary = run_cli(config, source)
    if problem is None:
        assert code == 0, summary["error"]
        assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(1,)]
    else:
        assert code == 2
        message = summary["error"]["message"]
        assert message.startswith(
            f"{source}, line 2, column 'v': {problem} (value {value!r}); 1 of 1 row(s) rejected "
            "(100.00% > max_reject_pct 0); all problems are listed in "
        )
        assert message.endswith(".rejects.parquet")


def test_retyped_column_is_drift(table_dir, write, run_cli):
    assert run_cli(table_dir(HEAD + "v,v,integer,,,,\n"), write("a.csv", "v\n1\n"))[0] == 0
    code, summary = run_cli(table_dir(HEAD + 'v,v,"decimal(9,2)",,,,\n'), write("b.csv", "v\n1\n"))
    assert code == 2
    assert (
        "column v is integer in the table, decimal(9,2) in the mapping"
        in (summary["error"]["message"])
    )


def test_new_nullable_columns_are_added_when_allowed(table_dir, write, run_cli, sql):
    assert run_cli(table_dir(HEAD + "v,v,integer,,,,\n"), write("a.csv", "v\n1\n"))[0] == 0
    grown = table_dir(HEAD + "v,v,integer,,,,\nw,w,varchar(3),,,,\n", allow_new_columns=True)
    code, summary = run_cli(grown, write("b.csv", "v,w\n2,x\n"))
    assert code == 0, summary["error"]
    assert sql("SELECT v, w FROM ref.t_codes") == [(2, "x")]
    required = table_dir(
        HEAD + "v,v,integer,,,,\nw,w,varchar(3),,,,\nz,z,integer,,,false,\n", allow_new_columns=True
    )
    code, summary = run_cli(required, write("c.csv", "v,w,z\n3,y,1\n"))
    assert code == 2
    assert "mapping columns missing from the table: z" in summary["error"]["message"]
