"""freshness: which tables have gone too long without a file (`{"step": "freshness"}`).

A schedule invokes it (template.yaml, hourly by default), not the state machine: when a
vendor file never arrives, nothing else runs and nobody would be told. A table's age runs
from the last time it received a file: a publish (etl_audit.load_ledger) or a replay
skipped as unchanged (etl_audit.run_log status `skipped`: the vendor sent the same file,
and it still arrived). Only tables whose config has `freshness` are checked; with
`"expect": "auto"` against the arrival pattern learned from the ledger (steps.shared.arrivals).
"""

from __future__ import annotations

import datetime as dt
import html
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from steps.shared import arrivals
from steps.shared.alerts.channels import send
from steps.shared.arrivals import Lateness, Pattern
from steps.shared.config.model import DEFAULT_GRACE_HOURS, TableConfig, read_config
from steps.shared.config.routing import routing_entry
from steps.shared.errors import ConfigError, RefloadError, TerminalError
from steps.shared.io import storage
from steps.shared.warehouse import open_warehouse
from steps.shared.warehouse.audit_learned import arrivals as arrivals_of
from steps.shared.warehouse.base import Warehouse

log = structlog.get_logger("refload.freshness")
FreshnessStatus = Literal["pass", "learning", "warn", "error", "never_loaded"]
# The overall status is the worst table's; a table never loaded asks for a look, no more;
# one still learning its arrival pattern (`expect: auto`) passes.
_RANK = {"pass": 0, "learning": 0, "never_loaded": 1, "warn": 1, "error": 2}


@dataclass(frozen=True)
class TableFreshness:
    table: str
    status: FreshnessStatus
    last_loaded_at: dt.datetime | None
    age_hours: float | None
    config_uri: str
    config: TableConfig
    # `expect: auto`: the learned pattern and the file due next (None while learning).
    pattern: Pattern | None = None
    due: Lateness | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "table": self.table,
            "status": self.status,
            "last_loaded_at": iso(self.last_loaded_at),
            "age_hours": self.age_hours,
        }
        if self.config.freshness and self.config.freshness.expect:
            found["expect"] = self.expectation()
        return found

    def expectation(self) -> dict[str, Any]:
        """What `expect: auto` learned: {"pattern", "due", "late_hours", "grace_hours"};
        pattern None while learning."""
        return {
            "pattern": self.pattern.text if self.pattern else None,
            "due": iso(self.due.due) if self.due else None,
            "late_hours": self.due.late_hours if self.due else None,
            "grace_hours": grace_hours(self.config),
        }


def iso(moment: dt.datetime | None) -> str | None:
    """Audit timestamps are naive UTC; shown with their Z."""
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_now(text: str | None) -> dt.datetime:
    """`--now` (ISO 8601; without an offset it is UTC) as naive UTC, like the audit tables."""
    if not text:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    try:
        moment = dt.datetime.fromisoformat(text)
        if moment.tzinfo is not None:  # OverflowError: its UTC time is past year 9999
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ConfigError(
            f"--now: '{text}' is not an ISO 8601 time (e.g. 2026-11-25T08:00:00Z)"
        ) from None
    return moment


@dataclass(frozen=True)
class BrokenConfig:
    """A config under the root that does not validate: skipped, and named in the report."""

    config_uri: str
    table: str  # its table_name as written (maybe the invalid part), else the file's name
    error_type: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config_uri,
            "table": self.table,
            "error": {"type": self.error_type, "message": self.message},
        }


def _written_table_name(uri: str) -> str:
    """What a broken config calls its table, read leniently (as routing reads it)."""
    try:
        table = routing_entry(uri, storage.read_bytes(uri)).table
    except RefloadError:
        table = None
    return table or posixpath.basename(uri).removesuffix(".json")


