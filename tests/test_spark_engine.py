"""The Spark engine gives what the Lambda engine gives: the same curated rows, rejects,
summary and error messages, on the shared source, transform, type and bad-input cases.

Every CSV is cut into ranges of a few bytes (REFLOAD_SPARK_SPLIT_BYTES), so records and
line numbers cross range boundaries, quoted newlines included.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from handler.cli import main
from steps import ingest
from steps.ingest import spark as spark_ingest
from steps.ingest.splits import plan_splits
from steps.shared.config.table import load_table_config
from steps.shared.errors import RefloadError
from steps.shared.io import storage
from steps.shared.provenance import LINE_COLUMN
from tests.conftest import CONFIGS, SAMPLES, workbook
from tests.test_bad_input import BAD_INPUTS, GOOD, MAPPING
from tests.test_mapping import DATA_TYPES, SHEET_HEAD, TRANSFORMS
from tests.test_sources import COUNTRY_ROWS, CSV_CASES, EXPECTED, WIDE_CASES
from tests.test_sources import MAPPING as CODES_MAPPING
from tests.warehouses import STATEMENTS

SPLIT_BYTES = 24


@pytest.fixture
def both(spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Ingest a file with both engines; returns each one's outcome, paths made neutral."""
    monkeypatch.setenv("REFLOAD_SPARK_SPLIT_BYTES", str(SPLIT_BYTES))

    def outcome(engine: str, config: Path, source: Path) -> dict[str, Any]:
        root = tmp_path / engine
        payload = {"source": str(source), "run_id": "r1", "curated_root": str(root)}
        spec = load_table_config(str(config))
        rejects = sorted(root.rglob("*.rejects.parquet"))
        try:
            if engine == "lambda":
                result = ingest.ingest_spec(spec, payload)
            else:
                result = spark_ingest.run(spec, payload, spark)
        except RefloadError as error:
            rejects = sorted(root.rglob("*.rejects.parquet"))
            return {
                "error": (type(error).__name__, error.message.replace(str(root), "<root>")),
                "rejects": pq.read_table(rejects[0]).to_pylist() if rejects else None,
            }
        parts = storage.curated_parts(result["curated_uri"])
        curated = pa.concat_tables(pq.read_table(p) for p in parts)
        if LINE_COLUMN in curated.column_names:  # each row's source line: Spark writes none
            curated = curated.drop_columns([LINE_COLUMN])
        return {
            "summary": {k: v for k, v in result.items() if not k.endswith("_uri")},
            "rows": curated.to_pylist(),
            "schema": curated.schema,
            "rejects": pq.read_table(result["rejects_uri"]).to_pylist()
            if result["rejects_uri"]
            else None,
        }

    def run(config: Path, source: Path) -> dict[str, Any]:
        lambda_outcome = outcome("lambda", config, source)
        spark_outcome = outcome("spark", config, source)
        assert spark_outcome == lambda_outcome
        return lambda_outcome

    return run


# With no earlier curated file to compare values with, a misspelt header is named as a
# rename by its name alone (tests/test_renames.py).
FIRST_RUN_MESSAGES = {
    "misspelt header": "column 'code' is missing; new column 'cod' has the closest name",
}


@pytest.mark.parametrize(
    ("content", "message"),
    [(c[1], FIRST_RUN_MESSAGES.get(c[0], c[2])) for c in BAD_INPUTS],
    ids=[c[0] for c in BAD_INPUTS],
)
def test_bad_input_gives_the_same_error(content, message, both, table_dir, write):
    result = both(table_dir(MAPPING), write("t.csv", content))
    assert message in result["error"][1]


@pytest.mark.parametrize(
    ("options", "content"), [c[1:] for c in CSV_CASES], ids=[c[0] for c in CSV_CASES]
)
def test_csv_variants_give_the_same_rows(options, content, both, table_dir, write):
    result = both(table_dir(CODES_MAPPING, **options), write("t.csv", content))
    assert [(r["code"], r["name"]) for r in result["rows"]] == EXPECTED


