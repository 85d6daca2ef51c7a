"""The `custom_sql` check: the team's own query, held to reading, whose rows are failures;
and the gate that refuses it before a publish on a warehouse that cannot hold it so."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from steps.shared.checks.context import CheckContext, check_result, sample_rows
from steps.shared.checks.models import QualityTest
from steps.shared.errors import ConfigError

if TYPE_CHECKING:
    from steps.shared.config import model as cfg
    from steps.shared.warehouse.base import Warehouse

SAMPLES_NOT_STORED = "sample rows not stored: set store_samples to keep them"
CUSTOM_SQL_TIMEOUT_SECONDS = 120


class CustomSql(QualityTest):
    type: Literal["custom_sql"]
    sql: str = Field(min_length=1)
    store_samples: bool = Field(
        default=False,
        strict=True,
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


def custom_sql(ctx: CheckContext, test: CustomSql) -> dict[str, Any]:
    from steps.shared.checks.sql import render_custom_sql

    schema, table = ctx.schema_and_table
    sql = render_custom_sql(test.sql, ctx.warehouse.dialect, schema, table)
    # The query may read any table the warehouse user can: what it returns is kept
    # (audit row, alert) only when the config asks for it.
    keep = test.store_samples
    with ctx.warehouse.read_only(CUSTOM_SQL_TIMEOUT_SECONDS):
        observed = int(ctx.warehouse.scalar(f"SELECT COUNT(*) FROM ({sql}) failing"))
        samples = sample_rows(ctx, f"SELECT * FROM ({sql}) failing") if observed and keep else []
    note = {"note": SAMPLES_NOT_STORED} if observed and not keep else {}
    return check_result("pass" if observed == 0 else "fail", observed, 0, samples, **note)


def refuse_unsafe_gates(config: cfg.TableConfig, warehouse: Warehouse, config_uri: str) -> None:
    """Before anything is staged: before-publish custom SQL needs a warehouse that can keep
    it read-only inside the publish transaction (see `Warehouse.user_sql_in_publish`)."""
    if warehouse.user_sql_in_publish:
        return
    for index, test in enumerate(config.quality_tests):
        if test.type == "custom_sql" and test.when == "before_publish":
            raise ConfigError(
                f"custom_sql cannot run before_publish on {warehouse.dialect}: it has no "
                "savepoints to keep the query read-only inside the publish transaction; "
                'use "when": "after_publish"',
                file=config_uri,
                key=f"quality_tests[{index}] ({test.test_name})",
            )
