"""Benchmark refload against the floor (and pandas, and PySpark when installed).

    .venv/bin/python scripts/benchmark.py [--sizes 50000,1000000,5000000]
        [--repeat 3] [--memory-mb 2048] [--price-per-gb-second 0.0000166667]
        [--workdir .bench]

For each size it generates a ZIP-like CSV (fixed seed, leading-zero keys, 1% exact
duplicate rows, padded and mixed-case text, %m/%d/%Y dates), then runs, each in a
fresh process on the same file:

- refload: `python -m handler run` end to end on the embedded default (ingest with
  transforms, casts, dedupe and key checks; load into DuckDB; validate);
- floor: pyarrow's CSV read plus the DuckDB load of the same rows (DELETE + INSERT +
  key check in one transaction): the least any such job can do;
- duckdb_sql: the same job as one hand-written DuckDB SQL script (read_csv all_varchar,
  the transforms, TRY_CAST, dedupe, key check, COPY to Parquet, then the publish with the
  tests in one transaction), checked once per size to produce refload's table row for row;
- pandas: the same job written the usual way in pandas;
- hook (smallest size only): refload with a trivial `python_transform` (identity), the
  cost of a table that has a pandas hook;
- pyspark: the same job on local Spark, when pyspark is installed;
- refload_spark (5M rows and up, when pyspark is installed): `run --engine spark` on
  local[2] (REFLOAD_SPARK_MASTER), its peak memory summed over the process tree (the
  driver, the JVM and its Python workers).

Each run starts from an empty database. Each job runs `--repeat` times per size, the
jobs taking turns (floor, refload, pandas; again) so that a noisy moment on the machine
hits them alike. It prints the median wall time (whole process), the highest peak RSS,
rows/s, the ratio to the floor (the median of each round's ratio) and the AWS Lambda cost
of the run (duration x memory setting x price per GB-second), then the import time of the
handler (with a notify run) and of each step.

`--postgres` runs them on PostgreSQL instead (scripts/start_postgres.sh): refload against
the psql floor (`\\copy` as text, then DELETE + INSERT ... SELECT with the casts, in one
transaction), each from an empty database (a new target, the contract's measure), then
both again the next night (`floor_next`, `refload_next`): the target holds last night's
rows, analysed, and the file changes 1% of its keys (refload's change set then joins
them); with where refload's time goes in each.

`--bad-rows` runs only the bad-input case instead: at each size, the same rows good, then
every row bad (its latitude not a number) read to the end (max_reject_pct 100) and
refused at the first chunk (max_reject_pct 0), with wall time and peak RSS: once a file
streams, peak RSS stays flat as it grows (`--sizes 2000000,4000000 --repeat 1`, or a
smaller REFLOAD_CHUNK_BYTES with smaller sizes).

For the smallest size it also shows where refload's time goes beyond the floor's: the
imports refload makes and the floor does not (structlog, pydantic and the config models,
pyarrow.compute, refload itself), and a warm run of the floor, the SQL job and refload (a
second file in the same process, as a reused Lambda container runs it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.data import generate, next_night
from bench.jobs import (
    STEP_IMPORTS,
    job_bad_all_read,
    job_bad_stop,
    job_duckdb_sql,
    job_duckdb_sql_warm,
    job_floor,
    job_floor_warm,
    job_hook,
    job_imports,
    job_pandas,
    job_refload,
    job_refload_warm,
    job_stack,
    job_statements,
    job_step_imports,
    same_table,
)
from bench.postgres import (
    _fresh_postgres,
    job_floor_pg,
    job_floor_pg_next,
    job_refload_pg,
    last_night,
    print_pg_breakdown,
)
from bench.redshift import job_redshift_latency, redshift_latency
from bench.spark import job_pyspark, job_refload_spark

JOBS = {
    "refload": job_refload,
    "floor": job_floor,
    "duckdb_sql": job_duckdb_sql,
    "pandas": job_pandas,
    "hook": job_hook,
    "refload_pg": job_refload_pg,
    "floor_pg": job_floor_pg,
    "floor_pg_next": job_floor_pg_next,
    "pyspark": job_pyspark,
    "refload_spark": job_refload_spark,
    "imports": job_imports,
    "floor_warm": job_floor_warm,
    "duckdb_sql_warm": job_duckdb_sql_warm,
    "refload_warm": job_refload_warm,
    "bad_all_read": job_bad_all_read,
    "bad_stop": job_bad_stop,
    "stack": job_stack,
    "statements": job_statements,
    "step_imports": job_step_imports,
    "redshift_latency": job_redshift_latency,
}


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss
    across fork and exec, so a child would report the driver's peak (2.2 GB after it
    generated a 5M-row file) whatever it used itself."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, csv: Path, work: Path) -> None:
    os.environ.setdefault("REFLOAD_LOG_LEVEL", "WARNING")
    started = time.perf_counter()
    result = JOBS[kind](csv, work)
    result["seconds_in_process"] = time.perf_counter() - started
    # The Spark job's JVM and Python workers are children: their memory is sampled apart.
    result["max_rss_mb"] = max(_peak_rss_mb(), result.get("tree_rss_mb", 0))
    print("BENCH " + json.dumps(result, default=str))
    gc.freeze()  # the child exits as `python -m handler` does (handler/__main__.py)


# --- driver ---------------------------------------------------------------------------


def run_child(kind: str, csv: Path, work: Path) -> dict[str, Any] | None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(csv), str(work)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode or not lines:
        print(f"  {kind} failed (exit {done.returncode}): {done.stderr[-800:]}", file=sys.stderr)
        return None
    result = json.loads(lines[-1][6:])
    result["wall"] = wall
    return result


def _median_ratio(rounds: list[dict[str, dict[str, Any]]], kind: str, peer: str) -> str:
    ratios = [r[kind]["wall"] / r[peer]["wall"] for r in rounds if {kind, peer} <= r.keys()]
    return f"{statistics.median(ratios):.2f}" if ratios else "-"


def explain_small_run(csv: Path, work: Path, repeat: int) -> None:
    """Where a small run's time goes beyond the floor's: imports, and the warm data path."""
    warm: dict[str, list[float]] = {"floor_warm": [], "duckdb_sql_warm": [], "refload_warm": []}
    stacks = []
    for _ in range(repeat):
        for kind in warm:
            for database in work.glob("*.duckdb*"):
                database.unlink()
            result = run_child(kind, csv, work)
            if result:
                warm[kind].append(result["warm"])
        stack = run_child("stack", csv, work)
        if stack:
            stacks.append(stack["imports"])
    if not stacks or not all(warm.values()):
        return
    imports = {k: statistics.median(s[k] for s in stacks) for k in stacks[0]}
    floor, sql, ours = (statistics.median(warm[k]) for k in warm)
    print(
        f"    imports refload makes and the floor does not: {sum(imports.values()):.2f} s ("
        + ", ".join(f"{k} {v:.3f}" for k, v in imports.items())
        + ")"
    )
    print(
        f"    warm (a second file in the same process, as a reused Lambda): floor "
        f"{floor:.3f} s, duckdb_sql {sql:.3f} s, refload {ours:.3f} s "
        f"({ours / floor:.2f}x the floor, {ours / sql:.2f}x the SQL job)"
    )
    counted = run_child("statements", csv, work)
    if counted:  # docs/architecture.md "Warehouse round trips"
        print(f"    statements a warm run sends to DuckDB: {counted['statements']}")


def bad_rows(sizes: list[int], work: Path, repeat: int) -> int:
    """--bad-rows: files where every row is bad, at each size, beside the same rows good.

    Memory must follow the chunk size (REFLOAD_CHUNK_BYTES), not the file: once a file
    streams (over 1.5 chunks), peak RSS stays flat as it grows, however many rows are bad.
    """
    chunk = int(os.environ.get("REFLOAD_CHUNK_BYTES", 64 << 20))
    print(f"every row bad, REFLOAD_CHUNK_BYTES {chunk >> 20} MB, median of {repeat} run(s)")
    header = (
        f"{'rows':>10} {'file MB':>8} {'job':<13} {'wall s':>8} {'peak RSS MB':>12} {'exit':>5}"
    )
    print(header)
    print("-" * len(header))
    peaks: dict[str, list[float]] = {}
    for size in sizes:
        good, bad = work / f"zip_{size}.csv", work / f"zip_{size}_bad.csv"
        if not good.exists():
            generate(size, good)
        if not bad.exists():
            generate(size, bad, all_bad=True)
        for kind, csv in (("refload", good), ("bad_all_read", bad), ("bad_stop", bad)):
            runs = []
            for _ in range(repeat):
                folder = work / f"{kind}_{size}"
                folder.mkdir(exist_ok=True)
                for database in folder.glob("*.duckdb*"):
                    database.unlink()
                result = run_child(kind, csv, folder)
                if result:
                    runs.append(result)
            if not runs:
                continue
            rss = max(r["max_rss_mb"] for r in runs)
            peaks.setdefault(kind, []).append(rss)
            print(
                f"{size:>10,} {csv.stat().st_size / 1e6:>8.0f} {kind:<13} "
                f"{statistics.median(r['wall'] for r in runs):>8.2f} {rss:>12.0f} "
                f"{runs[0]['exit']:>4}"
            )
    for kind, values in peaks.items():
        print(f"peak RSS of {kind}, largest over smallest file: {values[-1] / values[0]:.2f}x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CSV", "WORK"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="50000,1000000,5000000")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each job per size")
    parser.add_argument("--memory-mb", type=int, default=2048, help="Lambda memory setting")
    parser.add_argument(
        "--price-per-gb-second",
        type=float,
        default=0.0000166667,
        help="Lambda x86 price (USD per GB-second)",
    )
    parser.add_argument("--workdir", default=str(ROOT / ".bench"))
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="PostgreSQL as the warehouse: refload against psql \\copy + DELETE/INSERT, "
        "into a new target and the next night",
    )
    parser.add_argument("--jobs", help="only these jobs (comma list), e.g. refload,refload_spark")
    parser.add_argument(
        "--bad-rows",
        action="store_true",
        help="only the all-bad-rows case: peak RSS as the file grows (sizes: --sizes)",
    )
    parser.add_argument(
        "--redshift",
        action="store_true",
        help="only a 249-row table's warm run on the Redshift dialect, each statement "
        "held --delay-ms (the tests' proxy onto PostgreSQL)",
    )
    parser.add_argument("--delay-ms", type=float, default=40, help="with --redshift")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    if args.redshift:
        return redshift_latency(Path(args.workdir), args.repeat, args.delay_ms, run_child)
    if args.bad_rows:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        return bad_rows([int(s) for s in args.sizes.split(",")], Path(args.workdir), args.repeat)

    import compileall
    import importlib.util

    # As the image build does: Lambda's file system is read-only, so modules without
    # bytecode would be compiled again at every cold start.
    for package in ("handler", "steps"):
        compileall.compile_dir(ROOT / package, quiet=1)
    kinds = ["floor", "duckdb_sql", "refload", "pandas"]
    if importlib.util.find_spec("pyspark"):
        kinds += ["pyspark", "refload_spark"]
    # With --postgres the same table compares the PostgreSQL jobs under the same names.
    job_of = {"floor": "floor_pg", "refload": "refload_pg"} if args.postgres else {}
    if args.postgres:
        # The next night (`*_next`): the target holds last night's rows, 1% of keys change.
        job_of |= {"floor_next": "floor_pg_next", "refload_next": "refload_pg"}
        kinds = ["floor", "refload", "floor_next", "refload_next"]
    everything = not args.jobs  # --jobs: those jobs alone, without the import timings
    if args.jobs:
        kinds = [k for k in kinds if k in args.jobs.split(",")]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"refload benchmark: {os.cpu_count()} cores, median of {args.repeat} run(s), "
        f"Lambda {args.memory_mb} MB at "
        f"${args.price_per_gb_second}/GB-s"
        + ("" if importlib.util.find_spec("pyspark") else "; pyspark not installed")
    )
    header = (
        f"{'rows':>10} {'job':<12} {'wall s':>8} {'peak RSS MB':>12} {'rows/s':>12} "
        f"{'x floor':>8} {'x sql':>6} {'Lambda $':>10}"
    )
    print(header)
    print("-" * len(header))
    sizes = [int(s) for s in args.sizes.split(",")]
    smallest = min(sizes)
    for size in sizes:
        csv = work / f"zip_{size}.csv"
        if not csv.exists():
            generate(size, csv)
        tonight = work / f"zip_{size}_next.csv"
        if args.postgres and not tonight.exists():
            next_night(csv, tonight)
        rounds: list[dict[str, dict[str, Any]]] = []
        for _ in range(args.repeat):
            done: dict[str, dict[str, Any]] = {}
            small_extras = ["hook"] if size == smallest and everything and not args.postgres else []
            for kind in [*kinds, *small_extras]:
                if kind == "refload_spark" and size < 5_000_000:
                    continue  # Spark's start-up alone is longer than smaller files take
                folder = work / f"{kind}_{size}"
                folder.mkdir(exist_ok=True)
                for database in folder.glob("*.duckdb*"):  # every run loads a new database
                    database.unlink()
                source = csv
                if kind.endswith("_next"):  # last night's load, untimed
                    last_night(kind, csv, folder, run_child)
                    source = tonight
                elif args.postgres:  # an empty database, made before the timed run starts
                    _fresh_postgres()
                result = run_child(job_of.get(kind, kind), source, folder)
                if result is None:
                    continue
                if kind == "refload" and result.get("exit"):
                    print(f"  refload exited {result['exit']}", file=sys.stderr)
                done[kind] = result
            rounds.append(done)
            first = len(rounds) == 1 and {"refload", "duckdb_sql"} <= done.keys()
            if first and not same_table(
                work / f"refload_{size}" / "refload.duckdb",
                work / f"duckdb_sql_{size}" / "sql.duckdb",
            ):
                print("  the DuckDB SQL job's table differs from refload's", file=sys.stderr)
        for kind in [*kinds, "hook"]:
            runs = [r[kind] for r in rounds if kind in r]
            if not runs:
                continue
            wall = statistics.median(r["wall"] for r in runs)
            rss = max(r["max_rss_mb"] for r in runs)
            # Each round's ratio compares runs seconds apart, so a slow spell on a shared
            # machine cancels out; the median of those ratios is reported.
            floor = "floor_next" if kind.endswith("_next") else "floor"
            ratio, to_sql = (_median_ratio(rounds, kind, peer) for peer in (floor, "duckdb_sql"))
            cost = wall * args.memory_mb / 1024 * args.price_per_gb_second
            print(
                f"{size:>10,} {kind:<12} {wall:>8.2f} {rss:>12.0f} "
                f"{size / wall:>12,.0f} {ratio:>8} {to_sql:>6} {cost:>10.6f}"
            )
        if args.postgres:
            for kind, label in (("refload", "refload"), ("refload_next", "refload the next night")):
                runs = [r[kind] for r in rounds if kind in r]
                if runs:
                    print_pg_breakdown(runs, label)
            continue
        if size == smallest and everything:
            explain_small_run(csv, work / f"refload_{size}", args.repeat)
    if not everything:
        return 0
    imports = [run_child("imports", work / "none.csv", work) for _ in range(3)]
    notify = min(i["handler_and_notify"] for i in imports if i)
    print(
        f"\nimport handler + run notify: {notify:.3f} s (best of 3; "
        f"heavy modules loaded: {imports[0]['heavy_after'] if imports[0] else '?'})"
    )
    steps = {}
    for step in STEP_IMPORTS:
        runs = [run_child("step_imports", Path(f"{step}.step"), work) for _ in range(3)]
        steps[step] = min(r["seconds"] for r in runs if r)
    print(f"import the ingest step:      {steps['ingest']:.3f} s")
    print(
        "import of each step after the handler (best of 3, fresh processes): "
        + ", ".join(f"{step} {seconds:.3f} s" for step, seconds in steps.items())
        + " (load and validate with the DuckDB driver); notify: above"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
