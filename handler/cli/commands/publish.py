"""The commands that publish: `run`, `replay` and `rollback` (docs/architecture.md, exit codes).

Each builds a step payload and drives the pipeline (handler.cli.pipeline); a failure is
part of the run's summary (stdout), not a line on stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from handler import progress
from handler.cli.command import Command, quiet_options
from handler.cli.output import print_summary


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse",
        help="duckdb:///file.duckdb (default), postgresql://..., "
        "redshift://...; env REFLOAD_WAREHOUSE_URL",
    )
    parser.add_argument(
        "--curated-root",
        help="folder or s3:// prefix for curated Parquet "
        "(default: ./curated; env REFLOAD_CURATED_ROOT)",
    )
    parser.add_argument(
        "--outbox", help="folder for local alerts (default: ./outbox; env REFLOAD_OUTBOX)"
    )
    parser.add_argument("--run-id", help="run id (default: time-based and unique)")
    parser.add_argument(
        "--engine",
        choices=["lambda", "spark"],
        help="who runs the ingest, whatever the config's 'engine' says (spark: PySpark on "
        "REFLOAD_SPARK_MASTER, default local[2])",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    quiet_options(parser)


def _force(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="publish even when the ledger says this file is already in the target",
    )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    names = ("warehouse", "curated_root", "outbox", "run_id", "engine", "force")
    options = {name: getattr(args, name, None) for name in (*names, "config_root", "raw_root")}
    return {k: v for k, v in options.items() if v}


def _read_event(path: str) -> dict[str, Any]:
    from steps.shared.errors import ConfigError

    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("event file does not exist", file=path) from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"not valid JSON: {error.msg}", file=path, line=error.lineno) from None
    if not isinstance(event, dict):
        raise ConfigError("an event must be a JSON object", file=path)
    return event


def replay_notify(event: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Send a saved failure's alert again; the summary shows what each channel did."""
    from handler.aws.dispatch import lambda_handler
    from handler.cli.pipeline import EXIT_CODES, summarize
    from steps.shared.errors import AlertNotDelivered

    try:
        alert = lambda_handler(event)["notified"]
    except AlertNotDelivered as failure:
        alert = failure.details["notified"]
    summary = summarize({**event, "alert": alert}, "failed", event.get("error"))
    return summary, EXIT_CODES["failed"]


def publish(args: argparse.Namespace, event_of: Any) -> int:
    """Run the event `event_of(args)` builds; print its summary; its exit code."""
    from handler.aws.events import check_run_id
    from handler.cli.commands import fleet
    from handler.cli.pipeline import run_pipeline, summarize
    from steps.shared.errors import RefloadError
    from steps.shared.io.secrets import redact_value

    try:
        event = event_of(args)
        event.update(_options(args))
        if event.get("run_id"):
            # Checked before anything runs: a bad id is a typo, not a failure to alert on.
            check_run_id(str(event["run_id"]))
        if event.get("step") in fleet.SCHEDULED:
            # A schedule's event checks the fleet, not one file: its own report and exit.
            return fleet.SCHEDULED[event["step"]](event, as_json=args.json)
        if event.get("step") == "notify":
            summary, code = replay_notify(event)
        else:
            with progress.shown(args.quiet):
                summary, code = run_pipeline(event)
    except RefloadError as error:
        summary, code = summarize({}, error.status, error.to_dict()), error.exit_code
    # The summary quotes error messages, which may quote a credential (a driver that
    # refuses a malformed warehouse URL quotes its password).
    summary = redact_value(summary)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print_summary(summary)
    return code


# --- run ---------------------------------------------------------------------------------


def run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="table config (path or s3:// URI)")
    parser.add_argument("--source", required=True, help="source file (path or s3:// URI)")
    _force(parser)
    common_options(parser)


def run(args: argparse.Namespace) -> int:
    return publish(
        args, lambda args: {"step": "ingest", "config": args.config, "source": args.source}
    )


RUN = Command("load one source file into its table", run_arguments, run)


# --- replay ------------------------------------------------------------------------------


def replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("event", help="JSON file")
    _force(parser)
    parser.add_argument(
        "--config-root",
        help="folder or s3:// prefix whose configs route a landed object's key "
        "(default: env REFLOAD_CONFIG_ROOT, else configs)",
    )
    parser.add_argument(
        "--raw-root",
        help="local folder standing in for the raw bucket: an event's s3://BUCKET/KEY is "
        "read from DIR/KEY (env REFLOAD_RAW_ROOT, when it is a folder)",
    )
    common_options(parser)


def replay(args: argparse.Namespace) -> int:
    return publish(args, lambda args: _read_event(args.event))


REPLAY = Command(
    "replay a saved S3/EventBridge event or step payload (its step and the ones after it)",
    replay_arguments,
    replay,
)


# --- rollback ----------------------------------------------------------------------------


def rollback_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", nargs="?", help="table_name from its config")
    parser.add_argument(
        "--to",
        required=True,
        metavar="RUN_ID",
        help="the run to go back to; with --group, an ISO timestamp",
    )
    parser.add_argument(
        "--group",
        metavar="NAME",
        help="a table group: every member back to what it held at --to, in one transaction",
    )
    parser.add_argument("--warehouse", help="as for run")
    parser.add_argument(
        "--config-root",
        help="folder or s3:// prefix holding the table configs (default: REFLOAD_CONFIG_ROOT "
        "or ./configs)",
    )
    parser.add_argument("--outbox", help="as for run")
    parser.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    quiet_options(parser)


def _rollback_event(args: argparse.Namespace) -> dict[str, Any]:
    from handler.aws.events import config_root
    from handler.cli.commands.rollback import load_event

    return load_event(args.table, args.to, args.config_root or config_root(), args.warehouse)


def rollback(args: argparse.Namespace) -> int:
    from steps.shared.errors import ConfigError

    if bool(args.table) == bool(args.group):
        raise ConfigError("rollback takes a TABLE or --group NAME (one of them)")
    if args.group:
        from handler.cli.commands.group_rollback import rollback_group

        summary = rollback_group(args)
        code = int(summary.pop("exit_code"))
        print(json.dumps(summary, default=str) if args.json else _group_rollback_text(summary))
        return code
    return publish(args, _rollback_event)


def _group_rollback_text(summary: dict[str, Any]) -> str:
    lines = [f"group {summary['group']}: {summary['status'].upper()} back to {summary['to']}"]
    for name, member in summary["members"].items():
        lines.append(
            f"  {name}: run {member['restored_run']} ({member['load_mode']}), "
            f"{member['rows_in_target']} row(s), tests {member['validation']}"
        )
    return "\n".join(lines)


ROLLBACK = Command(
    "publish an earlier run's curated file again into a replace table, then test it",
    rollback_arguments,
    rollback,
)
