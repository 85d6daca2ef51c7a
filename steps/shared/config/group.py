"""Table groups: `configs/groups/NAME.json`, tables that publish together.

A group names its member tables (by `table_name`) and checks that read across them:
`relationships` (every value of a member's column has its match in another member's
column) and `custom_sql` over members (`{dim_country}` names a member). Validated here,
against the members' configs and mapping sheets; `handler group run` and `check` read it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steps.shared.config.table import TableSpec, load_table_config
from steps.shared.errors import ConfigError, RefloadError
from steps.shared.io import storage
from steps.shared.names import identifier_problem, unknown_name

GROUPS_FOLDER = "groups"


def _member_column(value: str) -> str:
    table, dot, column = value.partition(".")
    if not dot or not table or not column or "." in column:
        raise ValueError(f"'{value}' must be 'member.column'")
    return value


class _GroupCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    severity: Literal["error", "warn"] = "error"


class Relationships(_GroupCheck):
    type: Literal["relationships"]
    column: str
    to: str

    _columns = field_validator("column", "to")(_member_column)

    @property
    def check_name(self) -> str:
        return self.name or f"relationships_{self.column}_to_{self.to}".replace(".", "_")

    def columns(self) -> list[str]:
        return [self.column, self.to]


class GroupSql(_GroupCheck):
    type: Literal["custom_sql"]
    sql: str = Field(min_length=1)
    store_samples: bool = Field(default=False, strict=True)

    @field_validator("sql")
    @classmethod
    def _read_only(cls, value: str) -> str:
        from steps.shared.checks.group import parse_group_sql

        parse_group_sql(value)
        return value

    @property
    def check_name(self) -> str:
        return self.name or "custom_sql"

    def columns(self) -> list[str]:
        return []


GroupCheck = Annotated[Relationships | GroupSql, Field(discriminator="type")]


class GroupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    group: str
    tables: list[str] = Field(min_length=1)
    checks: list[GroupCheck] = []

    @field_validator("group")
    @classmethod
    def _name(cls, value: str) -> str:
        problem = identifier_problem(value)
        if problem:
            raise ValueError(problem)
        return value


@dataclass(frozen=True)
class Group:
    """A group with its members' configs, in the group file's order."""

    uri: str
    config: GroupConfig
    members: dict[str, TableSpec]

    @property
    def name(self) -> str:
        return self.config.group


def groups_root(config_root: str) -> str:
    return storage.join(config_root, GROUPS_FOLDER)


def group_uris(config_root: str) -> list[str]:
    """The group files under `config_root`/groups (none when the folder is not there)."""
    root = groups_root(config_root)
    if not storage.is_s3(root) and Path(root).exists() and not Path(root).is_dir():
        # Not "no groups": the groups a user meant to define would be silently gone.
        raise ConfigError(
            f"is a file, not a folder: group files are {GROUPS_FOLDER}/NAME.json", file=root
        )
    try:
        return storage.list_uris(root, ".json")
    except ConfigError:  # no groups folder: no groups
        return []


def read_group(uri: str) -> GroupConfig:
    try:
        raw = json.loads(storage.read_bytes(uri).decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        line = getattr(error, "lineno", None)
        raise ConfigError(f"not valid JSON: {error}", file=uri, line=line) from None
    try:
        return GroupConfig.model_validate(raw)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'group'}: {e['msg']}"
            + (f" (value {e['input']!r})" if isinstance(e.get("input"), str) else "")
            for e in error.errors()
        ]
        raise ConfigError(problems[0], file=uri, details={"problems": problems}) from None


def table_names(config_root: str) -> dict[str, str]:
    """table_name -> config file under the root, read leniently (as routing does): a
    config broken in another way is `check`'s business, or the member's own error when its
    group loads it, never an "unknown table" of the group."""
    found: dict[str, str] = {}
    for uri in storage.list_uris(config_root, ".json"):
        if uri.endswith(".schema.json"):
            continue
        try:
            raw = json.loads(storage.read_bytes(uri).decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError, RefloadError):
            continue
        name = raw.get("table_name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            found.setdefault(name, uri)
    return found


def group_problems(
    uri: str,
    group: GroupConfig,
    known: Collection[str],
    tables: dict[str, TableSpec],
    claimed: dict[str, str],
) -> list[str]:
    """What is wrong with one group against the configs (`known` table names; `tables` the
    ones whose config and sheet load): unknown members, a member that another group (in
    `claimed`: table -> group file) has, a check naming a column a member's sheet does not
    have. Fills `claimed` with this group's members."""
    problems = []
    for index, table in enumerate(group.tables):
        if table in group.tables[:index]:
            problems.append(f"tables: '{table}' is listed twice")
        elif table not in known:
            problems.append(f"tables: {unknown_name('table', table, known)}")
        elif table in claimed and claimed[table] != uri:
            problems.append(
                f"tables: '{table}' is also a member of {claimed[table]}: a table belongs "
                "to one group at most"
            )
        else:
            claimed[table] = uri
    for index, check in enumerate(group.checks):
        for value in check.columns():
            member, _, column = value.partition(".")
            where = f"checks[{index}] ({check.check_name})"
            if member not in group.tables:
                problems.append(f"{where}: '{value}': '{member}' is not a member of the group")
            elif member in tables and column not in tables[member].mapping.targets:
                problems.append(
                    f"{where}: '{value}': {member}'s mapping sheet has no column '{column}' "
                    f"(it has {', '.join(tables[member].mapping.targets)})"
                )
    if sql_checks := [c for c in group.checks if isinstance(c, GroupSql)]:
        from steps.shared.checks.group import placeholders

        for check in sql_checks:
            for member in placeholders(check.sql):
                if member not in group.tables:
                    problems.append(
                        f"checks ({check.check_name}): '{{{member}}}' is not a member of the group"
                    )
    return problems


