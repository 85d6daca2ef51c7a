"""Large files stream in chunks; results are the same as reading the file in one piece."""

from __future__ import annotations

import gzip
import random

import pyarrow.parquet as pq
import pytest

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "zip,zipcode,varchar(5),strip|zfill(5),,false,\n"
    "plus4,plus4,varchar(4),strip|zfill(4),,false,\n"
    "city,city,varchar(32),strip|title,,false,\n"
    'lat,latitude,"decimal(9,4)",strip,,true,\n'
    "day,effective,date,strip,,true,%m/%d/%Y\n"
)
ROWS = 20_000


def _generated(duplicates: bool = True, bad_line: int | None = None) -> str:
    rng = random.Random(42)
    lines = ["zip,plus4,city,lat,day"]
    for i in range(ROWS):
        lines.append(
            f"{i % 1000},{i // 1000}, {rng.choice(['SPRINGFIELD', 'EL PASO'])} ,"
            f"{rng.uniform(18, 68):.4f},{1 + i % 12:02d}/{1 + i % 28:02d}/2024"
        )
    if duplicates:
        lines += [lines[5], lines[17_000], lines[5]]
    if bad_line:
        lines[bad_line - 1] = "1,9999,X,not-a-number,01/01/2024"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
@pytest.mark.parametrize("key", [["zipcode", "plus4"], []], ids=["by-key", "whole-rows"])
def test_chunked_and_whole_file_give_the_same_table(
    key, table_dir, write, run_cli, sql, monkeypatch
):
    source = write("zip.csv", _generated())
    results = []
    # one read; held in memory in two pieces (the file is 1.4 chunks); ~40 streamed chunks
    for name, chunk in (("t_whole", 1 << 30), ("t_pieces", 512 << 10), ("t_chunked", 64 << 10)):
        monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(chunk))
        config = table_dir(MAPPING, name=name, primary_key=key)
        code, summary = run_cli(config, source)
        assert code == 0, summary["error"]
        assert summary["published"] is True
        results.append(
            (
                summary["rows_read"],
                summary["duplicates_dropped"],
                summary["rows_loaded"],
                pq.read_table(summary["curated_uri"]),
                sql(f"SELECT * FROM ref.{name} ORDER BY zipcode, plus4"),
            )
        )
    whole, pieces, chunked = results
    assert whole[:3] == pieces[:3] == chunked[:3] == (ROWS + 3, 3, ROWS)
    assert whole[3].equals(pieces[3]) and whole[3].equals(chunked[3])
    assert whole[4] == pieces[4] == chunked[4]


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_a_bad_row_in_a_later_chunk_is_named_by_its_line(table_dir, write, run_cli, monkeypatch):
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(64 << 10))
    config = table_dir(MAPPING)
    code, summary = run_cli(config, write("zip.csv", _generated(bad_line=18_765)))
    assert code == 2
    assert (
        ", line 18765, column 'latitude': is not a valid decimal(9,4) (value 'not-a-number')"
        in (summary["error"]["message"])
    )


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
@pytest.mark.parametrize("chunk", [1 << 30, 512 << 10, 64 << 10])
def test_a_key_repeated_across_chunks_names_both_lines(
    chunk, table_dir, write, run_cli, sql, monkeypatch
):
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(chunk))
    config = table_dir(MAPPING, primary_key=["zipcode", "plus4"])
    text = _generated(duplicates=False) + "5,0, OTHER CITY ,40.0,01/01/2024\n"
    code, summary = run_cli(config, write("zip.csv", text))
    assert code == 2
    assert (
        "duplicate primary key (zipcode='00005', plus4='0000') on lines 7, 20002; "
        "1 key(s) appear more than once in this file"
    ) in summary["error"]["message"]
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_codes'") == [
        (0,)
    ]


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_lines_are_named_by_streaming_a_large_compressed_file(
    table_dir, write, run_cli, monkeypatch, tmp_path
):
    """CRLF line ends, a quoted value over two lines, gzip, 200k rows in many chunks: the
    line of a repeated key and of a ragged row are found by reading the file again as a
    stream (never decoded whole: a 1.16 GB file peaked at 7.1 GB that way)."""
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(1 << 20))
    lines = ["zip,plus4,city,lat,day", '0,9,"SPRING\r\nFIELD",40.1,01/01/2024']
    lines += [f"{i % 100_000},{i // 100_000},X,40.0,01/01/2024" for i in range(2, 200_000)]
    config = table_dir(MAPPING, primary_key=["zipcode", "plus4"], max_reject_pct=1)
    text = "\r\n".join([*lines, "0,9,AGAIN,40.0,01/01/2024", "7,7,7", ""])
    code, summary = run_cli(config, write("zip.csv.gz", gzip.compress(text.encode())))
    assert code == 2
    # the header is line 1 and the quoted value takes lines 2-3: the last rows are 200002-3
    assert (
        "duplicate primary key (zipcode='00000', plus4='0009') on lines 2, 200002; "
        "1 key(s) appear more than once in this file"
    ) in summary["error"]["message"]
    [rejects] = (tmp_path / "curated").rglob("*.rejects.parquet")
    assert pq.read_table(rejects).to_pylist() == [
        {
            "line": 200003,
            "column": None,
            "value": "7,7,7",
            "reason": "has 3 field(s), the header has 5",
        }
    ]


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_a_field_larger_than_a_block_in_a_later_chunk(table_dir, write, run_cli, sql, monkeypatch):
    """The reader retries with larger blocks, skipping the rows it already handed on."""
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(1 << 20))
    lines = ["zip,plus4,city,lat,day"]
    lines += [f"{i % 100_000},{i // 100_000},X,40.0,01/01/2024" for i in range(60_000)]
    lines.insert(50_000, f"99999,9,{'Y' * (3 << 20)},40.0,01/01/2024")
    config = table_dir(MAPPING.replace("varchar(32)", "string"), primary_key=["zipcode", "plus4"])
    code, summary = run_cli(config, write("zip.csv", "\n".join(lines) + "\n"))
    assert code == 0, summary["error"]
    assert summary["rows_loaded"] == 60_001
    assert sql("SELECT COUNT(*), MAX(LENGTH(city)) FROM ref.t_codes") == [(60_001, 3 << 20)]


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
@pytest.mark.parametrize("chunk", [1 << 30, 64 << 10], ids=["whole", "streamed"])
def test_quoted_values_over_several_lines_across_blocks_load_as_they_are(
    chunk, table_dir, write, run_cli, sql, monkeypatch
):
    """The reader splits blocks at any newline until a quoted value is found to span one
    (then reads again as pyarrow does for such files): every value, and the line each
    row is named by, are as if it had known from the start."""
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(chunk))
    lines, line = ["zip,plus4,city,lat,day"], 2
    for i in range(20_000):
        # One row in 13: dense enough that a 64 KB block ends inside one (it does).
        city = f'"SPRING\nFIELD {i}\r\nEAST"' if i % 13 == 5 else f"TOWN {i}"
        lines.append(f"{i % 1000},{i // 1000},{city},40.0,01/01/2024")
        line += 1 + 2 * (i % 13 == 5)
    lines.append("1,7,AGAIN,x,01/01/2024")  # not a decimal: its line is in the message
    config = table_dir(MAPPING.replace("varchar(32)", "string"), primary_key=["zipcode", "plus4"])
    code, summary = run_cli(config, write("zip.csv", "\n".join(lines) + "\n"))
    assert code == 2
    assert f"line {line}, column 'latitude'" in summary["error"]["message"]
    config = table_dir(
        MAPPING.replace("varchar(32)", "string"), name="t_ok", primary_key=["zipcode", "plus4"]
    )
    code, summary = run_cli(config, write("ok.csv", "\n".join(lines[:-1]) + "\n"))
    assert code == 0, summary["error"]
    assert sql("SELECT COUNT(*) FROM ref.t_ok") == [(20_000,)]
    assert sql("SELECT city FROM ref.t_ok WHERE zipcode = '00986' AND plus4 = '0019'") == [
        ("Spring\nField 19986\r\nEast",)
    ]
    assert sql("SELECT COUNT(*) FROM ref.t_ok WHERE city LIKE 'Spring%'") == [(1539,)]


