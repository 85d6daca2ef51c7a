"""ingest on Spark: the same config, mapping sheet and curated contract, for big files.

What a row means is refload's own Arrow code, run inside Spark: each task reads its part
of the source with `steps.ingest.sources.read_source` and maps it with
`steps.ingest.transform.apply_mapping` (and the table's `python_transform`) in
`DataFrame.mapInArrow`, so `zfill(5)`, `decimal(9,2)` or a date format have one
implementation. Spark does what needs the whole
table: exact-duplicate removal, empty and repeated primary keys, the rejects and the
`max_reject_pct` threshold.

Line numbers. A CSV is cut into byte ranges on the driver, each starting at a record, by
one pass that counts quote characters and newlines (bytes.count, about 1 GB/s): a newline
outside quotes starts a record, so quoted values that span lines stay whole. Each task
parses its range behind the file's own header lines, and shifts the lines it reports by
where the range starts. Files that cannot be cut that way (gzip, encodings in which a
newline is not the byte 0x0A, such as UTF-16 by its BOM or the config; Excel, JSON, Parquet,
or small ones) are one range.
A row's position is `range << 32 | index in range`: file order, and enough to find its line.

Output: part files `part-NNNNN.parquet` under the run's curated prefix (typed and tagged
exactly as the Lambda engine's output), a Redshift-style manifest listing exactly
those parts (the `curated_uri`), and the same rejects file and summary as `steps.ingest`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from steps.ingest import (
    MAX_LISTED,
    _check_columns,
    _hooked,
    _source_key,
    duplicate_key_error,
    hook_time_limit,
    ingest_result,
)
from steps.ingest.curated import (
    DEFAULT_CURATED_ROOT,
    MANIFEST_NAME,
    curated_schema,
    curated_uri,
    dataset_prefix,
    write_manifest,
)
from steps.ingest.dedupe import POSITION
from steps.ingest.rejects import cell_rejections, keep_rejects, max_rejects_kept
from steps.ingest.sources import (
    SourceTable,
    chunk_bytes,
    read_source,
)
from steps.ingest.splits import Split, plan_splits, read_range
from steps.ingest.transform import apply_mapping
from steps.shared.config.table import TableSpec
from steps.shared.errors import RefloadError, RejectedInput, at, error_from_json, error_json
from steps.shared.io import storage

if TYPE_CHECKING:
    from steps.ingest.hooks import TimeLimit

DEFAULT_MASTER = "local[2]"
PROBLEMS = "__refload_problems"  # a rejected row's problems (null for a good row)
ERROR = "__refload_error"  # a task's RefloadError, as JSON (the row carries nothing else)
_PROBLEM = pa.struct(
    [
        ("at", pa.int64()),
        ("column", pa.string()),
        ("value", pa.string()),
        ("reason", pa.string()),
    ]
)


def split_bytes() -> int:
    """Target size of one CSV range (one Spark task): REFLOAD_SPARK_SPLIT_BYTES."""
    return int(os.environ.get("REFLOAD_SPARK_SPLIT_BYTES", chunk_bytes()))


def spark_session() -> Any:
    """The running SparkSession, or a new one on REFLOAD_SPARK_MASTER (default local[2]).

    Under spark-submit (EMR Serverless) the master comes from the submit and is kept.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is not None:  # one per process, whatever the thread
        return SparkSession.builder.getOrCreate()
    builder = SparkSession.builder.appName("refload")
    if "REFLOAD_SPARK_MASTER" in os.environ or not SparkConf().contains("spark.master"):
        builder = builder.master(os.environ.get("REFLOAD_SPARK_MASTER", DEFAULT_MASTER))
        # Local workers must run this interpreter (the one with refload and pyarrow).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        # A small local machine: a handful of shuffle partitions, not 200.
        builder = builder.config("spark.sql.shuffle.partitions", "4")
    session = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


