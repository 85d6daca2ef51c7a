"""`python -m handler group run NAME --source TABLE=PATH ...`: a table group's files
loaded together (docs: README "Table groups").

Every member is ingested (as `run` does), then the group publishes in ONE transaction
(steps.group), then each member's after-publish tests run. Exit codes as `run`
(docs/architecture.md): a failed check is 1, bad input 2, and in both nothing changed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from handler import progress
from handler.cli.command import Command, quiet_options


def group_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="group_command", required=True)
    run = commands.add_parser("run", help="load every member's file, publish them together")
    run.add_argument("name", help="the group's name (its file: CONFIG_ROOT/groups/NAME.json)")
    run.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="TABLE=PATH",
        help="a member's source file (path or s3:// URI); one per member",
    )
    run.add_argument(
        "--config-root",
        help="folder or s3:// prefix holding the table configs and groups/ "
        "(default: REFLOAD_CONFIG_ROOT or ./configs)",
    )
    run.add_argument("--warehouse", help="as for run")
    run.add_argument("--curated-root", help="as for run")
    run.add_argument("--outbox", help="as for run")
    run.add_argument(
        "--force",
        action="store_true",
        help="publish even when the ledger says a member's file is already in its target",
    )
    run.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    quiet_options(run)


def _sources(group: Any, given: list[str]) -> dict[str, str]:
    """TABLE=PATH options -> member -> path: one for each member, none for another table."""
    from steps.shared.errors import ConfigError
    from steps.shared.names import unknown_name

    sources: dict[str, str] = {}
    for option in given:
        table, equals, path = option.partition("=")
        if not equals or not table or not path:
            raise ConfigError(f"--source '{option}': expected TABLE=PATH")
        if table not in group.members:
            raise ConfigError(
                f"--source '{option}': {unknown_name('member', table, group.members)}",
                file=group.uri,
            )
        if table in sources:
            raise ConfigError(f"--source '{option}': {table} is given twice")
        sources[table] = path
    missing = [t for t in group.members if t not in sources]
    if missing:
        raise ConfigError(
            f"group {group.name}: no --source for member(s) {', '.join(missing)}; a group "
            "publishes every member together",
            file=group.uri,
        )
    return sources


def run_group(args: argparse.Namespace) -> dict[str, Any]:
    """The group run's summary (its `exit_code` beside it)."""
    from handler.aws.dispatch import StepOutcome, record_outcomes, run_step
    from handler.aws.events import config_root, new_run_id, to_payload
    from handler.cli.pipeline import EXIT_CODES, _notify
    from steps import group as group_step
    from steps.shared.config.group import load_group
    from steps.shared.errors import QualityCheckFailed, RefloadError
    from steps.shared.warehouse import shared_connections

    group = load_group(args.config_root or config_root(), args.name)
    sources = _sources(group, args.source)
    run_id = new_run_id()
    options = {
        k: v
        for k, v in {
            "warehouse": args.warehouse,
            "curated_root": args.curated_root,
            "outbox": args.outbox,
        }.items()
        if v
    }
    states: dict[str, dict[str, Any]] = {}
    outcomes: list[StepOutcome] = []
    result: dict[str, Any] = {"group": group.name, "group_run_id": run_id, "checks": []}
    step, table = "ingest", None
    with shared_connections():
        try:
            for table, spec in group.members.items():
                event = {"step": "ingest", "config": spec.config_uri, "source": sources[table]}
                state = to_payload({**event, "run_id": run_id, "table": table, **options})
                states[table] = state
                state.update(run_step("ingest", state, outcomes))
            step, table = "load", None
            loads, result["checks"] = group_step.publish(
                group, states, run_id, args.warehouse, force=args.force
            )
            for table, load in loads.items():
                states[table].update(load)
                outcomes.append(_load_outcome(states[table], load))
            step = "validate"
            for table in states:  # `table` names a failure
                state = states[table]
                if not state.get("stale"):  # as the state machine: a stale file, no tests
                    state.update(run_step("validate", {**state, "step": "validate"}, outcomes))
        except RefloadError as error:
            if step == "load" or step == "ingest":
                # The group's publish failed, or a member's file was refused so none
                # publishes: every member names the failure (an ingested member's run
                # ends failed, not running forever).
                for member, state in states.items():
                    if step == "load" or member != table:
                        outcomes.append(_failed_outcome(state, error))
                checks = error.details.get("checks") or []
                if error.table == group.name:  # the group's own checks
                    result["checks"] = checks
                elif error.table in states:  # a member's before_publish tests
                    states[error.table]["checks"] = checks
            record_outcomes(outcomes)  # notify reads a cut error's full text from run_log
            first = next(iter(states.values()), {"run_id": run_id})
            failed = states.get(table or "") or {
                **first,
                "table": group.name,
                "checks": result["checks"],
            }
            _notify(failed, step, error.to_dict())
            result.update(_members(states, error.status, error.to_dict()))
            return {**result, "status": error.status, "exit_code": error.exit_code}
        finally:
            record_outcomes(outcomes)
    failing = [t for t, s in states.items() if s.get("validation") == "failed"]
    status = "failed" if failing else "passed"
    if any(s.get("stale") for s in states.values()):
        status = "stale"
    for table in failing:
        _notify(states[table], "validate", None)
    result.update(_members(states, status, None))
    code = QualityCheckFailed.exit_code if failing else EXIT_CODES[status]
    return {**result, "status": status, "exit_code": code}