@pytest.mark.parametrize(
    ("name", "chunk"),
    [
        ("whole.csv", 1 << 30),
        ("streamed.csv", 64 << 10),
        ("compressed.csv.gz", 1 << 30),
        ("compressed-streamed.csv.gz", 64 << 10),
    ],
)
def test_the_ledger_hash_is_the_files_sha256_taken_in_the_one_read(
    name, chunk, table_dir, write, run_cli, sql, monkeypatch
):
    """The content hash is taken while the file is parsed (no second pass): it must still be
    the sha256 of the bytes as stored, whichever way the file was read."""
    import hashlib

    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(chunk))
    text = _generated(duplicates=False)
    data = gzip.compress(text.encode()) if name.endswith(".gz") else text.encode()
    source = write(name, data)
    code, summary = run_cli(table_dir(MAPPING, primary_key=["zipcode", "plus4"]), source)
    assert code == 0, summary["error"]
    assert sql("SELECT content_hash FROM etl_audit.load_ledger") == [
        (hashlib.sha256(data).hexdigest(),)
    ]


def test_a_json_file_is_hashed_as_stored(table_dir, write, run_cli, sql):
    import hashlib
    import json

    mapping = (
        "source_column,target_column,data_type,transform,default,nullable,format\n"
        "code,code,varchar(5),,,false,\n"
    )
    data = gzip.compress(json.dumps([{"code": "AA"}, {"code": "BB"}]).encode())
    code, summary = run_cli(table_dir(mapping, source_format="json"), write("t.json.gz", data))
    assert code == 0, summary["error"]
    assert sql("SELECT content_hash FROM etl_audit.load_ledger") == [
        (hashlib.sha256(data).hexdigest(),)
    ]


