"""`preview` and `history`: look at a file or a table without publishing anything."""

from __future__ import annotations

import argparse
import json

from handler import progress
from handler.cli.command import Command, quiet_options
from handler.cli.output import print_history, print_preview


def preview_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="table config (path or s3:// URI)")
    parser.add_argument("--source", required=True, help="source file (path or s3:// URI)")
    parser.add_argument("--rows", type=int, default=10, help="rows to show (default 10)")
    quiet_options(parser)


def preview(args: argparse.Namespace) -> int:
    """Exit 0 when a run would load the file, 2 when it would refuse it."""
    from steps.ingest.frames import preview as ingest_preview

    with progress.shown(args.quiet):  # ingest's own phases
        result = ingest_preview(args.config, args.source)
        print_preview(result, args.rows)
    return 2 if result.summary["refused"] else 0


PREVIEW = Command(
    "what ingest makes of a file (typed rows, rejected rows), as pandas prints it; "
    "nothing is published",
    preview_arguments,
    preview,
)


MAX_LIMIT = 1_000_000


def _limit(text: str) -> int:
    """`--limit`: a count of runs, checked here (a usage error, exit 2): the warehouse would
    refuse a negative or 64-bit-overflowing LIMIT as an outage (exit 3)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_LIMIT:,} (got '{text}')"
        )
    return value


def history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", help="table_name from its config")
    parser.add_argument("--warehouse", help="as for run")
    parser.add_argument("--limit", type=_limit, default=10, help="how many runs (default 10)")
    parser.add_argument(
        "--changes",
        action="store_true",
        help="also the sample keys each publish added, removed and changed, with the values "
        "before and after (from etl_audit.load_ledger)",
    )
    parser.add_argument(
        "--cost",
        action="store_true",
        help="also what the table's runs cost on AWS per month (every run in the run log); "
        'with --json: {"runs": [...], "months": [{"month", "runs", "usd"}]}',
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")


def history(args: argparse.Namespace) -> int:
    from handler.cli.commands.history import recent_runs
    from handler.cli.output import print_cost_by_month
    from steps.shared.warehouse import open_warehouse
    from steps.shared.warehouse.audit_window import cost_by_month, run_costs

    with open_warehouse(args.warehouse, must_exist=True) as warehouse:
        warehouse.ensure_audit_tables()
        runs = recent_runs(warehouse, args.table, args.limit, samples=args.changes)
        costs = run_costs(warehouse, table=args.table)
    for run in runs:  # what each run cost on AWS (None: recorded before costs were)
        found = costs.get((args.table, run["run_id"]))
        run["cost"] = found["cost"] if found else None
    months = cost_by_month(costs)
    if args.json:
        print(json.dumps({"runs": runs, "months": months} if args.cost else runs, default=str))
        return 0
    print_history(runs, args.table)
    if args.cost:
        print_cost_by_month(months, args.table)
    return 0


HISTORY = Command(
    "recent runs of a table and their tests, newest first", history_arguments, history
)
