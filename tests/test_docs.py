"""Registries agree with each other, the docs and the JSON Schema (sqlite-utils' test_docs).

Adding a check type, transform, data type, source format, alert channel, load mode or
command without documenting it fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest

from handler.cli import build_parser
from steps.alerts import CHANNELS
from steps.checks import CHECKS
from steps.config import CHECK_MODELS, LoadMode, SourceFormat
from steps.mapping import TRANSFORMS, TYPE_KINDS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The pages that hold each fact (the README links to them).
CONFIGURATION = (DOCS / "configuration.md").read_text()
MAPPING = (DOCS / "mapping.md").read_text()
DATA_QUALITY = (DOCS / "data-quality.md").read_text()
# Every hand-written page: a command may be documented where its topic is.
PAGES = "".join(page.read_text() for page in sorted(DOCS.glob("*.md")))
SCHEMA = json.loads((ROOT / "configs" / "table_config.schema.json").read_text())


def _schema_consts() -> set[str]:
    """Every `const` and `enum` value anywhere in the shipped schema."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "const" in node:
                found.add(node["const"])
            found.update(v for v in node.get("enum", []) if isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SCHEMA)
    return found


def _commands() -> list[str]:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return list(action.choices)  # type: ignore[arg-type]


def test_every_check_model_has_a_function_and_back():
    assert set(CHECKS) == set(CHECK_MODELS)


@pytest.mark.parametrize("check_type", sorted(CHECK_MODELS))
def test_check_type_is_documented_and_in_the_schema(check_type):
    assert f"| `{check_type}` |" in DATA_QUALITY, f"docs/data-quality.md lacks {check_type}"
    assert check_type in _schema_consts(), f"configs/table_config.schema.json lacks {check_type}"


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_is_documented(name):
    assert re.search(rf"`{name}(\(|`)", MAPPING), f"docs/mapping.md lacks {name}"


@pytest.mark.parametrize("kind", TYPE_KINDS)
def test_data_type_is_documented(kind):
    assert re.search(rf"`{kind}(\(|`)", MAPPING), f"docs/mapping.md lacks {kind}"


@pytest.mark.parametrize("name", get_args(SourceFormat))
def test_source_format_is_documented_and_in_the_schema(name):
    assert f"`{name}`" in CONFIGURATION
    options = SCHEMA["properties"]["source_format"]["anyOf"]  # the enum, or null: omitted
    assert name in [v for option in options for v in option.get("enum", [])]


@pytest.mark.parametrize("mode", get_args(LoadMode))
def test_load_mode_is_documented_and_in_the_schema(mode):
    assert f"`{mode}`" in CONFIGURATION
    assert mode in _schema_consts()


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_alert_channel_is_documented(channel):
    row = next(line for line in CONFIGURATION.splitlines() if "`REFLOAD_ALERT_CHANNELS`" in line)
    assert f"`{channel}`" in row


@pytest.mark.parametrize("command", _commands())
def test_cli_command_is_documented(command):
    assert f"python -m handler {command}" in PAGES


def test_a_check_model_without_a_function_is_an_error_row_not_a_crash():
    from types import SimpleNamespace

    from steps.checks import run_check

    test = SimpleNamespace(test_name="new_check", type="not_registered", severity="error")
    result = run_check(None, test)  # type: ignore[arg-type]
    assert (result["status"], result["details"]["error"]) == (
        "error",
        "no check runs 'not_registered'",
    )