def _members(
    states: dict[str, dict[str, Any]], status: str, error: dict[str, str] | None
) -> dict[str, Any]:
    from handler.cli.pipeline import summarize

    members = {t: summarize(s, s.get("validation") or status, None) for t, s in states.items()}
    return {"members": members, "error": error}


def _load_outcome(state: dict[str, Any], load: dict[str, Any]) -> Any:
    from handler.aws.dispatch import _outcome

    status = "stale" if load.get("stale") else "skipped" if load["published"] is False else "ok"
    return _outcome("load", state, state["table"], status, None, load)


def _failed_outcome(state: dict[str, Any], error: Any) -> Any:
    from handler.aws.dispatch import _outcome

    failure = {"type": type(error).__name__, "message": error.full_message}
    return _outcome("load", state, state["table"], "failed", failure, error.details)


def group(args: argparse.Namespace) -> int:
    from steps.shared.errors import RefloadError
    from steps.shared.io.secrets import redact_value

    try:
        with progress.shown(args.quiet):
            summary = redact_value(run_group(args))
    except RefloadError as error:  # before any member ran: the group file, the --source
        if not args.json:
            raise  # the error policy's one line on stderr
        # --json is one object whatever happens, as `run --json` for a config error.
        summary = redact_value(
            {
                "group": args.name,
                "group_run_id": None,
                "checks": [],
                "members": {},
                "error": error.to_dict(),
                "status": error.status,
                "exit_code": error.exit_code,
            }
        )
    code = int(summary.pop("exit_code"))
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        status, run_id = summary["status"].upper(), summary["group_run_id"]
        print(f"group {summary['group']}: {status} run {run_id}")
        for table, member in summary["members"].items():
            print(
                f"  {table}: {member['status']}  loaded {member['rows_loaded']}  "
                f"in target {member['rows_in_target']}"
                + (f"  ({member['skipped_reason']})" if member["skipped_reason"] else "")
            )
        for check in summary["checks"]:
            print(
                f"  {check['status']:<5} {check['name']} ({check['severity']}): observed "
                f"{check['observed']}, expected {check['expected']}"
            )
        if summary["error"]:
            print(f"  {summary['error']['type']}: {summary['error']['message']}")
    return code


GROUP = Command(
    "table groups: `group run NAME` loads and publishes a group's tables together",
    group_arguments,
    group,
)
