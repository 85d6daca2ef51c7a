"""The Redshift dialect: its statements, DDL, COPY and connection options."""

from __future__ import annotations

import json
import re

import pytest

from steps.shared.errors import ConfigError
from steps.shared.warehouse.redshift import RedshiftWarehouse, connect_arguments
from tests.conftest import COPY_ROLE, run_args
from tests.warehouses import STATEMENTS

MAPPING = (
    "source_column,target_column,data_type,transform,default,nullable,format\n"
    "code,code,varchar(3),strip,,false,\nn,n,integer,,,,\n"
)
MODES = {
    "truncate": {"truncate_before_load": True},
    "upsert": {"load_mode": "upsert", "primary_key": ["code"]},
    "append": {"load_mode": "append"},
}


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_publish_is_one_transaction_without_truncate(
    mode, s3, table_dir, write, warehouse_url, capsys, sql
):
    from handler.cli import main

    config = table_dir(MAPPING, **MODES[mode])

    def load(name: str, text: str) -> dict[str, object]:
        code = main(
            [
                "run",
                "--config",
                str(config),
                "--source",
                str(write(name, text)),
                "--warehouse",
                warehouse_url,
                "--curated-root",
                "s3://curated",
                "--json",
            ]
        )
        summary = json.loads(capsys.readouterr().out)
        assert code == 0, summary["error"]
        return summary

    load("a.csv", "code,n\nAA,1\nBB,2\n")
    STATEMENTS.clear()
    summary = load("b.csv", "code,n\nBB,20\nCC,30\n")

    text = [s.strip() for s in STATEMENTS]
    assert not [
        s for s in text if re.search(r"\bTRUNCATE\b|\bALTER\s+TABLE\b.*\bAPPEND\b", s, re.I | re.S)
    ]
    [copy] = [s for s in text if s.startswith("COPY ")]
    # From a manifest that lists exactly the curated object: COPY FROM a key would load
    # every object whose key starts with it.
    curated = summary["curated_uri"]
    manifest = curated.removesuffix(".parquet") + ".manifest"
    assert re.fullmatch(
        rf'COPY "refload_stage_\w+" \("code", "n", "refload:line"\) FROM \'{manifest}\' '
        rf"IAM_ROLE '{COPY_ROLE}' FORMAT AS PARQUET MANIFEST FILLRECORD",
        copy,
    )
    bucket, key = manifest.removeprefix("s3://").split("/", 1)
    size = s3.head_object(Bucket="curated", Key=curated.split("/", 3)[3])["ContentLength"]
    assert json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == {
        "entries": [{"url": curated, "mandatory": True, "meta": {"content_length": size}}]
    }
    begin, commit = text.index("BEGIN"), text.index("COMMIT")
    ledger = next(i for i, s in enumerate(text) if "load_ledger" in s and s.startswith("INSERT"))
    publish = [
        i for i, s in enumerate(text) if re.match(r'(DELETE FROM|INSERT INTO) "ref"."t_codes"', s)
    ]
    assert text.index(copy) < begin < min(publish) and max(publish) < ledger < commit
    assert not [s for s in text[begin + 1 : commit] if s in ("BEGIN", "COMMIT", "ROLLBACK")]
    expected = {
        "truncate": [("BB", 20), ("CC", 30)],
        "upsert": [("AA", 1), ("BB", 20), ("CC", 30)],
        "append": [("AA", 1), ("BB", 2), ("BB", 20), ("CC", 30)],
    }[mode]
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code, n") == expected


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_new_tables_are_diststyle_all_with_optional_keys(table_dir, write, run_cli):
    config = table_dir(MAPPING, redshift_sort_key=["code"])
    assert run_cli(config, write("a.csv", "code,n\nAA,1\n"))[0] == 0
    [create] = [s for s in STATEMENTS if s.startswith('CREATE TABLE IF NOT EXISTS "ref"')]
    assert create.endswith('\nDISTSTYLE ALL\nSORTKEY ("code")')
    STATEMENTS.clear()
    keyed = table_dir(MAPPING, name="t_keyed", redshift_dist_key="code")
    assert run_cli(keyed, write("b.csv", "code,n\nAA,1\n"))[0] == 0
    [create] = [s for s in STATEMENTS if s.startswith('CREATE TABLE IF NOT EXISTS "ref"')]
    assert create.endswith('\nDISTSTYLE KEY DISTKEY ("code")')


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_redshift_refuses_a_curated_root_outside_s3(
    table_dir, write, warehouse_url, tmp_path, capsys
):
    from handler.cli import main
    from steps.shared.warehouse import DIALECTS

    DIALECTS["redshift"] = "steps.shared.warehouse.redshift:RedshiftWarehouse"  # the real COPY path
    code = main(
        [
            "run",
            "--config",
            str(table_dir(MAPPING)),
            "--source",
            str(write("a.csv", "code,n\nAA,1\n")),
            "--warehouse",
            warehouse_url,
            "--curated-root",
            str(tmp_path / "local"),
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 2, summary["error"]
    assert summary["error"]["message"].startswith(
        "Redshift loads curated Parquet from S3: set --curated-root"
    )


def test_copy_needs_an_iam_role(monkeypatch):
    monkeypatch.delenv("REFLOAD_REDSHIFT_IAM_ROLE", raising=False)
    with pytest.raises(ConfigError, match="Redshift COPY needs an IAM role"):
        RedshiftWarehouse("redshift://u:p@h/db").copy_sql("stg", ["a"], "s3://b/k.parquet")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redshift://loader:p%40ss@cluster.example:5439/analytics",
            {
                "host": "cluster.example",
                "port": 5439,
                "database": "analytics",
                "user": "loader",
                "password": "p@ss",
                "timeout": 30,
                "application_name": "refload",
            },
        ),
        (
            "redshift://cluster.example/analytics?iam=true&cluster_identifier=ref&db_user=loader"
            "&region=eu-west-1",
            {
                "host": "cluster.example",
                "port": 5439,
                "database": "analytics",
                "timeout": 30,
                "application_name": "refload",
                "iam": True,
                "cluster_identifier": "ref",
                "db_user": "loader",
                "region": "eu-west-1",
            },
        ),
        (
            "redshift://wg.example/dev?iam=true&serverless_work_group=refload",
            {
                "host": "wg.example",
                "port": 5439,
                "database": "dev",
                "timeout": 30,
                "application_name": "refload",
                "iam": True,
                "serverless_work_group": "refload",
                "is_serverless": True,
            },
        ),
    ],
)
def test_connection_options(url, expected):
    assert connect_arguments(url) == expected


