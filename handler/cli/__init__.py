"""`python -m handler COMMAND`: the same steps as Lambda, on this machine.

`run` and `replay` drive the pipeline (handler.cli.pipeline); `preview` and `history` look at a
file or a table without publishing anything. `--outbox` reaches the outbox channel in the
payload, as every other option does.
"""

from __future__ import annotations

import argparse

from handler.cli.command import Command, run_command
from handler.cli.commands import configs, diff, digest, fleet, group, publish, reads, why
from handler.log import configure_logging

# Every command, in the order `--help` lists them: a new command is a module in
# handler/cli/commands/ with a `Command` (its options beside its work) and one line here.
COMMANDS: dict[str, Command] = {
    "run": publish.RUN,
    "replay": publish.REPLAY,
    "preview": reads.PREVIEW,
    "history": reads.HISTORY,
    "init": configs.INIT,
    "check": configs.CHECK,
    "dbt-sources": configs.DBT_SOURCES,
    "freshness": fleet.FRESHNESS,
    "status": fleet.STATUS,
    "digest": digest.DIGEST,
    "rollback": publish.ROLLBACK,
    "diff": diff.DIFF,
    "why": why.WHY,
    "group": group.GROUP,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m handler", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(subparsers.add_parser(name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=getattr(args, "verbose", False))
    return run_command(args.command, COMMANDS[args.command], args)
