"""pandas at the edge: `steps.ingest.frames.preview` and `python -m handler preview`."""

from __future__ import annotations

import datetime as dt
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from handler.cli import main
from steps.ingest.frames import preview
from steps.shared.errors import ConfigError

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "zip,zipcode,varchar(5),strip|zfill(5),,false,\n"
    'lat,latitude,"decimal(9,4)",strip,,true,\n'
    "since,since,date,strip,,true,%m/%d/%Y\n"
)
SOURCE = "zip,lat,since\n501,40.81540,01/31/2024\n2134,42.3,02/29/2024\n501,40.81540,01/31/2024\n"


def test_preview_is_what_a_run_publishes_as_pandas(table_dir, write, tmp_path: Path):
    config = table_dir(MAPPING, primary_key=["zipcode"])
    source = write("zips.csv", SOURCE)

    result = preview(str(config), str(source))

    rows = result.rows
    assert isinstance(rows, pd.DataFrame)
    assert [str(t) for t in rows.dtypes] == [
        "string[pyarrow]",
        "decimal128(9, 4)[pyarrow]",
        "date32[day][pyarrow]",
    ]
    assert rows.to_dict("records") == [
        {"zipcode": "00501", "latitude": Decimal("40.8154"), "since": dt.date(2024, 1, 31)},
        {"zipcode": "02134", "latitude": Decimal("42.3000"), "since": dt.date(2024, 2, 29)},
    ]
    assert result.rejects.empty
    assert result.summary == {
        "table": "t_codes",
        "source": str(source),
        "rows_read": 3,
        "rows_rejected": 0,
        "duplicates_dropped": 1,
        "rows_written": 2,
        "refused": None,
    }
    # Nothing was published or written where a run would write.
    assert not list(tmp_path.glob("*.duckdb")) and not (tmp_path / "curated").exists()

    code = main(["run", "--config", str(config), "--source", str(source)])  # default warehouse
    assert code == 0
    database = next(tmp_path.glob("*.duckdb"))
    with duckdb.connect(str(database), read_only=True) as con:
        published = con.execute("SELECT * FROM ref.t_codes ORDER BY zipcode").fetchall()
    assert published == [tuple(r) for r in rows.itertuples(index=False)]


def test_preview_shows_every_reject_even_past_the_limit(table_dir, write, capsys):
    config = table_dir(MAPPING, max_reject_pct=10)
    source = write("zips.csv", "zip,lat,since\n501,north,01/31/2024\n2134,42.3,2024-02-29\n")

    result = preview(str(config), str(source))

    assert result.rows.empty
    assert result.rejects.to_dict("records") == [
        {
            "line": 2,
            "column": "latitude",
            "value": "north",
            "reason": "is not a valid decimal(9,4)",
        },
        {
            "line": 3,
            "column": "since",
            "value": "2024-02-29",
            "reason": "does not match format '%m/%d/%Y'",
        },
    ]
    assert result.summary["refused"] == (
        "2 of 2 row(s) rejected (100.00% > max_reject_pct 10): a real run would load nothing"
    )

    code = main(["preview", "--config", str(config), "--source", str(source)])
    out = capsys.readouterr().out
    assert code == 2
    assert "t_codes: read 2  rejected 2  duplicates 0  would load 0" in out
    assert "3 since 2024-02-29 does not match format '%m/%d/%Y'" in " ".join(out.split())
    assert "a real run would load nothing" in out


def test_preview_command_prints_the_rows(table_dir, write, capsys):
    config = table_dir(MAPPING)
    source = write("zips.csv", SOURCE)

    code = main(["preview", "--config", str(config), "--source", str(source), "--rows", "1"])

    out = capsys.readouterr().out
    assert code == 0
    assert "first 1 row(s):" in out
    assert out.split("first 1 row(s):\n")[1].splitlines() == [
        "zipcode  latitude      since",
        "  00501   40.8154 2024-01-31",
    ]


def test_preview_of_bad_input_names_file_row_column(table_dir, write, capsys):
    config = table_dir(MAPPING, primary_key=["zipcode"])
    source = write("zips.csv", "zip,lat,since\n501,1,01/31/2024\n00501,2,01/31/2024\n")

    code = main(["preview", "--config", str(config), "--source", str(source)])

    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"RejectedInput: {source}, column 'zipcode': duplicate primary key "
        "(zipcode='00501') on lines 2, 3; 1 key(s) appear more than once in this file"
    )


def test_preview_without_pandas_says_how_to_get_it(table_dir, write, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    config = table_dir(MAPPING)

    with pytest.raises(ConfigError, match=r"pip install 'refload\[pandas\]'"):
        preview(str(config), str(write("zips.csv", SOURCE)))


def test_preview_of_an_output_written_as_parts_shows_every_row(
    table_dir, write, capsys, monkeypatch
):
    """From PARTS_FROM_ROWS rows ingest writes parts and a manifest: the preview reads
    every part, in the file's order, as a run would publish them."""
    import steps.ingest

    monkeypatch.setattr(steps.ingest, "BATCH_ROWS", 10)
    monkeypatch.setattr(steps.ingest, "PARTS_FROM_ROWS", 20)
    config = table_dir(MAPPING, primary_key=["zipcode"])
    lines = [f"{zipcode},40.5,01/31/2024" for zipcode in range(100, 145)]
    source = write("zips.csv", "zip,lat,since\n" + "\n".join(lines) + "\n")

    result = preview(str(config), str(source))

    assert list(result.rows["zipcode"]) == [f"{z:05d}" for z in range(100, 145)]
    assert result.summary["rows_written"] == 45
    code = main(["preview", "--config", str(config), "--source", str(source), "--rows", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "t_codes: read 45  rejected 0  duplicates 0  would load 45" in out
    assert out.split("first 2 row(s):\n")[1].splitlines()[1:] == [
        "  00100   40.5000 2024-01-31",
        "  00101   40.5000 2024-01-31",
    ]
