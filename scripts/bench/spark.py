"""The Spark jobs: the same job on local PySpark, and refload's Spark engine; their JVM and
Python workers are child processes, so peak memory is sampled over the process tree."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.jobs import _run_refload


def job_pyspark(csv: Path, work: Path) -> dict[str, Any]:
    """The same job on local Spark; its JVM is a child process: memory over the tree."""
    with _tree_peak() as peak:
        _pyspark_job(csv, work)
    return peak


def _pyspark_job(csv: Path, work: Path) -> None:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as f

    spark = SparkSession.builder.master("local[*]").appName("bench").getOrCreate()
    df = spark.read.csv(str(csv), header=True, inferSchema=False)
    df = (
        df.withColumn("zip", f.lpad(f.trim("zip"), 5, "0"))
        .withColumn("plus4", f.lpad(f.trim("plus4"), 4, "0"))
        .withColumn("city", f.initcap(f.trim("city")))
        .withColumn("state", f.upper(f.trim("state")))
        .withColumn("lat", f.col("lat").cast("decimal(9,4)"))
        .withColumn("long", f.col("long").cast("double"))
        .withColumn("population", f.col("population").cast("int"))
        .withColumn("effective", f.to_date("effective", "MM/dd/yyyy"))
        .withColumn("active", f.upper(f.trim("active")) == "Y")
        .dropDuplicates()
    )
    if df.groupBy("zip", "plus4").count().filter("count > 1").limit(1).count():
        raise SystemExit("duplicate key")
    df.write.mode("overwrite").parquet(str(work / "spark.parquet"))
    spark.stop()


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc), in MB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(
                next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS"))
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


@contextmanager
def _tree_peak() -> Iterator[dict[str, float]]:
    """The peak memory of this process and its children (a JVM, Python workers), sampled
    every 0.25 s while the block runs: {"tree_rss_mb": ...}."""
    import threading

    peak = {"tree_rss_mb": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            peak["tree_rss_mb"] = max(peak["tree_rss_mb"], _tree_rss_mb(os.getpid()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def job_refload_spark(csv: Path, work: Path) -> dict[str, Any]:
    """refload's Spark engine on local[2]; the JVM and the Python workers are children of
    this process, so its peak memory is sampled over the whole tree."""
    os.environ.setdefault("REFLOAD_SPARK_MASTER", "local[2]")
    with _tree_peak() as peak:
        code = _run_refload(
            csv,
            work,
            f"duckdb:///{work / 'refload.duckdb'}",
            "--engine",
            "spark",
            "--run-id",
            f"bench-{time.time_ns()}",
        )
    return {"exit": code, **peak}
