"""What an extension point costs (docs/architecture.md, "Extension points"): a toy of each,
written as ONE file outside the repository and registered with ONE line, then run end to
end through the CLI. A test here that needs more than that means the cost went up."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOY_TRANSFORM = '''
"""A toy transform: each value reversed (`reverse` in a sheet's transform column)."""
import pyarrow.compute as pc

from steps.shared.mapping.transforms import TransformSpec

SPEC = TransformSpec(0, lambda values, args: pc.utf8_reverse(values))
'''

TOY_CHANNEL = '''
"""A toy alert channel: the report's subject appended to the file REFLOAD_TOY_INBOX names."""
import os


def send(report, payload):
    path = os.environ["REFLOAD_TOY_INBOX"]
    with open(path, "a", encoding="utf-8") as inbox:
        inbox.write(report["subject"] + "\\n")
    return path
'''


def _toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> ModuleType:
    """The one file of an extension, in a folder of the team's own (not in refload)."""
    folder = tmp_path / "team_extensions"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source.lstrip(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


def test_a_transform_is_one_file_and_one_registry_line(
    table_dir, write, run_cli, sql, tmp_path, monkeypatch
):
    from steps.shared.mapping.transforms import TRANSFORMS

    config = table_dir(
        "source_column,target_column,data_type,transform\ncode,code,varchar(8),strip|reverse\n",
        primary_key=["code"],
    )
    source = write("codes.csv", "code\n ABC \nxyz\n")
    code, summary = run_cli(config, source)
    assert code == 2  # not registered yet: the sheet is refused, naming the transform
    assert "reverse" in summary["error"]["message"]

    toy = _toy(tmp_path, monkeypatch, "toy_reverse", TOY_TRANSFORM)
    monkeypatch.setitem(TRANSFORMS, "reverse", toy.SPEC)  # the registry line

    code, summary = run_cli(config, source)
    assert code == 0, summary
    assert sql("SELECT code FROM ref.t_codes ORDER BY code") == [("CBA",), ("zyx",)]


def test_an_alert_channel_is_one_file_and_one_registry_line(
    table_dir, write, run_cli, tmp_path, monkeypatch
):
    from steps.shared.alerts.channels import CHANNELS

    toy = _toy(tmp_path, monkeypatch, "toy_inbox", TOY_CHANNEL)
    monkeypatch.setitem(CHANNELS, "toy", toy.send)  # the registry line
    inbox = tmp_path / "inbox.txt"
    monkeypatch.setenv("REFLOAD_TOY_INBOX", str(inbox))
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "toy")
    config = table_dir(
        "source_column,target_column,data_type\ncode,code,varchar(3)\n",
        quality_tests=[{"type": "row_count_between", "min": 2}],
    )

    code, summary = run_cli(config, write("codes.csv", "code\nAA\n"))

    assert code == 1
    assert summary["alert"] == {"toy": {"status": "sent", "ref": str(inbox)}}
    [subject] = inbox.read_text(encoding="utf-8").splitlines()
    assert subject.startswith("[refload] t_codes failed on ")


TOY_COMMAND = '''
"""A toy CLI command: `tables FOLDER` lists the table configs in a folder, one a line."""
import json
from pathlib import Path

from handler.cli.command import Command
from steps.shared.errors import ConfigError


def add_arguments(parser):
    parser.add_argument("folder", help="folder of table configs")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")


def run(args):
    folder = Path(args.folder)
    if not folder.is_dir():
        raise ConfigError("no such folder", file=args.folder)
    tables = sorted(json.loads(p.read_text())["table_name"] for p in folder.glob("*.json"))
    print(json.dumps(tables) if args.json else "\\n".join(tables))
    return 0


COMMAND = Command("list the table configs in a folder", add_arguments, run)
'''


def test_a_cli_command_is_one_file_and_one_registry_line(table_dir, tmp_path, monkeypatch, capsys):
    from handler.cli import COMMANDS, main

    config = table_dir("source_column,target_column,data_type\ncode,code,varchar(3)\n")
    with pytest.raises(SystemExit) as refused:  # not registered yet: argparse refuses it
        main(["tables", str(config.parent)])
    assert refused.value.code == 2
    assert "invalid choice: 'tables'" in capsys.readouterr().err

    toy = _toy(tmp_path, monkeypatch, "toy_tables", TOY_COMMAND)
    monkeypatch.setitem(COMMANDS, "tables", toy.COMMAND)  # the registry line

    assert main(["tables", str(config.parent), "--json"]) == 0
    assert capsys.readouterr().out.strip() == '["t_codes"]'
    # The one error policy: a RefloadError is one line on stderr and its exit code.
    assert main(["tables", str(tmp_path / "missing")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"ConfigError: {tmp_path / 'missing'}: no such folder\n"


def test_an_alert_channel_also_says_recovered_with_no_further_line(
    table_dir, write, run_cli, tmp_path, monkeypatch
):
    from steps.shared.alerts.channels import CHANNELS

    toy = _toy(tmp_path, monkeypatch, "toy_inbox", TOY_CHANNEL)
    monkeypatch.setitem(CHANNELS, "toy", toy.send)  # the registry line, and nothing else
    inbox = tmp_path / "inbox.txt"
    monkeypatch.setenv("REFLOAD_TOY_INBOX", str(inbox))
    monkeypatch.setenv("REFLOAD_ALERT_CHANNELS", "toy")
    config = table_dir(
        "source_column,target_column,data_type\ncode,code,varchar(3)\n",
        quality_tests=[{"type": "row_count_between", "min": 2}],
    )
    assert run_cli(config, write("codes.csv", "code\nAA\n"))[0] == 1

    code, summary = run_cli(config, write("codes2.csv", "code\nAA\nBB\n"))

    assert code == 0, summary
    failed, recovered = inbox.read_text(encoding="utf-8").splitlines()
    assert failed.startswith("[refload] t_codes failed on ")
    assert recovered.startswith("[refload] t_codes recovered on ")


TOY_FORMAT = '''
"""A toy source format: one record per line as a query string (code=AA&name=Alpha)."""
from urllib.parse import parse_qsl

import pyarrow as pa

from steps.ingest.sources.base import FormatSpec, SourceTable


def read(data, uri, config):
    lines = [
        (number, dict(parse_qsl(line)))
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1)
        if line.strip()
    ]
    names = list(dict.fromkeys(key for _, record in lines for key in record))
    table = pa.table({n: pa.array([r.get(n) for _, r in lines], pa.string()) for n in names})
    return SourceTable(uri, names, iter([table]), "line", lambda ps: [lines[p][0] for p in ps])


