"""--redshift: one small table's warm run on the Redshift dialect through the tests' proxy
onto PostgreSQL, each statement held as a leader node tens of milliseconds away holds it."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.data import COUNTRY_CONFIG, COUNTRY_MAPPING, COUNTRY_ROWS, generate_countries
from bench.jobs import _run_refload
from bench.postgres import POSTGRES_URL, _fresh_postgres

COPY_ROLE = "arn:aws:iam::123456789012:role/refload-copy"


def job_redshift_latency(csv: Path, work: Path) -> dict[str, Any]:
    """A warm run (target and audit tables exist, a file with changes) of the country table
    on the Redshift dialect through the tests' proxy, each statement held
    REFLOAD_TEST_REDSHIFT_DELAY_MS.
    Warehouse time is what the run waited on the wire: from each request to the last
    reply before the next, the delay included."""
    from urllib.parse import urlsplit

    sys.path.insert(0, str(ROOT))  # tests.warehouses: the proxy and the COPY stand-in
    from steps.shared.warehouse import DIALECTS
    from tests.warehouses import STATEMENTS, RedshiftProxy

    _fresh_postgres()
    parts = urlsplit(POSTGRES_URL)
    proxy = RedshiftProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    DIALECTS["redshift"] = "tests.warehouses:RedshiftThroughProxy"
    url = (
        f"redshift://{parts.username}:{parts.password}@127.0.0.1:{proxy.port}{parts.path}"
        f"?ssl=false&iam_role={COPY_ROLE}"
    )

    def run(source: Path) -> int:
        return _run_refload(source, work, url, table=(COUNTRY_MAPPING, COUNTRY_CONFIG))

    cold = run(csv)  # creates the target and the audit tables
    second = work / "countries_2.csv"  # the warm run publishes: some names changed
    generate_countries(second, edition=2)
    proxy.reset_counts()
    STATEMENTS.clear()
    started = time.perf_counter()
    code = run(second)
    warm = time.perf_counter() - started
    proxy.close()
    return {
        "exit": cold or code,
        "warm": warm,
        "warehouse": proxy.waited,
        "round_trips": proxy.round_trips,
        "statements": proxy.statements,
        "dialect_statements": len(STATEMENTS),
    }


def redshift_latency(
    work: Path,
    repeat: int,
    delay_ms: float,
    run_child: Callable[[str, Path, Path], dict[str, Any] | None],
) -> int:
    """--redshift: the warm run's warehouse time with each statement held `delay_ms`, and
    with none (what the server itself took), median of `repeat` runs taking turns.
    `run_child` is the driver's: it runs the job in a fresh process of scripts/benchmark.py."""
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "countries.csv"
    generate_countries(csv)
    folder = work / "redshift_latency"
    folder.mkdir(parents=True, exist_ok=True)
    runs: dict[float, list[dict[str, Any]]] = {delay_ms: [], 0.0: []}
    for _ in range(repeat):
        for delay in runs:
            os.environ["REFLOAD_TEST_REDSHIFT_DELAY_MS"] = str(delay)
            result = run_child("redshift_latency", csv, folder)
            if result and not result["exit"]:
                runs[delay].append(result)
            elif result:
                print(f"  refload exited {result['exit']}", file=sys.stderr)
    print(
        f"Redshift dialect through the proxy, {COUNTRY_ROWS} rows, a replace table with a "
        f"primary key and five checks, warm run, median of {repeat}"
    )
    for delay, results in runs.items():
        if not results:
            continue
        waited = statistics.median(r["warehouse"] for r in results)
        first = results[0]
        # The driver's other round trips (login, the Parse of each new statement) are not
        # held: on a real network each adds its latency, a millisecond within a region.
        every = waited + (first["round_trips"] - first["statements"]) * delay / 1000
        print(
            f"  each statement +{delay:g} ms: warehouse {waited:.3f} s"
            f" of a {statistics.median(r['warm'] for r in results):.3f} s run; "
            f"{first['statements']} statements in {first['round_trips']} round trips "
            f"(~{every:.2f} s were every round trip held)"
        )
    return 0
