"""User SQL (`custom_sql` checks): parsed once, refused unless it only reads, and
run as SQL regenerated from the parsed tree in the warehouse's dialect.

A leaf module: it imports only sqlglot, so the config model can guard custom SQL
without importing the checks (and the warehouse behind them).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

# `{table}` in user SQL is the target table; it is parsed as this plain name.
TABLE_PLACEHOLDER = "refload_target_table"
# Configs are written in PostgreSQL's SQL (Redshift's is close to it).
CONFIG_DIALECT = "postgres"
# refload's dialect name -> sqlglot's.
SQLGLOT_DIALECTS = {"duckdb": "duckdb", "postgresql": "postgres", "redshift": "redshift"}

_WRITES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Drop,
    exp.Create,
    exp.Alter,
    exp.Command,
    exp.Into,
)


def parse_read_only_select(sql: str) -> exp.Query:
    """Exactly one SELECT that only reads, parsed (not pattern-matched); else ValueError."""
    text = sql.replace("{table}", TABLE_PLACEHOLDER)
    try:
        statements = [s for s in sqlglot.parse(text, read=CONFIG_DIALECT) if s is not None]
    except sqlglot.errors.ParseError as error:
        raise ValueError(f"custom_sql does not parse: {error}") from None
    if len(statements) != 1:
        raise ValueError(
            f"custom_sql must be exactly one SELECT, found {len(statements)} statements"
        )
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise ValueError(f"custom_sql must be a SELECT, found {statement.key.upper()}")
    for node in statement.walk():
        if isinstance(node, _WRITES):
            raise ValueError(f"custom_sql must only read; it contains {node.key.upper()}")
    return statement


def render_custom_sql(sql: str, dialect: str, schema: str, table: str) -> str:
    """The user's query as the warehouse runs it: regenerated from the parsed tree in its
    dialect, `{table}` bound to the target, comments dropped (a trailing `-- note` would
    otherwise swallow whatever refload wraps around the query)."""
    tree = parse_read_only_select(sql)
    for node in tree.find_all(exp.Table):
        if node.name == TABLE_PLACEHOLDER and not node.args.get("db"):
            node.set("this", exp.to_identifier(table, quoted=True))
            node.set("db", exp.to_identifier(schema, quoted=True))
    return tree.sql(dialect=SQLGLOT_DIALECTS.get(dialect, dialect), comments=False)
