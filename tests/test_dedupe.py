"""Both duplicate finders (Arrow for one-chunk files, DuckDB for streamed ones) agree."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from steps.ingest.dedupe import POSITION, ArrowFinder, DuckDBFinder, RepeatedKeys

SMALL = pa.table(
    {
        "code": ["AA", "BB", "AA", None, "AA", None, "BB"],
        "n": [1, 2, 1, 7, 3, 7, 2],
        POSITION: pa.array(range(7), pa.int64()),
    }
)


@pytest.fixture(params=["arrow", "duckdb"])
def finder(request, tmp_path: Path):
    with ArrowFinder() if request.param == "arrow" else DuckDBFinder(tmp_path) as found:
        yield found


def test_exact_duplicates_keep_the_first_row_and_treat_nulls_as_equal(finder):
    assert finder.exact_duplicates(SMALL).to_pylist() == [2, 5, 6]


def test_rows_with_a_repeated_key(finder):
    assert sorted(finder.positions_of_repeated_keys(SMALL, ["code"]).to_pylist()) == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    unique = SMALL.slice(0, 2)
    assert finder.positions_of_repeated_keys(unique, ["code"]).to_pylist() == []


def test_the_first_repeated_key_in_file_order_with_its_rows(finder):
    rows = SMALL.filter(pa.array([c is not None for c in SMALL.column("code").to_pylist()]))
    assert finder.repeated_keys(rows, ["code", "n"]) == RepeatedKeys(2, ("AA", 1), [0, 2])
    assert finder.repeated_keys(rows.slice(3), ["code"]) is None  # AA (4) and BB (6) once


def test_the_first_null_in_key_order(finder):
    assert finder.first_null_key(SMALL, ["n", "code"]) == ("code", 3)
    assert finder.first_null_key(SMALL, ["n"]) is None


def _generated(rows: int) -> pa.Table:
    rng = random.Random(7)
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(30)) for _ in range(rows)]
    return pa.table(
        {
            "day": pa.array(days, pa.date32()),
            "rate": pa.array(
                [Decimal(rng.randrange(5)) / 4 for _ in range(rows)], pa.decimal128(9, 4)
            ),
            "ok": pa.array([rng.choice([True, False, None]) for _ in range(rows)]),
            "city": pa.array([rng.choice(["Fargo", "El Paso", None]) for _ in range(rows)]),
            POSITION: pa.array(range(rows), pa.int64()),
        }
    )


def test_both_finders_agree_on_typed_columns(tmp_path: Path):
    rows = _generated(5_000)
    key = ["day", "rate", "ok"]
    with ArrowFinder() as arrow, DuckDBFinder(tmp_path) as duck:
        assert arrow.exact_duplicates(rows).to_pylist() == duck.exact_duplicates(rows).to_pylist()
        assert len(arrow.exact_duplicates(rows)) > 0
        assert sorted(arrow.positions_of_repeated_keys(rows, key).to_pylist()) == sorted(
            duck.positions_of_repeated_keys(rows, key).to_pylist()
        )
        assert arrow.repeated_keys(rows, key) == duck.repeated_keys(rows, key)


def test_duckdb_spills_to_scratch_past_eight_chunks(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(16 << 20))
    with DuckDBFinder(tmp_path) as duck:
        settings = duck.con.sql(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchall()
    assert settings == [("122.0 MiB", str(tmp_path / "duckdb"))]  # 128 MB


def test_duckdb_searches_a_spilled_file_as_it_would_the_table(tmp_path: Path):
    """Streamed files are searched on disk (no finder call loads every row)."""
    import pyarrow.dataset as ds
    import pyarrow.ipc as ipc

    rows = _generated(5_000)
    with ipc.new_file(tmp_path / "typed.arrow", rows.schema) as spill:
        spill.write_table(rows, max_chunksize=700)
    on_disk = ds.dataset(tmp_path / "typed.arrow", format="ipc")
    key = ["day", "rate", "ok"]
    with ArrowFinder() as arrow, DuckDBFinder(tmp_path) as duck:
        assert (
            duck.exact_duplicates(on_disk).to_pylist() == arrow.exact_duplicates(rows).to_pylist()
        )
        assert sorted(duck.positions_of_repeated_keys(on_disk, key).to_pylist()) == sorted(
            arrow.positions_of_repeated_keys(rows, key).to_pylist()
        )
        assert duck.first_null_key(on_disk, key) == arrow.first_null_key(rows, key)
        assert duck.first_null_key(on_disk, key) is not None


SIGNED_ZEROS = "source_column,target_column,data_type\ncode,code,string\nx,x,double\n"
FILLER = "".join(f"F{i},{i + 2}\n" for i in range(40))  # rows enough for many chunks


@pytest.mark.parametrize("chunk", [None, 16], ids=["in-memory", "streamed"])
def test_minus_zero_and_zero_are_one_value_on_every_path(
    chunk, table_dir, write, run_cli, sql, monkeypatch
):
    if chunk:  # a few rows per chunk: the rows spill and DuckDB looks for repeats
        monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(chunk))
    source = write("t.csv", f"code,x\nAA,0.0\nBB,-0\n{FILLER}AA,-0.0\nBB,1\n")
    code, summary = run_cli(table_dir(SIGNED_ZEROS), source)
    assert code == 0, summary["error"]
    assert (summary["rows_read"], summary["duplicates_dropped"]) == (44, 1)
    assert sql("SELECT code, x FROM ref.t_codes WHERE code < 'F' ORDER BY code, x") == [
        ("AA", 0.0),
        ("BB", -0.0),
        ("BB", 1.0),
    ]

    keyed = table_dir(SIGNED_ZEROS, name="t_keyed", primary_key=["x"])
    code, summary = run_cli(keyed, write("k.csv", f"code,x\nAA,0.0\n{FILLER}CC,-0.0\n"))
    assert code == 2
    assert summary["error"]["message"].startswith(
        f"{source.parent}/k.csv, column 'x': duplicate primary key (x=0.0) on lines 2, 43"
    )

    # The key shown is 0.0 whichever zero comes first or a thread sees first.
    code, summary = run_cli(keyed, write("m.csv", f"code,x\nAA,-0.0\n{FILLER}CC,0\nDD,-0\n"))
    assert code == 2
    assert summary["error"]["message"].startswith(
        f"{source.parent}/m.csv, column 'x': duplicate primary key (x=0.0) on lines 2, 43, 44"
    )