@pytest.mark.slow
@pytest.mark.all_warehouses
def test_a_large_output_is_written_as_parts_that_keep_the_files_order(
    table_dir, write, run_cli, sql, monkeypatch
):
    """From PARTS_FROM_ROWS rows the curated output is CURATED_PARTS parts, written at once
    and listed by a manifest; read in manifest order the parts are the single file's rows,
    in the file's order, and the warehouse loads them all."""
    import json
    import os

    import pyarrow as pa

    import steps.ingest

    monkeypatch.setattr(steps.ingest, "BATCH_ROWS", 3_000)  # 7 batches of the 20,000 rows
    source = write("zip.csv", _generated(duplicates=True))
    outputs = {}
    for name, parts_from in (("t_single", 10**9), ("t_parts", 6_000)):
        monkeypatch.setattr(steps.ingest, "PARTS_FROM_ROWS", parts_from)
        code, summary = run_cli(
            table_dir(MAPPING, name=name, primary_key=["zipcode", "plus4"]), source
        )
        assert code == 0, summary["error"]
        assert summary["rows_loaded"] == ROWS
        outputs[name] = summary["curated_uri"]
        assert sql(f"SELECT COUNT(*), COUNT(DISTINCT zipcode || plus4) FROM ref.{name}") == [
            (ROWS, ROWS)
        ]
    assert outputs["t_single"].endswith(".parquet")
    assert outputs["t_parts"].endswith("/parts.manifest")
    with open(outputs["t_parts"]) as manifest:
        entries = json.load(manifest)["entries"]
    assert [e["url"].rsplit("/", 1)[1] for e in entries] == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert all(e["meta"]["content_length"] == os.path.getsize(e["url"]) for e in entries)
    parts = pa.concat_tables(pq.read_table(e["url"]) for e in entries)
    single = pq.read_table(outputs["t_single"])
    assert parts.num_rows == single.num_rows == ROWS
    assert parts.equals(single.replace_schema_metadata(parts.schema.metadata))
    assert sql(
        "SELECT COUNT(*) FROM (SELECT * FROM ref.t_single EXCEPT SELECT * FROM ref.t_parts) d"
    ) == [(0,)]


