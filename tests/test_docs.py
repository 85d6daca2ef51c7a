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
from steps.shared.alerts.channels import CHANNELS
from steps.shared.checks.registry import CHECKS
from steps.shared.config.model import CHECK_MODELS, LoadMode, SourceFormat
from steps.shared.mapping.casts import TYPE_KINDS
from steps.shared.mapping.transforms import TRANSFORMS

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

    from steps.shared.checks.registry import run_check

    test = SimpleNamespace(test_name="new_check", type="not_registered", severity="error")
    result = run_check(None, test)  # type: ignore[arg-type]
    assert (result["status"], result["details"]["error"]) == (
        "error",
        "no check runs 'not_registered'",
    )


# --- the generated reference pages (scripts/build_docs.py) -----------------------------


def _build_docs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_docs", ROOT / "scripts/build_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sections(page: str) -> dict[str, str]:
    """A page's `## ` sections by heading."""
    parts = re.split(r"^## (.+)$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _missing_cli(page: str, parser) -> list[str]:
    sections = _sections(page)
    return [
        f"{command} {name}"
        for command, names in _build_docs().cli_options(parser).items()
        for name in names
        if f"`{name}`" not in sections.get(f"`python -m handler {command}`", "")
    ]


def _missing_keys(page: str, schema: dict) -> list[str]:
    sections = _sections(page)
    return [
        f"{section} {key}"
        for section, keys in _build_docs().config_keys(schema).items()
        for key in keys
        if f"| `{key}` |" not in sections.get(section, "")
    ]


def test_every_cli_command_and_option_is_in_the_generated_reference():
    page = _build_docs().render_cli(build_parser())
    assert _missing_cli(page, build_parser()) == []
    # Every command, each under its own heading, with its usage line.
    assert set(_sections(page)) == {f"`python -m handler {c}`" for c in _commands()}
    assert "--raw-root RAW_ROOT" in _sections(page)["`python -m handler replay`"]


def test_an_option_the_reference_lacks_is_named():
    page = _build_docs().render_cli(build_parser())
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    action.choices["status"].add_argument("--since", help="new, not yet in the page")  # type: ignore[index]
    action.choices["new-command"] = type(parser)(prog="new")  # type: ignore[index]
    action.choices["new-command"].add_argument("--flag")  # type: ignore[index]
    assert _missing_cli(page, parser) == [
        "status --since",
        "new-command -h",
        "new-command --help",
        "new-command --flag",
    ]


def test_every_config_key_is_in_the_generated_reference():
    page = _build_docs().render_config(SCHEMA)
    assert _missing_keys(page, SCHEMA) == []
    tables = _sections(page)
    assert "| `primary_key` | list of string |" in tables["Table config"]
    assert "[Range](#range)" in tables["Table config"]  # quality_tests links each check's keys
    assert "| `column` | string | required |" in tables["Range"]


def test_a_config_key_the_reference_lacks_is_named():
    page = _build_docs().render_config(SCHEMA)
    schema = json.loads(json.dumps(SCHEMA))
    schema["properties"]["new_key"] = {"type": "string"}
    schema["$defs"]["Range"]["properties"]["step"] = {"type": "number"}
    assert _missing_keys(page, schema) == ["Table config new_key", "Range step"]


def test_the_generated_pages_are_the_same_on_every_build(tmp_path):
    build_docs = _build_docs()
    first = {p.name: p.read_text() for p in build_docs.write(tmp_path / "a")}
    second = {p.name: p.read_text() for p in build_docs.write(tmp_path / "b")}
    assert first == second
    assert set(first) == {"cli.md", "configuration.md", "decisions.md"}
    # Every ADR is listed, so a new one is on the site without editing the nav.
    for adr in sorted((DOCS / "adr").glob("*.md")):
        assert f"(../adr/{adr.name})" in first["decisions.md"]


def test_the_site_lists_every_page_and_the_readme_links_to_them():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    in_nav = {next(iter(entry.values())) for entry in nav}
    hand_written = {p.name for p in DOCS.glob("*.md")} | {"architecture.md"}
    assert hand_written <= in_nav, hand_written - in_nav
    readme = (ROOT / "README.md").read_text()
    assert readme.startswith("# refload\n\n```bash\nscripts/demo.sh ")
    assert readme.splitlines()[4].startswith("scripts/test.sh ")
    # A front page: every wave's sections, in two lines or so each (#31 added two).
    assert len(readme.splitlines()) <= 160
    for page in sorted(hand_written - {"index.md"}):
        assert f"(docs/{page}" in readme, f"README does not link docs/{page}"
