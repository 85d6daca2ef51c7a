"""`python -m handler rollback --group NAME --to ISO_TIMESTAMP`: every member of a table
group back to what it held at that time, in ONE transaction (docs: operations.md, "Table
groups").

A replace member publishes again the curated file its last publish at or before that time
published (as `rollback TABLE` does); an scd2 member publishes, as a new version, its own
rows that were valid at that time (by valid_from / valid_to). Then each member's
after-publish tests run. Upsert and append members cannot go back to a time (no file holds
the whole table), and a member with no publish before that time has nothing to go back to:
both refuse the whole rollback, naming the member (exit 2, nothing changed).
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from steps.shared.errors import ConfigError


def parse_time(text: str) -> dt.datetime:
    """An ISO time as the ledger keeps it: UTC, without a zone (a zoneless one is UTC)."""
    try:
        value = dt.datetime.fromisoformat(text)
        # OverflowError: a zone that moves the time past year 9999 (or before year 1).
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    except (ValueError, OverflowError):
        raise ConfigError(
            "--to: not an ISO timestamp (e.g. 2026-11-01T12:00:00Z)", value=text
        ) from None


def rollback_group(args: argparse.Namespace) -> dict[str, Any]:
    """The rollback's summary, its `exit_code` beside it."""
    from handler.aws.dispatch import StepOutcome, record_outcomes, run_step
    from handler.aws.events import config_root, new_run_id
    from handler.cli.commands.rollback import require_curated_files, require_fits_mapping
    from steps.shared.config.group import load_group
    from steps.shared.loading import target_table
    from steps.shared.warehouse import open_warehouse
    from steps.shared.warehouse.audit import LedgerEntry
    from steps.shared.warehouse.audit_groups import published_before
    from steps.shared.warehouse.publish import GroupMember

    group = load_group(args.config_root or config_root(), args.group)
    at = parse_time(args.to)
    run_id = new_run_id()
    members: list[GroupMember] = []
    restored: dict[str, str] = {}
    with open_warehouse(args.warehouse, must_exist=True) as warehouse:  # never created empty
        warehouse.ensure_audit_tables()
        refused = []
        for name, spec in group.members.items():
            config = spec.config
            if not (config.strategy.takes_rollback or config.strategy.history):
                refused.append(
                    f"{name} has load_mode '{config.mode}': only replace and scd2 members can "
                    "go back to a time"
                )
                continue
            row = published_before(warehouse, config.target, at)
            if row is None:
                refused.append(f"{name} has no publish at or before {at.isoformat()}")
                continue
            run, curated_uri, content_hash, source_uri, version, _rows, modified, _at = row
            restored[name] = run
            history = config.strategy.history
            if not history:
                require_curated_files(
                    curated_uri,
                    f"{name}: the curated file of run {run} is gone; curated files "
                    "are kept CuratedRetentionDays days (template.yaml)",
                )
                require_fits_mapping(curated_uri, spec.mapping, run)
            entry = LedgerEntry(
                run_id=run_id,
                table_name=name,
                target=config.target,
                source_uri=source_uri or "",
                source_version=version or "",
                content_hash=content_hash,
                config_hash=spec.config_hash,
                curated_uri=curated_uri or "",
                load_mode=config.mode if history else "rollback",
                source_modified_at=modified,
                group_run_id=run_id,
            )
            members.append(GroupMember(entry, target_table(spec), as_of=at if history else None))
        if refused:
            raise ConfigError(
                f"rollback of group {group.name} refused: " + "; ".join(refused),
                file=group.uri,
            )
        for member in members:
            if member.as_of is None:
                warehouse.check_curated_uri(member.entry.curated_uri)
        results = warehouse.publish_group(members, force=True)
    outcomes: list[StepOutcome] = []
    states = {}
    for member, result in zip(members, results, strict=True):
        name = member.entry.table_name
        states[name] = {
            "step": "validate",
            "config": group.members[name].config_uri,
            "table": name,
            "run_id": run_id,
            "warehouse": args.warehouse,
            "published": result.published,
            "rows_loaded": result.rows_loaded,
            "rows_before": result.rows_before,
            "rows_in_target": result.rows_after,
            "load_mode": member.entry.load_mode,
            **({"outbox": args.outbox} if args.outbox else {}),
        }
        outcomes.append(
            (
                args.warehouse,
                {
                    "run_id": run_id,
                    "table_name": name,
                    "step": "load",
                    "status": "ok",
                    "error": None,
                    "source_uri": member.entry.source_uri,
                    "details": {"rollback_to": at.isoformat(), "restored_run": restored[name]},
                },
            )
        )
    try:
        for state in states.values():
            state.update(run_step("validate", state, outcomes))
    finally:
        record_outcomes(outcomes)
    failed = [n for n, s in states.items() if s.get("validation") == "failed"]
    return {
        "status": "failed" if failed else "passed",
        "group": group.name,
        "group_run_id": run_id,
        "to": at.isoformat(),
        "members": {
            name: {
                "restored_run": restored[name],
                "load_mode": state["load_mode"],
                "rows_in_target": state["rows_in_target"],
                "validation": state.get("validation"),
            }
            for name, state in states.items()
        },
        "exit_code": 1 if failed else 0,
    }
