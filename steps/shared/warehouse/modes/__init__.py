"""The load modes: ledger name -> mode. A new mode is one module here plus one line below.

Each mode states its statements and its rules (`mode.LoadMode`); the publisher, the
config, the checks and the handlers read them from here and never test a mode's name.
"""

from __future__ import annotations

from steps.shared.warehouse.modes.append import APPEND
from steps.shared.warehouse.modes.mode import LoadMode, Staged
from steps.shared.warehouse.modes.replace import REPLACE, ROLLBACK
from steps.shared.warehouse.modes.scd2 import SCD2
from steps.shared.warehouse.modes.upsert import UPSERT

MODES: dict[str, LoadMode] = {
    "truncate": REPLACE,
    "upsert": UPSERT,
    "append": APPEND,
    "scd2": SCD2,
    "rollback": ROLLBACK,
}

# The modes a table config may name, in the order the docs list them.
CONFIG_MODES = tuple(name for name, mode in MODES.items() if mode.configurable)


def load_mode(name: str) -> LoadMode:
    return MODES[name]


__all__ = ["CONFIG_MODES", "MODES", "LoadMode", "Staged", "load_mode"]
