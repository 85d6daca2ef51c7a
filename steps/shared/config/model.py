"""Table configs: the pydantic model, loading, validation messages, routing.

A config is validated once, here; every step downstream trusts `steps.shared.config.table.TableSpec`
(the config with its mapping sheet).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from steps.shared.errors import ConfigError
from steps.shared.io import storage
from steps.shared.names import did_you_mean, identifier_problem, unknown_name
from steps.shared.warehouse.modes import CONFIG_MODES, MODES
from steps.shared.warehouse.modes import LoadMode as LoadStrategy

# The load modes are the registry's (steps.shared.warehouse.modes): a new mode needs no edit here.
if TYPE_CHECKING:
    LoadMode = str
    LedgerMode = str
else:
    LoadMode = Literal[CONFIG_MODES]
    # What a ledger row's load_mode says: a config's mode, or a rollback (`handler rollback`).
    LedgerMode = Literal[tuple(MODES)]
SourceFormat = Literal["csv", "excel", "json", "parquet", "xlsx", "xls", "jsonl", "ndjson", "tsv"]
Severity = Literal["error", "warn"]
When = Literal["after_publish", "before_publish"]
Period = Literal["minute", "hour", "day"]
Engine = Literal["lambda", "spark", "auto"]


def _identifier(value: str) -> str:
    problem = identifier_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _table_reference(value: str) -> str:
    parts = value.split(".")
    if len(parts) > 2:
        raise ValueError(f"'{value}' must be 'table' or 'schema.table'")
    for part in parts:
        _identifier(part)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# etl_audit.data_quality_tests.test_name is VARCHAR(256): bytes on Redshift, and the bound
# every dialect shares (steps.shared.warehouse.base.AUDIT_TABLES).
MAX_TEST_NAME_BYTES = 256
# A name made from the columns stays shorter still, so that it travels whole in the step
# results (steps.contracts.VALUE_CHARS: longer values are cut there) and alert signatures.
# Names up to this long are kept as they always were.
MAX_DERIVED_NAME_CHARS = 200
NAME_HASH_CHARS = 12


class _QualityTest(_Strict):
    name: str | None = None
    severity: Severity = "error"
    when: When = "after_publish"

    @field_validator("name")
    @classmethod
    def _fits_the_audit(cls, value: str | None) -> str | None:
        size = len(value.encode()) if value is not None else 0
        if size > MAX_TEST_NAME_BYTES:
            raise ValueError(
                f"is {size} bytes; etl_audit.data_quality_tests.test_name holds at most "
                f"{MAX_TEST_NAME_BYTES}: give the test a shorter name"
            )
        return value

    @property
    def test_name(self) -> str:
        if self.name:
            return self.name
        target = getattr(self, "columns", None) or [getattr(self, "column", None)]
        suffix = "_".join(c for c in target if c)
        name = f"{self.type}_{suffix}" if suffix else self.type  # type: ignore[attr-defined]
        if len(name) <= MAX_DERIVED_NAME_CHARS:  # type and column names are ASCII identifiers
            return name
        # A test over many columns (init proposes not_null over every never-empty column):
        # the start of its name, and a hash of the whole that keeps two such tests apart.
        digest = hashlib.sha256(name.encode()).hexdigest()[:NAME_HASH_CHARS]
        return f"{name[: MAX_DERIVED_NAME_CHARS - NAME_HASH_CHARS - 1]}_{digest}"


class _ColumnsTest(_QualityTest):
    columns: list[str] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: list[str]) -> list[str]:
        return [_identifier(c) for c in value]


class _ColumnTest(_QualityTest):
    column: str

    @field_validator("column")
    @classmethod
    def _check_column(cls, value: str) -> str:
        return _identifier(value)


class RowCountMatch(_QualityTest):
    type: Literal["row_count_match"]
    tolerance_pct: float = Field(default=0, ge=0)


class RowCountBetween(_QualityTest):
    type: Literal["row_count_between"]
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class RowCountChange(_QualityTest):
    type: Literal["row_count_change"]
    max_pct: float | None = Field(
        default=None,
        ge=0,
        description="Largest change of the row count, in percent of the rows before. With "
        "`auto`, a cap the learned bounds never exceed.",
    )
    auto: bool = Field(
        default=False,
        description="Learn the usual change from the table's last 30 publishes "
        "(steps.shared.checks.learned); `learning` (passes) before 5.",
    )

    @model_validator(mode="after")
    def _bounded(self) -> RowCountChange:
        if self.max_pct is None and not self.auto:
            raise ValueError("needs max_pct, auto: true, or both (max_pct then caps auto)")
        return self


class Uniqueness(_ColumnsTest):
    type: Literal["uniqueness"]


class NotNull(_ColumnsTest):
    type: Literal["not_null"]


class AcceptedValues(_ColumnTest):
    type: Literal["accepted_values"]
    values: list[str | int | float | bool] = Field(min_length=1)


class Range(_ColumnTest):
    type: Literal["range"]
    min: float | int | str | None = None
    max: float | int | str | None = None


class Regex(_ColumnTest):
    type: Literal["regex"]
    pattern: str


class MaxLength(_ColumnTest):
    type: Literal["max_length"]
    bytes: int = Field(gt=0)


class ReferentialIntegrity(_ColumnsTest):
    type: Literal["referential_integrity"]
    ref_table: str
    ref_columns: list[str] = Field(min_length=1)

    @field_validator("ref_table")
    @classmethod
    def _check_ref_table(cls, value: str) -> str:
        return _table_reference(value)

    @field_validator("ref_columns")
    @classmethod
    def _check_ref_columns(cls, value: list[str]) -> list[str]:
        return [_identifier(c) for c in value]

    @model_validator(mode="after")
    def _same_arity(self) -> ReferentialIntegrity:
        if len(self.columns) != len(self.ref_columns):
            raise ValueError("columns and ref_columns must have the same length")
        return self


class ChangesWithin(_QualityTest):
    type: Literal["changes_within"]
    max_added_pct: float | None = Field(default=None, ge=0)
    max_removed_pct: float | None = Field(default=None, ge=0)
    max_changed_pct: float | None = Field(default=None, ge=0)
    auto: bool = Field(
        default=False,
        description="Learn each kind's usual share from the table's last 30 publishes; a "
        "max_*_pct set beside it caps that kind's learned bound.",
    )


class CustomSql(_QualityTest):
    type: Literal["custom_sql"]
    sql: str = Field(min_length=1)
    store_samples: bool = Field(
        default=False,
        description="Keep up to 10 of the rows the query returns in the audit row and the "
        "alert. Off by default: the query may read any table the warehouse user can read.",
    )

    @field_validator("sql")
    @classmethod
    def _read_only(cls, value: str) -> str:
        # sqlglot is imported only by configs that have custom SQL (cold start).
        from steps.shared.checks.sql import parse_read_only_select

        parse_read_only_select(value)
        return value


# The one list of check models: the config's union, and the type -> model registry
# derived from it (steps.shared.checks.registry.CHECKS holds the functions; a test sweeps both).
AnyCheck = (
    RowCountMatch
    | RowCountBetween
    | RowCountChange
    | Uniqueness
    | NotNull
    | AcceptedValues
    | Range
    | Regex
    | MaxLength
    | ReferentialIntegrity
    | CustomSql
    | ChangesWithin
)
QualityTest = Annotated[AnyCheck, Field(discriminator="type")]
CHECK_MODELS: dict[str, type[_QualityTest]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(AnyCheck)
}


PERIOD_HOURS: dict[str, float] = {"minute": 1 / 60, "hour": 1, "day": 24}


class FreshnessThreshold(_Strict):
    count: int = Field(gt=0)
    period: Period

    @property
    def hours(self) -> float:
        return self.count * PERIOD_HOURS[self.period]

    def __str__(self) -> str:
        return f"{self.count} {self.period}{'' if self.count == 1 else 's'}"


# A learned expectation's grace when the config gives none (steps.shared.arrivals).
DEFAULT_GRACE_HOURS = 6.0


class Freshness(_Strict):
    """dbt's source freshness: how old the last received file may get; or, with
    `expect: auto`, when the next file is due, as learned from the ledger."""

    warn_after: FreshnessThreshold | None = None
    error_after: FreshnessThreshold | None = None
    expect: Literal["auto"] | None = Field(
        default=None,
        description="'auto': learn the arrival pattern (daily, some weekdays, monthly) from "
        "the ledger; warn when a due file is later than grace_hours, error past twice the "
        "grace or when the next one is late too. warn_after/error_after still apply.",
    )
    grace_hours: float | None = Field(
        default=None,
        gt=0,
        description=f"How late a due file may be before `expect: auto` warns (default "
        f"{DEFAULT_GRACE_HOURS:g}).",
    )

    @model_validator(mode="after")
    def _check_thresholds(self) -> Freshness:
        if self.warn_after is None and self.error_after is None and self.expect is None:
            raise ValueError("needs warn_after, error_after or expect: 'auto'")
        if self.grace_hours is not None and self.expect is None:
            raise ValueError("grace_hours is the grace of expect: 'auto', which is not set")
        if self.warn_after and self.error_after and self.warn_after.hours > self.error_after.hours:
            raise ValueError(
                f"warn_after ({self.warn_after}) is later than error_after ({self.error_after})"
            )
        return self


class TableConfig(_Strict):
    """One table's config file, as users write it."""

    table_name: str
    redshift_schema: str = "public"
    redshift_table: str | None = None
    source_format: SourceFormat | None = Field(
        default=None,
        description="Default: the source's extension under any .gz (csv when unknown).",
    )
    mapping_file: str
    header_row: int = Field(default=1, ge=1)
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    sheet_name: str | int | None = None
    null_values: list[str] = Field(default_factory=lambda: [""])
    truncate_before_load: bool | None = None
    load_mode: LoadMode | None = None
    primary_key: list[str] = Field(default_factory=list)
    dedupe: bool = True
    max_reject_pct: float = Field(default=0, ge=0, le=100)
    redshift_sort_key: list[str] = Field(default_factory=list)
    redshift_dist_key: str | None = Field(
        default=None, description="Default: DISTSTYLE ALL (a copy on every node)."
    )
    allow_new_columns: bool = Field(
        default=False,
        description="Add nullable mapping columns missing from an existing target.",
    )
    alert_emails: list[str] = Field(
        default_factory=list,
        description="Recipients of this table's alerts (default: REFLOAD_ALERT_EMAIL_TO).",
    )
    source_prefix: str | None = Field(
        default=None,
        description="Object-key prefix that routes landed files to this table "
        "(default: '<table_name>/').",
    )
    quality_tests: list[QualityTest] = Field(default_factory=list)
    engine: Engine = Field(
        default="lambda",
        description="Who runs the ingest: 'lambda' (in process), 'spark' (PySpark; EMR "
        "Serverless in AWS), or 'auto' (Spark when the source is larger than "
        "spark_above_bytes).",
    )
    spark_above_bytes: int | None = Field(
        default=None,
        ge=0,
        description="With engine 'auto': the source size in bytes above which Spark runs "
        "the ingest.",
    )
    python_transform: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$",
        description="'package.module:function': a pandas function run on the mapped rows "
        "before dedupe and key checks (steps.ingest.hooks); deployed code, never from the config "
        "bucket.",
    )
    python_transform_timeout_seconds: float = Field(
        default=300,
        gt=0,
        description="Time the python_transform may take on one file, its calls on the "
        "file's pieces added up (per range on Spark); past it the hook is stopped and the "
        "file rejected.",
    )
    freshness: Freshness | None = Field(
        default=None,
        description="Age of the last received file past which `python -m handler freshness` "
        "warns or errors, or the learned arrival pattern (`expect: auto`); default: not "
        "checked.",
    )

    @field_validator("table_name", "redshift_schema", "redshift_table")
    @classmethod
    def _check_identifier(cls, value: str | None) -> str | None:
        return None if value is None else _identifier(value)

    @field_validator("primary_key", "redshift_sort_key")
    @classmethod
    def _check_column_list(cls, value: list[str]) -> list[str]:
        return [_identifier(c) for c in value]

    @field_validator("redshift_dist_key")
    @classmethod
    def _check_dist_key(cls, value: str | None) -> str | None:
        return None if value is None else _identifier(value)

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding '{value}'") from None
        return value

    @model_validator(mode="after")
    def _check_load_mode(self) -> TableConfig:
        if self.load_mode and self.truncate_before_load is not None:
            implied = "truncate" if self.truncate_before_load else "append"
            if implied != self.load_mode and not (
                self.load_mode == "upsert" and not self.truncate_before_load
            ):
                raise ValueError(
                    f"truncate_before_load={str(self.truncate_before_load).lower()} "
                    f"contradicts load_mode='{self.load_mode}'"
                )
        if MODES[self.mode].needs_key and not self.primary_key:
            raise ValueError(f"load_mode '{self.mode}' needs primary_key")
        for i, test in enumerate(self.quality_tests):
            if test.type == "changes_within" and not self.primary_key:
                raise ValueError(
                    f"quality_tests[{i}]: changes_within counts keys and needs primary_key"
                )
        if self.engine == "auto" and self.spark_above_bytes is None:
            raise ValueError("engine 'auto' needs spark_above_bytes")
        return self

    @property
    def mode(self) -> LoadMode:
        if self.load_mode:
            return self.load_mode
        if self.truncate_before_load is False:
            return "append"
        return "truncate"

    @property
    def strategy(self) -> LoadStrategy:
        """What the load mode means: its statements and rules (steps.shared.warehouse.modes)."""
        return MODES[self.mode]

    @property
    def target_table(self) -> str:
        return self.redshift_table or self.table_name

    @property
    def target(self) -> str:
        return f"{self.redshift_schema}.{self.target_table}"

    @property
    def routing_prefix(self) -> str:
        return self.source_prefix if self.source_prefix is not None else f"{self.table_name}/"


