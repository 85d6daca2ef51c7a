"""Progress at a terminal (run under a real pseudo-terminal), and never anywhere else."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, ROOT, SAMPLES, ZIP_CSV

STEP_LINE = re.compile(r"^(ingest|load|validate)\s+OK\s+\d+\.\d\d s", re.M)


def _run(tmp_path: Path, *extra: str, tty: bool, env: dict[str, str] | None = None):
    """`python -m handler run --json` with stderr on a pseudo-terminal or a pipe."""
    arguments = [
        "run",
        "--config",
        str(CONFIGS / "dim_zipcode.json"),
        "--source",
        str(ZIP_CSV),
        "--warehouse",
        f"duckdb:///{tmp_path / 'w.duckdb'}",
        "--curated-root",
        str(tmp_path / "curated"),
        "--json",
        *extra,
    ]
    return _command(tmp_path, arguments, tty=tty, env=env)


def _command(tmp_path: Path, arguments: list[str], *, tty: bool, env: dict[str, str] | None = None):
    command = [sys.executable, "-m", "handler", *arguments]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("REFLOAD_PROGRESS", None)
    environment.update(env or {})
    if not tty:
        done = subprocess.run(
            command, capture_output=True, text=True, env=environment, cwd=tmp_path
        )
        return done.returncode, done.stdout, done.stderr
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=terminal, env=environment, cwd=tmp_path
    )
    os.close(terminal)
    seen = bytearray()

    def drain() -> None:  # a full pty buffer would block the child
        while True:
            try:
                block = os.read(controller, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                return
            if not block:
                return
            seen.extend(block)

    reader = threading.Thread(target=drain)
    reader.start()
    out = process.communicate()[0].decode()
    code = process.returncode
    reader.join(timeout=30)
    os.close(controller)
    # A bar is redrawn in place after a carriage return: one line per drawing, to read.
    return code, out, seen.decode(errors="replace").replace("\r", "\n")


@pytest.mark.slow
def test_a_terminal_shows_each_step_with_its_time_and_stdout_stays_one_json_object(tmp_path):
    code, out, terminal = _run(tmp_path, tty=True)
    assert code == 0, terminal
    assert [m.group(1) for m in STEP_LINE.finditer(terminal)] == ["ingest", "load", "validate"]
    ingest = next(line for line in terminal.splitlines() if re.match(r"ingest +OK", line))
    assert re.search(r"\(read \d+\.\d\d s, dedupe \d+\.\d\d s, write \d+\.\d\d s\)", ingest)
    # The live bar: the share of the file's bytes read, the rows they gave and the rate;
    # drawn once more as the phase ends, so the whole file shows however fast it went.
    summary = json.loads(out)  # nothing of the progress in stdout
    assert summary["status"] == "passed"
    size = r"[\d.]+[kMG]?B"
    rows = f"{summary['rows_read']:,} rows"  # 42,789 rows: thousands separated
    assert re.search(
        rf"^ingest: read +100%\|.+\| {size}/{size}, {rows} \[.+<.+, {size}/s\]", terminal, re.M
    ), terminal
    assert re.search(rf"^ingest: write +{rows} \[.+, [\d,]+ rows/s\]", terminal, re.M)
    # The step records are the progress lines' business at a terminal: not printed there.
    assert "step started" not in terminal and "step finished" not in terminal


@pytest.mark.slow
def test_a_pipe_gets_json_log_lines_and_no_progress(tmp_path):
    code, out, err = _run(tmp_path, tty=False)
    assert code == 0, err
    assert not STEP_LINE.search(err) and "\r" not in err
    records = [json.loads(line) for line in err.splitlines()]
    assert {r["event"] for r in records} >= {"step started", "step finished"}
    assert json.loads(out)["status"] == "passed"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "env"),
    [
        (("--quiet",), {}),
        ((), {"REFLOAD_PROGRESS": "0"}),
        ((), {"AWS_LAMBDA_FUNCTION_NAME": "refload"}),
    ],
    ids=["--quiet", "REFLOAD_PROGRESS=0", "in-lambda"],
)
def test_progress_can_be_turned_off_on_a_terminal(tmp_path, extra, env):
    code, out, terminal = _run(tmp_path, *extra, tty=True, env=env)
    assert code == 0, terminal
    assert not STEP_LINE.search(terminal)
    assert json.loads(out)["status"] == "passed"


def test_the_lambda_path_never_imports_the_progress_library():
    probe = (
        "import sys; from handler import lambda_handler; "
        "lambda_handler({'step': 'notify', 'table': 't', 'run_id': 'r-1', 'failed_step': 'load',"
        " 'error': {'type': 'X', 'message': 'm'}}); print('tqdm' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "REFLOAD_OUTBOX": "/tmp/refload-progress-outbox"},
    )
    assert done.stdout.strip().splitlines()[-1] == "False", done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "phases"),
    [
        (["check", str(CONFIGS)], "(configs"),
        (["init", str(ZIP_CSV), "--table", "t_zip", "--out", "out"], "(read"),
    ],
    ids=["check", "init"],
)
def test_init_and_check_show_progress_on_a_terminal(tmp_path, arguments, phases):
    code, out, terminal = _command(tmp_path, arguments, tty=True)
    assert code == 0, terminal
    line = next(line for line in terminal.splitlines() if re.match(rf"{arguments[0]} +OK", line))
    assert phases in line
    assert "|" not in out  # the bars went to the terminal (stderr), not into the output


@pytest.mark.slow
def test_check_prints_the_same_report_on_a_terminal_and_in_a_pipe(tmp_path):
    assert (
        _command(tmp_path, ["check", str(CONFIGS)], tty=True)[1]
        == _command(tmp_path, ["check", str(CONFIGS)], tty=False)[1]
    )


@pytest.mark.slow
def test_a_terminal_gets_the_step_records_with_verbose_and_always_the_errors(tmp_path):
    code, _, terminal = _run(tmp_path, "--verbose", tty=True)
    assert code == 0, terminal
    assert "step started" in terminal and "step finished" in terminal
    assert STEP_LINE.search(terminal)  # and the progress as well

    bad = tmp_path / "bad.csv"
    bad.write_text("zip,city\nnot-a-zip,X\n")
    code, _, terminal = _command(
        tmp_path,
        [
            "run",
            "--config",
            str(CONFIGS / "dim_zipcode.json"),
            "--source",
            str(bad),
            "--warehouse",
            f"duckdb:///{tmp_path / 'w.duckdb'}",
        ],
        tty=True,
    )
    assert code == 2
    assert "step failed" in terminal and "step started" not in terminal  # errors: always


@pytest.mark.slow
def test_an_xlsx_read_shows_its_rows_at_a_terminal(tmp_path):
    source = next((SAMPLES / "country").glob("*/*.xlsx"))
    arguments = ["run", "--config", str(CONFIGS / "dim_country.json"), "--source", str(source)]
    warehouse = ["--warehouse", f"duckdb:///{tmp_path / 'w.duckdb'}", "--json"]
    code, out, terminal = _command(tmp_path, [*arguments, *warehouse], tty=True)
    assert code == 0, terminal
    rows = json.loads(out)["rows_read"]
    assert rows > 200
    assert re.search(rf"^ingest: read +100%\|.+, {rows:,} rows \[", terminal, re.M), terminal
