"""The DuckDB-side jobs, each run in a process of its own (scripts/benchmark.py --child):
refload, the floor, the hand-written SQL job, pandas, the hook, the bad-rows, warm and
import jobs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.data import CONFIG, MAPPING


class _AsInTheImage:
    """The Lambda image has neither pandas nor numpy; pyarrow imports them when they are
    installed (0.3 s and 0.06 s), so refload and the floor both run without them."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in ("pandas", "numpy"):
            raise ImportError(f"{name} is not in the refload image")


# DuckDB settings every DuckDB job shares with refload's warehouse connection (ADR 10).
SAME_FOOTING = {"preserve_insertion_order": False}


def _run_refload(
    csv: Path,
    work: Path,
    warehouse: str,
    *extra: str,
    table: tuple[str, dict[str, Any]] = (MAPPING, CONFIG),
    **config: Any,
) -> int:
    """`python -m handler run` in-process on `table` (its mapping sheet and config: the
    benchmark's ZIP table unless given), with `config` over it; returns the exit code."""
    from handler.cli import main

    mapping, table_config = table
    (work / "mapping.csv").write_text(mapping)
    (work / "config.json").write_text(json.dumps({**table_config, **config}))
    return main(
        [
            "run",
            "--config",
            str(work / "config.json"),
            "--source",
            str(csv),
            "--warehouse",
            warehouse,
            "--curated-root",
            str(work / "curated"),
            "--outbox",
            str(work / "outbox"),
            "--json",
            "--quiet",
            *extra,
        ]
    )


def _refload_on_bad_rows(csv: Path, work: Path, max_reject_pct: float) -> dict[str, Any]:
    sys.meta_path.insert(0, _AsInTheImage())
    database = f"duckdb:///{work / 'refload.duckdb'}"
    code = _run_refload(csv, work, database, max_reject_pct=max_reject_pct)
    return {"exit": code}


def job_bad_all_read(csv: Path, work: Path) -> dict[str, Any]:
    """Every row rejected and every row read (max_reject_pct 100): the rejects are counted,
    and only the first REFLOAD_MAX_REJECTS_KEPT are kept."""
    return _refload_on_bad_rows(csv, work, 100)


def job_bad_stop(csv: Path, work: Path) -> dict[str, Any]:
    """Every row rejected, max_reject_pct 0: refused at the first chunk."""
    return _refload_on_bad_rows(csv, work, 0)


def job_refload(csv: Path, work: Path, database: str = "refload.duckdb") -> dict[str, Any]:
    sys.meta_path.insert(0, _AsInTheImage())
    code = _run_refload(
        csv, work, f"duckdb:///{work / database}", "--run-id", f"bench-{time.time_ns()}"
    )
    return {"exit": code}


def job_hook(csv: Path, work: Path) -> dict[str, Any]:
    """refload with a trivial python_transform (identity): the cost of pandas for a table
    that has a hook (pandas on sys.path, as REFLOAD_PANDAS_SITE puts it in the image)."""
    (work / "benchhooks.py").write_text("def same(rows):\n    return rows\n")
    sys.path.insert(0, str(work))
    code = _run_refload(
        csv, work, f"duckdb:///{work / 'hook.duckdb'}", python_transform="benchhooks:same"
    )
    return {"exit": code}


def job_floor(csv: Path, work: Path, database: str = "floor.duckdb") -> dict[str, Any]:
    sys.meta_path.insert(0, _AsInTheImage())
    import duckdb
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(csv)
    with duckdb.connect(str(work / database), config=SAME_FOOTING) as con:
        con.register("incoming", table)
        con.execute("CREATE TABLE IF NOT EXISTS target AS SELECT * FROM incoming LIMIT 0")
        con.execute("BEGIN")
        con.execute("DELETE FROM target")
        con.execute("INSERT INTO target SELECT * FROM incoming")
        con.execute(
            "SELECT zip, plus4 FROM target GROUP BY zip, plus4 HAVING COUNT(*) > 1 LIMIT 1"
        ).fetchall()
        con.execute("COMMIT")
    return {"rows": table.num_rows}


