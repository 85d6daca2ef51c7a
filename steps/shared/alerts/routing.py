"""Where a table's alerts go: its `owner` (steps.shared.config.owner), else the defaults
REFLOAD_ALERT_EMAIL_TO and REFLOAD_SERVICENOW_ASSIGNMENT_GROUP."""

from __future__ import annotations

import os
from typing import Any

import structlog

log = structlog.get_logger("refload.alerts")


def route(payload: dict[str, Any]) -> dict[str, Any]:
    """`{"owner", "to", "assignment_group"}` of the payload's table."""
    owner = None
    if payload.get("config"):
        try:
            from steps.shared.config.model import read_config

            owner = read_config(payload["config"])[1].table_owner
        except Exception as error:  # the config may be what failed; fall back to the default
            log.warning("could not read the table's owner from the config", error=str(error))
    default_to = [a.strip() for a in os.environ.get("REFLOAD_ALERT_EMAIL_TO", "").split(",")]
    return {
        "owner": owner.name if owner else None,
        "to": (owner.emails if owner else None) or [a for a in default_to if a],
        "assignment_group": (owner.servicenow_assignment_group if owner else None)
        or os.environ.get("REFLOAD_SERVICENOW_ASSIGNMENT_GROUP")
        or None,
    }
