"""`python -m handler check`: a config folder validated before it is deployed.

Offline: every config (schema, custom SQL), its mapping sheet, identifiers against the
warehouse's limits, routing prefixes, references between tables, unused sheets. With a
warehouse: each table's plan against the live target, read only (nothing is created or
altered). Only the CLI imports this.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steps.shared import progress
from steps.shared.config.model import TableConfig, read_config, resolve_relative
from steps.shared.config.table import TableSpec, load_table_config
from steps.shared.errors import ConfigError, RefloadError
from steps.shared.io import storage

Severity = Literal["error", "warning"]
PlanKind = Literal["create", "add columns", "drift", "ok"]
SHEET_SUFFIXES = (".csv", ".xlsx", ".xlsm", ".xls")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        label = "warning: " if self.severity == "warning" else ""
        return f"{self.path}: {label}{self.message}"


@dataclass(frozen=True)
class Plan:
    config: str
    target: str
    plan: PlanKind
    columns: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class Report:
    root: str
    configs: int = 0
    problems: list[Problem] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def add(self, path: str, message: str, severity: Severity = "error") -> None:
        self.problems.append(Problem(path, message, severity))

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "invalid" if self.errors else "valid",
            "root": self.root,
            "configs": self.configs,
            "problems": [
                {"path": p.path, "severity": p.severity, "message": p.message}
                for p in self.problems
            ],
            "plans": [
                {
                    "config": p.config,
                    "target": p.target,
                    "plan": p.plan,
                    "columns": p.columns,
                    "detail": p.detail,
                }
                for p in self.plans
            ],
        }


def _refload_error(report: Report, error: RefloadError, fallback: str) -> None:
    """One problem per line of a refload error: its file as the path, the rest as message."""
    path = error.file or fallback
    lines = error.details.get("problems") or [error.reason]
    error.file = None
    for line in lines:
        error.reason = line
        report.add(path, error.message)


def dialect_class(url: str) -> tuple[str, Any] | None:
    """The dialect a URL names and its warehouse class (imported, not connected), or None
    if unknown."""
    from steps.shared.warehouse import dialect_of, url_scheme

    cls = dialect_of(url)
    return None if cls is None else (url_scheme(url), cls)


def _identifiers(spec: TableSpec) -> list[tuple[str, str]]:
    config = spec.config
    names = [
        ("redshift_schema", config.redshift_schema),
        ("redshift_table" if config.redshift_table else "table_name", config.target_table),
    ]
    return names + [(f"target_column '{c.target}'", c.target) for c in spec.mapping.columns]


def _strictest_dialect() -> tuple[str, Any]:
    from steps.shared.warehouse import DIALECTS

    found = [d for d in (dialect_class(f"{scheme}://") for scheme in DIALECTS) if d]
    return min(found, key=lambda d: d[1].capabilities.max_identifier_bytes)


def _check_identifiers(report: Report, spec: TableSpec, warehouse_url: str | None) -> None:
    # Without a target warehouse, the strictest dialect's limit, as a warning only.
    target = dialect_class(warehouse_url) if warehouse_url else None
    strict = target is not None
    dialect, cls = target if target is not None else _strictest_dialect()
    limit = cls.capabilities.max_identifier_bytes
    whose = dialect if strict else f"{dialect}, the strictest target"
    for where, name in _identifiers(spec):
        size = len(name.encode())
        if size > limit:
            source = spec.mapping.uri if where.startswith("target_column") else spec.config_uri
            report.add(
                source,
                f"{where}: identifier '{name}' is {size} bytes, longer than {whose}'s {limit}",
                "error" if strict else "warning",
            )


def _check_column_count(report: Report, spec: TableSpec, warehouse_url: str | None) -> None:
    # As for identifiers: the target warehouse's limit, else the strictest one's as a warning.
    from steps.shared.warehouse import DIALECTS
    from steps.shared.warehouse.base import HISTORY_COLUMNS, column_count_problem

    target = dialect_class(warehouse_url) if warehouse_url else None
    if target is not None:
        dialect, cls = target
    else:
        found = [d for d in (dialect_class(f"{scheme}://") for scheme in DIALECTS) if d]
        limited = [d for d in found if d[1].capabilities.max_columns is not None]
        if not limited:
            return
        dialect, cls = min(limited, key=lambda d: d[1].capabilities.max_columns)
        dialect = f"{dialect}, the strictest target,"
    limit = cls.capabilities.max_columns
    history = spec.config.strategy.history
    count = len(spec.mapping.columns) + (len(HISTORY_COLUMNS) if history else 0)
    if limit is not None and count > limit:
        report.add(
            spec.mapping.uri,
            column_count_problem(count, history, dialect, limit),
            "error" if target is not None else "warning",
        )


def _check_routing(report: Report, configs: dict[str, TableConfig]) -> None:
    claimed: dict[str, str] = {}
    for uri, config in configs.items():
        prefix = config.routing_prefix
        if prefix in claimed:
            report.add(
                uri,
                f"source_prefix '{prefix}' is also claimed by {claimed[prefix]}: a landed file "
                "would match both",
            )
        else:
            claimed[prefix] = uri
    for prefix, uri in claimed.items():
        for other, other_uri in claimed.items():
            if other != prefix and other.startswith(prefix):
                report.add(
                    other_uri,
                    f"source_prefix '{other}' starts with '{prefix}' of {uri}: files under "
                    f"'{other}' go to this table (the longest prefix wins), the rest to the other",
                    "warning",
                )


def _qualified(name: str) -> str:
    return name if "." in name else f"public.{name}"


def _check_references(report: Report, configs: dict[str, TableConfig]) -> None:
    loaded = {config.target for config in configs.values()}
    for uri, config in configs.items():
        for i, test in enumerate(config.quality_tests):
            ref = getattr(test, "ref_table", None)
            if ref and _qualified(ref) not in loaded:
                report.add(
                    uri,
                    f"quality_tests[{i}].ref_table: no config here loads '{_qualified(ref)}'",
                    "warning",
                )


def _check_groups(report: Report, root: str, specs: list[TableSpec]) -> None:
    """The group files under root/groups (steps.shared.config.group)."""
    from steps.shared.config.group import check_groups, table_names

    known = table_names(root)
    for path, message in check_groups(root, known, {s.config.table_name: s for s in specs}):
        report.add(path, message)


def _sheets_under(root: str) -> list[str]:
    if storage.is_s3(root):
        found = storage.list_uris(root) + storage.list_uris(storage.join(root, "mappings"))
        return [u for u in found if u.lower().endswith(SHEET_SUFFIXES)]
    return sorted(
        str(p) for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in SHEET_SUFFIXES
    )


def _check_unused_sheets(report: Report, root: str, used: set[str]) -> None:
    for sheet in _sheets_under(root):
        if posixpath.normpath(sheet) not in used:
            report.add(sheet, "mapping sheet that no config uses", "warning")


def _plan(warehouse: Any, spec: TableSpec) -> Plan:
    """What `run` would do to the target, by the drift check `run` makes (read only)."""
    from steps.shared.warehouse.base import TargetTable, _same_type, type_signature

    config, mapping = spec.config, spec.mapping
    target = TargetTable(
        config.redshift_schema,
        config.target_table,
        mapping,
        allow_new_columns=config.allow_new_columns,
        history=config.strategy.history,  # valid_from / valid_to are the table's own
    )
    existing = warehouse.table_columns(target.schema, target.name)
    if not existing:
        return Plan(spec.config_uri, config.target, "create", mapping.targets)
    try:
        addable = warehouse.check_drift(target, existing)
    except ConfigError as refused:
        # The columns involved, for the plan line; the verdict and reason are run's own.
        differ = [c for c in existing if c not in mapping.targets] + [
            c.target
            for c in mapping.columns
            if c.target not in existing
            or not _same_type(
                existing[c.target], type_signature(warehouse.column_type(c.data_type))
            )
        ]
        return Plan(spec.config_uri, config.target, "drift", differ, refused.reason)
    if addable:
        return Plan(spec.config_uri, config.target, "add columns", [c.target for c in addable])
    return Plan(spec.config_uri, config.target, "ok")


def _mapping_file(config_uri: str) -> str | None:
    try:
        raw = json.loads(storage.read_bytes(config_uri).decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    value = raw.get("mapping_file") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def _check_curated_region(report: Report, warehouse_url: str, curated_root: str | None) -> None:
    """Redshift's COPY reads curated Parquet only from a bucket in the cluster's region."""
    found = dialect_class(warehouse_url)
    if not curated_root or found is None or found[0] != "redshift":
        return
    from steps.shared.warehouse.redshift import region_problem

    problem = region_problem(warehouse_url, curated_root)
    if problem:
        report.add(curated_root, problem)


def check_configs(
    root: str, warehouse_url: str | None = None, curated_root: str | None = None
) -> Report:
    """Every config directly under `root` (as routing sees them) and its mapping sheet;
    with a warehouse, also where its loads would read curated files from."""
    report = Report(root)
    if not storage.is_s3(root) and not Path(root).is_dir():
        raise ConfigError("config folder does not exist", file=root)
    uris = [u for u in storage.list_uris(root, ".json") if not u.endswith(".schema.json")]
    # A link to no file is no config routing can read: named, never skipped in silence.
    links = storage.unreadable_links(root, ".json")
    report.configs = len(uris) + len(links)
    for link, reason in links.items():
        report.add(link, reason)
    if not uris and not links:
        report.add(root, "no table configs (*.json) in this folder")
    configs: dict[str, TableConfig] = {}
    specs: list[TableSpec] = []
    used: set[str] = set()
    target_url = warehouse_url or os.environ.get("REFLOAD_WAREHOUSE_URL")
    progress.phase("configs", total=len(uris), unit="configs")
    for uri in uris:
        progress.advance(1)
        mapping_file = _mapping_file(uri)
        if mapping_file:  # used even when the config around it is invalid
            used.add(posixpath.normpath(resolve_relative(uri, mapping_file)))
        try:
            config = read_config(uri)[1]
        except RefloadError as error:
            _refload_error(report, error, uri)
            continue
        configs[uri] = config
        try:
            spec = load_table_config(uri)
        except RefloadError as error:
            _refload_error(report, error, uri)
            continue
        specs.append(spec)
        _check_identifiers(report, spec, target_url)
        _check_column_count(report, spec, target_url)
        if config.python_transform:
            from steps.ingest import hooks

            try:
                hooks.load(config.python_transform)
            except RefloadError as error:
                report.add(uri, f"python_transform: {error.reason}")
    _check_routing(report, configs)
    _check_references(report, configs)
    _check_groups(report, root, specs)
    _check_unused_sheets(report, root, used)
    if warehouse_url:
        from steps.shared.warehouse import open_warehouse

        _check_curated_region(report, warehouse_url, curated_root)
        progress.phase("plans", total=len(specs), unit="tables")
        with open_warehouse(warehouse_url, must_exist=True) as warehouse:
            report.plans = []
            for spec in specs:
                report.plans.append(_plan(warehouse, spec))
                progress.advance(1)
        for plan in report.plans:
            if plan.plan == "drift":
                report.add(plan.config, plan.detail)
    return report


def print_report(report: Report) -> None:
    for plan in report.plans:
        columns = f": {', '.join(plan.columns)}" if plan.plan in ("add columns", "drift") else ""
        print(f"{plan.config}: plan {plan.plan} {plan.target}{columns}")
    for problem in report.problems:
        print(problem)
    warnings = len(report.problems) - len(report.errors)
    verdict = "invalid" if report.errors else "valid"
    print(
        f"{report.root}: {report.configs} config(s) {verdict}: {len(report.errors)} error(s), "
        f"{warnings} warning(s)"
    )