# The same job as one hand-written DuckDB SQL script: what a SQL-first team would write.
# DuckDB has no initcap: the script title-cases the distinct cities (Python's str.title
# rule: a letter after a non-letter is upper) and joins them back, as a SQL author would
# for a low-cardinality column; per row, the lambda costs ~4 s per million rows here.
DUCKDB_SQL = """
CREATE MACRO py_title(s) AS array_to_string(list_transform(range(1, length(s) + 1),
    lambda i: CASE WHEN i = 1 OR NOT regexp_matches(s[i - 1], '[[:alpha:]]')
                   THEN upper(s[i]) ELSE s[i] END), '');
CREATE TEMP TABLE raw AS SELECT * FROM read_csv('{csv}', all_varchar = true, header = true);
CREATE TEMP TABLE cities AS
    SELECT city, py_title(lower(trim(city))) AS titled FROM (SELECT DISTINCT city FROM raw);
CREATE TEMP TABLE typed AS SELECT DISTINCT
    lpad(trim(zip), 5, '0') AS zipcode,
    lpad(trim(plus4), 4, '0') AS plus4,
    c.titled AS city,
    upper(trim(state)) AS state,
    TRY_CAST(trim(lat) AS DECIMAL(9, 4)) AS latitude,
    TRY_CAST(trim(long) AS DOUBLE) AS longitude,
    TRY_CAST(trim(population) AS INTEGER) AS population,
    CAST(TRY_STRPTIME(trim(effective), '%m/%d/%Y') AS DATE) AS effective_date,
    CASE WHEN lower(trim(active)) IN ('true', 't', 'yes', 'y', '1') THEN true
         WHEN lower(trim(active)) IN ('false', 'f', 'no', 'n', '0') THEN false END AS is_active
FROM raw JOIN cities c USING (city);
"""
DUCKDB_SQL_CHECKS = [
    # rejected values: a cast that failed on a value that was there
    "SELECT COUNT(*) FROM raw WHERE (TRY_CAST(trim(lat) AS DECIMAL(9, 4)) IS NULL AND "
    "trim(lat) <> '') OR (TRY_CAST(trim(population) AS INTEGER) IS NULL AND "
    "trim(population) <> '') OR (TRY_STRPTIME(trim(effective), '%m/%d/%Y') IS NULL AND "
    "trim(effective) <> '')",
    "SELECT COUNT(*) FROM (SELECT zipcode, plus4 FROM typed GROUP BY ALL HAVING COUNT(*) > 1)",
]
DUCKDB_SQL_PUBLISH = """
CREATE SCHEMA IF NOT EXISTS public;
CREATE TABLE IF NOT EXISTS public.bench_zip AS SELECT * FROM typed LIMIT 0;
BEGIN;
DELETE FROM public.bench_zip;
INSERT INTO public.bench_zip SELECT * FROM read_parquet('{parquet}');
"""
DUCKDB_SQL_TESTS = [
    "SELECT COUNT(*) = (SELECT COUNT(*) FROM typed) FROM public.bench_zip",
    "SELECT COUNT(*) = 0 FROM (SELECT zipcode, plus4 FROM public.bench_zip GROUP BY ALL "
    "HAVING COUNT(*) > 1)",
    "SELECT COUNT(*) = 0 FROM public.bench_zip WHERE zipcode IS NULL OR plus4 IS NULL "
    "OR city IS NULL",
]


def job_duckdb_sql(csv: Path, work: Path, database: str = "sql.duckdb") -> dict[str, Any]:
    """read_csv(all_varchar), transforms, TRY_CAST, dedupe, key check, COPY to Parquet,
    then DELETE + INSERT and the three tests in one transaction."""
    sys.meta_path.insert(0, _AsInTheImage())
    import duckdb

    parquet = work / "sql.parquet"
    # The setting refload's warehouse connection uses (ADR 10): the same footing.
    with duckdb.connect(str(work / database), config=SAME_FOOTING) as con:
        con.execute(DUCKDB_SQL.format(csv=csv))
        rejected, repeated = (con.execute(sql).fetchall()[0][0] for sql in DUCKDB_SQL_CHECKS)
        if rejected or repeated:
            raise SystemExit(f"rejected {rejected}, repeated keys {repeated}")
        con.execute(f"COPY typed TO '{parquet}' (FORMAT parquet)")
        con.execute(DUCKDB_SQL_PUBLISH.format(parquet=parquet))
        if not all(con.execute(sql).fetchall()[0][0] for sql in DUCKDB_SQL_TESTS):
            con.execute("ROLLBACK")
            raise SystemExit("a test failed")
        con.execute("COMMIT")
        rows = con.execute("SELECT COUNT(*) FROM public.bench_zip").fetchall()[0][0]
    return {"rows": rows}


def same_table(refload_db: Path, sql_db: Path) -> bool:
    """The SQL job's table is refload's, row for row (checked once per size)."""
    import duckdb

    with duckdb.connect() as con:
        con.execute(f"ATTACH '{refload_db}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{sql_db}' AS b (READ_ONLY)")
        differ = con.execute(
            "SELECT (SELECT COUNT(*) FROM (SELECT * FROM a.public.bench_zip EXCEPT ALL "
            "SELECT * FROM b.public.bench_zip)) + (SELECT COUNT(*) FROM (SELECT * FROM "
            "b.public.bench_zip EXCEPT ALL SELECT * FROM a.public.bench_zip))"
        ).fetchall()[0][0]
    return differ == 0