def load_group(config_root: str, name: str) -> Group:
    """The group `name` under the root, with its members' configs; every problem of it (and
    of a member another group also claims) is a ConfigError naming the group file."""
    uris = group_uris(config_root)
    groups = {}
    for uri in uris:
        try:
            groups[uri] = read_group(uri)
        except ConfigError:
            if uri.rsplit("/", 1)[-1] == f"{name}.json":
                raise  # NAME.json is the group asked for: its own error, not "unknown group"
            continue  # another group's broken file is `check`'s business
    found = [uri for uri, group in groups.items() if group.group == name]
    if not found:
        if not uris:
            storage.list_uris(config_root, ".json")  # a config root that is not there says so
        names = [g.group for g in groups.values()]
        raise ConfigError(unknown_name("group", name, names), file=groups_root(config_root))
    uri = found[0]
    known = table_names(config_root)
    # A member's broken config or sheet is its own error, named as `run` names it.
    tables = {t: load_table_config(known[t]) for t in groups[uri].tables if t in known}
    # Members claimed by the other groups first: this one is the one in the wrong.
    claimed: dict[str, str] = {}
    for other, group in groups.items():
        if other != uri:
            group_problems(other, group, known, {}, claimed)
    problems = group_problems(uri, groups[uri], known, tables, claimed)
    if problems:
        raise ConfigError(problems[0], file=uri, details={"problems": problems})
    config = groups[uri]
    return Group(uri, config, {t: tables[t] for t in config.tables})


def check_groups(
    config_root: str, known: Collection[str], tables: dict[str, TableSpec]
) -> list[tuple[str, str]]:
    """`check`'s problems with the group files under the root: (file, message) each."""
    problems: list[tuple[str, str]] = []
    claimed: dict[str, str] = {}
    names: dict[str, str] = {}
    try:
        uris = group_uris(config_root)
    except ConfigError as error:
        return [(error.file or groups_root(config_root), error.reason)]
    for uri in uris:
        try:
            group = read_group(uri)
        except ConfigError as error:
            problems += [(uri, p) for p in error.details.get("problems") or [error.reason]]
            continue
        if group.group in names:
            problems.append(
                (uri, f"group: '{group.group}' is also the name of {names[group.group]}")
            )
        names.setdefault(group.group, uri)
        problems += [(uri, p) for p in group_problems(uri, group, known, tables, claimed)]
    return problems
