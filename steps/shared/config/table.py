"""A table's validated config together with its mapping sheet: what every step trusts.

The one module that knows both `steps.shared.config.model` and `steps.shared.mapping.sheet`, so that
neither of them imports the other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from steps.shared.config.model import TableConfig, mapping_location, read_config
from steps.shared.errors import ConfigError
from steps.shared.io import storage
from steps.shared.mapping.sheet import Mapping, parse_sheet
from steps.shared.names import unknown_name


@dataclass(frozen=True)
class TableSpec:
    """A validated config with its mapping sheet, ready for the steps."""

    config: TableConfig
    mapping: Mapping
    config_uri: str
    config_hash: str


def check_against_config(mapping: Mapping, config: TableConfig, config_uri: str) -> None:
    """Names in the config that must exist in the mapping."""
    targets = mapping.targets

    def require(path: str, names: list[str]) -> None:
        for name in names:
            if name not in targets:
                raise ConfigError(
                    f"{path}: {unknown_name('column', name, targets)}", file=config_uri
                )

    require("primary_key", config.primary_key)
    if config.strategy.history:
        from steps.shared.warehouse.base import HISTORY_COLUMNS

        taken = [c for c in HISTORY_COLUMNS if c in targets]
        if taken:
            raise ConfigError(
                f"load_mode 'scd2' adds the columns valid_from and valid_to; the mapping "
                f"already has {', '.join(taken)}: rename it in the sheet",
                file=mapping.uri,
                column=taken[0],
            )
    require("redshift_sort_key", config.redshift_sort_key)
    require("redshift_dist_key", [config.redshift_dist_key] if config.redshift_dist_key else [])
    for i, test in enumerate(config.quality_tests):
        if hasattr(test, "columns"):
            require(f"quality_tests[{i}].columns", test.columns)
        if hasattr(test, "column"):
            require(f"quality_tests[{i}].column", [test.column])


def load_table_config(config_uri: str, *, mapping_override: str | None = None) -> TableSpec:
    """Read and validate a config and its mapping sheet."""
    raw, config = read_config(config_uri)
    # A payload's `mapping` (a replayed or hand-made event) is held to the same root as the
    # config's own `mapping_file`: an event must not read what a config may not.
    if mapping_override:
        mapping_uri = mapping_location(config_uri, mapping_override, "mapping")
    else:
        mapping_uri = mapping_location(config_uri, config.mapping_file)
    mapping_bytes = storage.read_bytes(mapping_uri)
    mapping = parse_sheet(mapping_bytes, mapping_uri)
    check_against_config(mapping, config, config_uri)
    digest = hashlib.sha256()
    digest.update(json.dumps(raw, sort_keys=True).encode())
    digest.update(mapping_bytes)
    return TableSpec(config, mapping, config_uri, digest.hexdigest())
