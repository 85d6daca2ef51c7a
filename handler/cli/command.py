"""What a CLI command is, and the one error policy every command runs under.

A command is a `Command` in `handler.cli.COMMANDS`: its help, the function that adds its
options to its parser, and the function that does the work and returns the exit code.
Printing is the command's own (handler.cli.output for the shared formats).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from handler import progress


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    # A command without steps of its own (init, check) is drawn as one step of its name;
    # the others draw their own progress, or none.
    one_step: bool = False


def run_command(name: str, command: Command, args: argparse.Namespace) -> int:
    """The error policy: a RefloadError is the command's whole answer, one line on stderr
    (`Type: message`, credentials redacted) and its exit code (docs/architecture.md). Any
    other exception is a bug in refload and propagates with its traceback. Commands that
    report a failure in their own output (run, replay, rollback) catch it themselves."""
    from steps.shared.errors import RefloadError
    from steps.shared.io.secrets import redact_value

    shown = progress.shown(args.quiet, command=name) if command.one_step else None
    try:
        with shown or contextlib.nullcontext():
            return command.run(args)
    except RefloadError as error:
        print(f"{type(error).__name__}: {redact_value(error.message)}", file=sys.stderr)
        return error.exit_code


def quiet_options(parser: argparse.ArgumentParser) -> None:
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


def root_and_warehouse(parser: argparse.ArgumentParser) -> None:
    """--config-root and --warehouse, as the commands that read tables' configs and the
    warehouse (status, freshness, diff, why, digest) all take them."""
    parser.add_argument(
        "--config-root",
        help="folder or s3:// prefix with the table configs "
        "(default: env REFLOAD_CONFIG_ROOT, else configs)",
    )
    parser.add_argument("--warehouse", help="as for run; env REFLOAD_WAREHOUSE_URL")