def job_pandas(csv: Path, work: Path) -> dict[str, Any]:
    import duckdb
    import pandas as pd

    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df["zip"] = df["zip"].str.strip().str.zfill(5)
    df["plus4"] = df["plus4"].str.strip().str.zfill(4)
    df["city"] = df["city"].str.strip().str.title()
    df["state"] = df["state"].str.strip().str.upper()
    df["lat"] = pd.to_numeric(df["lat"]).round(4)
    df["long"] = pd.to_numeric(df["long"])
    df["population"] = pd.to_numeric(df["population"]).astype("int32")
    df["effective"] = pd.to_datetime(df["effective"], format="%m/%d/%Y")
    df["active"] = df["active"].str.strip().str.upper().eq("Y")
    df = df.drop_duplicates()
    if df.duplicated(["zip", "plus4"]).any():
        raise SystemExit("duplicate key")
    df.to_parquet(work / "pandas.parquet")
    with duckdb.connect(str(work / "pandas.duckdb")) as con:
        con.execute("CREATE TABLE IF NOT EXISTS target AS SELECT * FROM df LIMIT 0")
        con.execute("BEGIN")
        con.execute("DELETE FROM target")
        con.execute("INSERT INTO target SELECT * FROM df")
        con.execute("COMMIT")
    return {"rows": len(df)}


def job_imports(csv: Path, work: Path) -> dict[str, Any]:
    sys.meta_path.insert(0, _AsInTheImage())
    started = time.perf_counter()
    import handler

    handler.lambda_handler(
        {
            "step": "notify",
            "table": "bench_zip",
            "run_id": "x",
            "failed_step": "load",
            "outbox": str(work / "outbox"),
            "error": {"type": "WarehouseUnavailable", "message": "down"},
        },
        None,
    )
    notify = time.perf_counter() - started
    heavy = [m for m in ("pandas", "pyarrow", "duckdb") if m in sys.modules]
    return {"handler_and_notify": notify, "heavy_after": heavy}


def _second_run(job: Any, csv: Path, work: Path) -> dict[str, Any]:
    """A second file in the same process, into a new database, as a reused Lambda runs it."""
    job(csv, work)
    started = time.perf_counter()
    job(csv, work, database="warm.duckdb")
    return {"warm": time.perf_counter() - started}


def job_floor_warm(csv: Path, work: Path) -> dict[str, Any]:
    return _second_run(job_floor, csv, work)


def job_refload_warm(csv: Path, work: Path) -> dict[str, Any]:
    return _second_run(job_refload, csv, work)


def job_duckdb_sql_warm(csv: Path, work: Path) -> dict[str, Any]:
    return _second_run(job_duckdb_sql, csv, work)


class _Counting:
    """A DB-API connection that counts the statements sent through it."""

    def __init__(self, inner: Any, sent: list[str]) -> None:
        self._inner, self._sent = inner, sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._sent.append(sql)
        return self._inner.execute(sql, *args, **kwargs)


def job_statements(csv: Path, work: Path) -> dict[str, Any]:
    """Statements a warm run sends (target and audit tables there): the file published
    again (--force) into the same database, counted on the driver connection."""
    from steps.shared.warehouse.duckdb_dialect import DuckDBClient

    url = f"duckdb:///{work / 'statements.duckdb'}"
    _run_refload(csv, work, url, "--run-id", f"bench-{time.time_ns()}")
    sent: list[str] = []
    connect = DuckDBClient._connect
    DuckDBClient._connect = lambda self: _Counting(connect(self), sent)  # type: ignore[method-assign]
    code = _run_refload(csv, work, url, "--force", "--run-id", f"bench-{time.time_ns()}")
    return {"exit": code, "statements": len(sent)}


def job_stack(csv: Path, work: Path) -> dict[str, Any]:
    """Import time of what refload loads beyond the floor's own pyarrow.csv and duckdb."""
    sys.meta_path.insert(0, _AsInTheImage())
    import importlib

    import duckdb  # noqa: F401
    import pyarrow.csv  # noqa: F401

    seconds = {}
    for label, modules in [
        ("structlog", ["structlog"]),
        ("pydantic + config models", ["pydantic", "steps.shared.config.model"]),
        ("pyarrow.compute", ["pyarrow.compute"]),
        ("refload's own modules", ["handler.cli", "steps.ingest", "steps.load", "steps.validate"]),
    ]:
        started = time.perf_counter()
        for module in modules:
            importlib.import_module(module)
        seconds[label] = time.perf_counter() - started
    return {"imports": seconds}


# What each step imports when it runs (load and validate open the warehouse's driver).
STEP_IMPORTS = {
    "ingest": ["steps.ingest"],
    "load": ["steps.load", "steps.shared.warehouse.duckdb_dialect", "duckdb"],
    "validate": ["steps.validate", "steps.shared.warehouse.duckdb_dialect", "duckdb"],
}


def job_step_imports(csv: Path, work: Path) -> dict[str, Any]:
    """Each step's imports after the handler's, each in a process of its own."""
    import importlib

    step = csv.stem
    sys.meta_path.insert(0, _AsInTheImage())
    import handler  # noqa: F401

    started = time.perf_counter()
    for module in STEP_IMPORTS[step]:
        importlib.import_module(module)
    return {"seconds": time.perf_counter() - started}
