"""Warehouses: pick a dialect from a URL. Dialect modules import their driver lazily."""

from __future__ import annotations

import importlib
import os

from steps.errors import ConfigError
from steps.names import unknown_name
from steps.warehouse.base import Warehouse

DEFAULT_URL = "duckdb:///refload.duckdb"

# URL scheme -> "module:class"; the module is imported only when used.
DIALECTS = {
    "duckdb": "steps.warehouse.duckdb_dialect:DuckDBWarehouse",
    "postgresql": "steps.warehouse.postgres:PostgresWarehouse",
    "postgres": "steps.warehouse.postgres:PostgresWarehouse",
    "redshift": "steps.warehouse.redshift:RedshiftWarehouse",
}


def resolve_url(url: str | None = None) -> str:
    return url or os.environ.get("REFLOAD_WAREHOUSE_URL") or DEFAULT_URL


def open_warehouse(url: str | None = None) -> Warehouse:
    url = resolve_url(url)
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in DIALECTS:
        raise ConfigError(f"warehouse URL: {unknown_name('scheme', scheme, DIALECTS)}")
    module_name, class_name = DIALECTS[scheme].split(":")
    cls: type[Warehouse] = getattr(importlib.import_module(module_name), class_name)
    return cls(url)


__all__ = ["DEFAULT_URL", "DIALECTS", "Warehouse", "open_warehouse", "resolve_url"]
