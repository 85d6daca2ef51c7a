"""Shared fixtures: a real DuckDB file per test, real files, moto for S3."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from handler.cli import main
from steps import storage

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
    yield
    storage.set_s3_client(None)


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


@pytest.fixture
def sql(warehouse_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Query the test warehouse read-only, as a user would."""

    def query(statement: str, *params: Any) -> list[tuple[Any, ...]]:
        path = warehouse_url.removeprefix("duckdb:///")
        with duckdb.connect(path, read_only=True) as con:
            return con.execute(statement, list(params) or None).fetchall()

    return query


@pytest.fixture
def run_cli(
    warehouse_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, dict[str, Any]]]:
    """`python -m handler run ... --json` in-process: (exit code, parsed summary)."""

    def run(config: Path | str, source: Path | str, *extra: str) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        code = main(
            [
                "run",
                "--config",
                str(config),
                "--source",
                str(source),
                "--warehouse",
                warehouse_url,
                "--curated-root",
                str(tmp_path / "curated"),
                "--json",
                *extra,
            ]
        )
        out = capsys.readouterr().out
        return code, json.loads(out)

    return run


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


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto S3, handed to refload's storage module as its client."""
    import boto3
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in ("raw", "curated", "config-bucket"):
            client.create_bucket(Bucket=bucket)
        storage.set_s3_client(client)
        yield client
