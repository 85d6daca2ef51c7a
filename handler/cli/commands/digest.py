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
    """Run a digest event through the handler's dispatch; exit 0 whatever it found, 3
    (docs/architecture.md) when a channel did not deliver it, 2 when every channel that
    did not only lacks its settings."""
    from handler.aws.dispatch import run_step
    from handler.aws.events import to_payload
    from steps.digest import digest_report
    from steps.shared.errors import AlertNotDelivered, ConfigError

    payload = to_payload(event)
    found = run_step("digest", payload)
    sent = found.get("sent") or {}
    if as_json:
        print(json.dumps(found, default=str))
    else:
        print(digest_report(found, payload["run_id"])["text"], end="")
        for channel, outcome in sent.items():
            if outcome["status"] != "failed":
                print(f"{channel}: {outcome['status']} {outcome.get('ref')}", file=sys.stderr)
    failed = {channel: o["error"] for channel, o in sent.items() if o["status"] == "failed"}
    if not failed:
        return 0
    # A digest a channel did not deliver (an outbox folder that cannot be written: its
    # error names the path) must not end as if it had been sent; a channel only missing
    # its settings is the config's to fix (exit 2), not an outage (3).
    reasons = "; ".join(f"{channel}: {error}" for channel, error in failed.items())
    if all(error.startswith(f"{ConfigError.__name__}:") for error in failed.values()):
        print(f"ConfigError: digest not delivered ({reasons})", file=sys.stderr)
        return ConfigError.exit_code
    print(f"AlertNotDelivered: digest not delivered ({reasons})", file=sys.stderr)
    return AlertNotDelivered.exit_code


DIGEST = Command(
    "one email for the fleet over a window (default 24 h): tables that failed, warned, went "
    "stale or changed unusually, with counts, cost and links to their history",
    digest_arguments,
    digest,
)
