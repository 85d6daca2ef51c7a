"""A table group's checks, across its members: `relationships` and `custom_sql` with
`{member}` placeholders. They read the members as they are about to be published (inside
the group's publish transaction), read-only as every custom_sql."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from steps.shared.checks.context import check_result, jsonable
from steps.shared.checks.custom_sql import CUSTOM_SQL_TIMEOUT_SECONDS, SAMPLES_NOT_STORED
from steps.shared.checks.sql import SQLGLOT_DIALECTS, parse_read_only_select
from steps.shared.errors import ConfigError, RefloadError

if TYPE_CHECKING:
    from steps.shared.config.group import Group, GroupSql, Relationships
    from steps.shared.warehouse.base import Warehouse

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PREFIX = "refload_member_"
SAMPLE_ROWS = 10


def placeholders(sql: str) -> list[str]:
    """The members a group query names (`{dim_country}`), in order of appearance."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(sql)))


def parse_group_sql(sql: str) -> exp.Query:
    """One read-only SELECT, `{member}` parsed as a plain table name; else ValueError."""
    return parse_read_only_select(_PLACEHOLDER.sub(lambda m: _PREFIX + m.group(1), sql))


def render_group_sql(sql: str, dialect: str, relations: dict[str, tuple[str, str]]) -> str:
    """The query in the warehouse's dialect, each `{member}` bound to its schema.table."""
    tree = parse_group_sql(sql)
    for node in tree.find_all(exp.Table):
        member = node.name.removeprefix(_PREFIX)
        if node.name.startswith(_PREFIX) and not node.args.get("db") and member in relations:
            schema, table = relations[member]
            node.set("this", exp.to_identifier(table, quoted=True))
            node.set("db", exp.to_identifier(schema, quoted=True))
    return tree.sql(dialect=SQLGLOT_DIALECTS.get(dialect, dialect), comments=False)


def _samples(warehouse: Warehouse, sql: str) -> list[dict[str, Any]]:
    names, rows = warehouse.query_with_names(f"{sql} LIMIT {SAMPLE_ROWS}", ())
    return [{n: jsonable(v) for n, v in zip(names, row, strict=True)} for row in rows]


def relationships(warehouse: Warehouse, group: Group, check: Relationships) -> dict[str, Any]:
    """Values of `column` (not null) with no match in `to`: each is a failing row."""
    q = warehouse.quote
    (child, column), (parent, to) = (v.split(".") for v in (check.column, check.to))
    rel = {m: _relation(warehouse, group, m) for m in (child, parent)}
    orphans = (
        f"SELECT c.{q(column)} FROM (SELECT * FROM {rel[child]}) c WHERE c.{q(column)} IS NOT "
        f"NULL AND NOT EXISTS (SELECT 1 FROM (SELECT * FROM {rel[parent]}) p "
        f"WHERE p.{q(to)} = c.{q(column)})"
    )
    observed = int(warehouse.scalar(f"SELECT COUNT(*) FROM ({orphans}) o"))
    samples = _samples(warehouse, orphans) if observed else []
    return check_result("pass" if observed == 0 else "fail", observed, 0, samples, to=check.to)


def group_sql(warehouse: Warehouse, group: Group, check: GroupSql) -> dict[str, Any]:
    relations = {
        name: (spec.config.redshift_schema, spec.config.target_table)
        for name, spec in group.members.items()
    }
    sql = render_group_sql(check.sql, warehouse.dialect, relations)
    with warehouse.read_only(CUSTOM_SQL_TIMEOUT_SECONDS):
        observed = int(warehouse.scalar(f"SELECT COUNT(*) FROM ({sql}) failing"))
        keep = check.store_samples and observed
        samples = _samples(warehouse, f"SELECT * FROM ({sql}) failing") if keep else []
    note = {"note": SAMPLES_NOT_STORED} if observed and not check.store_samples else {}
    return check_result("pass" if observed == 0 else "fail", observed, 0, samples, **note)


def _relation(warehouse: Warehouse, group: Group, member: str) -> str:
    """What a check reads of a member: its table, or an scd2 table's current rows."""
    config = group.members[member].config
    return warehouse.checked_relation(
        config.redshift_schema, config.target_table, config.strategy.history
    )


GROUP_CHECKS = {"relationships": relationships, "custom_sql": group_sql}


def run_group_checks(
    warehouse: Warehouse, group: Group, aborted: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Every check of the group; one whose SQL fails is status 'error', never a crash.

    Where the failure aborted the publish transaction (`UserSqlAbortedPublish`, DuckDB),
    its result goes into `aborted` and the error up, so the caller publishes again; that
    publish finds the check's result there and does not run it again (as a member's
    before-publish tests, `steps.shared.loading.before_publish_gate`).
    """
    from steps.shared.warehouse.base import UserSqlAbortedPublish

    aborted = {} if aborted is None else aborted
    results = []
    for check in group.config.checks:
        head = {"name": check.check_name, "type": check.type, "severity": check.severity}
        if check.check_name in aborted:
            results.append(aborted[check.check_name])
            continue
        try:
            result = GROUP_CHECKS[check.type](warehouse, group, check)  # type: ignore[operator]
        except ConfigError:
            raise
        except RefloadError as error:
            result = check_result("error", None, None, error=error.message)
        except UserSqlAbortedPublish as error:
            aborted[check.check_name] = {
                **head,
                **check_result("error", None, None, error=error.error.message),
            }
            raise
        results.append({**head, **result})
    return results
