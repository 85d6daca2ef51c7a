"""Warehouses: pick a dialect from a URL. Dialect modules import their driver lazily.

The package itself imports nothing of the load layer, so that reading the load modes
(`steps.shared.warehouse.modes`, which table configs validate against) stays light.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steps.shared.warehouse.base import Warehouse

DEFAULT_URL = "duckdb:///refload.duckdb"

# URL scheme -> "module:class"; the module is imported only when used.
DIALECTS = {
    "duckdb": "steps.shared.warehouse.duckdb_dialect:DuckDBWarehouse",
    "postgresql": "steps.shared.warehouse.postgres:PostgresWarehouse",
    "postgres": "steps.shared.warehouse.postgres:PostgresWarehouse",
    "redshift": "steps.shared.warehouse.redshift:RedshiftWarehouse",
}


def resolve_url(url: str | None = None) -> str:
    return url or os.environ.get("REFLOAD_WAREHOUSE_URL") or DEFAULT_URL


def url_scheme(url: str) -> str:
    """The dialect's key in DIALECTS: `postgresql+psycopg://...` is `postgresql`."""
    return url.split("://", 1)[0].split("+", 1)[0].lower()


# URL -> warehouse, while steps share connections (None: each step opens its own).
_shared: ContextVar[dict[str, Warehouse] | None] = ContextVar("refload_warehouses", default=None)


def __getattr__(name: str) -> Any:
    if name == "Warehouse":  # `from steps.shared.warehouse import Warehouse`, as before
        from steps.shared.warehouse.base import Warehouse

        return Warehouse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_warehouse(url: str | None = None, *, must_exist: bool = False) -> Warehouse:
    """The warehouse at `url`; `must_exist` for a command that only reads (history,
    status, ...): a database that is not there is a ConfigError, never created empty."""
    from steps.shared.errors import ConfigError
    from steps.shared.io import secrets
    from steps.shared.names import unknown_name

    url = resolve_url(url)
    secrets.remember_url(url)  # masked in every log line, message and alert from now on
    shared = _shared.get()
    if shared is not None and url in shared:
        shared[url].client.close_if_lost()
        return shared[url]  # opened, so there
    cls = dialect_of(url)
    if cls is None:
        scheme = url_scheme(url)
        raise ConfigError(f"warehouse URL: {unknown_name('scheme', scheme, DIALECTS)}")
    warehouse = cls(url)
    if must_exist:
        warehouse.check_exists()
    if shared is not None:
        warehouse.shared = True
        shared[url] = warehouse
    return warehouse


def dialect_of(url: str) -> type[Warehouse] | None:
    """The warehouse class a URL names (imported, not connected), or None if unknown."""
    scheme = url_scheme(url)
    if scheme not in DIALECTS:
        return None
    module_name, class_name = DIALECTS[scheme].split(":")
    cls: type[Warehouse] = getattr(importlib.import_module(module_name), class_name)
    return cls


def shared_warehouse_that(can: str, url: str | None) -> Warehouse | None:
    """The warehouse at `url` as the steps of this process share it (the local pipeline),
    if they do and its dialect's capability `can` is true; else None, and nothing opened."""
    if _shared.get() is None:
        return None
    url = resolve_url(url)
    cls = dialect_of(url)
    if cls is None or not getattr(cls.capabilities, can):
        return None
    return open_warehouse(url)


def import_driver_early(url: str | None) -> threading.Thread | None:
    """The local pipeline, at its start: import the warehouse's dialect and driver on a
    thread while ingest reads the file, which is native code that lets it run (psycopg
    takes 0.1 s to import). Anything that fails here fails again, and is reported, where
    the step imports it."""
    if not isinstance(url, str | None):  # a saved event's: the payload's check names it
        return None
    scheme = url_scheme(resolve_url(url))
    if scheme not in DIALECTS:
        return None

    def load() -> None:
        module_name, class_name = DIALECTS[scheme].split(":")
        with suppress(Exception):
            cls = getattr(importlib.import_module(module_name), class_name)
            for driver in cls.driver_modules:
                importlib.import_module(driver)

    thread = threading.Thread(target=load, name="refload-import")
    thread.start()
    return thread


@contextmanager
def shared_connections() -> Iterator[None]:
    """Steps run in this block (the local pipeline) share one connection per warehouse.

    Opening one costs more than a small table's whole load on DuckDB. A step that fails
    drops the connection and the next step opens a new one; all are closed at the end.
    """
    shared: dict[str, Warehouse] = {}
    token = _shared.set(shared)
    try:
        yield
    finally:
        _shared.reset(token)
        for warehouse in shared.values():
            warehouse.close()


__all__ = [
    "DEFAULT_URL",
    "DIALECTS",
    "Warehouse",
    "dialect_of",
    "import_driver_early",
    "open_warehouse",
    "resolve_url",
    "shared_connections",
    "shared_warehouse_that",
    "url_scheme",
]
