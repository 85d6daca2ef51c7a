"""Fleet commands on the command line: `freshness` and `status` (docs/architecture.md).

Both read every table config under a root and the audit tables; neither loads anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from handler.cli.command import Command, root_and_warehouse
from handler.cli.output import print_freshness


def _config_root(args: argparse.Namespace) -> str:
    from handler.aws.events import config_root

    return str(args.config_root or config_root())


def freshness(args: argparse.Namespace) -> int:
    """Exit 0 when no table is past its error_after, 1 otherwise (docs/architecture.md); 2 when a
    config under the root does not validate (the others are still checked and alerted on)."""
    from handler.aws.events import new_run_id
    from steps.freshness import evaluate, parse_now

    outcome = evaluate(
        _config_root(args), args.warehouse, parse_now(args.now), f"freshness-{new_run_id()}"
    )
    return report_freshness(outcome, as_json=args.json)


def freshness_arguments(parser: argparse.ArgumentParser) -> None:
    root_and_warehouse(parser)
    parser.add_argument(
        "--now", help="judge ages at this ISO 8601 time instead of now (UTC without an offset)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


FRESHNESS = Command(
    "tables whose last file is older than their config's freshness allows; "
    "alerts once per table past error_after (exit 1)",
    freshness_arguments,
    freshness,
)


def report_freshness(outcome: dict[str, Any], *, as_json: bool) -> int:
    """Print what `evaluate` found; the exit code. A broken config outranks a stale table:
    the stale tables' alerts are sent, while the broken config reaches nobody but here."""
    results = outcome.pop("results")
    broken = outcome["broken_configs"]
    if as_json:
        keys = ("status", "tables", "groups_waiting", "broken_configs")
        print(json.dumps({k: outcome[k] for k in keys if k in outcome}))
    else:
        print_freshness(outcome, results)
    for config in broken:
        error = config["error"]
        print(f"{error['type']}: {error['message']} (skipped)", file=sys.stderr)
    if broken:
        return 2
    return 1 if any(r.status == "error" for r in results) else 0


def replay_freshness(event: dict[str, Any], *, as_json: bool) -> int:
    """A saved `{"step": "freshness"}` (what the schedule sends): the fleet check the handler
    step runs, printed and exited as `freshness` does."""
    from handler.aws.events import config_root, to_payload
    from steps.freshness import evaluate, parse_now
    from steps.shared.errors import RefloadError

    try:
        payload = to_payload(event)
        outcome = evaluate(
            payload.get("config_root") or config_root(),
            payload.get("warehouse"),
            parse_now(payload.get("now")),
            payload["run_id"],
            payload.get("outbox"),
        )
    except RefloadError as error:
        print(f"{type(error).__name__}: {error.message}", file=sys.stderr)
        return error.exit_code
    return report_freshness(outcome, as_json=as_json)


def write_page(target: str, page: str) -> None:
    """A local file, or an s3:// object served as HTML (for a static link)."""
    from steps.shared.errors import ConfigError
    from steps.shared.io import storage

    if storage.is_s3(target):
        storage.write_bytes(target, page.encode(), content_type="text/html; charset=utf-8")
        return
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write the page: {error.strerror}", file=target) from None


def status(args: argparse.Namespace) -> int:
    """Exit 0: a report, whatever it shows (freshness is the command that fails on it)."""
    from handler.cli.commands.status import fleet_status, print_status, render_html

    fleet = fleet_status(_config_root(args), args.warehouse)
    if args.html:
        from handler.cli.commands.last_change import last_changes

        # The page's "last change" panel: each table's last two publishes compared.
        changes = last_changes(_config_root(args), args.warehouse)
        page = {
            **fleet,
            "tables": [{**t, "last_change": changes.get(t["table"])} for t in fleet["tables"]],
        }
        write_page(args.html, render_html(page))
    if args.json:
        print(json.dumps(fleet, default=str))
    else:
        print_status(fleet)
        if args.html:
            print(f"wrote {args.html}")
    return 0


def status_arguments(parser: argparse.ArgumentParser) -> None:
    root_and_warehouse(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="also write one self-contained page (inline CSS and SVG charts of each table's "
        "rows and tests); a path or an s3:// URI (served as text/html)",
    )


STATUS = Command(
    "one line per configured table: last run, status, when, rows, tests, freshness",
    status_arguments,
    status,
)


def _replay_digest(event: dict[str, Any], *, as_json: bool) -> int:
    from handler.cli.commands.digest import replay_digest

    return replay_digest(event, as_json=as_json)


# Scheduled steps (handler.aws.dispatch.SCHEDULED_STEPS) as `replay` runs a saved event of theirs.
SCHEDULED = {"freshness": replay_freshness, "digest": _replay_digest}
