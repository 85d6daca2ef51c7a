"""Shared fixtures: a real DuckDB file per test, real files, moto for S3."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest

from handler.cli import main
from steps.shared.io import secrets, storage
from steps.shared.warehouse import DIALECTS
from tests.warehouses import STATEMENTS, RedshiftProxy

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SAMPLES = ROOT / "samples" / "raw"
ZIP_CSV = SAMPLES / "zipcode" / "2026-11-01" / "us_zipcodes.csv"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own working folder, warehouse, curated root and outbox."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "REFLOAD_WAREHOUSE_URL",
        "REFLOAD_CONFIG_ROOT",
        "REFLOAD_CURATED_ROOT",
        "REFLOAD_OUTBOX",
        "REFLOAD_ALERT_CHANNELS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REFLOAD_OUTBOX", str(tmp_path / "outbox"))
    # Credentials remembered by an earlier test (a one-letter password, say) are not this
    # test's: a warm Lambda container keeps one warehouse's, a test session many.
    monkeypatch.setattr(secrets, "_known", set())
    secrets._sorted_secrets.cache_clear()
    yield
    storage.set_s3_client(None)


# scripts/start_postgres.sh makes this role and database; each test session works in a
# database of its own next to it, so concurrent runs never see each other's tables.
POSTGRES_ADMIN_URL = os.environ.get(
    "REFLOAD_TEST_POSTGRES_URL", "postgresql://refload:refload@127.0.0.1:5432/refload_test"
)
SESSION_DATABASE = f"refload_test_{os.getpid()}"
POSTGRES_URL = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + SESSION_DATABASE
COPY_ROLE = "arn:aws:iam::123456789012:role/refload-copy"
WAREHOUSES = ["duckdb", "postgresql", "redshift"]


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: run "
            f"scripts/start_postgres.sh ({error})"
        )
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{SESSION_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{SESSION_DATABASE}"')
    yield POSTGRES_URL
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{SESSION_DATABASE}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redshift_proxy() -> Iterator[RedshiftProxy]:
    proxy = RedshiftProxy(upstream_port=urlsplit(POSTGRES_URL).port or 5432)
    yield proxy
    proxy.close()


def _reset_postgres() -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as con:
        schemas = [
            r[0]
            for r in con.execute(
                "SELECT nspname FROM pg_namespace WHERE nspowner = current_user::regrole "
                "AND nspname NOT LIKE 'pg_%'"
            ).fetchall()
        ]
        for schema in schemas:
            con.execute(f'DROP SCHEMA "{schema}" CASCADE')
        con.execute("CREATE SCHEMA IF NOT EXISTS public")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """DuckDB by default (the cheap engine); all three warehouses where SQL behaviour differs:
    tests or modules marked `all_warehouses`. An explicit parametrize of warehouse_url wins."""
    if "warehouse_url" not in metafunc.fixturenames:
        return
    explicit = any(
        "warehouse_url" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize")
    )
    if not explicit:
        every = metafunc.definition.get_closest_marker("all_warehouses") is not None
        metafunc.parametrize("warehouse_url", WAREHOUSES if every else ["duckdb"], indirect=True)


# The slow tests, marked by what they use (pyproject registers the markers), so that
# `scripts/test.sh --quick` leaves them out (with the Redshift cases and those marked slow).
SLOW_FIXTURES = {"spark": "spark", "chromium": "browser", "dbt_run": "dbt", "dbt_on_duckdb": "dbt"}


# First: pytest-xdist's own hook reads the xdist_group marks set here to keep a group on one
# worker (--dist loadgroup); run after it, they would be set too late and ignored.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("warehouse_url") == "redshift":
            item.add_marker(pytest.mark.redshift)
        for fixture, marker in SLOW_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and marker not in item.keywords:
                item.add_marker(marker)
                # Under pytest-xdist's --dist loadgroup, one worker runs a group: one JVM
                # (the SparkSession), one browser, one dbt project per run, not one each.
                item.add_marker(pytest.mark.xdist_group(marker))


def pytest_configure(config: pytest.Config) -> None:
    """--dist loadgroup keeps each slow group (one SparkSession, one browser, one dbt run)
    on one worker by the group pytest-xdist writes into each test's id, which pytest 9.2's
    structured ids no longer take (pytest-xdist issue 1386): every worker would start its
    own, silently. Refuse that pairing instead."""
    from importlib.metadata import version

    from packaging.version import Version

    if config.getoption("dist", "no") != "loadgroup":
        return
    if Version(pytest.__version__) >= Version("9.2") and Version(
        version("pytest-xdist")
    ) <= Version("3.8.0"):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} with pytest-xdist {version('pytest-xdist')} ignores "
            "xdist_group under --dist loadgroup: install the pytest constraints.txt pins"
        )


@pytest.fixture
def warehouse_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """DuckDB, PostgreSQL or Redshift (the real driver, through the proxy): see above."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    request.getfixturevalue("postgres_database")
    _reset_postgres()
    if request.param == "postgresql":
        return POSTGRES_URL
    proxy = request.getfixturevalue("redshift_proxy")
    monkeypatch.setitem(DIALECTS, "redshift", "tests.warehouses:RedshiftThroughProxy")
    STATEMENTS.clear()
    parts = urlsplit(POSTGRES_URL)
    return (
        f"redshift://{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
        f"{parts.path}?ssl=false&iam_role={COPY_ROLE}"
    )


