"""`python -m handler check`: a config folder validated before deploy
(handler/cli/commands/check.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from handler.cli import main
from tests.conftest import CONFIGS, SAMPLES, ZIP_CSV


@pytest.fixture
def check(capsys) -> Callable[..., tuple[int, list[str]]]:
    """`python -m handler check ROOT ...`: (exit code, stdout lines)."""

    def run(*args: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        code = main(["check", *args])
        return code, capsys.readouterr().out.splitlines()

    return run


def _edit(root: Path, name: str, **changes: object) -> None:
    path = root / name
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _append(root: Path, sheet: str, row: str) -> None:
    with (root / "mappings" / sheet).open("a", encoding="utf-8") as out:
        out.write(row + "\n")


def test_check_passes_on_the_shipped_configs(check):
    code, lines = check(str(CONFIGS))
    assert code == 0, lines
    assert lines == [f"{CONFIGS}: 4 config(s) valid: 0 error(s), 0 warning(s)"]


def _routing_tie(root: Path) -> None:
    _edit(root, "dim_currency.json", source_prefix="country/")


def _bad_sheet(root: Path) -> None:
    _append(root, "subdivision_mapping.csv", "code,code_again,varchr(8),,,,")


def _hostile_identifiers(root: Path) -> None:
    _edit(root, "dim_country.json", table_name="dim_country; drop table x")
    _append(root, "currency_mapping.csv", 'Currency,"name""); --",varchar(8),,,,')


def _custom_sql(root: Path) -> None:
    tests = json.loads((root / "dim_zipcode.json").read_text())["quality_tests"]
    _edit(
        root,
        "dim_zipcode.json",
        quality_tests=[*tests, {"type": "custom_sql", "sql": "DELETE FROM {table}"}],
    )


def _missing_hook(root: Path) -> None:
    _edit(root, "dim_zipcode.json", python_transform="hooks.zipcode:no_such_function")


def _not_json(root: Path) -> None:
    (root / "dim_broken.json").write_text('{"table_name": "x",\n "mapping_file": }')
    (root / "dim_list.json").write_text("[1]")


def _warnings_only(root: Path) -> None:
    _edit(root, "dim_currency.json", source_prefix="country/currency/")
    _edit(root, "dim_country.json", redshift_table="dim_nation")
    (root / "mappings" / "old_mapping.csv").write_text("target_column,data_type\na,integer\n")
    _edit(root, "dim_zipcode.json", redshift_table="dim_zip_" + "x" * 60)


# (case, change to a copy of configs/, exit code, lines it must print; {root} is the folder)
BROKEN_FOLDERS = [
    (
        "routing tie",
        _routing_tie,
        2,
        [
            "{root}/dim_currency.json: source_prefix 'country/' is also claimed by "
            "{root}/dim_country.json: a landed file would match both"
        ],
    ),
    (
        "bad sheet",
        _bad_sheet,
        2,
        [
            "{root}/mappings/subdivision_mapping.csv: row 10, column 'data_type': unknown data "
            "type 'varchr' (did you mean 'varchar'?); known: bigint, boolean, date, decimal, "
            "double, integer, smallint, string, timestamp, varchar (value 'varchr(8)')"
        ],
    ),
    (
        "hostile identifiers",
        _hostile_identifiers,
        2,
        [
            "{root}/dim_country.json: table_name: identifier 'dim_country; drop table x' must be "
            "lower-case letters, digits and underscores, not starting with a digit (did you "
            "mean 'dim_country__drop_table_x'?) (got 'dim_country; drop table x')",
            "{root}/mappings/currency_mapping.csv: row 8, column 'target_column': identifier "
            "'name\"); --' must be lower-case letters, digits and underscores, not starting "
            "with a digit (did you mean 'name______'?) (value 'name\"); --')",
            "{root}/dim_subdivision.json: warning: quality_tests[3].ref_table: no config here "
            "loads 'public.dim_country'",
        ],
    ),
    (
        "custom SQL that writes",
        _custom_sql,
        2,
        [
            "{root}/dim_zipcode.json: quality_tests[3].sql: custom_sql must be a SELECT, found "
            "DELETE (got 'DELETE FROM {{table}}')"
        ],
    ),
    (
        "a hook that is not there",
        _missing_hook,
        2,
        [
            "{root}/dim_zipcode.json: python_transform: python_transform "
            "'hooks.zipcode:no_such_function': hooks.zipcode has no function no_such_function"
        ],
    ),
    (
        "not a JSON object",
        _not_json,
        2,
        [
            "{root}/dim_broken.json: line 2: not valid JSON: Expecting value: line 2 column 18 "
            "(char 37)",
            "{root}/dim_list.json: a table config must be a JSON object",
        ],
    ),
    (
        "warnings only",
        _warnings_only,
        0,
        [
            "{root}/dim_currency.json: warning: source_prefix 'country/currency/' starts with "
            "'country/' of {root}/dim_country.json: files under 'country/currency/' go to this "
            "table (the longest prefix wins), the rest to the other",
            "{root}/dim_subdivision.json: warning: quality_tests[3].ref_table: no config here "
            "loads 'public.dim_country'",
            "{root}/mappings/old_mapping.csv: warning: mapping sheet that no config uses",
            "{root}/dim_zipcode.json: warning: redshift_table: identifier 'dim_zip_"
            + "x" * 60
            + "' is 68 bytes, longer than postgresql, the strictest target's 63",
        ],
    ),
]


@pytest.mark.parametrize(
    ("change", "exit_code", "expected"),
    [c[1:] for c in BROKEN_FOLDERS],
    ids=[c[0] for c in BROKEN_FOLDERS],
)
def test_check_names_each_problem(change, exit_code, expected, sample_configs, check):
    change(sample_configs)
    code, lines = check(str(sample_configs))
    *problems, verdict = lines
    assert sorted(problems) == sorted(line.format(root=sample_configs) for line in expected)
    assert code == exit_code
    errors = sum(": warning: " not in line for line in expected)
    configs = len(list(sample_configs.glob("dim_*.json")))
    assert verdict == (
        f"{sample_configs}: {configs} config(s) {'invalid' if errors else 'valid'}: "
        f"{errors} error(s), "
        f"{len(expected) - errors} warning(s)"
    )


def test_identifier_limit_is_the_target_warehouse(sample_configs, check, monkeypatch):
    _edit(sample_configs, "dim_zipcode.json", redshift_table="dim_zip_" + "x" * 60)
    monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", "postgresql://nobody@127.0.0.1:1/none")
    code, lines = check(str(sample_configs))
    assert code == 2
    assert (
        f"{sample_configs}/dim_zipcode.json: redshift_table: identifier 'dim_zip_{'x' * 60}' is "
        "68 bytes, longer than postgresql's 63"
    ) in lines
    monkeypatch.setenv("REFLOAD_WAREHOUSE_URL", "redshift://nobody@127.0.0.1:1/none")
    assert check(str(sample_configs))[0] == 0


def test_check_json_and_a_missing_folder(sample_configs, check, tmp_path):
    _routing_tie(sample_configs)
    code, lines = check(str(sample_configs), "--json")
    result = json.loads("\n".join(lines))
    assert code == 2 and result["status"] == "invalid" and result["configs"] == 4
    assert result["problems"][0] == {
        "path": f"{sample_configs}/dim_currency.json",
        "severity": "error",
        "message": f"source_prefix 'country/' is also claimed by {sample_configs}/"
        "dim_country.json: a landed file would match both",
    }
    assert check(str(tmp_path / "nowhere"))[0] == 2


@pytest.mark.parametrize("warehouse_url", ["duckdb", "postgresql"], indirect=True)
def test_check_plans_each_table_against_the_live_target(
    sample_configs, run_cli, sql, warehouse_url, check
):
    currency = SAMPLES / "currency" / "2026-11-01" / "iso4217.csv"
    for config in sample_configs.glob("dim_*.json"):  # a schema no other test writes to
        _edit(sample_configs, config.name, redshift_schema="plan")
    assert run_cli(sample_configs / "dim_zipcode.json", ZIP_CSV)[0] == 0
    assert run_cli(sample_configs / "dim_currency.json", currency)[0] == 0
    _append(sample_configs, "currency_mapping.csv", "Currency,name_upper,varchar(128),upper,,,")
    _edit(sample_configs, "dim_currency.json", allow_new_columns=True)
    sql("CREATE TABLE plan.dim_subdivision (subdivision_code INTEGER, legacy INTEGER)")
    code, lines = check(str(sample_configs), "--warehouse", warehouse_url)
    root = sample_configs
    drift = [
        *("legacy", "subdivision_code", "country_code", "name", "category", "parent_code"),
        *("load_date", "run_id", "source_key"),
    ]
    assert lines[:4] == [
        f"{root}/dim_country.json: plan create plan.dim_country",
        f"{root}/dim_currency.json: plan add columns plan.dim_currency: name_upper",
        f"{root}/dim_subdivision.json: plan drift plan.dim_subdivision: {', '.join(drift)}",
        f"{root}/dim_zipcode.json: plan ok plan.dim_zipcode",
    ]
    # The line run itself would print when it refuses the table.
    assert (
        f"{root}/dim_subdivision.json: target plan.dim_subdivision does not match the mapping "
        "(mapping columns missing from the table: country_code, name, category, parent_code, "
        "load_date, run_id, source_key; table columns not in the mapping: legacy; column "
        "subdivision_code is integer in the table, varchar(8) in the mapping); alter the table "
        "or the sheet"
    ) in lines
    assert code == 2
    plans = json.loads("\n".join(check(str(root), "--warehouse", warehouse_url, "--json")[1]))
    assert [(p["plan"], p["columns"]) for p in plans["plans"]] == [
        (
            "create",
            [
                *("alpha_2", "alpha_3", "numeric_code", "name", "official_name"),
                *("load_date", "run_id", "source_key"),
            ],
        ),
        ("add columns", ["name_upper"]),
        ("drift", drift),
        ("ok", []),
    ]
    # Read only: nothing was created or altered.
    assert sql(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'plan' "
        "AND table_name = 'dim_currency' AND column_name = 'name_upper'"
    ) == [(0,)]
    assert sql(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'plan' "
        "AND table_name = 'dim_country'"
    ) == [(0,)]


def test_check_a_config_bucket(s3, check):
    for path in CONFIGS.rglob("*"):
        if path.is_file():
            key = f"tables/{path.relative_to(CONFIGS).as_posix()}"
            s3.put_object(Bucket="config-bucket", Key=key, Body=path.read_bytes())
    s3.put_object(Bucket="config-bucket", Key="tables/mappings/old.csv", Body=b"a\n")
    code, lines = check("s3://config-bucket/tables/")
    assert code == 0, lines
    assert lines == [
        "s3://config-bucket/tables/mappings/old.csv: warning: mapping sheet that no config uses",
        "s3://config-bucket/tables/: 4 config(s) valid: 0 error(s), 1 warning(s)",
    ]


def test_a_test_name_longer_than_the_audit_holds_is_refused(
    sample_configs, check, run_cli, tmp_path
):
    name = "currency_codes_are_" + "n" * 281  # 300 bytes; test_name is VARCHAR(256)
    config = json.loads((sample_configs / "dim_currency.json").read_text())
    config["quality_tests"][0]["name"] = name
    (sample_configs / "dim_currency.json").write_text(json.dumps(config))
    message = (
        "quality_tests[0].name: is 300 bytes; etl_audit.data_quality_tests.test_name holds at "
        "most 256: give the test a shorter name"
    )

    code, lines = check(str(sample_configs))
    assert code == 2
    assert any(
        line.startswith(f"{sample_configs}/dim_currency.json: {message}") for line in lines
    ), lines

    code, summary = run_cli(
        sample_configs / "dim_currency.json", next(SAMPLES.glob("currency/*/*.csv"))
    )
    assert code == 2 and message in summary["error"]["message"]


def test_a_config_that_links_to_itself_is_named_by_check_and_run(
    sample_configs, check, run_cli, tmp_path
):
    loop = sample_configs / "dim_loop.json"
    loop.symlink_to(loop.name)
    reason = "is a symbolic link that loops (to itself, or through others back to itself)"

    code, lines = check(str(sample_configs))
    assert code == 2
    assert f"{loop}: {reason}" in lines
    assert lines[-1].startswith(f"{sample_configs}: 5 config(s) invalid: 1 error(s)")

    code, summary = run_cli(loop, ZIP_CSV)
    assert code == 2
    assert summary["error"] == {"type": "RejectedInput", "message": f"{loop}: {reason}"}


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_check_refuses_a_curated_bucket_in_another_region_than_redshift(
    s3, sample_configs, warehouse_url, check, monkeypatch
):
    # COPY from Parquet reads only a bucket in the cluster's region (and takes no REGION).
    s3.create_bucket(
        Bucket="curated-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    in_us_east_1 = f"{warehouse_url}&region=us-east-1"
    code, lines = check(
        str(sample_configs), "--warehouse", in_us_east_1, "--curated-root", "s3://curated-eu/"
    )
    assert code == 2
    assert (
        "s3://curated-eu/: the curated bucket 'curated-eu' is in eu-west-1 and the Redshift "
        "warehouse (127.0.0.1) is in us-east-1: COPY from Parquet reads only a bucket in the "
        "warehouse's region; use a curated bucket in us-east-1"
    ) in lines
    # The bucket of the cluster's region (us-east-1 answers no LocationConstraint), from
    # the environment as run takes it: no problem.
    monkeypatch.setenv("REFLOAD_CURATED_ROOT", "s3://curated/")
    code, lines = check(str(sample_configs), "--warehouse", in_us_east_1)
    assert code == 0, lines
    # The region from the endpoint's name, as an AWS endpoint spells it.
    from steps.shared.warehouse.redshift import cluster_region

    host = "redshift://u:p@analytics.c1x2y3.eu-central-1.redshift.amazonaws.com:5439/dev"
    serverless = "redshift://wg.123456789012.ap-southeast-2.redshift-serverless.amazonaws.com/d"
    assert cluster_region(host) == "eu-central-1"
    assert cluster_region(serverless) == "ap-southeast-2"
    assert cluster_region(warehouse_url) is None


def test_a_string_auto_is_refused_naming_file_key_and_value(sample_configs, check):
    config = sample_configs / "dim_country.json"
    tests = json.loads(config.read_text())["quality_tests"]
    learned = [
        {"type": "row_count_change", "auto": "yes"},
        {"type": "changes_within", "auto": True, "max_added_pct": 5},  # a real boolean
    ]
    _edit(sample_configs, "dim_country.json", quality_tests=[*tests, *learned])
    code, lines = check(str(sample_configs))
    assert code == 2, lines
    at = len(tests)
    assert (
        f"{config}: quality_tests[{at}].auto: Input should be a valid boolean (got 'yes')" in lines
    )
    assert not any(f"quality_tests[{at + 1}]" in line for line in lines)
    _edit(
        sample_configs,
        "dim_country.json",
        quality_tests=[*tests, {**learned[0], "auto": False, "max_pct": 10}, learned[1]],
    )
    assert check(str(sample_configs))[0] == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [("truncate_before_load", "yes"), ("dedupe", "no"), ("allow_new_columns", 1)],
)
def test_a_config_boolean_given_as_a_string_or_number_is_refused(sample_configs, check, key, value):
    config = sample_configs / "dim_country.json"
    _edit(sample_configs, "dim_country.json", **{key: value})
    code, lines = check(str(sample_configs))
    assert code == 2, lines
    assert f"{config}: {key}: Input should be a valid boolean (got {value!r})" in lines


def test_a_custom_sql_store_samples_given_as_a_string_is_refused(sample_configs, check):
    config = sample_configs / "dim_country.json"
    tests = json.loads(config.read_text())["quality_tests"]
    query = {"type": "custom_sql", "sql": "SELECT 1 WHERE 1 = 0", "store_samples": "true"}
    _edit(sample_configs, "dim_country.json", quality_tests=[*tests, query])
    code, lines = check(str(sample_configs))
    assert code == 2, lines
    assert (
        f"{config}: quality_tests[{len(tests)}].store_samples: Input should be a valid boolean "
        "(got 'true')"
    ) in lines
