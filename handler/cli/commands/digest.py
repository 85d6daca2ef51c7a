"""`python -m handler digest`: one email for the fleet over a window (steps.digest).

The same step the daily schedule invokes (`{"step": "digest"}`), run here through the
handler's dispatch; `replay` of a saved digest event prints and exits the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from handler.cli.command import Command, root_and_warehouse


def digest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=float,
        metavar="HOURS",
        help="the window: the last HOURS hours (default 24)",
    )
    root_and_warehouse(parser)
    parser.add_argument(
        "--outbox", help="folder for the outbox channel's file (default: env REFLOAD_OUTBOX)"
    )
    parser.add_argument(
        "--now", help="end the window at this ISO 8601 time instead of now (UTC without an offset)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"since", "tables": [{"table", "status", "runs", "failures", '
        '"last_error"}], ...} on stdout',
    )


def digest(args: argparse.Namespace) -> int:
    from handler.aws.events import config_root

    event = {
        "step": "digest",
        "since": args.since,
        "config_root": str(args.config_root or config_root()),
        "warehouse": args.warehouse,
        "outbox": args.outbox,
        "now": args.now,
    }
    return replay_digest({k: v for k, v in event.items() if v is not None}, as_json=args.json)


def replay_digest(event: dict[str, Any], *, as_json: bool) -> int:
    """Run a digest event through the handler's dispatch; exit 0 whatever it found."""
    from handler.aws.dispatch import run_step
    from handler.aws.events import to_payload
    from steps.digest import digest_report

    payload = to_payload(event)
    found = run_step("digest", payload)
    if as_json:
        print(json.dumps(found, default=str))
        return 0
    print(digest_report(found, payload["run_id"])["text"], end="")
    for channel, outcome in (found.get("sent") or {}).items():
        where = outcome.get("ref") or outcome.get("error")
        print(f"{channel}: {outcome['status']} {where}", file=sys.stderr)
    return 0


DIGEST = Command(
    "one email for the fleet over a window (default 24 h): tables that failed, warned, went "
    "stale or changed unusually, with counts, cost and links to their history",
    digest_arguments,
    digest,
)
