"""`python_transform`: a team's pandas function on the mapped rows, held to the mapping."""

from __future__ import annotations

import json
import re
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from handler.cli import main
from steps.ingest import hooks
from tests.conftest import run_args

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(5),strip,,false,\nname,name,varchar(20),strip,,true,\n"
    'rate,rate,"decimal(9,2)",,,true,\nday,day,date,,,true,%m/%d/%Y\n'
)
SOURCE = "code,name,rate,day\n00501, holtsville ,1.50,01/31/2024\n02134,allston,2,02/01/2024\n"


@pytest.fixture
def hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write `teamhooks.py` with the given body; returns its `teamhooks:shape` reference."""

    def make(body: str) -> str:
        folder = tmp_path / "code"
        folder.mkdir(exist_ok=True)
        (folder / "teamhooks.py").write_text(
            "import pandas as pd\n\n\ndef shape(rows):\n"
            + textwrap.indent(textwrap.dedent(body).strip(), "    ")
        )
        monkeypatch.syspath_prepend(str(folder))
        return "teamhooks:shape"

    yield make
    sys.modules.pop("teamhooks", None)
    hooks._loaded.clear()


@pytest.mark.all_warehouses
def test_a_hook_shapes_the_table_on_every_warehouse(hook, table_dir, write, run_cli, sql):
    reference = hook(
        """
        rows["name"] = rows["name"].str.title() + " (" + rows["code"] + ")"
        rows["rate"] = rows["rate"] * 2
        return rows
        """
    )
    config = table_dir(MAPPING, python_transform=reference)
    code, summary = run_cli(config, write("t.csv", SOURCE))
    assert code == 0, summary["error"]
    rows = sql(
        "SELECT code, name, CAST(rate AS VARCHAR), CAST(day AS VARCHAR) FROM ref.t_codes "
        "ORDER BY code"
    )
    assert rows == [
        ("00501", "Holtsville (00501)", "3.00", "2024-01-31"),
        ("02134", "Allston (02134)", "4.00", "2024-02-01"),
    ]


def test_the_hook_sees_arrow_backed_types(hook, table_dir, write, run_cli):
    reference = hook(
        """
        kinds = {c: str(t) for c, t in rows.dtypes.items()}
        assert kinds == {"code": "string[pyarrow]", "name": "string[pyarrow]",
                         "rate": "decimal128(9, 2)[pyarrow]",
                         "day": "date32[day][pyarrow]"}, kinds
        return rows
        """
    )
    code, summary = run_cli(table_dir(MAPPING, python_transform=reference), write("t.csv", SOURCE))
    assert code == 0, summary["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'rows["extra"] = 1\nreturn rows',
            "python_transform teamhooks:shape: returned columns that are not the mapping's "
            "target columns; extra: extra",
        ),
        (
            'return rows.drop(columns=["rate"])',
            "python_transform teamhooks:shape: returned columns that are not the mapping's "
            "target columns; missing: rate",
        ),
        (
            'rows["day"] = "soon"\nreturn rows',
            "line 2, column 'day': python_transform teamhooks:shape: returned large_string where "
            "the mapping says date",
        ),
        (
            'rows["rate"] = rows["rate"].astype("float64") / 3\nreturn rows',
            "line 3, column 'rate': python_transform teamhooks:shape: returned double where the "
            "mapping says decimal(9,2) (a value would be rounded) (value 0.6666666666666666)",
        ),
        (
            'raise ValueError("no rate for " + rows["code"].iloc[0])',
            "python_transform teamhooks:shape: raised ValueError: no rate for 00501",
        ),
        (
            'rows["code"] = None\nreturn rows',
            "line 2, column 'code': python_transform teamhooks:shape: returned an empty value, "
            "and the column is not nullable",
        ),
        (
            'rows["name"] = "x" * 21\nreturn rows',
            "line 2, column 'name': python_transform teamhooks:shape: returned a value longer "
            "than varchar(20)",
        ),
        (
            "return rows.iloc[:1]",
            "python_transform teamhooks:shape: returned 1 row(s) for 2: a hook must be row-local",
        ),
        ("return None", "python_transform teamhooks:shape: returned NoneType, not a pandas"),
    ],
    ids=["extra", "missing", "mistyped", "lossy", "raises", "null", "too-long", "rows", "none"],
)
def test_a_hook_that_breaks_the_mapping_rejects_the_file(
    body, message, hook, table_dir, write, run_cli, sql, tmp_path
):
    config = table_dir(MAPPING, python_transform=hook(body))
    source = write("t.csv", SOURCE)
    code, summary = run_cli(config, source)
    assert code == 2
    assert summary["error"]["type"] == "RejectedInput"
    assert message in summary["error"]["message"]
    assert str(source) in summary["error"]["message"]
    assert source.read_text() == SOURCE  # the raw file stays
    assert sql("SELECT status FROM etl_audit.run_log WHERE step = 'ingest'") == [("failed",)]
    assert list((tmp_path / "outbox").glob("*.alert.json"))


def test_a_hook_that_cannot_be_imported_is_a_config_error(table_dir, write, run_cli):
    config = table_dir(MAPPING, python_transform="nowhere.to_be:found")
    code, summary = run_cli(config, write("t.csv", SOURCE))
    assert code == 2
    assert summary["error"]["type"] == "ConfigError"
    assert (
        "python_transform 'nowhere.to_be:found': cannot import nowhere.to_be"
        in (summary["error"]["message"])
    )


def test_a_streamed_file_runs_the_hook_chunk_by_chunk(
    hook, table_dir, write, run_cli, sql, monkeypatch
):
    reference = hook(
        """
        import teamhooks
        teamhooks.CALLS = getattr(teamhooks, "CALLS", 0) + 1
        rows["name"] = rows["name"].str.upper()
        return rows
        """
    )
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", "4096")
    body = "".join(f"{i:05d},name {i},1.00,01/31/2024\n" for i in range(3000))
    code, summary = run_cli(
        table_dir(MAPPING, python_transform=reference),
        write("big.csv", "code,name,rate,day\n" + body),
    )
    assert code == 0, summary["error"]
    assert sys.modules["teamhooks"].CALLS > 1
    assert sql("SELECT COUNT(*), MIN(name), MAX(name) FROM ref.t_codes") == [
        (3000, "NAME 0", "NAME 999")
    ]


def test_a_streamed_file_names_the_line_the_hook_broke(
    hook, table_dir, write, run_cli, monkeypatch
):
    reference = hook('rows.loc[rows["code"] == "02900", "code"] = None\nreturn rows')
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", "4096")
    body = "".join(f"{i:05d},n,1.00,01/31/2024\n" for i in range(3000))
    code, summary = run_cli(
        table_dir(MAPPING, python_transform=reference),
        write("big.csv", "code,name,rate,day\n" + body),
    )
    assert code == 2
    assert "line 2902, column 'code'" in summary["error"]["message"]


def test_preview_shows_the_rows_after_the_hook(hook, table_dir, write, capsys):
    reference = hook('rows["name"] = rows["name"].str.upper()\nreturn rows')
    config = table_dir(MAPPING, python_transform=reference)
    assert main(["preview", "--config", str(config), "--source", str(write("t.csv", SOURCE))]) == 0
    out = capsys.readouterr().out
    assert "HOLTSVILLE" in out and "holtsville" not in out


def test_the_shipped_zipcode_hook_gives_independent_cities_one_spelling():
    import pandas as pd

    from hooks.zipcode import normalise_county

    rows = pd.DataFrame(
        {"county": ["Fredericksburg city", "Baltimore City", "Suffolk County", None]},
        dtype="string[pyarrow]",
    )
    assert normalise_county(rows)["county"].tolist() == [
        "Fredericksburg City",
        "Baltimore City",
        "Suffolk County",
        pd.NA,
    ]


def test_a_hook_module_that_does_not_import_is_a_config_error(hook, table_dir, write, run_cli):
    reference = hook("return rows")
    Path(sys.path[0], "teamhooks.py").write_text("def shape(rows):\n  return rows\n return\n")
    code, summary = run_cli(table_dir(MAPPING, python_transform=reference), write("t.csv", SOURCE))
    assert code == 2
    assert summary["error"]["type"] == "ConfigError"
    assert (
        "python_transform 'teamhooks:shape': importing teamhooks failed: IndentationError"
        in (summary["error"]["message"])
    )


def test_a_one_megabyte_hook_message_is_cut_where_it_travels_and_kept_where_it_is_read(
    hook, table_dir, write, run_cli, sql, tmp_path, capsys
):
    reference = hook("raise ValueError('too loud: ' + 'A' * 1_000_000)")
    code, summary = run_cli(table_dir(MAPPING, python_transform=reference), write("t.csv", SOURCE))
    assert code == 2
    message = summary["error"]["message"]
    assert message.startswith(f"{tmp_path / 'in' / 't.csv'}: python_transform {reference}: ")
    assert re.search(r"AAA…\(truncated, \d{7} bytes\)$", message), message[-100:]
    assert len(message.encode()) <= 2048
    assert all(len(line) < 8192 for line in capsys.readouterr().err.splitlines())  # logs
    # The full text, up to 64 KiB: in etl_audit.run_log and in the alert's body.
    [(logged, details)] = sql(
        "SELECT error_message, details FROM etl_audit.run_log WHERE step = 'ingest'"
    )
    assert "A" * 60_000 in logged and len(logged.encode()) <= 65535
    assert "A" * 60_000 in json.loads(details)["error"] and len(details.encode()) <= 65535
    [path] = (tmp_path / "outbox").glob("*.alert.json")
    assert path.stat().st_size < 300_000
    alert = json.loads(path.read_text())
    assert alert["error"]["message"] == message
    assert len(alert["subject"].encode()) <= 2048
    assert "A" * 60_000 in alert["text"] and "A" * 60_000 in alert["html"]


SCORED = MAPPING + "score,score,double,,,true,\n"
SCORED_SOURCE = "code,name,rate,day,score\n00501,a,1.50,01/31/2024,1.5\n02134,b,2,02/01/2024,2\n"


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'rows["name"] = rows["name"] + "\\x00"\nreturn rows',
            "line 2, column 'name': python_transform teamhooks:shape: returned a value that "
            "contains a NUL character (\\x00), which warehouses cannot store as text "
            "(value 'a\\x00')",
        ),
        (
            'rows["score"] = rows["score"] / (rows["score"] - 2)\nreturn rows',
            "line 3, column 'score': python_transform teamhooks:shape: returned a value that "
            "is NaN or infinite as a double; set format 'allow_nan_inf' to keep such values "
            "(value inf)",
        ),
        (
            "import pyarrow as pa\n"
            'rows["score"] = pd.Series(pa.array([1.0, float("nan")]), '
            "dtype=pd.ArrowDtype(pa.float64()))\nreturn rows",
            "line 3, column 'score': python_transform teamhooks:shape: returned a value that "
            "is NaN or infinite as a double; set format 'allow_nan_inf' to keep such values "
            "(value nan)",
        ),
    ],
    ids=["nul", "infinity", "nan"],
)
def test_hook_output_is_held_to_the_value_rules_of_mapped_input(
    body, message, hook, table_dir, write, run_cli, sql
):
    # A NUL once failed PostgreSQL's COPY (exit 3, no row named); NaN and infinity loaded
    # where mapped input refuses them.
    config = table_dir(SCORED, python_transform=hook(body))
    code, summary = run_cli(config, write("t.csv", SCORED_SOURCE))
    assert (code, (summary["error"] or {}).get("type")) == (2, "RejectedInput"), summary
    assert message in summary["error"]["message"]
    assert sql("SELECT status FROM etl_audit.run_log WHERE step = 'ingest'") == [("failed",)]
    assert sql("SELECT to_regclass('ref.t_codes')") == [(None,)]


def test_a_hook_may_return_infinity_where_the_mapping_allows_it(
    hook, table_dir, write, run_cli, sql
):
    reference = hook('rows["score"] = rows["score"] / (rows["score"] - 2)\nreturn rows')
    config = table_dir(
        SCORED.replace("double,,,true,", "double,,,true,allow_nan_inf"), python_transform=reference
    )
    code, summary = run_cli(config, write("t.csv", SCORED_SOURCE))
    assert code == 0, summary["error"]
    assert sql("SELECT score FROM ref.t_codes ORDER BY code") == [(-3.0,), (float("inf"),)]


STALLS = {
    "sleeps": "import time\ntime.sleep(600)",
    "spins": "while True:\n    pass",
    # Its own `except Exception` does not keep it running.
    "swallows-errors": "while True:\n    try:\n        sum(range(10**6))\n    except Exception:\n"
    "        pass",
    # Even the stop itself, once: it comes again a second later.
    "catches-the-stop": "try:\n    while True:\n        pass\nexcept BaseException:\n    pass\n"
    "while True:\n    pass",
}


@pytest.mark.slow
@pytest.mark.parametrize("stall", STALLS.values(), ids=STALLS.keys())
def test_a_hook_past_its_time_limit_is_stopped_and_the_file_rejected(
    stall, hook, table_dir, write, run_cli, sql, warehouse_url, capsys
):
    import time

    body = f'if (rows["name"] == "stall").any():\n{textwrap.indent(stall, "    ")}\nreturn rows'
    config = table_dir(MAPPING, python_transform=hook(body), python_transform_timeout_seconds=0.5)
    code, passed = run_cli(config, write("t.csv", SOURCE))
    assert code == 0, passed["error"]

    started = time.monotonic()
    source = write("t.csv", SOURCE.replace("allston", "stall"))
    code, summary = run_cli(config, source)
    assert time.monotonic() - started < 10
    assert (code, summary["status"], summary["error"]["type"]) == (2, "rejected", "RejectedInput")
    assert summary["error"]["message"] == (
        f"{source}: python_transform teamhooks:shape: was stopped "
        "after 0.5 s, its time limit on one file (python_transform_timeout_seconds)"
    )
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # nothing left armed
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    runs = "SELECT run_id, status FROM etl_audit.run_log WHERE step = 'ingest' ORDER BY logged_at"
    assert sql(runs) == [
        (passed["run_id"], "ok"),
        (summary["run_id"], "failed"),
    ]
    capsys.readouterr()  # `status` shows the rejected run, not the passed one before it
    assert (
        main(
            ["status", "--config-root", str(config.parent), "--warehouse", warehouse_url, "--json"]
        )
        == 0
    )
    [table] = json.loads(capsys.readouterr().out)["tables"]
    assert (table["run_id"], table["status"]) == (summary["run_id"], "rejected")


@pytest.mark.slow
def test_the_time_limit_counts_every_piece_of_a_file(hook, table_dir, write, run_cli, monkeypatch):
    reference = hook(
        """
        import time, teamhooks
        teamhooks.CALLS = getattr(teamhooks, "CALLS", 0) + 1
        time.sleep(0.2)
        return rows
        """
    )
    monkeypatch.setenv("REFLOAD_CHUNK_BYTES", "4096")
    body = "".join(f"{i:05d},name {i},1.00,01/31/2024\n" for i in range(3000))
    config = table_dir(MAPPING, python_transform=reference, python_transform_timeout_seconds=1)
    code, summary = run_cli(config, write("big.csv", "code,name,rate,day\n" + body))
    assert code == 2
    assert "was stopped after 1 s, its time limit on one file" in summary["error"]["message"]
    assert 5 <= sys.modules["teamhooks"].CALLS <= 6  # 0.2 s each: the sixth is stopped


def test_a_hook_called_off_the_main_thread_is_stopped_too(
    hook, table_dir, write, warehouse_url, tmp_path, capsys
):
    import threading

    # No signal reaches another thread: an embedding service may call refload from one.
    config = table_dir(
        MAPPING,
        python_transform=hook("while True:\n    pass"),
        python_transform_timeout_seconds=0.5,
    )
    args = run_args(config, write("t.csv", SOURCE), warehouse_url, "--json")
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(main(args)))
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive() and codes == [2]
    summary = json.loads(capsys.readouterr().out)
    assert (
        "python_transform teamhooks:shape: was stopped after 0.5 s" in summary["error"]["message"]
    )


def test_a_hook_prints_to_the_log_and_shows_no_aws_credential(
    hook, table_dir, write, warehouse_url, tmp_path, sql, monkeypatch, capsys
):
    key, token = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2Vj+EXAMPLE/TOKEN=="
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    reference = hook(
        """
        import os
        print("looking up", len(rows), "rows")
        print("with", os.environ["AWS_SECRET_ACCESS_KEY"])
        raise PermissionError(
            f"S3 refused {os.environ['AWS_SECRET_ACCESS_KEY']} {os.environ['AWS_SESSION_TOKEN']}"
        )
        """
    )
    config = table_dir(MAPPING, python_transform=reference)
    capsys.readouterr()
    code = main(run_args(config, write("t.csv", SOURCE), warehouse_url, "--json"))
    out, err = capsys.readouterr()
    assert code == 2
    summary = json.loads(out)  # stdout is the one JSON object, the hook's prints are not in it
    assert summary["error"]["message"].endswith(
        "python_transform teamhooks:shape: raised PermissionError: S3 refused *** ***"
    )
    printed = [
        json.loads(line)["text"] for line in err.splitlines() if "python_transform printed" in line
    ]
    assert printed == ["looking up 2 rows", "with ***"]
    outputs = {
        "stdout": out,
        "stderr": err,
        "run_log": repr(sql("SELECT * FROM etl_audit.run_log")),
    }
    outputs |= {p.name: p.read_text() for p in (tmp_path / "outbox").glob("*.json")}
    for name, text in outputs.items():
        for secret in (key, token, json.dumps(key)[1:-1], json.dumps(token)[1:-1]):
            assert secret not in text, f"{name} shows {secret}"


def test_the_source_line_survives_a_hook(hook, table_dir, write, run_cli, warehouse_url, capsys):
    reference = hook(
        """
        rows["name"] = rows["name"].str.upper()
        return rows
        """
    )
    config = table_dir(MAPPING, python_transform=reference, primary_key=["code"], header_row=2)
    code, summary = run_cli(config, write("t.csv", "# vendor export\n" + SOURCE))
    assert code == 0, summary["error"]
    capsys.readouterr()
    code = main(
        ["why", "t_codes", "code=02134", "--config-root", str(config.parent),
         "--warehouse", warehouse_url, "--json"]
    )  # fmt: skip
    versions = json.loads(capsys.readouterr().out)["versions"]
    assert code == 0
    assert [(v["line"], v["values"]["name"]) for v in versions] == [(4, "ALLSTON")]


def test_a_hook_returning_a_date_outside_years_1_to_9999_rejects_the_file(
    hook, table_dir, write, run_cli, sql
):
    """Arrow casts the hook's text "0000-06-01" to a date Python cannot hold: the file is
    rejected naming the value as written, not an internal error reading it back."""
    reference = hook(
        """
        rows["day"] = rows["day"].astype(str).where(rows["code"] == "00501", "0000-06-01")
        return rows
        """
    )
    code, summary = run_cli(table_dir(MAPPING, python_transform=reference), write("t.csv", SOURCE))
    assert code == 2, summary["error"]
    assert summary["error"]["type"] == "RejectedInput"
    assert (
        "line 3, column 'day': python_transform teamhooks:shape: returned a value that is "
        "outside years 1 to 9999 (in UTC), which not every tool can read (value '0000-06-01')"
    ) in summary["error"]["message"]
    assert sql("SELECT status FROM etl_audit.run_log WHERE step = 'ingest'") == [("failed",)]