def _format_location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _strip_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the discriminator value in the path: quality_tests.2.uniqueness.columns
    out: list[Any] = []
    for i, part in enumerate(loc):
        in_test = i >= 2 and loc[i - 2] == "quality_tests" and isinstance(loc[i - 1], int)
        if in_test and part in CHECK_MODELS:
            continue
        out.append(part)
    return tuple(out)


def _known_keys(loc: tuple[Any, ...], raw: Any) -> list[str]:
    if len(loc) == 3 and loc[0] == "quality_tests" and isinstance(loc[1], int):
        item = raw.get("quality_tests", [])[loc[1]]
        model = CHECK_MODELS.get(item.get("type", ""))
        if model:
            return list(model.model_fields)
    if loc[0] == "freshness" and len(loc) in (2, 3):
        return list((Freshness if len(loc) == 2 else FreshnessThreshold).model_fields)
    return list(TableConfig.model_fields)


def describe_validation_error(error: ValidationError, raw: Any) -> list[str]:
    """One line per problem, each starting with its path in the config."""
    lines = []
    for problem in error.errors():
        loc = _strip_union_tags(tuple(problem["loc"]))
        path = _format_location(loc) or "(top level)"
        kind = problem["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            parent = _format_location(loc[:-1])
            where = f" in {parent}" if parent else ""
            lines.append(
                f"{path}: unknown key '{key}'{where}{did_you_mean(key, _known_keys(loc, raw))}"
            )
        elif kind == "union_tag_invalid":
            tag = problem["ctx"]["tag"]
            lines.append(f"{path}.type: {unknown_name('check type', tag, CHECK_MODELS)}")
        elif kind == "union_tag_not_found":
            lines.append(f"{path}: missing 'type'; known: {', '.join(sorted(CHECK_MODELS))}")
        elif kind == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {message} (got {problem.get('input')!r})")
    return lines


def parse_config(raw: Any, *, source: str) -> TableConfig:
    """Validate a decoded config; errors name the file and the path inside it."""
    if not isinstance(raw, dict):
        raise ConfigError("a table config must be a JSON object", file=source)
    try:
        return TableConfig.model_validate(raw)
    except ValidationError as error:
        lines = describe_validation_error(error, raw)
        raise ConfigError("; ".join(lines), file=source, details={"problems": lines}) from None


def resolve_relative(base_uri: str, target: str) -> str:
    """`target` as written in the file at `base_uri`: absolute stays, relative joins."""
    if "://" in target or target.startswith("/"):
        return target
    base_dir = posixpath.dirname(base_uri)
    if "://" in base_uri:
        scheme, rest = base_uri.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(posixpath.dirname(rest), target))}"
    return posixpath.normpath(posixpath.join(base_dir or ".", target))


