"""Fleet commands on the command line: `freshness` and `status` (ARCHITECTURE.md).

Both read every table config under a root and the audit tables; neither loads anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

COMMANDS = ("freshness", "status")


def add_parsers(commands: Any) -> None:
    """Add the fleet subcommands to `python -m handler`'s subparsers."""
    freshness = commands.add_parser(
        "freshness",
        help="tables whose last file is older than their config's freshness allows; "
        "alerts once per table past error_after (exit 1)",
    )
    _root_and_warehouse(freshness)
    freshness.add_argument(
        "--now", help="judge ages at this ISO 8601 time instead of now (UTC without an offset)"
    )
    freshness.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _root_and_warehouse(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-root",
        help="folder or s3:// prefix with the table configs "
        "(default: env REFLOAD_CONFIG_ROOT, else configs)",
    )
    parser.add_argument("--warehouse", help="as for run; env REFLOAD_WAREHOUSE_URL")


def _config_root(args: argparse.Namespace) -> str:
    from handler.events import config_root

    return str(args.config_root or config_root())


def print_freshness(outcome: dict[str, Any], results: list[Any]) -> None:
    from steps.freshness import cadence

    if not results:
        print("no table config has a freshness key: nothing to check")
    for result in results:
        if result.last_loaded_at is None:
            seen = "never received a file"
        else:
            seen = (
                f"last file {result.last_loaded_at:%Y-%m-%d %H:%M} UTC "
                f"({result.age_hours:,.1f} h ago)"
            )
        line = f"{result.table:<18} {result.status.upper():<12} {seen}  [{cadence(result.config)}]"
        alert = outcome["alerts"].get(result.table)
        if alert:
            sent = ", ".join(f"{name} {a['status']}" for name, a in alert.items())
            line += f"\n    alert: {sent}"
        print(line)


def freshness(args: argparse.Namespace) -> int:
    """Exit 0 when no table is past its error_after, 1 otherwise (ARCHITECTURE.md)."""
    from handler.events import new_run_id
    from steps.freshness import evaluate, parse_now

    outcome = evaluate(
        _config_root(args), args.warehouse, parse_now(args.now), f"freshness-{new_run_id()}"
    )
    results = outcome.pop("results")
    if args.json:
        print(json.dumps({"status": outcome["status"], "tables": outcome["tables"]}))
    else:
        print_freshness(outcome, results)
    return 1 if any(r.status == "error" for r in results) else 0


def main(args: argparse.Namespace) -> int:
    from steps.errors import RefloadError

    try:
        return freshness(args)
    except RefloadError as error:
        print(f"{type(error).__name__}: {error.message}", file=sys.stderr)
        return error.exit_code