def table_configs(root: str) -> tuple[list[tuple[str, TableConfig]], list[BrokenConfig]]:
    """Every table config under the root (a folder or an s3:// prefix), validated, and the
    ones that do not validate. One broken file must not blind the fleet commands to every
    other table: it is set aside with its error (`handler check` says how to fix it)."""
    uris = [u for u in storage.list_uris(root, suffix=".json") if not u.endswith(".schema.json")]
    configs, broken = [], []
    for uri in uris:
        try:
            configs.append((uri, read_config(uri)[1]))
        except TerminalError as error:  # a transient one (S3 busy) fails the whole command
            log.error("config skipped: it does not validate", config=uri, error=error.message)
            broken.append(
                BrokenConfig(uri, _written_table_name(uri), type(error).__name__, error.message)
            )
    for link, reason in storage.unreadable_links(root, ".json").items():  # listed as no file
        name = posixpath.basename(link).removesuffix(".json")
        broken.append(BrokenConfig(link, name, "RejectedInput", f"{link}: {reason}"))
    return configs, broken


def last_received(warehouse: Warehouse) -> dict[str, dt.datetime]:
    """Per table, the last time it received a file (published or skipped as unchanged).
    A rollback publishes an old file again: no file arrived."""
    return warehouse.last_received()


def assess(
    config_uri: str,
    config: TableConfig,
    last: dt.datetime | None,
    now: dt.datetime,
    received: list[dt.datetime] | None = None,
) -> TableFreshness:
    """A table's freshness at `now`; `received`: its recent arrivals (`expect: auto`)."""
    rule = config.freshness
    assert rule is not None  # only configs with the key are assessed
    status: FreshnessStatus = "never_loaded"
    age = pattern = due = None
    if last is not None:
        age = round((now - last).total_seconds() / 3600, 2)
        status = "pass"
        if rule.error_after and age > rule.error_after.hours:
            status = "error"
        elif rule.warn_after and age > rule.warn_after.hours:
            status = "warn"
        if rule.expect == "auto":  # the worse of the fixed ages and the learned pattern
            pattern = arrivals.learn(received or [last])
            if pattern is None:
                status = "learning" if status == "pass" else status
            else:
                due = arrivals.lateness(pattern, last, now, grace_hours(config))
                status = max(status, due.status, key=_RANK.__getitem__)
    return TableFreshness(config.table_name, status, last, age, config_uri, config, pattern, due)


def grace_hours(config: TableConfig) -> float:
    rule = config.freshness
    assert rule is not None
    return rule.grace_hours if rule.grace_hours is not None else DEFAULT_GRACE_HOURS


def received_times(
    warehouse: Warehouse, configs: list[tuple[str, TableConfig]]
) -> dict[str, list[dt.datetime]]:
    """The recent arrivals of the tables that learn their freshness: one query, and none
    when no config asks (`expect: auto`)."""
    learning = [c.table_name for _, c in configs if c.freshness and c.freshness.expect]
    return arrivals_of(warehouse.client, learning) if learning else {}


def check(
    config_root: str, warehouse_url: str | None, now: dt.datetime
) -> tuple[list[TableFreshness], list[BrokenConfig]]:
    valid, broken = table_configs(config_root)
    configs = [(uri, c) for uri, c in valid if c.freshness]
    if not configs:
        return [], broken
    # Read-only: a mistyped DuckDB path is refused, not created and every table 'never loaded'.
    with open_warehouse(warehouse_url, must_exist=True) as warehouse:
        warehouse.ensure_audit_tables()
        latest = last_received(warehouse)
        received = received_times(warehouse, configs)
    results = [
        assess(uri, c, latest.get(c.table_name), now, received.get(c.table_name))
        for uri, c in configs
    ]
    return results, broken


def overall_status(results: list[TableFreshness]) -> str:
    worst = max((r.status for r in results), key=_RANK.__getitem__, default="pass")
    return "warn" if worst == "never_loaded" else worst


def cadence(config: TableConfig, pattern: Pattern | None = None) -> str:
    rule = config.freshness
    assert rule is not None
    parts = [f"warn after {rule.warn_after}" if rule.warn_after else ""]
    parts.append(f"error after {rule.error_after}" if rule.error_after else "")
    if rule.expect:
        learned = pattern.text if pattern else "still learning"
        parts.append(f"expected {learned}, grace {grace_hours(config):g} hours")
    return ", ".join(p for p in parts if p)