@contextlib.contextmanager
def _split_source(split: Split, job: _Job) -> Iterator[SourceTable]:
    """The split read by refload's reader, reporting lines and rows of the whole file."""
    if split.whole:
        with storage.local_file(job.uri, job.version_id) as path:
            yield read_source(path, job.uri, job.spec.config)
        return
    header_row = job.spec.config.header_row

    def shift(line: int) -> int:
        return line if line <= header_row else line - (header_row + 1) + split.first_line

    with tempfile.TemporaryDirectory(prefix="refload-split-") as folder:
        path = Path(folder) / "split.csv"
        path.write_bytes(job.header + read_range(job.uri, split.start, split.end, job.version_id))
        try:
            source = read_source(path, job.uri, job.spec.config)
            found = source.bad_records
            yield dataclasses.replace(
                source,
                locate=lambda ps: [shift(line) for line in source.locate(ps)],
                bad_records=lambda: [dataclasses.replace(b, where=shift(b.where)) for b in found()],
            )
        except RefloadError as error:
            if error.line is not None:
                error.line = shift(error.line)
            raise


# --- the tasks ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every task needs (pickled to the executors once per stage)."""

    spec: TableSpec
    uri: str
    header: bytes
    context: dict[str, str]
    splits: tuple[Split, ...]
    version_id: str | None = None  # the S3 version the driver read: every task reads it too


def _typed_schema(spec: TableSpec) -> pa.Schema:
    return pa.schema([pa.field(c.target, c.data_type.arrow()) for c in spec.mapping.columns])


def _task_schema(spec: TableSpec) -> pa.Schema:
    return (
        _typed_schema(spec)
        .append(pa.field(POSITION, pa.int64()))
        .append(pa.field(PROBLEMS, pa.list_(_PROBLEM)))
        .append(pa.field(ERROR, pa.string()))
    )


