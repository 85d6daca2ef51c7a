"""Build a small fleet with a history and render its status page: docs/status.png.

The shipped sample tables are loaded once a "day" for a week (each day's audit rows are
moved one day back before the next): the currency file loses a few rows now and then,
the country table's last run fails a test, the ZIP code file stops arriving. Needs
headless Chromium (scripts/install_chromium.sh).

    .venv/bin/python scripts/status_demo.py [OUT.png]
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

from handler.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "raw"
DROPPED = [0, 7, 2, 30, 4, 11, 6]  # currency rows missing from each day's file
FRESHNESS = {
    "dim_currency": {
        "warn_after": {"count": 26, "period": "hour"},
        "error_after": {"count": 50, "period": "hour"},
    },
    "dim_zipcode": {
        "warn_after": {"count": 2, "period": "day"},
        "error_after": {"count": 3, "period": "day"},
    },
    "dim_country": {"error_after": {"count": 40, "period": "day"}},
}


def shift_one_day_back(database: Path) -> None:
    with duckdb.connect(str(database)) as con:
        for table, column in (
            ("load_ledger", "loaded_at"),
            ("run_log", "logged_at"),
            ("data_quality_tests", "executed_at"),
        ):
            con.execute(f"UPDATE etl_audit.{table} SET {column} = {column} - INTERVAL '1 day'")


def run(config: Path, source: Path, warehouse: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["run", "--config", str(config), "--source", str(source), "--warehouse", warehouse])


def build(work: Path) -> Path:
    configs = work / "configs"
    shutil.copytree(ROOT / "configs", configs)
    for table, rule in FRESHNESS.items():
        path = configs / f"{table}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "freshness": rule}))
    database = work / "fleet.duckdb"
    warehouse = f"duckdb:///{database}"
    currency_lines = next((SAMPLES / "currency").glob("*/*")).read_bytes().splitlines(True)
    for day in range(7):
        # The vendor's currency list shrinks and grows from day to day (day 3: a warning).
        currency = work / f"iso4217_{day}.csv"
        currency.write_bytes(b"".join(currency_lines[: len(currency_lines) - DROPPED[day]]))
        run(configs / "dim_currency.json", currency, warehouse)
        if day == 6:  # the country file changes: names now carry a footnote marker
            path = configs / "dim_country.json"
            config = json.loads(path.read_text())
            config["quality_tests"].append(
                {
                    "type": "regex",
                    "name": "name_starts_ascii",
                    "column": "name",
                    "pattern": "^[A-Z]",
                }
            )
            path.write_text(json.dumps(config))
        if day % 2 == 0 or day == 6:
            run(configs / "dim_country.json", next((SAMPLES / "country").glob("*/*")), warehouse)
        if day < 3:  # then the ZIP code file stops arriving
            run(configs / "dim_zipcode.json", next((SAMPLES / "zipcode").glob("*/*")), warehouse)
        if day in (1, 4):
            run(
                configs / "dim_subdivision.json",
                next((SAMPLES / "subdivision").glob("*/*")),
                warehouse,
            )
        if day < 6:
            shift_one_day_back(database)
    page = work / "status.html"
    main(["status", "--config-root", str(configs), "--warehouse", warehouse, "--html", str(page)])
    return page


def screenshot(page: Path, out: Path) -> None:
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,360",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
    )


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "status.png"
    with tempfile.TemporaryDirectory() as folder:
        screenshot(build(Path(folder)), target.resolve())
    print(f"wrote {target}")
