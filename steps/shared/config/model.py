"""Table configs: the pydantic model, loading, validation messages (routing: `routing`).

A config is validated once, here; every step downstream trusts `steps.shared.config.table.TableSpec`
(the config with its mapping sheet).
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from steps.shared.checks.models import QualityTest as QualityTestBase
from steps.shared.checks.models import Strict, identifier
from steps.shared.checks.registry import CHECKS
from steps.shared.config.owner import Owner, check_emails, merged_owner
from steps.shared.errors import ConfigError
from steps.shared.formats import source_formats
from steps.shared.io import storage
from steps.shared.names import did_you_mean, unknown_name
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
# The source formats are the registry's (steps.shared.formats: names as data, no reader
# imported): a new format needs no edit here.
if TYPE_CHECKING:
    SourceFormat = str
else:
    SourceFormat = Literal[source_formats()]
Period = Literal["minute", "hour", "day"]
Engine = Literal["lambda", "spark", "auto"]


def _check_models() -> dict[str, type[QualityTestBase]]:
    return {name: check.model for name, check in CHECKS.items()}


def _check_union(models: tuple[type[QualityTestBase], ...]) -> Any:
    """The `quality_tests` item: a union of the check types' models, told apart by `type`."""
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


# The check types are the registry's (steps.shared.checks.registry.CHECKS: each type's model
# beside its function): a new check type needs no edit here.
if TYPE_CHECKING:
    QualityTest = QualityTestBase
else:
    QualityTest = _check_union(tuple(_check_models().values()))


class _LiveCheckModels(Mapping[str, type[QualityTestBase]]):
    """check type -> its model, read from CHECKS on every use (a type added later counts)."""

    def __getitem__(self, key: str) -> type[QualityTestBase]:
        return CHECKS[key].model

    def __iter__(self) -> Iterator[str]:
        return iter(CHECKS)

    def __len__(self) -> int:
        return len(CHECKS)


CHECK_MODELS: Mapping[str, type[QualityTestBase]] = _LiveCheckModels()


PERIOD_HOURS: dict[str, float] = {"minute": 1 / 60, "hour": 1, "day": 24}


class FreshnessThreshold(Strict):
    count: int = Field(gt=0)
    period: Period

    @property
    def hours(self) -> float:
        return self.count * PERIOD_HOURS[self.period]

    def __str__(self) -> str:
        return f"{self.count} {self.period}{'' if self.count == 1 else 's'}"


# A learned expectation's grace when the config gives none (steps.shared.arrivals).
DEFAULT_GRACE_HOURS = 6.0


class Freshness(Strict):
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
        le=24 * 366,  # a year: past that no arrival is expected, and no timedelta holds 1e12
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


class TableConfig(Strict):
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
    # Strict booleans: "yes" or 1 read as true would change a load nobody asked to change.
    truncate_before_load: bool | None = Field(default=None, strict=True)
    load_mode: LoadMode | None = None
    primary_key: list[str] = Field(default_factory=list)
    dedupe: bool = Field(default=True, strict=True)
    max_reject_pct: float = Field(default=0, ge=0, le=100)
    redshift_sort_key: list[str] = Field(default_factory=list)
    redshift_dist_key: str | None = Field(
        default=None, description="Default: DISTSTYLE ALL (a copy on every node)."
    )
    allow_new_columns: bool = Field(
        default=False,
        strict=True,
        description="Add nullable mapping columns missing from an existing target.",
    )
    alert_emails: list[str] = Field(
        default_factory=list,
        description="Recipients of this table's alerts (default: REFLOAD_ALERT_EMAIL_TO); "
        "an alias of owner.emails.",
    )
    owner: Owner | None = Field(
        default=None,
        description="Who gets this table's alerts: name, emails, servicenow_assignment_group.",
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
    def _checkidentifier(cls, value: str | None) -> str | None:
        return None if value is None else identifier(value)

    @field_validator("primary_key", "redshift_sort_key")
    @classmethod
    def _check_column_list(cls, value: list[str]) -> list[str]:
        return [identifier(c) for c in value]

    @field_validator("redshift_dist_key")
    @classmethod
    def _check_dist_key(cls, value: str | None) -> str | None:
        return None if value is None else identifier(value)

    @field_validator("alert_emails")
    @classmethod
    def _check_alert_emails(cls, value: list[str]) -> list[str]:
        return check_emails(value)

    @model_validator(mode="after")
    def _check_owner(self) -> TableConfig:
        merged_owner(self.owner, self.alert_emails)  # raises when the two lists differ
        return self

    @property
    def table_owner(self) -> Owner | None:
        """The owner with `alert_emails` folded into its emails (None: nobody named)."""
        return merged_owner(self.owner, self.alert_emails)

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


def _registries() -> tuple[tuple[type[QualityTestBase], ...], tuple[str, ...]]:
    return tuple(_check_models().values()), source_formats()


_BUILT_WITH = _registries()


def config_model() -> type[TableConfig]:
    """`TableConfig`, its `quality_tests` taking the check types CHECKS holds now and its
    `source_format` the formats `steps.shared.formats` names now: a check type or format
    registered after this module was imported (one line) is known to the configs read
    after it. The shipped ones' model is `TableConfig` itself."""
    built = _registries()
    return TableConfig if built == _BUILT_WITH else _config_with(*built)


@functools.cache
def _config_with(
    models: tuple[type[QualityTestBase], ...], formats: tuple[str, ...]
) -> type[TableConfig]:
    tests: Any = (list[_check_union(models)], Field(default_factory=list))  # type: ignore[misc]
    source_format: Any = (
        Literal[formats] | None,
        TableConfig.model_fields["source_format"],
    )
    return create_model(
        "TableConfig", __base__=TableConfig, quality_tests=tests, source_format=source_format
    )


def parse_config(raw: Any, *, source: str) -> TableConfig:
    """Validate a decoded config; errors name the file and the path inside it."""
    if not isinstance(raw, dict):
        raise ConfigError("a table config must be a JSON object", file=source)
    try:
        return config_model().model_validate(raw)
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
