"""What every check type's config model shares, and what a check type is (`CheckType`: its
model and its function, one `CHECKS` line in `steps.shared.checks.registry`).

A leaf: the config (`steps.shared.config.model`) builds its `quality_tests` union from the
registry, so nothing here imports the config or the warehouse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from steps.shared.names import identifier_problem

if TYPE_CHECKING:
    from steps.shared.checks.context import CheckContext

Severity = Literal["error", "warn"]
When = Literal["after_publish", "before_publish"]

# etl_audit.data_quality_tests.test_name is VARCHAR(256): bytes on Redshift, and the bound
# every dialect shares (steps.shared.warehouse.base.AUDIT_TABLES).
MAX_TEST_NAME_BYTES = 256
# A name made from the columns stays shorter still, so that it travels whole in the step
# results (steps.contracts.VALUE_CHARS: longer values are cut there) and alert signatures.
# Names up to this long are kept as they always were.
MAX_DERIVED_NAME_CHARS = 200
NAME_HASH_CHARS = 12


def identifier(value: str) -> str:
    problem = identifier_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def table_reference(value: str) -> str:
    parts = value.split(".")
    if len(parts) > 2:
        raise ValueError(f"'{value}' must be 'table' or 'schema.table'")
    for part in parts:
        identifier(part)
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QualityTest(Strict):
    # Each check type's model declares `type: Literal["<its name>"]`: the union's tag.
    if TYPE_CHECKING:
        type: str

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
        name = f"{self.type}_{suffix}" if suffix else self.type
        if len(name) <= MAX_DERIVED_NAME_CHARS:  # type and column names are ASCII identifiers
            return name
        # A test over many columns (init proposes not_null over every never-empty column):
        # the start of its name, and a hash of the whole that keeps two such tests apart.
        digest = hashlib.sha256(name.encode()).hexdigest()[:NAME_HASH_CHARS]
        return f"{name[: MAX_DERIVED_NAME_CHARS - NAME_HASH_CHARS - 1]}_{digest}"


class ColumnsTest(QualityTest):
    columns: list[str] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: list[str]) -> list[str]:
        return [identifier(c) for c in value]


class ColumnTest(QualityTest):
    column: str

    @field_validator("column")
    @classmethod
    def _check_column(cls, value: str) -> str:
        return identifier(value)


class CheckType(NamedTuple):
    """One check type: the model its config entries validate against (a `QualityTest` with
    `type: Literal[name]`, no docstring: the JSON schema would carry it), and the function
    that runs it."""

    model: type[QualityTest]
    run: Callable[[CheckContext, Any], dict[str, Any]]
