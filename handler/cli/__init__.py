"""`python -m handler COMMAND`: the same steps as Lambda, on this machine.

`run` and `replay` drive the pipeline (handler.cli.pipeline); `preview` and `history` look at a
file or a table without publishing anything. `--outbox` reaches the outbox channel in the
payload, as every other option does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from handler import progress
from handler.aws.events import check_run_id
from handler.cli.commands import fleet
from handler.cli.pipeline import EXIT_CODES, run_pipeline, summarize
from handler.log import configure_logging
from steps.shared.io.secrets import redact_value


def _common(parser: argparse.ArgumentParser) -> None:
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
    _quiet(parser)


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on the terminal (also REFLOAD_PROGRESS=0; never shown in a pipe)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="at a terminal, every log record (each step's start and end) beside the "
        "progress, not only warnings and errors (a pipe always gets every record as JSON)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m handler", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="load one source file into its table")
    run.add_argument("--config", required=True, help="table config (path or s3:// URI)")
    run.add_argument("--source", required=True, help="source file (path or s3:// URI)")
    run.add_argument(
        "--force",
        action="store_true",
        help="publish even when the ledger says this file is already in the target",
    )
    _common(run)
    replay = commands.add_parser(
        "replay",
        help="replay a saved S3/EventBridge event or step payload (its step and the ones after it)",
    )
    replay.add_argument("event", help="JSON file")
    replay.add_argument(
        "--force",
        action="store_true",
        help="publish even when the ledger says this file is already in the target",
    )
    replay.add_argument(
        "--config-root",
        help="folder or s3:// prefix whose configs route a landed object's key "
        "(default: env REFLOAD_CONFIG_ROOT, else configs)",
    )
    replay.add_argument(
        "--raw-root",
        help="local folder standing in for the raw bucket: an event's s3://BUCKET/KEY is "
        "read from DIR/KEY (env REFLOAD_RAW_ROOT, when it is a folder)",
    )
    _common(replay)
    preview = commands.add_parser(
        "preview",
        help="what ingest makes of a file (typed rows, rejected rows), as pandas prints it; "
        "nothing is published",
    )
    preview.add_argument("--config", required=True, help="table config (path or s3:// URI)")
    preview.add_argument("--source", required=True, help="source file (path or s3:// URI)")
    preview.add_argument("--rows", type=int, default=10, help="rows to show (default 10)")
    _quiet(preview)
    history = commands.add_parser(
        "history", help="recent runs of a table and their tests, newest first"
    )
    history.add_argument("table", help="table_name from its config")
    history.add_argument("--warehouse", help="as for run")
    history.add_argument("--limit", type=int, default=10, help="how many runs (default 10)")
    history.add_argument(
        "--changes",
        action="store_true",
        help="also the sample keys each publish added, removed and changed, with the values "
        "before and after (from etl_audit.load_ledger)",
    )
    history.add_argument("--json", action="store_true", help="print JSON on stdout")
    init = commands.add_parser(
        "init", help="write a table config and mapping sheet inferred from a sample file"
    )
    init.add_argument("source", help="sample file (path or s3:// URI)")
    init.add_argument(
        "--table", help="table_name (and target table); required unless --update-layout"
    )
    init.add_argument(
        "--update-layout",
        metavar="CONFIG",
        help="rewrite only the layout keys (source_format, encoding, delimiter, header_row, "
        "sheet_name) of this existing config to read SOURCE; nothing else is written",
    )
    init.add_argument("--out", default="configs", help="folder to write to (default configs)")
    init.add_argument("--sheet", choices=("csv", "xlsx"), default="csv", help="mapping sheet")
    init.add_argument("--format", help="source_format (default: from the extension)")
    init.add_argument("--sheet-name", help="Excel sheet (default: the one with most cells)")
    init.add_argument("--primary-key", help="COL,... (default: proposed from the values)")
    init.add_argument("--encoding", help="the file's encoding (default: detected)")
    init.add_argument(
        "--delimiter", help="one character, or comma, semicolon, pipe, tab (default: detected)"
    )
    init.add_argument(
        "--header-row", type=int, help="line (Excel row) of the header (default: detected)"
    )
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.add_argument("--json", action="store_true", help="print JSON on stdout")
    _quiet(init)
    check = commands.add_parser(
        "check",
        help="validate every config and mapping sheet in a folder; with --warehouse, each "
        "table's plan against the live target",
    )
    check.add_argument(
        "config_root",
        nargs="?",
        help="folder or s3:// prefix (default: env REFLOAD_CONFIG_ROOT or configs)",
    )
    check.add_argument("--warehouse", help="as for run; nothing is created or altered")
    check.add_argument(
        "--curated-root",
        help="as for run (env REFLOAD_CURATED_ROOT): with a redshift:// warehouse, its "
        "bucket must be in the cluster's region",
    )
    check.add_argument("--json", action="store_true", help="print JSON on stdout")
    _quiet(check)
    dbt = commands.add_parser(
        "dbt-sources",
        help="write a dbt sources file for the configs: a source per schema, a table per "
        "config, its freshness and its checks as dbt tests",
    )
    dbt.add_argument(
        "--config-root",
        help="folder or s3:// prefix (default: env REFLOAD_CONFIG_ROOT or configs)",
    )
    dbt.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    _quiet(dbt)
    fleet.add_parsers(commands)
    rollback = commands.add_parser(
        "rollback",
        help="publish an earlier run's curated file again into a replace table, then test it",
    )
    rollback.add_argument("table", help="table_name from its config")
    rollback.add_argument("--to", required=True, metavar="RUN_ID", help="the run to go back to")
    rollback.add_argument("--warehouse", help="as for run")
    rollback.add_argument(
        "--config-root",
        help="folder or s3:// prefix holding the table configs (default: REFLOAD_CONFIG_ROOT "
        "or ./configs)",
    )
    rollback.add_argument("--outbox", help="as for run")
    rollback.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    _quiet(rollback)
    return parser


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


def print_summary(summary: dict[str, Any]) -> None:
    def n(value: Any) -> str:
        return "-" if value is None else f"{value:,}"

    checks = summary["checks"]
    passed = sum(c["status"] == "pass" for c in checks)
    line = (
        f"{summary['table'] or '?':<18} {summary['status'].upper():<9} "
        f"read {n(summary['rows_read'])}  rejected {n(summary['rows_rejected'])}  "
        f"duplicates {n(summary['duplicates_dropped'])}  loaded {n(summary['rows_loaded'])}"
        f"  tests {passed}/{len(checks)} passed  run {summary['run_id']}"
    )
    if summary.get("skipped_reason"):
        line += f"\n    nothing published: {summary['skipped_reason']}"
    if summary.get("changes"):
        line += "\n    keys " + ", ".join(f"{k} {v:,}" for k, v in summary["changes"].items())
    for check in checks:
        if check["status"] != "pass":
            line += (
                f"\n    test {check['name']} {check['status']} ({check['severity']}): "
                f"observed {check['observed']}, expected {check['expected']}"
            )
    if summary["error"]:
        line += f"\n    {summary['error']['type']}: {summary['error']['message']}"
    print(line)


def _steps_line(steps: list[dict[str, Any]]) -> str:
    """`ingest ok · load ok · validate failed | replay: validate passed`."""
    parts: list[str] = []
    for i, step in enumerate(steps):
        text = f"{step['step']} {step['status']}"
        if i and step["attempt"] != steps[i - 1]["attempt"]:
            parts[-1] += f" | replay: {text}"
            continue
        parts.append(text)
    return " · ".join(parts)


def _sample_line(kind: str, sample: dict[str, Any]) -> str:
    """`changed  code=BB: name 'Beta' -> 'Bravo'`."""
    key = ", ".join(f"{name}={value}" for name, value in sample.get("key", {}).items())
    values = [
        f"{column} {value!r} -> {sample['after'].get(column)!r}"
        for column, value in (sample.get("before") or {}).items()
    ]
    return f"      {kind:<8} {key}" + (": " + "; ".join(values) if values else "")


def print_history(runs: list[dict[str, Any]], table: str) -> None:
    if not runs:
        print(f"no runs of {table} recorded")
    for run in runs:
        rows = (
            ""
            if run["rows_published"] is None
            else (f"  published {run['rows_published']:,} ({run['load_mode']})")
        )
        if run.get("restored_run"):
            rows = rows.removesuffix(")") + f" of run {run['restored_run']})"
        if run.get("changes"):
            rows += "  keys " + ", ".join(f"{k} {v:,}" for k, v in run["changes"].items())
        status = run["status"].upper() + (" on replay" if run["attempts"] > 1 else "")
        print(
            f"{run['finished'][:19]}  {status:<7} run {run['run_id']}  "
            f"{_steps_line(run['steps'])}{rows}"
        )
        for step in run["steps"]:
            if step["error"]:
                print(f"    {step['step']}: {step['error_type']}: {step['error']}")
        for check in run["checks"]:
            print(
                f"    {check['status']:<5} {check['name']} ({check['severity']}): observed "
                f"{check['observed']}, expected {check['expected']}"
            )
        if "change_samples" in run and run.get("changes"):
            samples = run["change_samples"] or {}
            kinds = ("added", "removed", "changed")
            shown = sum(len(samples.get(kind) or []) for kind in kinds)
            total = sum(run["changes"].values())
            print(f"    sample keys ({shown} of {total:,}, from the ledger):")
            for kind in kinds:
                for sample in samples.get(kind) or []:
                    print(_sample_line(kind, sample))


def history(args: argparse.Namespace) -> int:
    from handler.cli.commands.history import recent_runs
    from steps.shared.warehouse import open_warehouse

    with open_warehouse(args.warehouse) as warehouse:
        warehouse.ensure_audit_tables()
        runs = recent_runs(warehouse, args.table, args.limit, samples=args.changes)
    if args.json:
        print(json.dumps(runs, default=str))
    else:
        print_history(runs, args.table)
    return 0


def preview(args: argparse.Namespace) -> int:
    """Exit 0 when a run would load the file, 2 when it would refuse it."""
    from steps.ingest.frames import preview as ingest_preview

    result = ingest_preview(args.config, args.source)
    summary = result.summary
    print(
        f"{summary['table']}: read {summary['rows_read']:,}  rejected "
        f"{summary['rows_rejected']:,}  duplicates {summary['duplicates_dropped']:,}  "
        f"would load {summary['rows_written']:,}  (nothing published)"
    )
    shown = result.rows.head(args.rows)
    print(f"\nfirst {len(shown)} row(s):\n{shown.to_string(index=False)}")
    if len(result.rejects):
        print(f"\nrejected:\n{result.rejects.head(args.rows).to_string(index=False)}")
    if summary["refused"]:
        print(f"\n{summary['refused']}")
        return 2
    return 0


def init(args: argparse.Namespace) -> int:
    """Exit 0 when the files are written, 2 when they exist (without --force) or the
    sample cannot be read."""
    from handler.cli.commands.init.onboard import (
        Given,
        infer,
        print_proposal,
        print_update,
        update_layout,
        write,
    )
    from steps.shared.errors import ConfigError

    given = Given.parse(args.encoding, args.delimiter, args.header_row)
    if args.update_layout:
        if args.table or args.primary_key:
            raise ConfigError(
                "--update-layout keeps the config's table and key: leave out "
                "--table and --primary-key"
            )
        update = update_layout(
            args.source,
            args.update_layout,
            source_format=args.format,
            sheet_name=args.sheet_name,
            given=given,
        )
        print_update(update, as_json=args.json)
        return 0
    if not args.table:
        raise ConfigError("init: --table is required (or --update-layout CONFIG)")
    key = [c.strip() for c in args.primary_key.split(",")] if args.primary_key else None
    proposal = infer(
        args.source,
        args.table,
        source_format=args.format,
        sheet_name=args.sheet_name,
        primary_key=key,
        given=given,
    )
    config_path, mapping_path = write(proposal, args.out, args.sheet, args.force)
    print_proposal(proposal, config_path, mapping_path, as_json=args.json)
    return 0


def check(args: argparse.Namespace) -> int:
    """Exit 0 when every config is valid (warnings allowed), 2 otherwise."""
    from handler.aws.events import config_root
    from handler.cli.commands.check import check_configs, print_report

    curated_root = args.curated_root or os.environ.get("REFLOAD_CURATED_ROOT")
    report = check_configs(args.config_root or config_root(), args.warehouse, curated_root)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print_report(report)
    return 2 if report.errors else 0


def dbt_sources(args: argparse.Namespace) -> int:
    """Exit 0 when the file is written, 2 when a config does not validate."""
    from handler.aws.events import config_root
    from handler.cli.commands.dbt_sources import write

    return write(args.config_root or config_root(), args.out)


# Commands that publish nothing: a RefloadError is their whole answer.
FLEET_COMMANDS = {"init": init, "check": check, "dbt-sources": dbt_sources}


def replay_notify(event: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Send a saved failure's alert again; the summary shows what each channel did."""
    from handler.aws.dispatch import lambda_handler
    from steps.shared.errors import AlertNotDelivered

    try:
        alert = lambda_handler(event)["notified"]
    except AlertNotDelivered as failure:
        alert = failure.details["notified"]
    summary = summarize({**event, "alert": alert}, "failed", event.get("error"))
    return summary, EXIT_CODES["failed"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=getattr(args, "verbose", False))
    if args.command in FLEET_COMMANDS:
        from steps.shared.errors import RefloadError

        try:
            with progress.shown(args.quiet, command=args.command):
                return FLEET_COMMANDS[args.command](args)
        except RefloadError as error:
            print(f"{type(error).__name__}: {error.message}", file=sys.stderr)
            return error.exit_code
    if args.command in fleet.COMMANDS:
        return fleet.main(args)
    if args.command in ("history", "preview"):
        from steps.shared.errors import RefloadError

        try:
            if args.command == "history":
                return history(args)
            with progress.shown(args.quiet):
                return preview(args)
        except RefloadError as error:
            print(f"{type(error).__name__}: {redact_value(error.message)}", file=sys.stderr)
            return error.exit_code
    from steps.shared.errors import RefloadError

    try:
        if args.command == "run":
            event = {"step": "ingest", "config": args.config, "source": args.source}
        elif args.command == "rollback":
            from handler.aws.events import config_root
            from handler.cli.commands.rollback import load_event

            root = args.config_root or config_root()
            event = load_event(args.table, args.to, root, args.warehouse)
        else:
            event = _read_event(args.event)
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