# Other formats are one range, read by the same reader: rows, row numbers and rejects.
OTHER_FORMATS = [
    (
        "excel with a preamble and a bad row",
        {"source_format": "excel", "header_row": 2, "max_reject_pct": 50},
        "t.xlsx",
        workbook({"S": [*COUNTRY_ROWS, [123456, "too long a code"]]}),
    ),
    (
        "json lines with a bad line",
        {"source_format": "json", "max_reject_pct": 50},
        "t.json",
        '{"code": 4, "name": "Afghanistan"}\n{"code": "248", "name": "x"}\n'
        '{"code": "123456", "name": "too long"}\n',
    ),
]


@pytest.mark.parametrize(
    ("options", "name", "content"),
    [c[1:] for c in OTHER_FORMATS],
    ids=[c[0] for c in OTHER_FORMATS],
)
def test_other_formats_give_the_same_rows_and_rejects(
    options, name, content, both, table_dir, write
):
    result = both(table_dir(CODES_MAPPING, **options), write(name, content))
    assert [r["code"] for r in result["rows"]] == ["004", "248"]
    assert [r["value"] for r in result["rejects"]] == ["123456"]


def _csv_text(rows: list[list[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def test_every_transform_gives_the_same_value(both, table_dir, write):
    sheet = (
        SHEET_HEAD
        + "id,id,integer,,,false,\n"
        + "".join(
            f'v{i},v{i},string,"{t.replace(chr(34), chr(34) * 2)}",,,\n'
            for i, (t, _, _) in enumerate(TRANSFORMS)
        )
    )
    header = ["id"] + [f"v{i}" for i in range(len(TRANSFORMS))]
    source = _csv_text([header, [1] + [raw for _, raw, _ in TRANSFORMS]])
    result = both(table_dir(sheet), write("t.csv", source))
    assert result["rows"] == [{"id": 1} | {f"v{i}": e for i, (_, _, e) in enumerate(TRANSFORMS)}]


def test_every_data_type_gives_the_same_value_and_the_same_rejects(both, table_dir, write):
    sheet = (
        SHEET_HEAD
        + "id,id,integer,,,false,\n"
        + "".join(f'v{i},v{i},"{t}",strip,,,{fmt}\n' for i, (t, fmt, _, _) in enumerate(DATA_TYPES))
    )
    header = ["id"] + [f"v{i}" for i in range(len(DATA_TYPES))]
    rows = [
        header,
        [1] + [raw for _, _, raw, _ in DATA_TYPES],
        [2] + [""] * len(DATA_TYPES),
        [3] + ["not\na value"] * len(DATA_TYPES),  # one bad row, a problem per typed column
    ]
    result = both(table_dir(sheet, max_reject_pct=50), write("t.csv", _csv_text(rows)))
    assert result["rows"] == [
        {"id": 1} | {f"v{i}": e for i, (_, _, _, e) in enumerate(DATA_TYPES)},
        {"id": 2} | {f"v{i}": None for i in range(len(DATA_TYPES))},
    ]
    assert {r["line"] for r in result["rejects"]} == {4}
    assert {r["column"] for r in result["rejects"]} == {
        f"v{i}" for i, (t, _, _, _) in enumerate(DATA_TYPES) if t != "string"
    }


MULTILINE = (
    'code,n\nAA,1\n"B\nB",x\n"C,""",3\nDD,4,extra\n"EE",5\nAA,1\n"F\n\nF",\n"GG","y"\nHH,8\n'
)


def test_quoted_newlines_across_ranges_keep_lines_rejects_and_duplicates(both, table_dir, write):
    config, source = table_dir(MAPPING, max_reject_pct=50), write("t.csv", MULTILINE)
    splits, header = plan_splits(source, str(source), load_table_config(str(config)), SPLIT_BYTES)
    # Each range starts at a record: "B\nB" and "F\n\nF" (quoted newlines) stay whole.
    assert [(s.first_line, MULTILINE.encode()[s.start : s.start + 4]) for s in splits] == [
        (2, b"AA,1"),
        (7, b'"EE"'),
        (13, b"HH,8"),
    ]
    assert header == b"code,n\n"
    result = both(config, source)
    assert [(r["code"], r["n"]) for r in result["rows"]] == [
        ("AA", 1),
        ('C,"', 3),
        ("EE", 5),
        ("HH", 8),
    ]
    assert [(r["line"], r["column"], r["value"]) for r in result["rejects"]] == [
        (3, "n", "x"),
        (6, None, "DD,4,extra"),
        (9, "code", "F\n\nF"),
        (12, "n", "y"),
    ]
    assert result["summary"]["duplicates_dropped"] == 1


# (case, config options, file, the error it gives or the duplicates it drops)
KEYED = [
    (
        "repeated key",
        {"primary_key": ["code"]},
        'code,n\nAA,1\nBB,2\n"A\nA",0\nAA,3\nBB,2\nAA,4\n',
        "column 'code': duplicate primary key (code='AA') on lines 2, 6, 8; 1 key(s) appear",
    ),
    (
        "empty key",
        {"primary_key": ["n", "code"]},
        "code,n\nAA,1\nBB,\nCC,\n",
        "t.csv, line 3, column 'n': primary key column is empty",
    ),
    ("exact duplicates, key", {"primary_key": ["code"]}, "code,n\nAA,1\nBB,2\nAA,1\n AA ,1\n", 2),
    ("exact duplicates, no key", {}, "code,n\nAA,1\nAA,1\nBB,2\nAA,1\n", 2),
    ("dedupe off", {"dedupe": False, "load_mode": "append"}, "code,n\nAA,1\nAA,1\n", 0),
    (
        "repeated key, dedupe off",
        {"dedupe": False, "primary_key": ["code"]},
        "code,n\nAA,1\nAA,1\n",
        "duplicate primary key (code='AA') on lines 2, 3",
    ),
]


@pytest.mark.parametrize(
    ("options", "content", "expected"), [c[1:] for c in KEYED], ids=[c[0] for c in KEYED]
)
def test_keys_and_duplicates_give_the_same_outcome(
    options, content, expected, both, table_dir, write
):
    result = both(table_dir(MAPPING, **options), write("t.csv", content))
    if isinstance(expected, str):
        assert expected in result["error"][1]
    else:
        assert result["summary"]["duplicates_dropped"] == expected


def test_a_file_of_one_range_is_read_as_the_lambda_engine_reads_it(tmp_path: Path):
    spec = load_table_config(str(CONFIGS / "dim_currency.json"))
    path = tmp_path / "t.csv"
    path.write_bytes(b"code\n" + b"AA\n" * 10)
    splits, header = plan_splits(path, str(path), spec, 1 << 20)
    assert [(s.start, s.end, s.whole) for s in splits] == [(0, 35, True)] and header == b""


def _table_rows(warehouse: Path, table: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(f"SELECT * FROM public.{table} ORDER BY ALL").fetchall()


def test_the_zip_sample_loads_with_engine_spark_as_with_the_default(
    spark, tmp_path, capsys, monkeypatch
):
    """`python -m handler run --engine spark`: the same table, tests and summary, on the
    one sample larger than the cases above (42,789 rows in 3 ranges of 1 MiB). The other
    samples are their cases: country an .xlsx, currency a CSV, subdivision a gzipped
    pipe-separated file (OTHER_FORMATS, CSV_CASES), so Spark does not run them again."""
    monkeypatch.setenv("REFLOAD_SPARK_SPLIT_BYTES", str(1 << 20))  # the ZIP file: 3 ranges
    summaries: dict[str, list[dict[str, Any]]] = {}
    for engine in ("default", "spark"):
        warehouse = tmp_path / f"{engine}.duckdb"
        summaries[engine] = []
        for name in ("zipcode",):
            capsys.readouterr()
            code = main(
                [
                    "run",
                    "--config",
                    str(CONFIGS / f"dim_{name}.json"),
                    "--source",
                    str(next((SAMPLES / name).glob("*/*"))),
                    "--warehouse",
                    f"duckdb:///{warehouse}",
                    "--curated-root",
                    str(tmp_path / engine),
                    "--run-id",
                    f"run-{name}",
                    "--json",
                    *(["--engine", "spark"] if engine == "spark" else []),
                ]
            )
            summary = json.loads(capsys.readouterr().out)
            assert code == 0, summary["error"]
            # What a run costs is its own: the engines take different times.
            assert summary.pop("cost")["transitions"] == 8
            summaries[engine].append({k: v for k, v in summary.items() if not k.endswith("_uri")})
    assert summaries["spark"] == summaries["default"]
    assert [s["rows_loaded"] for s in summaries["spark"]] == [42_789]
    for name in ("dim_zipcode",):
        assert _table_rows(tmp_path / "spark.duckdb", name) == _table_rows(
            tmp_path / "default.duckdb", name
        )


@pytest.mark.parametrize(
    ("options", "flags", "engine"),
    [
        ({"engine": "spark"}, [], "spark"),
        ({"engine": "spark"}, ["--engine", "lambda"], "lambda"),
        ({}, ["--engine", "spark"], "spark"),
        ({"engine": "auto", "spark_above_bytes": 16}, [], "spark"),  # the file has 17 bytes
        ({"engine": "auto", "spark_above_bytes": 17}, [], "lambda"),
    ],
)
def test_the_config_or_the_command_line_chooses_the_engine(
    options, flags, engine, spark, table_dir, write, run_cli, sql
):
    code, summary = run_cli(table_dir(MAPPING, **options), write("t.csv", GOOD), *flags)
    assert code == 0, summary["error"]
    # The Spark engine's curated output is a manifest of part files; Lambda's one file.
    suffix = ".manifest" if engine == "spark" else ".parquet"
    assert summary["curated_uri"].endswith(suffix)
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]


@pytest.mark.parametrize("options", [{}, {"primary_key": ["code"]}], ids=["no key", "key"])
def test_duplicates_too_many_to_broadcast_keep_file_order(
    options, both, table_dir, write, monkeypatch
):
    monkeypatch.setattr(spark_ingest, "BROADCAST_ROWS", 0)  # the shuffled joins, re-sorted
    rows = "".join(f"C{i % 7},{i % 7}\n" for i in range(40))
    result = both(table_dir(MAPPING, **options), write("t.csv", "code,n\n" + rows))
    assert [r["code"] for r in result["rows"]] == [f"C{i}" for i in range(7)]
    assert result["summary"]["duplicates_dropped"] == 33


@pytest.mark.all_warehouses
def test_load_publishes_exactly_the_spark_runs_parts_on_every_warehouse(
    spark, table_dir, write, run_cli, sql, dialect, monkeypatch, tmp_path, capsys, warehouse_url
):
    monkeypatch.setenv("REFLOAD_SPARK_SPLIT_BYTES", "24")
    config = table_dir(MAPPING)
    source = write("t.csv", "code,n\n" + "".join(f"C{i},{i}\n" for i in range(12)))
    code, summary = run_cli(config, source, "--engine", "spark")
    assert code == 0, summary["error"]
    parts = storage.curated_parts(summary["curated_uri"])
    assert len(parts) > 1
    # A part left in the folder by another run is not the run's: a list, never a glob.
    # (The load step again, on the run's output: Spark need not run twice for that.)
    stale = Path(parts[0]).with_name("part-99999.parquet")
    stale.write_bytes(Path(parts[0]).read_bytes())
    [(content_hash,)] = sql(
        "SELECT content_hash FROM etl_audit.load_ledger WHERE run_id = ?", summary["run_id"]
    )
    event = tmp_path / "load.json"
    event.write_text(
        json.dumps(
            {
                "step": "load",
                "config": str(config),
                "curated_uri": summary["curated_uri"],
                "content_hash": content_hash,
                "run_id": "reload-1",
                "force": True,
            }
        )
    )
    capsys.readouterr()
    code = main(["replay", str(event), "--warehouse", warehouse_url, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary["error"]
    assert summary["published"] is True
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY n") == [(f"C{i}", i) for i in range(12)]
    if dialect == "redshift":
        copies = [s for s in STATEMENTS if s.startswith("COPY")]
        assert copies and all(
            f"FROM '{summary['curated_uri']}'" in s and s.endswith("MANIFEST FILLRECORD")
            for s in copies
        )


def test_switching_engine_on_the_same_file_leaves_no_part_a_manifest_does_not_list(
    spark, table_dir, write, run_cli, sql, tmp_path, monkeypatch
):
    """Both engines write an output of parts; one run written again on the other engine (the
    same run id: a retry) writes a folder of its own, so no folder holds a part its
    manifest does not list, and what the earlier manifest lists stays as it listed it."""
    monkeypatch.setenv("REFLOAD_SPARK_SPLIT_BYTES", "24")
    monkeypatch.setattr(ingest, "BATCH_ROWS", 2)
    monkeypatch.setattr(ingest, "PARTS_FROM_ROWS", 4)
    config = table_dir(MAPPING)
    source = write("t.csv", "code,n\n" + "".join(f"C{i},{i}\n" for i in range(12)))
    outputs = []
    for engine in ("spark", "lambda", "spark"):
        code, summary = run_cli(config, source, "--engine", engine, "--run-id", "r1", "--force")
        assert code == 0, summary["error"]
        outputs.append(summary["curated_uri"])
        assert sql("SELECT code, n FROM ref.t_codes ORDER BY n") == [
            (f"C{i}", i) for i in range(12)
        ]

    manifests = sorted((tmp_path / "curated" / "t_codes").rglob("*.manifest"))
    assert sorted(map(str, manifests)) == sorted(outputs)
    for manifest in manifests:
        entries = json.loads(manifest.read_text())["entries"]
        listed = {e["url"]: e["meta"]["content_length"] for e in entries}
        assert listed == {str(p): p.stat().st_size for p in manifest.parent.glob("*.parquet")}


def test_minus_zero_and_zero_are_one_value_on_both_engines(both, table_dir, write):
    from tests.test_dedupe import SIGNED_ZEROS

    result = both(table_dir(SIGNED_ZEROS), write("t.csv", "code,x\nAA,0.0\nAA,-0.0\nBB,-0\n"))
    assert result["summary"]["duplicates_dropped"] == 1
    keyed = table_dir(SIGNED_ZEROS, name="t_keyed", primary_key=["x"])
    result = both(keyed, write("k.csv", "code,x\nAA,0.0\nBB,1\nCC,-0.0\n"))
    assert "column 'x': duplicate primary key (x=0.0) on lines 2, 4" in result["error"][1]


def test_the_first_rejections_are_kept_and_all_counted_on_both_engines(
    both, table_dir, write, monkeypatch
):
    monkeypatch.setenv("REFLOAD_MAX_REJECTS_KEPT", "2")
    source = write("t.csv", "code,n\nAA,x\nBB,2\nCC,y\nDD,z\nEE,5,6\n")
    result = both(table_dir(MAPPING, max_reject_pct=100), source)
    assert (result["summary"]["rows_read"], result["summary"]["rows_rejected"]) == (5, 4)
    assert [r["line"] for r in result["rejects"]] == [2, 4]
    result = both(table_dir(MAPPING, name="t_strict", max_reject_pct=50), source)
    assert (
        "4 of 5 row(s) rejected (80.00% > max_reject_pct 50); the first 2 of 4 problems are "
        "listed in " in result["error"][1]
    )


@pytest.mark.parametrize(
    ("options", "content"),
    [c[1:] for c in WIDE_CASES[:2]],
    ids=[c[0] for c in WIDE_CASES[:2]],
)
def test_utf16_is_one_range_read_as_the_lambda_engine_reads_it(
    options, content, both, table_dir, write
):
    """A UTF-16 file (by its BOM or the config) is not cut on the byte 0x0A: one range,
    transcoded by the same reader."""
    result = both(table_dir(CODES_MAPPING, **options), write("t.txt", content))
    assert [(r["code"], r["name"]) for r in result["rows"]] == EXPECTED