def _rows_with(spec: TableSpec, typed: pa.Table | None, count: int, **meta: Any) -> pa.RecordBatch:
    """`count` rows of the task schema: `typed` columns (or nulls) and the given extras."""
    schema = _task_schema(spec)
    arrays = []
    for field in schema:
        if typed is not None and field.name in typed.column_names:
            arrays.append(typed.column(field.name).combine_chunks().cast(field.type))
        elif field.name in meta:
            arrays.append(pa.array(meta[field.name], field.type))
        else:
            arrays.append(pa.nulls(count, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _map_split(split: Split, job: _Job) -> Iterator[pa.RecordBatch]:
    """One range: parse, map, set rejected rows aside (with their lines), hook the rest."""
    spec = job.spec
    base = split.index << 32
    rows = 0
    limit: TimeLimit | None = None
    try:
        with _split_source(split, job) as source:
            for chunk in source.chunks:
                typed, found = apply_mapping(chunk, spec.mapping, job.context)
                found += cell_rejections(
                    [c for c in source.bad_cells if rows <= c.position < rows + chunk.num_rows],
                    spec.mapping,
                )
                # Positions in this range while refload's code runs (hooks locate lines).
                typed = typed.append_column(
                    POSITION, pa.array(range(rows, rows + typed.num_rows), pa.int64())
                )
                if found:
                    rejected = sorted(
                        (dataclasses.replace(r, position=r.position + rows) for r in found),
                        key=lambda r: r.position,
                    )
                    bad = sorted({r.position for r in rejected})
                    lines = dict(zip(bad, source.locate(bad), strict=True))
                    problems: dict[int, list[dict[str, Any]]] = {}
                    for r in rejected:
                        problems.setdefault(r.position, []).append(
                            {
                                "at": lines[r.position],
                                "column": r.column,
                                "value": r.value,
                                "reason": r.reason,
                            }
                        )
                    yield _rows_with(
                        spec,
                        None,
                        len(bad),
                        **{POSITION: [base + p for p in bad], PROBLEMS: list(problems.values())},
                    )
                    typed = typed.filter(
                        pc.invert(pc.is_in(typed.column(POSITION), pa.array(bad, pa.int64())))
                    )
                if spec.config.python_transform:
                    limit = limit or hook_time_limit(spec)  # per range: its own process
                    typed = _hooked(spec.config.python_transform, typed, spec, source, limit)
                if typed.num_rows:
                    index = typed.schema.get_field_index(POSITION)
                    typed = typed.set_column(
                        index, POSITION, pc.add(typed.column(POSITION), pa.scalar(base, pa.int64()))
                    )
                    yield _rows_with(spec, typed, typed.num_rows)
                rows += chunk.num_rows
            unreadable = source.bad_records()
            if unreadable:
                yield _rows_with(
                    spec,
                    None,
                    len(unreadable),
                    **{
                        PROBLEMS: [
                            [{"at": b.where, "column": None, "value": b.text, "reason": b.reason}]
                            for b in unreadable
                        ]
                    },
                )
    except RefloadError as error:
        yield _rows_with(spec, None, 1, **{POSITION: [base + rows], ERROR: [error_json(error)]})


def _write_part(batches: Iterator[pa.RecordBatch], schema: pa.Schema, prefix: str) -> Iterator[Any]:
    """One partition's kept rows as one part file; yields (uri, rows, bytes) when it has rows."""
    from pyspark import TaskContext

    context = TaskContext.get()
    number = context.partitionId() if context else 0
    uri = storage.join(prefix, f"part-{number:05d}.parquet")
    rows = 0
    with tempfile.TemporaryDirectory(prefix="refload-part-") as folder:
        path = Path(folder) / "part.parquet"
        with pq.ParquetWriter(path, schema, compression="snappy", coerce_timestamps="us") as out:
            for batch in batches:
                table = pa.Table.from_batches([batch]).select(schema.names)
                out.write_table(table.cast(schema))
                rows += batch.num_rows
        if rows:
            storage.upload_file(uri, path)
            yield pa.RecordBatch.from_pylist(
                [{"uri": uri, "rows": rows, "bytes": path.stat().st_size}],
                schema=pa.schema(
                    [("uri", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64())]
                ),
            )


# --- the driver -----------------------------------------------------------------------


def _spark_type(data_type: Any) -> Any:
    from pyspark.sql import types as T

    kind = data_type.kind
    if kind == "decimal":
        return T.DecimalType(data_type.precision, data_type.scale)
    return {
        "string": T.StringType(),
        "varchar": T.StringType(),
        "smallint": T.ShortType(),
        "integer": T.IntegerType(),
        "bigint": T.LongType(),
        "double": T.DoubleType(),
        "boolean": T.BooleanType(),
        "date": T.DateType(),
        "timestamp": T.TimestampNTZType(),
    }[kind]


def _spark_schema(spec: TableSpec) -> Any:
    from pyspark.sql import types as T

    problem = T.StructType(
        [
            T.StructField("at", T.LongType()),
            T.StructField("column", T.StringType()),
            T.StructField("value", T.StringType()),
            T.StructField("reason", T.StringType()),
        ]
    )
    return T.StructType(
        [T.StructField(c.target, _spark_type(c.data_type)) for c in spec.mapping.columns]
        + [
            T.StructField(POSITION, T.LongType()),
            T.StructField(PROBLEMS, T.ArrayType(problem)),
            T.StructField(ERROR, T.StringType()),
        ]
    )


def run(spec: TableSpec, payload: dict[str, Any], session: Any = None) -> dict[str, Any]:
    """Ingest `payload["source"]` on Spark; returns what `steps.ingest.run` returns."""
    try:
        stamp = storage.source_stamp(payload["source"], payload.get("source_version_id"))
        with storage.local_file(payload["source"], stamp.version_id) as path:
            info = storage.ObjectInfo(stamp.version, _stored_sha256(path), stamp.modified_at)
            return _ingest(spec, payload, path, info, session or spark_session(), stamp.version_id)
    except RefloadError as error:
        error.table = error.table or spec.config.table_name
        raise


def _stored_sha256(path: Path) -> str:
    """The content hash the Lambda engine takes while reading: sha256 of the stored bytes.
    (The driver reads the file once more for it; the tasks read only their ranges.)"""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _ingest(
    spec: TableSpec,
    payload: dict[str, Any],
    path: Path,
    info: storage.ObjectInfo,
    spark: Any,
    version_id: str | None = None,
) -> dict[str, Any]:
    from pyspark import StorageLevel

    config = spec.config
    run_id = payload["run_id"]
    uri = payload["source"]
    curated_root = payload.get("curated_root") or DEFAULT_CURATED_ROOT
    # The driver reads the header only (and the whole file only for non-CSV formats).
    source = read_source(path, uri, config)
    _check_columns(source, spec, curated_root)
    splits, header = plan_splits(path, uri, spec, split_bytes())
    job = _Job(
        spec,
        uri,
        header,
        {
            "load_date": dt.datetime.now(dt.UTC).date().isoformat(),
            "run_id": run_id,
            "source_key": _source_key(uri),
        },
        tuple(splits),
        version_id,
    )

    def map_splits(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for index in batch.column(0).to_pylist():
                yield from _map_split(job.splits[index], job)

    # One partition per range, so partition order is file order.
    numbers = spark.createDataFrame(
        spark.sparkContext.parallelize([(s.index,) for s in splits], len(splits)), "split long"
    )
    mapped = numbers.mapInArrow(map_splits, _spark_schema(spec)).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        return _finish(spec, payload, job, source, info, mapped, spark, curated_root)
    finally:
        mapped.unpersist()


def _finish(
    spec: TableSpec,
    payload: dict[str, Any],
    job: _Job,
    source: SourceTable,
    info: storage.ObjectInfo,
    mapped: Any,
    spark: Any,
    curated_root: str,
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    config = spec.config
    run_id = payload["run_id"]
    unit = source.unit
    counts = mapped.agg(
        F.count(F.when(F.col(ERROR).isNotNull(), 1)).alias("errors"),
        F.count(F.when(F.col(PROBLEMS).isNull() & F.col(ERROR).isNull(), 1)).alias("good"),
        F.count(F.when(F.col(PROBLEMS).isNotNull() & F.col(POSITION).isNotNull(), 1)).alias(
            "rejected"
        ),
        F.count(F.when(F.col(PROBLEMS).isNotNull() & F.col(POSITION).isNull(), 1)).alias(
            "unreadable"
        ),
    ).first()
    if counts["errors"]:
        first = mapped.where(F.col(ERROR).isNotNull()).orderBy(POSITION).first()
        raise error_from_json(first[ERROR])
    rows = counts["good"] + counts["rejected"]
    rows_read = rows + counts["unreadable"]
    if rows_read == 0:
        raise RejectedInput("file has a header but no data rows", file=source.uri)

    # Rejected rows: the same rejects file and threshold as the Lambda engine.
    out_uri = curated_uri(curated_root, spec, info.content_hash, run_id)
    rows_rejected = counts["rejected"] + counts["unreadable"]
    reject_records: list[dict[str, Any]] = []
    problems = 0
    if rows_rejected:
        # The first rows' problems reach the driver, as many as the Lambda engine keeps.
        limit = max_rejects_kept()
        rejected = mapped.where(F.col(PROBLEMS).isNotNull())
        problems = rejected.agg(F.sum(F.size(PROBLEMS))).first()[0]
        first = rejected.orderBy(F.col(PROBLEMS)[0]["at"]).limit(limit).select(PROBLEMS)
        for row in first.collect():
            reject_records += [
                {unit: p["at"], "column": p["column"], "value": p["value"], "reason": p["reason"]}
                for p in row[PROBLEMS]
            ]
        reject_records.sort(key=lambda r: int(r[unit]))
        reject_records = reject_records[:limit]
    rejects_uri = keep_rejects(
        source,
        reject_records,
        rows_rejected,
        rows_read,
        out_uri,
        config.max_reject_pct,
        problems=problems,
    )

    # Duplicates and keys, over the whole table.
    good = mapped.where(F.col(PROBLEMS).isNull() & F.col(ERROR).isNull()).drop(PROBLEMS, ERROR)
    kept = _without_duplicates(good, spec, job, source)
    prefix = dataset_prefix(curated_root, spec, info.content_hash, run_id)
    schema = curated_schema(spec, run_id, source.uri, info)
    written = kept.mapInArrow(
        lambda batches: _write_part(batches, schema, prefix), "uri string, rows long, bytes long"
    ).collect()
    parts = sorted((r["uri"], r["bytes"], r["rows"]) for r in written)
    if not parts:  # nothing kept: one empty part still carries the schema
        empty = storage.join(prefix, "part-00000.parquet")
        with tempfile.TemporaryDirectory(prefix="refload-part-") as folder:
            path = Path(folder) / "part.parquet"
            pq.write_table(schema.empty_table(), path, compression="snappy")
            storage.upload_file(empty, path)
            parts = [(empty, path.stat().st_size, 0)]
    manifest = storage.join(prefix, MANIFEST_NAME)
    write_manifest(manifest, [(part, size) for part, size, _ in parts])
    rows_written = sum(r for _, _, r in parts)
    return ingest_result(
        spec,
        run_id,
        source.uri,
        info,
        curated=manifest,
        rejects=rejects_uri,
        read=rows_read,
        rejected=rows_rejected,
        duplicates=counts["good"] - rows_written,
        written=rows_written,
    )


def _locate(positions: list[int], job: _Job) -> list[int]:
    """The lines (or rows) of positions, on the driver: each range is read again."""
    by_split: dict[int, list[int]] = {}
    for position in positions:
        by_split.setdefault(position >> 32, []).append(position & 0xFFFFFFFF)
    where: dict[int, int] = {}
    for index, local in by_split.items():
        with _split_source(job.splits[index], job) as source:
            for p, line in zip(local, source.locate(local), strict=True):
                where[(index << 32) + p] = line
    return [where[p] for p in positions]


BROADCAST_ROWS = 1_000_000  # row sets joined by broadcast (no shuffle of the big side)


def _without(rows: Any, drop: Any, count: int) -> Any:
    """`rows` less the positions in `drop`, each partition still in file order."""
    from pyspark.sql import functions as F

    if count <= BROADCAST_ROWS:
        return rows.join(F.broadcast(drop), on=POSITION, how="left_anti")
    # A shuffled anti join loses the order: range-partition by position to get it back.
    kept = rows.join(drop, on=POSITION, how="left_anti")
    return kept.repartitionByRange(rows.rdd.getNumPartitions(), POSITION).sortWithinPartitions(
        POSITION
    )


def _without_duplicates(good: Any, spec: TableSpec, job: _Job, source: SourceTable) -> Any:
    """The good rows less exact duplicates (the first is kept); refuses empty or repeated keys.

    With a key, as in the Lambda engine, only rows whose key repeats can be exact duplicates:
    the key columns are grouped for every row, whole rows only for those.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    config = spec.config
    key = config.primary_key
    if not (key or config.dedupe):
        return good
    suspects = good
    if key:
        firsts = good.agg(
            *[F.min(F.when(F.col(k).isNull(), F.col(POSITION))).alias(k) for k in key]
        ).first()
        for name in key:
            if firsts[name] is not None:
                raise RejectedInput(
                    "primary key column is empty",
                    file=source.uri,
                    column=name,
                    **at(source.unit, _locate([firsts[name]], job)[0]),
                )
        repeated = good.groupBy(*key).count().where(F.col("count") > 1).drop("count")
        repeated = repeated.localCheckpoint()  # computed once, eagerly
        repeated_count = repeated.count()
        if not repeated_count:
            return good
        small = repeated_count <= BROADCAST_ROWS
        suspects = good.join(F.broadcast(repeated) if small else repeated, on=key, how="left_semi")
    drop, drop_count = None, 0
    if config.dedupe:
        columns = spec.mapping.targets
        first = F.min(POSITION).over(Window.partitionBy(*[F.col(c) for c in columns]))
        drop = (
            suspects.select(POSITION, first.alias("__first"))
            .where(F.col(POSITION) != F.col("__first"))
            .select(POSITION)
            .localCheckpoint()
        )
        drop_count = drop.count()
    if key:
        remaining = _without(suspects, drop, drop_count) if drop_count else suspects
        _refuse_repeated_keys(remaining, key, job, source)
    return _without(good, drop, drop_count) if drop_count else good


def _refuse_repeated_keys(rows: Any, key: list[str], job: _Job, source: SourceTable) -> None:
    from pyspark.sql import functions as F

    repeated = (
        rows.groupBy(*key)
        .agg(
            F.min(POSITION).alias("__first"),
            F.slice(F.sort_array(F.collect_list(POSITION)), 1, MAX_LISTED).alias("__where"),
        )
        .where(F.size(F.col("__where")) > 1)
    )
    count = repeated.count()
    if count:
        first_key = repeated.orderBy("__first").first()
        places = _locate(list(first_key["__where"]), job)
        raise duplicate_key_error(source, key, [first_key[k] for k in key], places, count)
