"""A table group's publish: every member's curated file, staged, checked and published in
ONE transaction, or none (docs: README "Table groups").

Each member's payload is what its ingest returned (as `load` takes it). Inside the one
transaction: each member as `load` publishes it (its before_publish tests), then the
group's checks across members; any error-severity failure rolls every member back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import structlog

from steps import validate
from steps.shared.checks.custom_sql import refuse_unsafe_gates
from steps.shared.checks.group import run_group_checks
from steps.shared.checks.registry import failed_checks
from steps.shared.config.group import Group, load_group
from steps.shared.config.table import TableSpec
from steps.shared.errors import ConfigError, QualityCheckFailed, RefloadError
from steps.shared.loading import before_publish_gate, ledger_entry, summary, target_table
from steps.shared.warehouse import open_warehouse
from steps.shared.warehouse.base import UserSqlAbortedPublish, Warehouse
from steps.shared.warehouse.publish import GroupMember

log = structlog.get_logger("refload")


def publish(
    group: Group,
    payloads: dict[str, dict[str, Any]],
    group_run_id: str,
    warehouse_url: str | None,
    *,
    force: bool = False,
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Publish the group: (each member's load result by table, the group's check results).

    A failing check raises QualityCheckFailed with every result in `details["checks"]`.
    """
    members: list[GroupMember] = []
    checks: dict[str, list[dict[str, Any]]] = {}
    for name, spec in group.members.items():
        payload = payloads[name]
        checks[name] = []
        members.append(
            GroupMember(
                replace(ledger_entry(spec, payload), group_run_id=group_run_id),
                target_table(spec),
                before_publish_gate(spec, payload, checks[name]),
            )
        )
    group_checks: list[dict[str, Any]] = []
    # Group checks whose SQL aborted an earlier attempt of this publish: their result.
    aborted_checks: dict[str, dict[str, Any]] = {}

    def group_gate(warehouse: Warehouse) -> None:
        group_checks[:] = run_group_checks(warehouse, group, aborted_checks)
        failed = failed_checks(group_checks)
        if failed:
            names = ", ".join(map(_failure, failed))
            raise QualityCheckFailed(
                f"group {group.name}: check(s) failed, no member was published: {names}",
                table=group.name,
                details={"checks": group_checks},
            )

    with open_warehouse(warehouse_url) as warehouse:
        for member, spec in zip(members, group.members.values(), strict=True):
            warehouse.check_curated_uri(member.entry.curated_uri)
            refuse_unsafe_gates(spec.config, warehouse, spec.config_uri)
            warehouse.check_names(member.target)
        _refuse_unsafe_group_sql(group, warehouse)
        warehouse.ensure_audit_tables(*((m.target.schema, m.target.name) for m in members))
        try:
            while True:
                try:
                    results = warehouse.publish_group(members, group_gate, force=force)
                    break
                except UserSqlAbortedPublish as aborted:
                    log.info(
                        "custom SQL failed inside the group publish; publishing again",
                        group=group.name,
                        error=aborted.error.reason,
                    )
        finally:
            # After the transaction, so a rolled-back publish keeps its audit rows.
            for member in members:
                name = member.entry.table_name
                warehouse.record_checks(group_run_id, name, checks[name])
            warehouse.record_checks(group_run_id, group.name, group_checks)
    return {
        name: summary(spec, member.entry, result, checks[name])
        for (name, spec), member, result in zip(
            group.members.items(), members, results, strict=True
        )
    }, group_checks


def _failure(check: dict[str, Any]) -> str:
    """A failed group check in the error's message; one that could not run, with the
    database's message (its observed count is None)."""
    if check["status"] == "error":
        return f"{check['name']} ({check['details'].get('error')})"
    return f"{check['name']} (observed {check['observed']})"


def _refuse_unsafe_group_sql(group: Group, warehouse: Warehouse) -> None:
    """As `refuse_unsafe_gates`: a group's custom SQL runs inside the publish transaction."""
    if warehouse.user_sql_in_publish:
        return
    for index, check in enumerate(group.config.checks):
        if check.type == "custom_sql":
            raise ConfigError(
                f"custom_sql cannot run in a group's publish on {warehouse.dialect}: it has "
                "no savepoints to keep the query read-only inside the transaction",
                file=group.uri,
                key=f"checks[{index}]",
            )


# --- a member's file arriving alone (AWS) -------------------------------------------------


def group_of(config_root: str, table: str) -> str | None:
    """The name of the group whose member `table` is, if any (another table's broken group
    file is `check`'s business). A broken group file that names `table` is this file's
    error: publishing it alone would break the group's all-or-nothing."""
    from steps.shared.config.group import group_uris, read_group
    from steps.shared.io import storage

    for uri in group_uris(config_root):
        try:
            group = read_group(uri)
        except ConfigError:
            if f'"{table}"' in storage.read_bytes(uri).decode("utf-8", "replace"):
                raise
            continue
        if table in group.tables:
            return group.group
    return None


