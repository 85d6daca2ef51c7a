"""`init`, `check` and `dbt-sources`: the commands about table configs. They publish
nothing: a RefloadError is their whole answer (handler.cli.command.run_command)."""

from __future__ import annotations

import argparse
import json
import os

from handler.cli.command import Command, quiet_options

# --- init --------------------------------------------------------------------------------


def init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="sample file (path or s3:// URI)")
    parser.add_argument(
        "--table", help="table_name (and target table); required unless --update-layout"
    )
    parser.add_argument(
        "--update-layout",
        metavar="CONFIG",
        help="rewrite only the layout keys (source_format, encoding, delimiter, header_row, "
        "sheet_name) of this existing config to read SOURCE; nothing else is written",
    )
    parser.add_argument(
        "--update",
        metavar="CONFIG",
        help="rewrite this existing config's mapping sheet for SOURCE's header: renamed "
        "columns re-pointed, new ones added, removed ones reported; prints the diff",
    )
    parser.add_argument(
        "--curated-root",
        help="with --update: the curated root whose newest file of the table holds the "
        "values renamed columns are matched by (default: env REFLOAD_CURATED_ROOT or curated)",
    )
    parser.add_argument(
        "--out",
        help="folder to write a new table's config and sheet to (default configs); not with "
        "--update or --update-layout, which rewrite CONFIG's files where they are",
    )
    parser.add_argument("--sheet", choices=("csv", "xlsx"), default="csv", help="mapping sheet")
    parser.add_argument("--format", help="source_format (default: from the extension)")
    parser.add_argument("--sheet-name", help="Excel sheet (default: the one with most cells)")
    parser.add_argument("--primary-key", help="COL,... (default: proposed from the values)")
    parser.add_argument("--encoding", help="the file's encoding (default: detected)")
    parser.add_argument(
        "--delimiter", help="one character, or comma, semicolon, pipe, tab (default: detected)"
    )
    parser.add_argument(
        "--header-row", type=int, help="line (Excel row) of the header (default: detected)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    quiet_options(parser)


# The run reads the sheet the config names, beside the config: an updated copy elsewhere
# would be read by nothing, so --out with an update is refused rather than ignored.
OUT_WITH_UPDATE = (
    "{option} rewrites CONFIG and its mapping sheet where they are: leave out --out (to "
    "update a copy, copy the config and its sheet to a folder first and name that config)"
)


def init(args: argparse.Namespace) -> int:
    """Exit 0 when the files are written, 2 when they exist (without --force) or the
    sample cannot be read."""
    from handler.cli.commands.init.layout import Given
    from handler.cli.commands.init.onboard import (
        infer,
        print_proposal,
        print_update,
        update_layout,
        write,
    )
    from steps.shared.errors import ConfigError

    given = Given.parse(args.encoding, args.delimiter, args.header_row)
    if args.update:
        from handler.cli.commands.init.update import print_sheet_update, update_mapping

        layout = (args.format, args.sheet_name, args.encoding, args.delimiter, args.header_row)
        if args.out:
            raise ConfigError(OUT_WITH_UPDATE.format(option="--update"))
        if args.update_layout or args.table or args.primary_key or any(layout):
            raise ConfigError(
                "--update reads SOURCE with the config's layout and keeps its table and key: "
                "leave out --table, --primary-key and the layout options (a new layout is "
                "--update-layout's, run first)"
            )
        root = args.curated_root or os.environ.get("REFLOAD_CURATED_ROOT") or "curated"
        print_sheet_update(update_mapping(args.source, args.update, root), as_json=args.json)
        return 0
    if args.update_layout:
        if args.out:
            raise ConfigError(OUT_WITH_UPDATE.format(option="--update-layout"))
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
    config_path, mapping_path = write(proposal, args.out or "configs", args.sheet, args.force)
    print_proposal(proposal, config_path, mapping_path, as_json=args.json)
    return 0


INIT = Command(
    "write a table config and mapping sheet inferred from a sample file",
    init_arguments,
    init,
    one_step=True,
)


# --- check -------------------------------------------------------------------------------


def check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config_root",
        nargs="?",
        help="folder or s3:// prefix (default: env REFLOAD_CONFIG_ROOT or configs)",
    )
    parser.add_argument("--warehouse", help="as for run; nothing is created or altered")
    parser.add_argument(
        "--curated-root",
        help="as for run (env REFLOAD_CURATED_ROOT): with a redshift:// warehouse, its "
        "bucket must be in the cluster's region",
    )
    parser.add_argument(
        "--suggest",
        nargs=2,
        metavar=("CONFIG", "SOURCE"),
        help="print the quality tests SOURCE's profile suggests that CONFIG does not have yet "
        "(as init proposes them); nothing is written",
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    quiet_options(parser)


def check(args: argparse.Namespace) -> int:
    """Exit 0 when every config is valid (warnings allowed), 2 otherwise."""
    from handler.aws.events import config_root

    if args.suggest:
        from handler.cli.commands.init.propose import print_suggestions, suggest

        config_path, source = args.suggest
        proposals = suggest(config_path, source)
        print_suggestions(config_path, source, proposals, as_json=args.json)
        return 0
    from handler.cli.commands.check import check_configs, print_report

    curated_root = args.curated_root or os.environ.get("REFLOAD_CURATED_ROOT")
    report = check_configs(args.config_root or config_root(), args.warehouse, curated_root)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print_report(report)
    return 2 if report.errors else 0


CHECK = Command(
    "validate every config and mapping sheet in a folder; with --warehouse, each "
    "table's plan against the live target",
    check_arguments,
    check,
    one_step=True,
)


# --- dbt-sources -------------------------------------------------------------------------


def dbt_sources_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-root",
        help="folder or s3:// prefix (default: env REFLOAD_CONFIG_ROOT or configs)",
    )
    parser.add_argument("--out", metavar="FILE", help="write here (default: stdout)")
    quiet_options(parser)


def dbt_sources(args: argparse.Namespace) -> int:
    """Exit 0 when the file is written, 2 when a config does not validate."""
    from handler.aws.events import config_root
    from handler.cli.commands.dbt_sources import write

    return write(args.config_root or config_root(), args.out)


DBT_SOURCES = Command(
    "write a dbt sources file for the configs: a source per schema, a table per "
    "config, its freshness and its checks as dbt tests",
    dbt_sources_arguments,
    dbt_sources,
    one_step=True,
)
