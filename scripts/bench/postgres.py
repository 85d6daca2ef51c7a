"""PostgreSQL as the warehouse (--postgres): refload timed step by step, the psql floor,
and the breakdown of refload's time."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.data import MAPPING
from bench.jobs import _AsInTheImage, _run_refload

# PostgreSQL as the warehouse (--postgres): the server scripts/start_postgres.sh starts.
POSTGRES_URL = os.environ.get(
    "REFLOAD_BENCH_POSTGRES_URL", "postgresql://refload:refload@127.0.0.1:5432/refload_bench"
)


def _fresh_postgres() -> None:
    """An empty benchmark database, so every run starts as the DuckDB ones do."""
    import psycopg

    admin_url = POSTGRES_URL.rsplit("/", 1)[0] + "/refload_test"
    name = POSTGRES_URL.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def job_refload_pg(csv: Path, work: Path) -> dict[str, Any]:
    """refload into PostgreSQL (an empty database: the driver made it), timing where its
    time goes: the imports, each step and ingest's phases, and the warehouse's share (the
    COPY of the staging rows, the change set, the publish statements, the tests and the
    audit rows)."""
    sys.meta_path.insert(0, _AsInTheImage())
    started = time.perf_counter()
    import handler.cli  # noqa: F401  (timed with the steps it runs)
    import steps.ingest
    import steps.load
    import steps.validate
    from steps.shared.warehouse import client, postgres

    spent: dict[str, float] = {"imports": time.perf_counter() - started}
    step = [""]

    def timed(label: str, call: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started

        return wrapper

    def timed_step(label: str, call: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            step[0] = label
            return timed(label, call)(*args, **kwargs)

        return wrapper

    # The curated file's COPY: into staging, or into a new target (ADR 23).
    postgres.PostgresCatalog.fill = timed(  # type: ignore[method-assign]
        "COPY of the curated file", postgres.PostgresCatalog.fill
    )
    # Early staging (ADR 22): the same COPY, on a thread while ingest writes the Parquet.
    postgres.PostgresCatalog.stage_rows = timed(  # type: ignore[method-assign]
        "COPY beside Parquet", postgres.PostgresCatalog.stage_rows
    )
    run = client.SqlClient._run

    def statement(self: Any, sql: str, params: Any, fetch: bool) -> Any:
        kind = sql.lstrip().split(None, 1)[0].upper()
        if step[0] == "ingest":  # early staging's, timed with its COPY
            return run(self, sql, params, fetch)
        if "etl_audit" in sql and kind in ("INSERT", "CREATE"):
            label = "audit rows"
        elif kind in ("DELETE", "INSERT"):
            label = "publish (DELETE + INSERT)"
        elif step[0] == "load":
            label = "change set, catalog"
        else:
            label = "tests, checks and other SQL"
        return timed(label, run)(self, sql, params, fetch)

    client.SqlClient._run = statement  # type: ignore[method-assign]
    for module, name, label in (
        (steps.ingest, "_map_chunks", "read, transform, cast"),
        (steps.ingest, "_duplicates_to_drop", "dedupe, key check"),
        (steps.ingest, "write_parts", "Parquet"),
        (steps.ingest, "write_curated", "Parquet"),
    ):
        setattr(module, name, timed(label, getattr(module, name)))
    for module, label in (
        (steps.ingest, "ingest"),
        (steps.load, "load"),
        (steps.validate, "validate"),
    ):
        module.run = timed_step(label, module.run)  # type: ignore[attr-defined]
    started = time.perf_counter()
    code = _run_refload(csv, work, POSTGRES_URL)
    spent["whole run"] = time.perf_counter() - started
    return {"exit": code, "spent": spent}


def last_night(kind: str, csv: Path, work: Path, run: Any) -> None:
    """Before a `*_next` job, untimed: an empty database, last night's file loaded by the
    same job (`run`: the benchmark's child runner), then every table analysed, as
    autovacuum has by the next night."""
    import psycopg

    _fresh_postgres()
    run({"floor_next": "floor_pg", "refload_next": "refload_pg"}[kind], csv, work)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
        tables = con.execute("SELECT schemaname, relname FROM pg_stat_user_tables").fetchall()
        for schema, name in tables:
            con.execute(f'ANALYZE "{schema}"."{name}"')


# The floor's casts: each mapping type in PostgreSQL's spelling (a date with its format).
PG_TYPES = {"double": "double precision", "integer": "integer", "boolean": "boolean"}


def _pg_floor_columns() -> list[tuple[str, str, str]]:
    """(target, PostgreSQL type, cast of the text column) for each row of MAPPING."""
    import csv as csvlib
    import io

    columns = []
    for row in csvlib.DictReader(io.StringIO(MAPPING)):
        kind = row["data_type"]
        pg_type = PG_TYPES.get(kind, kind.replace("decimal", "numeric"))
        source = f'"{row["source_column"]}"'
        if row["format"]:  # %m/%d/%Y
            pattern = row["format"].replace("%m", "MM").replace("%d", "DD").replace("%Y", "YYYY")
            cast = f"to_date({source}, '{pattern}')"
        else:
            cast = f"{source}::{pg_type}"
        columns.append((row["target_column"], pg_type, cast))
    return columns


def job_floor_pg(csv: Path, work: Path, create: bool = True) -> dict[str, Any]:
    """The least a PostgreSQL load can do (issue #28): `psql \\copy` of the CSV into a text
    table, then DELETE + INSERT ... SELECT with the mapping's casts into a typed target, in
    one transaction (`create`: the target made first, empty)."""
    header = [n.strip('"') for n in csv.open().readline().strip().split(",")]
    columns = _pg_floor_columns()
    text = ", ".join(f'"{n}" text' for n in header)
    typed = ", ".join(f'"{target}" {pg_type}' for target, pg_type, _ in columns)
    casts = ", ".join(cast for _, _, cast in columns)
    script = (
        (f"CREATE TABLE target ({typed});\n" if create else "")
        + f"BEGIN; CREATE TEMP TABLE staging ({text});\n"
        + f"\\copy staging FROM '{csv}' CSV HEADER\n"
        + f"DELETE FROM target; INSERT INTO target SELECT {casts} FROM staging; COMMIT;\n"
    )
    subprocess.run(
        ["psql", POSTGRES_URL, "-q", "-v", "ON_ERROR_STOP=1"],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )
    return {}


def job_floor_pg_next(csv: Path, work: Path) -> dict[str, Any]:
    """The floor the next night: its target holds last night's rows."""
    return job_floor_pg(csv, work, create=False)


# --postgres: the shares of refload's run, step by step (the phases of each in brackets).
PG_STEPS = {
    "ingest": ["read, transform, cast", "dedupe, key check", "Parquet", "COPY beside Parquet"],
    "load": ["COPY of the curated file", "change set, catalog", "publish (DELETE + INSERT)"],
    "validate": ["tests, checks and other SQL"],
}


def print_pg_breakdown(runs: list[dict[str, Any]], label: str = "refload") -> None:
    """Where refload's wall time went (median s of the rounds): the process start (the
    interpreter, before the job), the imports, each step with its phases, and the rest
    (the audit rows, the connection, the summary, the exit)."""

    def median(label: str) -> float:
        return statistics.median(r["spent"].get(label, 0.0) for r in runs)

    start = statistics.median(r["wall"] - r["seconds_in_process"] for r in runs)
    rest = statistics.median(
        r["seconds_in_process"]
        - r["spent"]["imports"]
        - sum(r["spent"].get(k, 0.0) for k in PG_STEPS)
        for r in runs
    )
    steps = []
    for step, phases in PG_STEPS.items():
        inner = ", ".join(f"{k} {median(k):.2f}" for k in phases)
        steps.append(f"{step} {median(step):.2f} ({inner})")
    print(
        f"    where {label}'s time goes (median s): process start and exit {start:.2f}, imports "
        f"{median('imports'):.2f}, {', '.join(steps)}, the rest (audit rows, connection, "
        f"exit) {rest:.2f}"
    )