@pytest.fixture
def dialect(warehouse_url: str) -> str:
    return warehouse_url.split("://", 1)[0]


@pytest.fixture
def sql(warehouse_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run SQL on the test warehouse, as a user would (`?` placeholders)."""

    def query(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        if warehouse_url.startswith("duckdb"):
            path = warehouse_url.removeprefix("duckdb:///")
            with duckdb.connect(path) as con:
                result = con.execute(statement, list(params) or None)
                return result.fetchall() if result.description else []
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            cursor = con.execute(statement.replace("?", "%s"), params or None)
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []

    return query


def workbook(sheets: dict[str, list[list[object]]]) -> bytes:
    """An .xlsx file's bytes: a sheet per entry, in order, each row appended as given."""
    import io

    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def run_args(
    config: Path | str, source: Path | str, warehouse: str, *extra: str, curated: Path | None = None
) -> list[str]:
    """The argv of `python -m handler run` on one file; options beyond these in `extra`."""
    args = ["run", "--config", str(config), "--source", str(source), "--warehouse", warehouse]
    return [*args, *(["--curated-root", str(curated)] if curated else []), *extra]


@pytest.fixture
def run_cli(
    warehouse_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, dict[str, Any]]]:
    """`python -m handler run ... --json` in-process: (exit code, parsed summary)."""

    def run(config: Path | str, source: Path | str, *extra: str) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        code = main(
            run_args(config, source, warehouse_url, "--json", *extra, curated=tmp_path / "curated")
        )
        out = capsys.readouterr().out
        return code, json.loads(out)

    return run


@pytest.fixture(scope="session")
def spark() -> Any:
    """One small local SparkSession for the whole test session (the Spark engine's tests)."""
    os.environ.setdefault("REFLOAD_SPARK_MASTER", "local[2]")
    # Short-lived test JVM: the first JIT tier only and the serial collector spend far less
    # CPU on a test session's small jobs than the server defaults (2 cores, shared).
    os.environ.setdefault(
        "PYSPARK_SUBMIT_ARGS",
        "--driver-java-options '-XX:TieredStopAtLevel=1 -XX:+UseSerialGC' pyspark-shell",
    )
    from steps.ingest.spark import spark_session

    session = spark_session()
    yield session
    session.stop()


@pytest.fixture
def table_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write a config plus mapping sheet into a folder; returns the config path."""

    def make(mapping: str, name: str = "t_codes", **config: Any) -> Path:
        folder = tmp_path / "cfg"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}_mapping.csv").write_text(mapping.strip() + "\n", encoding="utf-8")
        body = {
            "table_name": name,
            "redshift_schema": "ref",
            "mapping_file": f"{name}_mapping.csv",
            **config,
        }
        path = folder / f"{name}.json"
        path.write_text(json.dumps(body), encoding="utf-8")
        return path

    return make


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, content: str | bytes) -> Path:
        path = tmp_path / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        return path

    return make


@pytest.fixture
def sample_configs(tmp_path: Path) -> Path:
    """A writable copy of configs/ (some tests tweak a config)."""
    target = tmp_path / "configs"
    shutil.copytree(CONFIGS, target)
    return target


def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's test credentials and region, and no endpoint override: boto3 talks to moto."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto S3, handed to refload's storage module as its client."""
    import boto3
    from moto import mock_aws

    fake_aws_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in ("raw", "curated", "config-bucket"):
            client.create_bucket(Bucket=bucket)
        storage.set_s3_client(client)
        yield client