def arrival(spec: TableSpec, payload: dict[str, Any]) -> dict[str, Any] | None:
    """A group member's file in a state machine execution: held as pending for its group
    (a result with `held`), or, when it completes the set (every member holds a file newer
    than its last publish), the group published (this member's load result, with the
    group's). None when the table is in no group, or the file is already its target's
    (a replay: the single-table load skips it)."""
    import os

    from steps.shared.warehouse.audit_groups import holds_published_file, pending_files

    root = payload.get("config_root") or os.environ.get("REFLOAD_CONFIG_ROOT", "configs")
    table = spec.config.table_name
    name = group_of(root, table)
    if name is None:
        return None
    url = payload.get("warehouse")
    with open_warehouse(url) as warehouse:
        warehouse.ensure_audit_tables()
        hashes = (payload["content_hash"], payload.get("config_hash") or spec.config_hash)
        if holds_published_file(warehouse, spec.config.target, *hashes):
            return None
        group = load_group(root, name)
        pending = pending_files(warehouse, group.config.tables)
    pending[table] = payload  # this execution's file is the member's newest
    waiting = [t for t in group.config.tables if t not in pending]
    if waiting:
        log.info("file held for its group", group=name, waiting_for=waiting)
        return {
            "table": table,
            "run_id": payload["run_id"],
            "target": spec.config.target,
            "load_mode": spec.config.mode,
            "target_created": False,
            "rows_loaded": 0,
            "published": False,
            "held": True,
            "group": name,
            "waiting_for": waiting,
            "skipped_reason": f"held for group {name}: waiting for {', '.join(waiting)}",
        }
    payloads = {t: {**pending[t], "warehouse": url} for t in group.config.tables}
    loads, checks = publish(group, payloads, payload["run_id"], url)
    with open_warehouse(url) as warehouse:
        # The other members' files are published: their run_log says so (not pending).
        warehouse.record_steps(
            [
                {
                    "run_id": payload["run_id"],
                    "table_name": member,
                    "step": "load",
                    "status": "ok" if result["published"] else "skipped",
                    "error": None,
                    "source_uri": payloads[member].get("source"),
                    "details": {**result, "group": name},
                }
                for member, result in loads.items()
                if member != table
            ]
        )
    # The other members' after-publish tests run here, each under its own run, whose
    # run_log gets the validate row its own execution would have written; their results
    # travel with this member's before-publish ones, so that this execution's Validate
    # fails, and alerts, when any member's test fails.
    others = [
        {**check, "name": f"{member}: {check['name']}"}
        for member, checks in _validate_others(name, payloads, loads, table, url).items()
        for check in checks
    ]
    own = loads[table]
    return {
        **own,
        "checks_before_publish": [*own["checks_before_publish"], *others],
        "group": name,
        "group_run_id": payload["run_id"],
        "group_checks": checks,
    }


def _validate_others(
    group: str,
    payloads: dict[str, dict[str, Any]],
    loads: dict[str, dict[str, Any]],
    table: str,
    url: str | None,
) -> dict[str, list[dict[str, Any]]]:
    """Each published member of `group` but `table` validated: its checks by member, and
    its validate row in run_log (passed / failed, or the error that stopped it)."""
    results: dict[str, list[dict[str, Any]]] = {}
    rows = []
    try:
        for member, result in loads.items():
            if member == table or not result["published"]:
                continue
            state = {**payloads[member], **result, "step": "validate"}
            row = {
                "run_id": state["run_id"],
                "table_name": member,
                "step": "validate",
                "source_uri": state.get("source"),
            }
            try:
                validated = validate.run(state)
            except RefloadError as error:
                failure = {"type": type(error).__name__, "message": error.full_message}
                rows.append({**row, "status": "failed", "error": failure, "details": {}})
                raise
            results[member] = validated["checks"]
            details = {**validated, "group": group}
            rows.append(
                {**row, "status": validated["validation"], "error": None, "details": details}
            )
    finally:
        if rows:
            with open_warehouse(url) as warehouse:
                warehouse.record_steps(rows)
    return results


def waiting_groups(config_root: str, warehouse_url: str | None, now: Any) -> list[dict[str, Any]]:
    """Groups some of whose members hold a pending file while others have none: each with
    the members it waits for, and since when (`status`, `freshness`). No query without
    group files."""
    from steps.shared.config.group import group_uris, read_group
    from steps.shared.warehouse.audit_groups import pending_members

    groups = []
    for uri in group_uris(config_root):
        try:
            groups.append(read_group(uri))
        except ConfigError:
            continue
    if not groups:
        return []
    waiting = []
    with open_warehouse(warehouse_url) as warehouse:
        warehouse.ensure_audit_tables()
        for group in groups:
            pending = pending_members(warehouse, group.tables)
            missing = [t for t in group.tables if t not in pending]
            if pending and missing:
                since = min(pending.values())
                waiting.append(
                    {
                        "group": group.group,
                        "waiting_for": missing,
                        "pending": sorted(pending),
                        "waiting_since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "age_hours": round((now - since).total_seconds() / 3600, 2),
                    }
                )
    return waiting