@pytest.mark.slow
@pytest.mark.all_warehouses
def test_an_output_of_parts_on_s3_loads_and_a_replay_writes_its_own(
    table_dir, write, s3, sql, warehouse_url, capsys, monkeypatch
):
    """With an s3:// curated root the parts, their manifest (the parts' URLs and sizes, as
    Redshift's COPY needs them) and the run's rejects file are objects; every warehouse
    loads the parts (Redshift COPYs that manifest as it is), and the same file again (a new
    run) writes objects of its own beside them, leaves the first run's as they were, and
    publishes nothing."""
    import json

    import steps.ingest
    from handler.cli import main
    from tests.warehouses import STATEMENTS

    monkeypatch.setattr(steps.ingest, "BATCH_ROWS", 3_000)
    monkeypatch.setattr(steps.ingest, "PARTS_FROM_ROWS", 6_000)
    config = table_dir(MAPPING, primary_key=["zipcode", "plus4"], max_reject_pct=1)
    s3.put_object(Bucket="raw", Key="zip/zip.csv", Body=_generated(False, bad_line=10).encode())
    root = "s3://curated/refload"

    def run() -> dict:
        args = ["run", "--config", str(config), "--source", "s3://raw/zip/zip.csv"]
        code = main([*args, "--warehouse", warehouse_url, "--curated-root", root, "--json"])
        summary = json.loads(capsys.readouterr().out)
        assert code == 0, summary["error"]
        return summary

    def objects() -> dict[str, int]:
        listed = s3.list_objects_v2(Bucket="curated", Prefix="refload/")["Contents"]
        return {f"s3://curated/{o['Key']}": o["Size"] for o in listed}

    first = run()
    prefix = first["curated_uri"].removesuffix("/parts.manifest")
    assert first["rejects_uri"] == prefix.rsplit("-", 1)[0] + ".rejects.parquet"
    assert (first["rows_loaded"], first["rows_rejected"]) == (ROWS - 1, 1)
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(ROWS - 1,)]
    parts = [f"{prefix}/part-00000.parquet", f"{prefix}/part-00001.parquet"]
    written = objects()
    assert sorted(written) == sorted([first["rejects_uri"], first["curated_uri"], *parts])
    if warehouse_url.startswith("redshift"):
        [copy] = [s for s in STATEMENTS if s.startswith("COPY")]
        assert f"FROM '{first['curated_uri']}' " in copy and copy.endswith(" MANIFEST FILLRECORD")

    second = run()

    assert second["published"] is False and second["curated_uri"] != first["curated_uri"]
    now = objects()
    assert {uri: now[uri] for uri in written} == written
    for summary in (first, second):
        key = summary["curated_uri"][len("s3://curated/") :]
        entries = json.loads(s3.get_object(Bucket="curated", Key=key)["Body"].read())["entries"]
        folder = summary["curated_uri"].removesuffix("parts.manifest")
        assert [(e["url"], e["meta"]["content_length"]) for e in entries] == [
            (uri, size)
            for uri, size in sorted(now.items())
            if uri.startswith(folder) and uri.endswith(".parquet")
        ]
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(ROWS - 1,)]