def mapping_root(config_uri: str) -> str:
    """Where a config's mapping sheet may live (see `mapping_location`).

    S3: the config's bucket (the config bucket holds configs and sheets only). Locally:
    REFLOAD_CONFIG_ROOT's folder tree when the config lies in it, else the config's own
    folder tree.
    """
    if "://" in config_uri:
        scheme, rest = config_uri.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}/"
    config_dir = Path(config_uri).resolve().parent
    root = Path(os.environ.get("REFLOAD_CONFIG_ROOT", "configs"))
    if "://" not in str(root) and config_dir.is_relative_to(root.resolve()):
        return str(root.resolve())
    return str(config_dir)


def mapping_location(config_uri: str, mapping_file: str, key: str = "mapping_file") -> str:
    """The sheet a config names, only inside the config root: a config must not make
    refload read (and quote in errors, logs and alerts) an arbitrary file. `key` is where
    the name came from: the config's `mapping_file`, or a payload's `mapping`."""
    uri = resolve_relative(config_uri, mapping_file)
    root = mapping_root(config_uri)
    if "://" in root:
        scheme, _, rest = uri.partition("://")
        inside = f"{scheme}://{posixpath.normpath(rest)}".startswith(root)
    else:
        # resolve(): a symlink in the config folder must not lead out of it either.
        inside = "://" not in uri and Path(uri).resolve().is_relative_to(root)
    if not inside:
        raise ConfigError(
            f"{key} '{mapping_file}' is outside the config root {root}: a mapping "
            "sheet must live under it",
            file=config_uri,
        )
    return uri