FORMAT = FormatSpec(extensions={".qs": "querystring"}, read=read, text=True)
'''


def test_a_source_format_is_one_file_and_one_registry_line(
    table_dir, write, run_cli, sql, tmp_path, monkeypatch
):
    from steps.shared.formats import FORMATS

    config = table_dir(
        "source_column,target_column,data_type\ncode,code,varchar(3)\nname,name,varchar(20)\n",
        primary_key=["code"],
    )
    source = write("codes.qs", "code=AA&name=Alpha\n\ncode=BB&name=Beta%20Two\n")
    code, summary = run_cli(config, source)
    assert code == 2  # not registered yet: read as CSV, whose header has no column 'code'
    assert "'code' is not in the header" in summary["error"]["message"]

    _toy(tmp_path, monkeypatch, "toy_querystring", TOY_FORMAT)
    monkeypatch.setitem(FORMATS, "querystring", "toy_querystring:FORMAT")  # the registry line

    code, summary = run_cli(config, source)
    assert code == 0, summary
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == [
        ("AA", "Alpha"),
        ("BB", "Beta Two"),
    ]

    # A bad record is named by the line the toy's `locate` gives (line 3, after a blank one).
    code, summary = run_cli(config, write("codes.qs", "code=AA&name=Alpha\n\ncode=TOOLONG\n"))
    assert code == 2
    assert "line 3" in summary["error"]["message"], summary["error"]["message"]


def test_a_source_format_one_file_and_one_line_is_a_configs_source_format(
    table_dir, write, run_cli, sql, tmp_path, monkeypatch
):
    from steps.shared.formats import FORMATS

    mapping = "source_column,target_column,data_type\ncode,code,varchar(3)\nname,name,varchar(20)\n"
    config = table_dir(mapping, primary_key=["code"], source_format="querystring")
    source = write("codes.txt", "code=AA&name=Alpha\ncode=BB&name=Beta%20Two\n")
    code, summary = run_cli(config, source)
    assert code == 2  # not registered yet: the config is refused, naming the known formats
    message = summary["error"]["message"]
    assert "source_format: Input should be 'csv', 'excel'," in message
    assert "(got 'querystring')" in message

    _toy(tmp_path, monkeypatch, "toy_querystring", TOY_FORMAT)
    monkeypatch.setitem(FORMATS, "querystring", "toy_querystring:FORMAT")  # the registry line

    code, summary = run_cli(config, source)  # .txt says nothing: the config's format reads it
    assert code == 0, summary
    assert sql("SELECT code, name FROM ref.t_codes ORDER BY code") == [
        ("AA", "Alpha"),
        ("BB", "Beta Two"),
    ]


TOY_CHECK = '''
"""A toy check type: `no_lowercase` fails for each row whose column holds a lowercase letter."""
from typing import Literal

from steps.shared.checks.context import check_result, count_rows
from steps.shared.checks.models import CheckType, ColumnTest


class NoLowercase(ColumnTest):
    type: Literal["no_lowercase"]


def run(ctx, test):
    observed = count_rows(ctx, f"WHERE UPPER({ctx.warehouse.quote(test.column)}) <> "
                          f"{ctx.warehouse.quote(test.column)}")
    return check_result("pass" if observed == 0 else "fail", observed, 0)


CHECK = CheckType(NoLowercase, run)
'''


def test_a_check_type_is_one_file_and_one_registry_line(
    table_dir, write, run_cli, sql, tmp_path, monkeypatch
):
    from steps.shared.checks.registry import CHECKS

    config = table_dir(
        "source_column,target_column,data_type\ncode,code,varchar(3)\n",
        quality_tests=[{"type": "no_lowercase", "column": "code"}],
    )
    code, summary = run_cli(config, write("codes.csv", "code\nAA\nbb\n"))
    assert code == 2  # not registered yet: the config is refused, naming the check type
    assert "unknown check type 'no_lowercase'" in summary["error"]["message"]

    toy = _toy(tmp_path, monkeypatch, "toy_no_lowercase", TOY_CHECK)
    monkeypatch.setitem(CHECKS, "no_lowercase", toy.CHECK)  # the registry line

    code, summary = run_cli(config, write("codes.csv", "code\nAA\nbb\n"))
    assert code == 1, summary
    assert sql("SELECT test_name, status, observed_value FROM etl_audit.data_quality_tests") == [
        ("no_lowercase_code", "fail", "1")
    ]
    # Its model is the config's: a key it does not know is refused by name.
    bad = table_dir(
        "source_column,target_column,data_type\ncode,code,varchar(3)\n",
        name="t_other",
        quality_tests=[{"type": "no_lowercase", "column": "code", "colour": "red"}],
    )
    code, summary = run_cli(bad, write("codes.csv", "code\nAA\n"))
    assert code == 2
    assert (
        "unknown key 'colour' in quality_tests[0] (did you mean 'column'?)"
        in summary["error"]["message"]
    )