PIECES = pytest.mark.parametrize(
    "chunk", [512 << 10, 64 << 10], ids=["held-in-pieces", "streamed"]
)  # the 0.75 MB file is 1.4 chunks (held in memory, two pieces) or ~12 streamed chunks


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
@PIECES
def test_bad_rows_in_later_pieces_are_named_by_their_lines(
    chunk, table_dir, write, run_cli, sql, monkeypatch, tmp_path
):
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(chunk))
    lines = _generated(duplicates=False).splitlines()
    lines[100] = '99,0,"SPRING\nFIELD",40.0,01/01/2024'  # lines 101-102: later rows move by 1
    lines[16_000] = "1,9999,X,not-a-number,01/01/2024"
    lines[18_000] = "7,7,7"
    lines[19_000] = "2,9999,X,40.0,04/31/2024"
    lines[20_000] = "3,9999,X,40.0,02/30/2024"
    config = table_dir(MAPPING, primary_key=["zipcode", "plus4"], max_reject_pct=1)
    code, summary = run_cli(config, write("zip.csv", "\n".join(lines) + "\n"))
    assert code == 0, summary["error"]
    assert (summary["rows_read"], summary["rows_rejected"]) == (ROWS, 4)
    [rejects] = (tmp_path / "curated").rglob("*.rejects.parquet")
    assert [(r["line"], r["column"], r["value"]) for r in pq.read_table(rejects).to_pylist()] == [
        (16_002, "latitude", "not-a-number"),
        (18_002, None, "7,7,7"),
        (19_002, "effective", "04/31/2024"),
        (20_002, "effective", "02/30/2024"),
    ]
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(ROWS - 4,)]
    assert sql("SELECT city FROM ref.t_codes WHERE zipcode = '00099' AND plus4 = '0000'") == [
        ("Spring\nField",)
    ]


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
@PIECES
def test_undecodable_bytes_in_a_later_piece_stop_the_read_naming_the_line(
    chunk, table_dir, write, run_cli, sql, monkeypatch
):
    """The next piece is parsed on a thread: its error is the run's, and the thread ends."""
    import threading

    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(chunk))
    lines = _generated(duplicates=False).splitlines()
    lines[17_000] = lines[17_000].replace(",", ",\xff", 1)
    source = write("zip.csv", ("\n".join(lines) + "\n").encode("latin-1"))
    code, summary = run_cli(table_dir(MAPPING), source)
    assert code == 2
    assert summary["error"]["message"] == (
        f"{source}, line 17001: cannot decode byte(s) b'\\xff' as utf-8 at character "
        f"{lines[17_000].index(chr(0xFF)) + 1}; set 'encoding' in the config"
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("refload-read")]
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 't_codes'") == [
        (0,)
    ]


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_the_first_rejections_are_kept_and_all_are_counted(
    table_dir, write, run_cli, sql, monkeypatch, tmp_path
):
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(64 << 10))  # ~12 streamed chunks
    monkeypatch.setenv("REFLOAD_MAX_REJECTS_KEPT", "5")
    lines = _generated(duplicates=False).splitlines()
    for line in range(1_000, ROWS, 1_000):  # 19 bad rows, one per ~chunk, lines 1001...
        lines[line - 1] = f"{line},1,X,not-a-number,01/01/2024"
    lines[3_000 - 1] = "3000,1,X,not-a-number,13/45/2024"  # two problems on line 3000
    lines[3_500 - 1] = "7,7,7"  # unreadable
    source = write("zip.csv", "\n".join(lines) + "\n")

    code, summary = run_cli(table_dir(MAPPING, max_reject_pct=100), source)

    assert code == 0, summary["error"]
    assert (summary["rows_read"], summary["rows_rejected"]) == (ROWS, 20)
    assert sql("SELECT COUNT(*) FROM ref.t_codes") == [(ROWS - 20,)]
    [rejects] = (tmp_path / "curated").rglob("*.rejects.parquet")
    assert [(r["line"], r["column"]) for r in pq.read_table(rejects).to_pylist()] == [
        (1_000, "latitude"),
        (2_000, "latitude"),
        (3_000, "latitude"),
        (3_000, "effective"),
        (3_500, None),
    ]

    code, summary = run_cli(table_dir(MAPPING, name="t_strict", max_reject_pct=0.05), source)
    assert code == 2
    assert summary["error"]["message"].startswith(
        f"{source}, line 1000, column 'latitude': is not a valid decimal(9,4) (value "
        "'not-a-number'); 20 of 20000 row(s) rejected (0.10% > max_reject_pct 0.05); the first "
        "5 of 21 problems are listed in "
    )


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_with_max_reject_pct_0_reading_stops_at_the_first_bad_chunk(
    table_dir, write, run_cli, sql, monkeypatch, tmp_path
):
    import re

    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(64 << 10))  # ~12 streamed chunks
    lines = _generated(duplicates=False).splitlines()
    lines[300 - 1] = "300,1,X,not-a-number,01/01/2024"
    lines[18_000 - 1] = "18000,1,X,not-a-number,01/01/2024"  # in a chunk never read
    source = write("zip.csv", "\n".join(lines) + "\n")

    code, summary = run_cli(table_dir(MAPPING), source)

    assert code == 2
    message = summary["error"]["message"]
    assert message.startswith(
        f"{source}, line 300, column 'latitude': is not a valid decimal(9,4) (value 'not-a-number')"
    )
    read = re.search(
        r"1 of the first (\d+) row\(s\) rejected; max_reject_pct 0, so reading "
        r"stopped at the first chunk with a rejected row; all problems found so "
        r"far are listed in ",
        message,
    )
    assert read and 300 <= int(read.group(1)) < 18_000
    [rejects] = (tmp_path / "curated").rglob("*.rejects.parquet")
    assert [r["line"] for r in pq.read_table(rejects).to_pylist()] == [300]
    assert sql(
        "SELECT status, error_type FROM etl_audit.run_log WHERE run_id = ?", summary["run_id"]
    ) == [("failed", "RejectedInput")]


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_utf16_streams_in_chunks_like_utf8_and_names_lines(
    table_dir, write, run_cli, sql, monkeypatch, tmp_path
):
    """Excel's "Unicode Text" (UTF-16 LE, BOM, CRLF) is transcoded as it streams: the same
    table as the UTF-8 file, a bad row in a later chunk named by its line."""
    import codecs

    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", str(64 << 10))
    lines = _generated(duplicates=False).splitlines()
    lines[17_000] = "1,9999,X,not-a-number,01/01/2024"
    text = "\r\n".join(lines) + "\r\n"
    code, summary = run_cli(
        table_dir(MAPPING, name="t_utf8", max_reject_pct=1), write("zip.csv", text)
    )
    assert code == 0, summary["error"]
    source = write("zip.txt", codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    code, summary = run_cli(table_dir(MAPPING, name="t_utf16", max_reject_pct=1), source)
    assert code == 0, summary["error"]
    assert (summary["rows_read"], summary["rows_rejected"]) == (ROWS, 1)
    [rejects] = (tmp_path / "curated").rglob("t_utf16/**/*.rejects.parquet")
    assert [(r["line"], r["value"]) for r in pq.read_table(rejects).to_pylist()] == [
        (17_001, "not-a-number")
    ]
    assert sql("SELECT * FROM ref.t_utf16 ORDER BY ALL") == sql(
        "SELECT * FROM ref.t_utf8 ORDER BY ALL"
    )