def test_credentials_from_a_secrets_manager_secret(monkeypatch):
    import boto3
    from moto import mock_aws

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(
            Name="refload/redshift",
            SecretString=json.dumps(
                {
                    "username": "loader",
                    "password": "s3cret",
                    "host": "cluster.example",
                    "port": 5439,
                    "dbname": "analytics",
                    "engine": "redshift",
                }
            ),
        )["ARN"]
        args = connect_arguments(f"redshift://placeholder/dev?secret_arn={arn}&region=us-east-1")
    assert args == {
        "host": "cluster.example",
        "port": 5439,
        "database": "analytics",
        "user": "loader",
        "password": "s3cret",
        "timeout": 30,
        "application_name": "refload",
        "region": "us-east-1",
    }


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_curated_timestamps_are_int64_microseconds_as_redshift_copy_reads_them(
    s3, table_dir, write, warehouse_url, capsys, sql
):
    """Redshift COPY reads Parquet INT64 TIMESTAMP(MICROS); nanoseconds it takes for
    microseconds (years like 161065: apache/arrow#38000), so they must never appear."""
    import pyarrow.parquet as pq

    from handler.cli import main
    from steps.shared.io import storage

    mapping = MAPPING + "at,at,timestamp,,,,%Y-%m-%d %H:%M:%S\n"
    config = table_dir(mapping)
    source = write("a.csv", "code,n,at\nAA,1,2026-11-01 10:30:15\n")
    args = ["run", "--config", str(config), "--source", str(source), "--warehouse"]
    code = main([*args, warehouse_url, "--curated-root", "s3://curated", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary["error"]

    with storage.local_file(summary["curated_uri"]) as path:
        column = pq.ParquetFile(path).schema.column(2)
    assert column.physical_type == "INT64"
    logical = json.loads(column.logical_type.to_json())
    assert (logical["Type"], logical["timeUnit"]) == ("Timestamp", "microseconds")
    assert [str(v) for (v,) in sql("SELECT at FROM ref.t_codes")] == ["2026-11-01 10:30:15"]


def test_a_password_read_through_secret_arn_is_masked_like_any_other(
    s3, table_dir, write, tmp_path, capsys, monkeypatch
):
    """A warm function: once a run has read the warehouse secret, a later error that quotes
    its password (here a team's hook, whose lookup shares it) shows it masked."""
    import sys

    import boto3

    from handler.cli import main
    from steps.ingest import hooks

    password = "V4ult-pw-from-the-secret"
    arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="refload/warehouse",
        SecretString=json.dumps(
            {"username": "loader", "password": password, "host": "127.0.0.1", "port": 9}
        ),
    )["ARN"]
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / "lookuphook.py").write_text(
        "def shape(rows):\n"
        "    if (rows['code'] == 'BAD').any():\n"
        f"        raise RuntimeError('lookup service refused password {password}')\n"
        "    return rows\n"
    )
    monkeypatch.syspath_prepend(str(code_dir))
    monkeypatch.setattr(hooks, "_loaded", {})
    monkeypatch.delitem(sys.modules, "lookuphook", raising=False)
    config = table_dir(MAPPING, python_transform="lookuphook:shape")
    url = f"redshift://placeholder/dev?secret_arn={arn}&region=us-east-1&ssl=false&iam_role={COPY_ROLE}"
    extra = ("--json", "--curated-root", "s3://curated/lake")

    # The warehouse (host and port from the secret) is down: the run reads the secret.
    assert main(run_args(config, write("a.csv", "code,n\nAB,1\n"), url, *extra)) == 3
    capsys.readouterr()
    assert main(run_args(config, write("b.csv", "code,n\nBAD,1\n"), url, *extra)) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["message"].endswith("refused password ***")
    outputs = {"stdout": out, "stderr": err}
    outputs |= {p.name: p.read_text() for p in (tmp_path / "outbox").glob("*.json")}
    assert len(outputs) > 2
    for name, text in outputs.items():
        assert password not in text, f"{name} shows the password"


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_a_redshift_load_refuses_a_curated_bucket_in_another_region(
    s3, table_dir, write, warehouse_url, capsys, sql
):
    from handler.cli import main
    from steps.shared.warehouse import DIALECTS

    DIALECTS["redshift"] = "steps.shared.warehouse.redshift:RedshiftWarehouse"  # the real COPY path
    s3.create_bucket(
        Bucket="curated-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    config = table_dir("source_column,target_column,data_type\ncode,code,varchar(3)\n")
    code = main(
        [
            "run",
            "--config",
            str(config),
            "--source",
            str(write("a.csv", "code\nAA\n")),
            "--warehouse",
            f"{warehouse_url}&region=us-east-1",
            "--curated-root",
            "s3://curated-eu",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 2, summary["error"]
    assert (
        "is in eu-west-1 and the Redshift warehouse (127.0.0.1) is in us-east-1"
        in (summary["error"]["message"])
    )
    # Refused before anything was created.
    assert sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 't_codes'") == [
        (0,)
    ]


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_copy_quotes_the_curated_key_and_the_role_as_redshift_literals(
    s3, table_dir, write, warehouse_url, capsys
):
    import sqlglot

    from handler.cli import main

    # A quote in a key (and in a role, as written in the URL) would end the literal early;
    # a backslash escapes the next character in a Redshift literal.
    role = COPY_ROLE + "'x"
    url = warehouse_url.replace(f"iam_role={COPY_ROLE}", f"iam_role={COPY_ROLE}%27x")
    config = table_dir(MAPPING)
    source = write("a.csv", "code,n\nAA,1\n")
    curated_root = "s3://curated/o'brien\\team"
    code = main([*run_args(config, source, url), "--curated-root", curated_root, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0, summary["error"]

    [copy] = [s for s in STATEMENTS if s.startswith("COPY ")]
    parsed = sqlglot.parse_one(copy, read="redshift")
    manifest = summary["curated_uri"].removesuffix(".parquet") + ".manifest"
    assert manifest.startswith(curated_root + "/")
    assert [f.name for f in parsed.args["files"]] == [manifest]
    assert parsed.args["credentials"].args["iam_role"].name == role


@pytest.mark.slow
@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_the_proxy_holds_each_statement_as_a_distant_leader_node(
    s3, table_dir, write, warehouse_url, redshift_proxy, capsys
):
    """The latency benchmark's proxy (scripts/benchmark.py --redshift): each statement a
    run sends waits out the delay; the driver's other round trips do not."""
    from handler.cli import main
    from tests.warehouses import RedshiftProxy

    far = RedshiftProxy(upstream_port=redshift_proxy.upstream[1], delay=0.05)
    url = warehouse_url.replace(f":{redshift_proxy.port}/", f":{far.port}/")
    config = table_dir(MAPPING, primary_key=["code"])
    args = ["run", "--config", str(config), "--source", str(write("a.csv", "code,n\nAA,1\n"))]
    try:
        code = main([*args, "--warehouse", url, "--curated-root", "s3://curated", "--json"])
    finally:
        far.close()

    assert code == 0, json.loads(capsys.readouterr().out)["error"]
    assert far.statements >= 10
    assert far.round_trips > far.statements  # the login and each new statement's Parse
    # Each statement waited out the delay (to 80%: a round trip still open when the
    # connection closes is not counted).
    assert far.waited >= far.statements * 0.05 * 0.8


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_copy_stages_the_rows_source_lines_that_the_publish_leaves_out(
    table_dir, write, warehouse_url, capsys, sql
):
    from handler.cli import main

    config = table_dir(MAPPING)
    code = main(
        [*run_args(config, write("a.csv", "code,n\nAA,1\nBB,2\n"), warehouse_url), "--json"]
    )
    assert code == 0, capsys.readouterr().out
    # COPY from Parquet fills staging by position and wants every column of the file.
    [copy] = [s for s in STATEMENTS if s.startswith("COPY ")]
    assert '"n", "refload:line") FROM' in copy and copy.endswith(" FILLRECORD")
    [create] = [s for s in STATEMENTS if s.startswith("CREATE TEMPORARY TABLE")]
    assert create.endswith('"refload:line" BIGINT\n)')
    assert sql("SELECT code, n FROM ref.t_codes ORDER BY code") == [("AA", 1), ("BB", 2)]


@pytest.mark.parametrize("warehouse_url", ["redshift"], indirect=True)
def test_the_cluster_sees_refload_as_the_connecting_application(warehouse_url):
    """Named by refload, not by redshift_connector's walk of the caller's stack."""
    import redshift_connector

    with redshift_connector.connect(**connect_arguments(warehouse_url)) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        assert [list(row) for row in cursor.fetchall()] == [["refload"]]
