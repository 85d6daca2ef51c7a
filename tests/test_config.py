"""Table configs: the seed validates, bad configs fail with the path and a suggestion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler.cli import main
from steps.shared.config.model import json_schema, parse_config
from steps.shared.config.table import load_table_config
from steps.shared.errors import ConfigError
from tests.conftest import CONFIGS
from tests.test_samples import SEED_CONFIG

BASE = {"table_name": "t", "mapping_file": "m.csv"}

INVALID_CONFIGS = [
    ({**BASE, "delimeter": ";"}, "delimeter: unknown key 'delimeter' (did you mean 'delimiter'?)"),
    ({**BASE, "header_row": 0}, "header_row: Input should be greater than or equal to 1"),
    ({**BASE, "header_row": "two"}, "header_row: Input should be a valid integer"),
    (
        {**BASE, "source_format": "xml"},
        "source_format: Input should be 'csv', 'excel', 'json', 'parquet', 'xlsx', 'xls', "
        "'jsonl', 'ndjson' or 'tsv' (got 'xml')",
    ),
    ({"mapping_file": "m.csv"}, "table_name: required key is missing"),
    (
        {**BASE, "table_name": "Dim Zip"},
        "table_name: identifier 'Dim Zip' must be lower-case letters, digits and underscores, not "
        "starting with a digit (did you mean 'dim_zip'?)",
    ),
    (
        {
            **BASE,
            "quality_tests": [{"type": "row_count_match"}, {"type": "uniquness", "columns": ["a"]}],
        },
        "quality_tests[1].type: unknown check type 'uniquness' (did you mean 'uniqueness'?)",
    ),
    (
        {**BASE, "quality_tests": [{"type": "not_null", "column": ["a"]}]},
        "quality_tests[0].column: unknown key 'column' in quality_tests[0] "
        "(did you mean 'columns'?)",
    ),
    (
        {**BASE, "quality_tests": [{"type": "not_null", "columns": "zip"}]},
        "quality_tests[0].columns: Input should be a valid list",
    ),
    (
        {**BASE, "quality_tests": [{"type": "not_null"}]},
        "quality_tests[0].columns: required key is missing",
    ),
    (
        {**BASE, "quality_tests": [{"type": "uniqueness", "columns": ["x; DROP TABLE y"]}]},
        "quality_tests[0].columns: identifier 'x; DROP TABLE y' must be lower-case",
    ),
    ({**BASE, "quality_tests": [{"columns": ["a"]}]}, "quality_tests[0]: missing 'type'"),
    ({**BASE, "load_mode": "upsert"}, "load_mode 'upsert' needs primary_key"),
    (
        {**BASE, "load_mode": "append", "truncate_before_load": True},
        "truncate_before_load=true contradicts load_mode='append'",
    ),
    ({**BASE, "encoding": "latin-9000"}, "encoding: unknown encoding 'latin-9000'"),
    ({**BASE, "max_reject_pct": 150}, "max_reject_pct: Input should be less than or equal to 100"),
    (
        {
            **BASE,
            "quality_tests": [
                {
                    "type": "referential_integrity",
                    "columns": ["a", "b"],
                    "ref_table": "public.x",
                    "ref_columns": ["a"],
                }
            ],
        },
        "columns and ref_columns must have the same length",
    ),
    (
        {**BASE, "quality_tests": [{"type": "custom_sql", "sql": "DELETE FROM {table}"}]},
        "quality_tests[0].sql: custom_sql must be a SELECT, found DELETE",
    ),
    (
        {**BASE, "quality_tests": [{"type": "custom_sql", "sql": "SELECT 1; DROP TABLE x"}]},
        "custom_sql must be exactly one SELECT, found 2 statements",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"), INVALID_CONFIGS, ids=[m[:40] for _, m in INVALID_CONFIGS]
)
def test_invalid_config_is_an_error_naming_the_path(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, source="cfg/t.json")
    assert message in str(caught.value)
    assert str(caught.value).startswith("cfg/t.json: ")


def test_seed_example_validates_verbatim():
    config = parse_config(SEED_CONFIG, source="seed.json")
    assert config.mode == "truncate"
    assert config.target == "public.dim_zipcode"
    assert [t.type for t in config.quality_tests] == ["row_count_match", "uniqueness", "not_null"]


@pytest.mark.parametrize(
    ("given", "mode"),
    [
        ({}, "truncate"),
        ({"truncate_before_load": True}, "truncate"),
        ({"truncate_before_load": False}, "append"),
        ({"load_mode": "append"}, "append"),
        ({"load_mode": "upsert", "primary_key": ["a"]}, "upsert"),
        ({"load_mode": "upsert", "primary_key": ["a"], "truncate_before_load": False}, "upsert"),
    ],
)
def test_load_mode_follows_truncate_before_load(given, mode):
    assert parse_config({**BASE, **given}, source="c.json").mode == mode


def test_defaults_are_what_the_issue_promises():
    config = parse_config(BASE, source="c.json")
    assert (
        config.encoding,
        config.dedupe,
        config.max_reject_pct,
        config.header_row,
        config.delimiter,
        config.null_values,
    ) == ("utf-8", True, 0, 1, ",", [""])


TABLE_CONFIGS = sorted(p for p in CONFIGS.glob("*.json") if not p.name.endswith(".schema.json"))


@pytest.mark.parametrize("path", TABLE_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates_with_its_mapping(path: Path):
    spec = load_table_config(str(path))
    assert spec.mapping.columns


def test_json_schema_in_configs_is_in_sync():
    shipped = json.loads((CONFIGS / "table_config.schema.json").read_text())
    assert shipped == json_schema(), (
        "regenerate: python -c 'import json,steps.shared.config.model as c; "
        "print(json.dumps(c.json_schema(), indent=2))' > configs/table_config.schema.json"
    )


def test_relative_mapping_file_resolves_against_the_config(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.csv").write_text("source_column,target_column,data_type\na,a,string\n")
    (tmp_path / "c.json").write_text(json.dumps({"table_name": "t", "mapping_file": "sub/m.csv"}))
    spec = load_table_config(str(tmp_path / "c.json"))
    assert spec.mapping.uri == str(tmp_path / "sub" / "m.csv")


def test_config_check_columns_must_exist_in_the_mapping(tmp_path: Path):
    (tmp_path / "m.csv").write_text("source_column,target_column,data_type\nzip,zipcode,string\n")
    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "table_name": "t",
                "mapping_file": "m.csv",
                "quality_tests": [{"type": "uniqueness", "columns": ["zipcod"]}],
            }
        )
    )
    with pytest.raises(
        ConfigError,
        match=r"quality_tests\[0\].columns: unknown column 'zipcod' "
        r"\(did you mean 'zipcode'\?\)",
    ):
        load_table_config(str(tmp_path / "c.json"))


def test_malformed_json_names_the_file_and_line(tmp_path: Path):
    (tmp_path / "c.json").write_text('{"table_name": "t",\n "mapping_file": }\n')
    with pytest.raises(ConfigError, match=r"c.json, line 2: not valid JSON"):
        load_table_config(str(tmp_path / "c.json"))


SECRET_LINE = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI,K7MDENG"


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
@pytest.mark.parametrize("how", ["absolute", "relative", "symlink"])
def test_mapping_file_outside_the_config_root_is_refused_unread(
    how, table_dir, write, run_cli, sql, tmp_path, capsys
):
    secret = tmp_path / "elsewhere" / "environ"
    secret.parent.mkdir()
    secret.write_text(SECRET_LINE + "\nPATH=/usr/bin\n")
    config = table_dir("source_column,target_column,data_type\ncode,code,varchar(3)\n")
    if how == "symlink":
        (config.parent / "sheet.csv").symlink_to(secret)
    mapping_file = {"absolute": str(secret), "relative": "../elsewhere/environ"}.get(
        how, "sheet.csv"
    )
    raw = json.loads(config.read_text())
    config.write_text(json.dumps({**raw, "mapping_file": mapping_file}))

    code, summary = run_cli(config, write("t.csv", "code\nAA\n"))

    assert code == 2
    assert summary["error"] == {
        "type": "ConfigError",
        "message": f"{config}: mapping_file '{mapping_file}' is outside the config root "
        f"{config.parent.resolve()}: a mapping sheet must live under it",
    }
    outputs = [json.dumps(summary), capsys.readouterr().err]
    outputs += [p.read_text() for p in (tmp_path / "outbox").glob("*.json")]
    outputs.append(repr(sql("SELECT * FROM etl_audit.run_log")))
    for text in outputs:
        assert "wJalrXUtnFEMI" not in text and "PATH=" not in text


def test_mapping_file_may_be_anywhere_under_the_config_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "tables").mkdir(parents=True)
    (root / "mappings").mkdir()
    (root / "mappings" / "m.csv").write_text("source_column,target_column,data_type\na,a,string\n")
    config = root / "tables" / "t.json"
    config.write_text(json.dumps({"table_name": "t", "mapping_file": "../mappings/m.csv"}))
    with pytest.raises(ConfigError, match="is outside the config root"):
        load_table_config(str(config))
    monkeypatch.setenv("REFLOAD_CONFIG_ROOT", str(root))
    assert load_table_config(str(config)).mapping.targets == ["a"]


@pytest.mark.parametrize(
    ("mapping_file", "allowed"),
    [
        ("s3://config-bucket/mappings/m.csv", True),
        ("../mappings/m.csv", True),
        ("s3://other-bucket/mappings/m.csv", False),
        ("s3://config-bucket/../other-bucket/mappings/m.csv", False),
    ],
)
def test_mapping_file_of_an_s3_config_stays_in_the_config_bucket(s3, mapping_file, allowed):
    sheet = b"source_column,target_column,data_type\na,a,string\n"
    for bucket in ("config-bucket", "other-bucket"):
        if bucket == "other-bucket":
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="mappings/m.csv", Body=sheet)
    body = json.dumps({"table_name": "t", "mapping_file": mapping_file})
    s3.put_object(Bucket="config-bucket", Key="tables/t.json", Body=body.encode())
    if allowed:
        assert load_table_config("s3://config-bucket/tables/t.json").mapping.targets == ["a"]
    else:
        with pytest.raises(ConfigError, match="outside the config root s3://config-bucket/"):
            load_table_config("s3://config-bucket/tables/t.json")


def test_a_sheet_that_is_not_a_mapping_sheet_is_not_quoted(tmp_path):
    (tmp_path / "m.csv").write_text(SECRET_LINE + "\n")
    (tmp_path / "c.json").write_text(json.dumps({"table_name": "t", "mapping_file": "m.csv"}))
    with pytest.raises(ConfigError) as caught:
        load_table_config(str(tmp_path / "c.json"))
    assert "row 1 is not a mapping sheet header" in str(caught.value)
    assert "wJalrXUtnFEMI" not in str(caught.value)


@pytest.mark.parametrize("warehouse_url", ["duckdb"], indirect=True)
def test_table_name_with_a_trailing_newline_is_refused(table_dir, write, run_cli, sql):
    config = table_dir("source_column,target_column,data_type\ncode,code,varchar(3)\n")
    config.write_text(json.dumps({**json.loads(config.read_text()), "table_name": "t_codes\n"}))
    code, summary = run_cli(config, write("t.csv", "code\nAA\n"))
    assert code == 2
    assert (
        "table_name: identifier 't_codes\\n' must be lower-case letters"
        in (summary["error"]["message"])
    )
    assert sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'ref'") == [
        (0,)
    ]


@pytest.mark.parametrize("step", ["load", "validate"])
def test_a_payload_mapping_outside_the_config_root_is_refused_unread(
    step, table_dir, warehouse_url, tmp_path, capsys
):
    # A sheet that parses, with a secret where a column name goes: read, it would be quoted.
    secret = tmp_path / "elsewhere" / "sheet.csv"
    secret.parent.mkdir()
    secret.write_text("source_column,target_column,data_type\ncode,wJalrXUtnFEMI,varchar(3)\n")
    config = table_dir("source_column,target_column,data_type\ncode,code,varchar(3)\n")
    payload = {"step": step, "config": str(config), "mapping": str(secret)}
    if step == "load":
        payload |= {"curated_uri": str(tmp_path / "curated" / "x.parquet"), "content_hash": "0"}
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))

    capsys.readouterr()
    code = main(["replay", str(event), "--warehouse", warehouse_url, "--json"])
    out, err = capsys.readouterr()

    assert code == 2
    assert json.loads(out)["error"] == {
        "type": "ConfigError",
        "message": f"{config}: mapping '{secret}' is outside the config root "
        f"{config.parent.resolve()}: a mapping sheet must live under it",
    }
    outputs = [out, err] + [p.read_text() for p in (tmp_path / "outbox").glob("*.json")]
    for text in outputs:
        assert "wJalrXUtnFEMI" not in text
