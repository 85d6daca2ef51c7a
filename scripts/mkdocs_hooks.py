"""mkdocs hook: write the generated reference pages before mkdocs reads docs/."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

_SPEC = importlib.util.spec_from_file_location(
    "build_docs", Path(__file__).resolve().parent / "build_docs.py"
)


def on_pre_build(config: Any) -> None:
    assert _SPEC is not None and _SPEC.loader is not None
    module = importlib.util.module_from_spec(_SPEC)
    _SPEC.loader.exec_module(module)
    module.write()