def landing_place(config: TableConfig) -> str:
    """Where the table's file should land: its routing prefix, under the raw bucket if known."""
    raw_root = os.environ.get("REFLOAD_RAW_ROOT", "")
    if raw_root:
        return f"{raw_root.rstrip('/')}/{config.routing_prefix}<yyyy-mm-dd>/<file>"
    return f"object key prefix '{config.routing_prefix}' in the raw bucket"


def age_text(hours: float | None) -> str:
    """An age as a person on call reads it: hours up to 48, whole days beyond
    (72.4 hours is "3 days")."""
    if hours is None:
        return "ever"
    if hours < 48:
        return f"{hours:,.0f} hours"
    return f"{int(hours // 24):,} days"


def stale_report(result: TableFreshness, run_id: str) -> dict[str, Any]:
    """An alert report (steps.shared.alerts.report shape) for a table past its error_after."""
    config = result.config
    assert config.freshness is not None
    expected = config.freshness.error_after or config.freshness.warn_after
    if result.pattern and result.due and result.due.status == "error":
        # The learned pattern is what failed: say which file it expected, and when.
        wanted = f"a file {result.pattern.text}; the one due {iso(result.due.due)} is "
        wanted += f"{age_text(result.due.late_hours)} late ({cadence(config, result.pattern)})"
    else:
        wanted = f"a file at least every {expected} ({cadence(config, result.pattern)})"
    facts = [
        ("Table", result.table),
        ("Last load", iso(result.last_loaded_at)),
        ("Age", f"{age_text(result.age_hours)} ({result.age_hours:,.1f} hours)"),
        ("Expected", wanted),
        ("File lands at", landing_place(config)),
        ("Config", result.config_uri),
    ]
    advice = (
        "No file has arrived for this table for longer than its freshness allows. "
        "Ask the vendor for the file, or drop it where it should land."
    )
    text = "\n".join(f"{k + ':':<14} {v}" for k, v in facts) + f"\n\n{advice}\n"
    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts
    )
    return {
        "subject": f"[refload] {result.table} stale: no file for {age_text(result.age_hours)}",
        "table": result.table,
        "status": "stale",
        "run_id": run_id,
        "failed_step": "freshness",
        "error": {"type": "Stale", "message": f"last load {iso(result.last_loaded_at)}"},
        "failed_checks": [],
        # Same prefix as the table's failure incidents: its next successful load closes it.
        "signature": f"refload:{result.table}:freshness",
        # Nothing to re-run (no file came): no re-run input, so the outbox writes no
        # .rerun.json; the command checks again once the file has landed.
        "rerun_command": "python -m handler freshness",
        "rerun_input": None,
        "text": text,
        "html": f"<html><body><table>{rows}</table><p>{html.escape(advice)}</p></body></html>",
    }


def evaluate(
    config_root: str,
    warehouse_url: str | None,
    now: dt.datetime,
    run_id: str,
    outbox: str | None = None,
) -> dict[str, Any]:
    """Check every table with `freshness`, alert once per table past error_after; configs
    that do not validate are skipped and listed in `broken_configs`."""
    results, broken = check(config_root, warehouse_url, now)
    alerts: dict[str, Any] = {}
    for result in results:
        if result.status == "error":
            report = stale_report(result, run_id)
            log.error("table is stale", table=result.table, age_hours=result.age_hours)
            target = {"config": result.config_uri, "table": result.table, "outbox": outbox}
            alerts[result.table] = send(report, target)
    from steps.group import waiting_groups

    # Table groups some of whose members' files wait for the others (steps.group): a key
    # only when there are some.
    waiting = waiting_groups(config_root, warehouse_url, now)
    return {
        "status": overall_status(results),
        "tables": [r.to_dict() for r in results],
        **({"groups_waiting": waiting} if waiting else {}),
        "broken_configs": [b.to_dict() for b in broken],
        "alerts": alerts,
        "results": results,
    }


def run(payload: dict[str, Any]) -> dict[str, Any]:
    outcome = evaluate(
        payload.get("config_root") or os.environ.get("REFLOAD_CONFIG_ROOT", "configs"),
        payload.get("warehouse"),
        parse_now(payload.get("now")),
        payload.get("run_id") or "freshness",
        payload.get("outbox"),
    )
    outcome.pop("results")
    return outcome