def read_config(config_uri: str) -> tuple[dict[str, Any], TableConfig]:
    """Read and validate one config file (not its mapping sheet): the raw JSON and the model."""
    try:
        raw = json.loads(storage.read_bytes(config_uri).decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        line = getattr(error, "lineno", None)
        raise ConfigError(f"not valid JSON: {error}", file=config_uri, line=line) from None
    return raw, parse_config(raw, source=config_uri)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a table config, as shipped in configs/."""
    schema = TableConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "refload table config"
    return schema


@dataclass(frozen=True)
class RoutingEntry:
    """What routing reads from one config file, leniently: a config that is broken in any
    other way still routes its own files (and fails them with its ConfigError), never
    another table's."""

    uri: str
    table: str | None
    prefix: str | None  # None: the file says nothing routing can use
    problem: str | None = None


def routing_entry(uri: str, data: bytes) -> RoutingEntry:
    """`source_prefix` (default `<table_name>/`) and `table_name`, if the file has them."""
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return RoutingEntry(uri, None, None, f"not valid JSON ({error})")
    if not isinstance(raw, dict):
        return RoutingEntry(uri, None, None, "not a JSON object")
    table = raw.get("table_name") if isinstance(raw.get("table_name"), str) else None
    prefix = raw.get("source_prefix")
    if not isinstance(prefix, str):
        prefix = f"{table}/" if table else None
    return RoutingEntry(uri, table, prefix, None if prefix else "no table_name or source_prefix")


def route_key(key: str, entries: list[RoutingEntry]) -> RoutingEntry:
    """The config whose routing prefix is the longest match for an object key.

    Two configs with that same longest prefix are an error naming both: which one wins
    must not depend on file names.
    """
    routable = [e for e in entries if e.prefix is not None]
    matches = [e for e in routable if key.startswith(str(e.prefix))]
    if not matches:
        message = "no table config routes this object key; known prefixes: " + ", ".join(
            sorted(str(e.prefix) for e in routable)
        )
        unreadable = [f"{e.uri} ({e.problem})" for e in entries if e.prefix is None]
        if unreadable:
            message += "; not routable: " + ", ".join(unreadable)
        # Unrouted for sure only when every config could be read: else the file may be one
        # the unreadable config would have taken.
        raise ConfigError(message, key=key, details={"unrouted": not unreadable})
    longest = max(len(str(e.prefix)) for e in matches)
    best = [e for e in matches if len(str(e.prefix)) == longest]
    if len(best) > 1:
        raise ConfigError(
            f"{len(best)} table configs claim this object key with the same source_prefix "
            f"'{best[0].prefix}': {', '.join(e.uri for e in best)}; give each table its own "
            "prefix",
            key=key,
        )
    return best[0]
